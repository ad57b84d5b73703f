"""`bot card RUN_DIR [--variant ID] [--templates DIR]`: render model cards from a run directory's manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bot.cli._common import settings_from_cli
from bot.errors import StageError
from bot.rundir import RunDir


def register(app: typer.Typer) -> None:
    @app.command("card")
    def card(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/<org>--<name>@<sha>).", exists=True,
                                       file_okay=False),
        variant: Optional[str] = typer.Option(None, "--variant", help="Render this variant only (default: all)."),
        templates: Optional[Path] = typer.Option(None, "--templates", help="Directory with variant.md.j2 and "
                                                 "collection.md.j2 (default: the bundled templates/).",
                                                 file_okay=False),
        watchlist: Optional[Path] = typer.Option(None, "--watchlist", help="Take settings (namespace, repo_name, "
                                                 "...) from this watchlist's defaults."),
    ) -> None:
        """Render README.md, the chart and provenance files into each variant's card/ directory."""
        from bot.stages.card.render import render_cards

        rundir = RunDir(run_dir)
        settings = settings_from_cli(watchlist=watchlist, templates_dir=templates)
        with rundir.lock(ttl_s=settings.lock_ttl_s, owner="bot card"):
            outcomes = render_cards(rundir, settings, variant=variant, templates_dir=templates)
        failed: list[StageError] = []
        for o in outcomes:
            if o.record is not None:
                typer.echo(f"{o.variant}: {rundir.card_dir(o.variant) / 'README.md'} ({len(o.record.files)} files, "
                           f"for {o.record.repo_id})")
                for note in o.record.notes:
                    typer.echo(f"  note: {note}")
            elif o.skipped:
                typer.echo(f"{o.variant}: skipped ({o.skipped})")
            elif o.error is not None:
                typer.echo(f"{o.variant}: failed: {o.error.one_line()}", err=True)
                if isinstance(o.error, StageError):
                    failed.append(o.error)
        if failed:
            raise StageError("card", f"{len(failed)} of {len(outcomes)} cards failed",
                             hint="see the lines above; each variant manifest's card section has the details")
