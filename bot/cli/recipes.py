"""`bot recipes`: list the six recipes (with a user's overrides applied), or show one in full."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from bot.cli._output import out, print_table, write
from bot.recipes import load_recipes


def recipes(
    show: Optional[str] = typer.Option(None, "--show", help="Print one recipe in full (YAML)."),
    recipes_file: Optional[Path] = typer.Option(None, "--recipes-file", help="YAML with `overrides:` and `recipes:`."),
) -> None:
    """List the quantization recipes."""
    book = load_recipes(recipes_file)
    if show:
        # exactly the YAML (never wrapped), so it can be pasted into an overrides file
        write(out, yaml.safe_dump(book.get(show).model_dump(mode="json"), sort_keys=False, width=float("inf")))
        return
    rows = []
    for r in book:
        cal = f"{r.calibration.samples} x {r.calibration.seq_len}" if r.calibration else "none (data-free)"
        rows.append((r.id, r.suffix, r.scheme, r.algorithm, str(r.group_size or "channel"), cal,
                     f"sm{r.hardware.native_min_capability.replace('.', '')}", f">= {r.gate.min_mean_recovery:g}%"))
    print_table("Recipes", ("id", "repo suffix", "scheme", "algorithm", "group", "calibration", "vLLM native from",
                            "gate"), rows)


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)
