"""`bot quantize MODEL --recipe ID`: one or more quantized variants into the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bot.cli._common import settings_from_cli
from bot.cli._output import print_table, say
from bot.cli._progress import QuantizeDisplay
from bot.errors import StageError
from bot.manifest import Status
from bot.recipes import load_recipes
from bot.stages.model import resolve_model
from bot.stages.quantize import quantize_run


def quantize(
    model: str = typer.Argument(..., help="Hub id (org/name) or a local model directory."),
    recipe: Optional[List[str]] = typer.Option(None, "--recipe", "-r", help="Recipe id; repeat for several (default: all six)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<org>--<name>@<sha>)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision (branch, tag or sha); pinned to its sha."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Local JSONL calibration data (text or messages)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Calibration samples (default: the recipe's)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Calibration sequence length (default: the recipe's)."),
    calibration_batch_size: Optional[int] = typer.Option(
        None, "--calibration-batch-size", min=1, max=512,
        help="Samples per calibration forward pass (default 1; higher is faster on a GPU, each batch is cut to its "
             "shortest row)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    recipes_file: Optional[Path] = typer.Option(None, "--recipes-file", help="YAML with recipe overrides/additions."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where run directories live (default: runs)."),
    watchlist: Optional[Path] = typer.Option(None, "--watchlist", help="Take defaults (and trust_remote_code) from it."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=16,
                                          help="Quantize worker processes at once (each loads the base; default 1)."),
    force: bool = typer.Option(False, "--force", help="Redo variants that are already complete."),
) -> None:
    """Quantize MODEL with llm-compressor into compressed-tensors checkpoints."""
    settings = settings_from_cli(
        watchlist, runs_dir=runs_dir, device=device, recipes_file=recipes_file,
        calibration__file=calibration, calibration__samples=samples, calibration__seq_len=seq_len,
        quantize_workers=workers, calibration__batch_size=calibration_batch_size,
    )
    chosen = load_recipes(settings.recipes_file).select(recipe or settings.recipes)
    rundir, base = resolve_model(model, revision, settings, run_dir=out_dir)
    say(f"{base.base.model_id}@{base.base.revision[:12]} ({base.base.architecture}, "
                f"{(base.base.num_params or 0) / 1e6:.0f}M params) -> {rundir.root}")
    with rundir.lock(settings.lock_ttl_s, owner="quantize"), QuantizeDisplay(len(chosen)) as on_event:
        outcomes = quantize_run(rundir, base, chosen, settings, force=force, on_event=on_event)
    rows = []
    for o in outcomes:
        m = rundir.read_variant(o.variant)
        q = m.quantize if m else None
        note = "already complete" if o.skipped else (o.error or "").strip().splitlines()[0] if o.error else ""
        rows.append((o.variant, o.status.value, f"{q.wall_time_s:.1f}" if q and q.wall_time_s else "-",
                     f"{q.size_bytes / 1e6:.1f}" if q and q.size_bytes else "-", note))
    print_table(f"Quantized variants of {base.base.model_id}", ("variant", "status", "time (s)", "size (MB)", "note"),
                rows)
    failed = [o.variant for o in outcomes if o.status == Status.failed]
    if failed:
        raise StageError("quantize", f"{len(failed)} variant(s) failed: {', '.join(failed)}",
                         hint=f"see {rundir.logs_dir / 'quantize.log'}; rerun the same command to retry them")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
