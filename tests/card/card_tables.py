"""Parse the Markdown tables of a rendered card (test helpers)."""

from __future__ import annotations

import re


def split_row(line: str) -> list[str]:
    """Cells of a Markdown pipe-table row; escaped pipes stay inside their cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip() for c in cells[1:-1]]


def md_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Every pipe table of a Markdown document, keyed by its first header cell, as rows of {header: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*-+\s*\|)+$", lines[i + 1]):
            header = split_row(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, split_row(lines[i]))))
                i += 1
            tables[header[0]] = rows
        else:
            i += 1
    return tables


def number(cell: str) -> float:
    """The leading number of a cell: "5.70 GB" -> 5.7, "98.28%" -> 98.28, "1.59× (CPU)" -> 1.59."""
    match = re.match(r"^-?[\d,]+(?:\.\d+)?", cell)
    assert match, f"no number in cell {cell!r}"
    return float(match.group(0).replace(",", ""))


def decimals(cell: str) -> int:
    """How many decimals the leading number of a cell shows (the precision to compare a manifest value at)."""
    match = re.match(r"^-?[\d,]+(?:\.(\d+))?", cell)
    assert match, f"no number in cell {cell!r}"
    return len(match.group(1) or "")
