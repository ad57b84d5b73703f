"""Shared CLI pieces: settings from the command line, the console, progress for worker events."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot.config import Settings, load_settings

console = Console(stderr=True)
out = Console()


def settings_from_cli(watchlist: Path | None = None, **cli: Any) -> Settings:
    """CLI values of None mean 'not given'. The watchlist's `defaults:` section is the layer below env."""
    defaults: dict[str, Any] = {}
    source = "settings"
    if watchlist is not None:
        from bot.watchlist import load_watchlist

        defaults = load_watchlist(watchlist).defaults_dict()
        source = str(watchlist)
    nested: dict[str, Any] = {}
    for key, value in cli.items():
        if value is None:
            continue
        node = nested
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return load_settings(watchlist_defaults=defaults, cli=nested, source=source)


@contextmanager
def worker_progress(label: str, total: int) -> Iterator[Any]:
    """A progress bar fed by a worker's JSON events ({"event": "start"|"end", "variant": ...})."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)

        def on_event(ev: dict) -> None:
            kind = ev.get("event")
            if kind == "start":
                progress.update(task, description=f"{label}: {ev.get('variant')}")
            elif kind == "end":
                progress.advance(task)
                status = ev.get("status")
                secs = ev.get("seconds")
                console.log(f"{ev.get('variant')}: {status}" + (f" in {secs:.1f}s" if isinstance(secs, (int, float)) else ""))
            elif kind == "load":
                progress.update(task, description=f"{label}: loading the base model")
            elif kind == "note":
                console.log(str(ev.get("message", "")))

        yield on_event
