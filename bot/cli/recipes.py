"""`bot recipes`: list the six recipes (with a user's overrides applied), or show one in full."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from bot.cli._common import out
from bot.recipes import load_recipes


def recipes(
    show: Optional[str] = typer.Option(None, "--show", help="Print one recipe in full (YAML)."),
    recipes_file: Optional[Path] = typer.Option(None, "--recipes-file", help="YAML with `overrides:` and `recipes:`."),
) -> None:
    """List the quantization recipes."""
    book = load_recipes(recipes_file)
    if show:
        out.print(yaml.safe_dump(book.get(show).model_dump(mode="json"), sort_keys=False), markup=False)
        return
    table = Table(title="Recipes")
    for col in ("id", "repo suffix", "scheme", "algorithm", "group", "calibration", "vLLM native from", "gate"):
        table.add_column(col)
    for r in book:
        cal = f"{r.calibration.samples} x {r.calibration.seq_len}" if r.calibration else "none (data-free)"
        table.add_row(r.id, r.suffix, r.scheme, r.algorithm, str(r.group_size or "channel"), cal,
                      f"sm{r.hardware.native_min_capability.replace('.', '')}", f">= {r.gate.min_mean_recovery:g}%")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)
