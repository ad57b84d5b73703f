"""How the CLI prints: the two consoles, tables, plain lines and durations.

One rule for every table the CLI prints (recipes, quantize, validate, publish, status, watch): on a terminal a
rich table whose columns wrap (never cut: `overflow="fold"`, `no_wrap=False`); anywhere else (a pipe, a file, CI
logs) a markdown table with every cell whole and no width limit, so ids and reasons survive `| cat`, `> file` and
`grep`. Free text is never hard-wrapped outside a terminal either."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)  # progress and log lines
out = Console()  # results: tables, YAML, cards


def _scalar(value: Any) -> str:
    """A value for a line or a cell: text as is, containers as JSON (never a Python repr)."""
    if isinstance(value, Text):
        return value.plain
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return "" if value is None else str(value)


def _md_cell(value: Any) -> str:
    return " ".join(_scalar(value).split("\n")).replace("|", "\\|")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, target: Console | None = None,
                box: Any = None) -> None:
    """Print a table by the CLI's one rule (see the module docstring). Cells are plain text (no rich markup is
    read from them); a rich `Text` cell keeps its style on a terminal."""
    target = target or out
    rows = [list(r) for r in rows]
    if not target.is_terminal:
        lines = [f"## {title}", "", "| " + " | ".join(_md_cell(c) for c in columns) + " |",
                 "|" + "|".join(" --- " for _ in columns) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        write(target, "\n".join(lines) + "\n")
        return
    kwargs = {"box": box} if box is not None else {}
    table = Table(title=Text(title), **kwargs)
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=False)
    for row in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(_scalar(c)) for c in row))
    target.print(table)


def write(target: Console, text: str) -> None:
    """Text exactly as given (no markup, no highlighting, no hard wrap), also on a terminal."""
    target.file.write(text)
    target.file.flush()


def say(message: str, target: Console | None = None) -> None:
    """One permanent line: a timestamped rich log line on a terminal, a plain `HH:MM:SS message` line otherwise."""
    target = target or console
    if target.is_terminal:
        target.log(Text(message), _stack_offset=2)
    else:
        write(target, f"{time.strftime('%H:%M:%S')} {message}\n")


def fields(data: dict[str, Any]) -> str:
    """An event's data as `key=value, ...` (containers as JSON)."""
    return ", ".join(f"{k}={_scalar(v)}" for k, v in data.items())


def duration(seconds: float | None) -> str:
    """45s, 3m10s, 1h05m."""
    if seconds is None:
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
