"""`bot validate RUN_DIR`: measure the base and each quantized variant (load, generations, speed, lm-eval), compare
them and apply the quality gate; the facts go into the run directory's manifests."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich import box

from bot.cli._common import parse_limit_option, settings_from_cli
from bot.cli._output import out, print_table, write
from bot.cli._progress import ValidateDisplay
from bot.config import LIMIT_VALUES, Settings
from bot.errors import ConfigError, ModelError, StageError
from bot.manifest import Status, VariantValidateRecord
from bot.present import recovery_text
from bot.rundir import RunDir
from bot.stages.validate.run import validate_run


def _parse_tasks(tasks: str | None) -> list[str] | None:
    if tasks is None:
        return None
    if tasks.strip().lower() == "none":
        return []  # measure load, generations and speed only; the card says accuracy was not measured
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks needs at least one task name", hint="e.g. --tasks bot_mc_facts,bot_wikitext_mini")
    return names


def _settings(watchlist: Path | None, backend: str | None, tasks: str | None, limit: str | None,
              serve_python: str | None, device: str | None, recipes_file: Path | None) -> Settings:
    return settings_from_cli(watchlist, serve_python=serve_python, device=device, recipes_file=recipes_file,
                             validate__backend=backend, validate__tasks=_parse_tasks(tasks),
                             validate__limit=parse_limit_option(limit))


def _pct(value: float | None) -> str:
    return f"{value:.1f}%" if value is not None else "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


COLUMNS = ("variant", "state", "gen ok", "recovery", "bs1", "batched", "size", "hw")


def _summary(rundir: RunDir, records: list[tuple[str, VariantValidateRecord]]) -> tuple[str, list[tuple], list[str]]:
    """The table's title and rows, and one line per variant that was rejected, failed or skipped (the reasons are
    long)."""
    labels = sorted({rec.speed.label for _n, rec in records if rec.speed is not None})
    title = f"Validation of {rundir.run_id}" + (f" (speed: {', '.join(labels)})" if labels else "")
    rows: list[tuple] = []
    notes: list[str] = []
    for name, rec in records:
        manifest = rundir.read_variant(name)
        state = manifest.state() if manifest else rec.status.value
        comp, gate = rec.comparison, rec.gate
        gens = f"{sum(g.ok for g in rec.generations)}/{len(rec.generations)}" if rec.generations else "-"
        verdict = getattr(rec, "hardware_verdict", None)
        hw = verdict.status.replace("not-checked", "-") if verdict is not None else "-"
        rows.append((name, state, gens, recovery_text(comp),
                     _ratio(comp.speedup_batch1 if comp else None), _ratio(comp.speedup_batched if comp else None),
                     _ratio(comp.size_ratio if comp else None), hw))
        if gate is not None and not gate.passed:
            notes.append(f"{name}: {gate.outcome.value} (gate {gate.threshold:.1f}%): {'; '.join(gate.reasons)}")
        elif rec.status in (Status.failed, Status.skipped) and rec.error:
            notes.append(f"{name}: {rec.status.value}: {rec.error.splitlines()[0]}")
    return title, rows, notes


def validate(
    run_dir: Path = typer.Argument(..., help="Run directory made by `bot quantize` (runs/<org>--<name>@<sha>)."),
    variant: Optional[List[str]] = typer.Option(None, "--variant", "-v", help="Variant (recipe id); repeat for several (default: all)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto (vLLM when the serve env has it and a GPU), vllm or hf."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated lm-eval tasks (default: the settings' suite; the bundled tasks on CPU)."),
    limit: Optional[str] = typer.Option(None, "--limit", metavar="N|all", help=f"Samples per task: {LIMIT_VALUES} (the whole task)."),
    force: bool = typer.Option(False, "--force", help="Validate again what is already validated (the base too)."),
    serve_python: Optional[str] = typer.Option(None, "--serve-python", help="Interpreter with vLLM/lm-eval (BOT_SERVE_PYTHON)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    recipes_file: Optional[Path] = typer.Option(None, "--recipes-file", help="YAML with recipe overrides (gate thresholds)."),
    watchlist: Optional[Path] = typer.Option(None, "--watchlist", help="Take defaults from it."),
) -> None:
    """Validate RUN_DIR's variants against its base: loads, generates, speed, lm-eval recovery, quality gate."""
    if backend is not None and backend not in ("auto", "vllm", "hf"):
        raise ConfigError(f"--backend must be auto, vllm or hf (got {backend!r})")
    settings = _settings(watchlist, backend, tasks, limit, serve_python, device, recipes_file)
    rundir = RunDir(run_dir)
    if not (rundir.base_dir / "manifest.json").is_file():
        raise ModelError(f"{run_dir} is not a run directory (no base/manifest.json)",
                         hint="pass a directory made by `bot quantize`, e.g. runs/<org>--<name>@<sha>")
    with ValidateDisplay() as on_event, rundir.lock(settings.lock_ttl_s, owner="validate"):
        records = validate_run(rundir, settings, variant or None, force, on_event=on_event)
    names = variant or rundir.variants()
    pairs = list(zip(list(dict.fromkeys(names)), records))
    title, rows, notes = _summary(rundir, pairs)
    print_table(title, COLUMNS, rows, box=box.SIMPLE_HEAD)
    if notes:
        write(out, "".join(f"{note}\n" for note in notes))
    failed = [name for name, rec in pairs if rec.status == Status.failed]
    if failed:
        raise StageError("validate", f"{len(failed)} variant(s) failed: {', '.join(failed)}",
                         hint=f"see {rundir.logs_dir}/validate-<variant>.log; rerun the same command to resume")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
