"""`bot publish [MODEL]`: the whole pipeline for one model, ending in Hub repos (or the local target).

With no MODEL it runs the embedded default: the bundled SmolLM2-135M-Instruct, published to the local Hub
target under the runs directory (open runs/_local_hub/index.html to see the repos and their cards)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bot.cli._common import parse_limit_option, settings_from_cli
from bot.cli._output import out, print_table, say, write
from bot.cli._progress import PipelineDisplay
from bot.config import LIMIT_VALUES
from bot.errors import ConfigError, StageError
from bot.rundir import RunDir


def publish(
    model: Optional[str] = typer.Argument(None, help="Hub id (org/name) or local directory; none: the bundled model."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision; pinned to its commit sha."),
    recipe: Optional[List[str]] = typer.Option(None, "--recipe", "-r", help="Recipe id (repeat); default all six."),
    recipes: Optional[str] = typer.Option(None, "--recipes", help="Comma-separated recipe ids (as the workflow passes)."),
    force: bool = typer.Option(False, "--force", help="Publish variants that failed the gate; the card says why."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run the stages, print the plan and cards, upload nothing."),
    target: Optional[str] = typer.Option(None, "--target", help="hub or local (default: hub with HF_TOKEN, else local)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Hub user or org to publish under."),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="Create private repos."),
    templates: Optional[Path] = typer.Option(None, "--templates", help="Directory with your own card templates."),
    watchlist: Optional[Path] = typer.Option(None, "--watchlist", help="Apply this watchlist's defaults and entry."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where run directories live (default: runs)."),
    recipes_file: Optional[Path] = typer.Option(None, "--recipes-file", help="YAML with recipe overrides/additions."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Local JSONL calibration data."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Calibration samples."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Calibration sequence length."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated lm-eval tasks."),
    limit: Optional[str] = typer.Option(None, "--limit", metavar="N|all", help=f"lm-eval samples per task: {LIMIT_VALUES}."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Validation backend: auto, vllm or hf."),
    device: Optional[str] = typer.Option(None, "--device", help="Quantize on auto, cpu or cuda."),
    full: bool = typer.Option(False, "--full", help="The bundled demo with all six recipes (no MODEL only)."),
    overlap: Optional[str] = typer.Option(None, "--overlap", metavar="auto|on|off",
                                          help="Validate each variant while the next ones quantize (auto: on a GPU)."),
    workers: Optional[str] = typer.Option(None, "--workers", metavar="N|auto",
                                          help="Quantize workers at once (auto: as many as the GPU's memory holds)."),
) -> None:
    """Quantize, validate, render cards and publish MODEL's variants."""
    from bot.stages.pipeline import publish_model

    cli = dict(
        runs_dir=runs_dir, recipes_file=recipes_file, calibration__file=calibration, calibration__samples=samples,
        calibration__seq_len=seq_len, validate__tasks=tasks.split(",") if tasks else None,
        validate__limit=parse_limit_option(limit), validate__backend=backend, device=device, hub_target=target,
        namespace=namespace, private=private, templates_dir=templates, pipeline__overlap=overlap,
        quantize_workers=workers,
    )
    demo = model is None
    if demo:  # the demo: its CPU-sized settings are the profile layer (env and flags still win)
        from bot.stages.demo import DEMO_PROFILE, bundled_model, demo_profile

        settings = settings_from_cli(watchlist, profile=(DEMO_PROFILE, demo_profile(full)), **cli)
        say("no model given: using the bundled SmolLM2-135M-Instruct (CPU-sized settings, "
            + ("all six recipes)" if full else "the quick demo: FP8-Dynamic; --full runs all six)"))
        model = str(bundled_model(settings))
    elif full:
        raise ConfigError("--full applies to the bundled demo only (bot publish with no MODEL)",
                          hint="drop --full, or choose recipes with -r")
    else:  # the watchlist's entry for MODEL (if any) is the profile layer
        settings = settings_from_cli(watchlist, model=model, **cli)
    chosen = list(recipe or []) + [r.strip() for r in (recipes or "").split(",") if r.strip()]
    with PipelineDisplay() as display:
        result = publish_model(model, revision, chosen or None, settings, force=force, dry_run=dry_run,
                               on_event=display.on_stage, quantize_events=display.on_quantize,
                               validate_events=display.on_validate)
    rows = [(v.variant, v.state, v.repo_id or "-", (v.commit or "-")[:12],
             v.reason or ("no change: nothing committed" if v.changed is False else "")) for v in result.variants]
    print_table(f"{result.model_id}@{result.revision[:12]}" + (" (dry run)" if dry_run else ""),
                ("variant", "state", "repo", "commit", "note"), rows)
    rundir = RunDir(result.run_dir)
    if rundir.timeline_chart_path.is_file():
        say(f"timeline of the run: {rundir.timeline_chart_path} (record: {rundir.timeline_path.name})")
    if dry_run:
        for v in result.variants:
            readme = rundir.card_dir(v.variant) / "README.md"
            if v.state == "planned" and readme.is_file():
                write(out, f"\n--- card for {v.repo_id} (not uploaded) ---\n{readme.read_text(encoding='utf-8')}\n")
    if settings.resolved_hub_target == "local" and not dry_run:
        say(f"local Hub target: {settings.local_hub_root() / 'index.html'}")
    if demo and not dry_run:  # the newcomer sees the status page too (`bot status --html DIR` anywhere else)
        from bot.stages.demo import status_site_dir
        from bot.stages.status_page.render import build_site

        index = build_site(settings, status_site_dir(settings))
        say(f"status page: {index}")
    if not result.published and not dry_run:
        why = "; ".join(f"{v.variant} {v.state}" + (f": {v.reason.splitlines()[0][:160]}" if v.reason else "")
                        for v in result.variants)
        raise StageError("publish", f"no variant was published ({why})" if why else "no variant was published",
                         hint="see the table above and `bot status`; rerun the same command to resume")


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
