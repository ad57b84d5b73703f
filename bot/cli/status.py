"""`bot status`: each model's variants, from the ledger and from the run directories' manifests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from bot.cli._output import out, print_table, write
from bot.config import Settings, load_settings
from bot.ledger import LEDGER_FILE, Ledger
from bot.rundir import RunDir
from bot.watchlist import load_watchlist


@dataclass(frozen=True)
class StatusRow:
    model_id: str
    revision: str
    variant: str
    ledger: str  # state in the ledger ("" when absent)
    run: str  # VariantManifest.state() of the run directory ("" when absent)
    reason: str
    run_dir: str


def _run_dirs(runs_dir: Path) -> list[RunDir]:
    if not runs_dir.is_dir():
        return []
    return [RunDir(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and "@" in p.name]


def collect_status(settings: Settings, model_id: str | None = None) -> list[StatusRow]:
    """Merge ledger rows and run-directory manifests, keyed by (model, revision prefix, variant)."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}

    def slot(model: str, revision: str, variant: str) -> dict[str, str]:
        key = (model, revision[:12], variant)
        return rows.setdefault(key, {"revision": revision, "ledger": "", "run": "", "reason": "", "run_dir": ""})

    ledger_path = Path(settings.runs_dir) / LEDGER_FILE
    if ledger_path.exists():
        with Ledger(ledger_path) as ledger:
            for m in ledger.models(model_id=model_id):
                if m.state != "skipped" or model_id is not None:
                    s = slot(m.model_id, m.revision, "-")
                    s.update(ledger=m.state, reason=m.reason)
            for v in ledger.variants(model_id):
                s = slot(v.model_id, v.revision, v.variant)
                s.update(ledger=v.state, reason=v.reason or s["reason"])
    for run in _run_dirs(Path(settings.runs_dir)):
        base = run.read_base()
        if base is None or (model_id is not None and base.base.model_id != model_id):
            continue
        for variant in run.variants():
            manifest = run.read_variant(variant)
            if manifest is None:
                continue
            s = slot(base.base.model_id, base.base.revision, variant)
            error = next((r.error for r in (manifest.publish, manifest.validate_, manifest.quantize)
                          if r is not None and r.error), None)
            s.update(run=manifest.state(), run_dir=str(run.root))
            if error:
                s["reason"] = error
    return [StatusRow(k[0], v["revision"], k[2], v["ledger"], v["run"], v["reason"], v["run_dir"])
            for k, v in sorted(rows.items())]


def status(
    model: Optional[str] = typer.Option(None, "--model", help="Only this model (org/name)."),
    watchlist: Path = typer.Option(Path("watchlist.yaml"), "--watchlist", envvar="BOT_WATCHLIST",
                                   help="Read its `defaults:` (runs_dir) when the file exists."),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where run directories and the ledger live."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="DIR",
                                        help="Also write the static status site into DIR (replaced whole)."),
) -> None:
    """Show each model's per-variant state (ledger and run directories)."""
    defaults = load_watchlist(watchlist).defaults if watchlist.is_file() else None
    settings = load_settings(watchlist_defaults=defaults, cli={"runs_dir": runs_dir} if runs_dir else None,
                             source=str(watchlist))
    if html is not None:
        from bot.stages.status_page.render import build_site

        index = build_site(settings, html)
        write(out, f"status site written: {index}")
    rows = collect_status(settings, model)
    if not rows:
        write(out, f"nothing recorded yet under {settings.runs_dir}" + (f" for {model}" if model else "") + "\n")
        return
    print_table(f"status ({settings.runs_dir})", ("model", "revision", "variant", "ledger", "run dir", "reason"),
                [(r.model_id, r.revision[:12], r.variant, r.ledger, r.run, r.reason) for r in rows])


def register(app: typer.Typer) -> None:
    app.command("status")(status)
