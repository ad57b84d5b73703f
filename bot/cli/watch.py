"""`bot watch`: one watch cycle (plan, record, and optionally dispatch or run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from bot.cli._common import parse_limit_option
from bot.cli._output import print_table, write
from bot.config import LIMIT_VALUES, WHOLE_TASK
from bot.errors import ConfigError
from bot.stages.watch.cycle import watch_cycle
from bot.stages.watch.run import WatchResult
from bot.watchlist import load_watchlist

_STYLE = {"new": "green", "new-revision": "cyan", "skip": "dim"}


def _params(params_b: float | None) -> str:
    if params_b is None:
        return ""
    return f"{params_b:.1f}B" if params_b >= 0.1 else f"{params_b * 1000:.1f}M" if params_b >= 1e-4 else "<0.1M"


def render(result: WatchResult, console: Console) -> None:
    """The plan as a table, then what was done."""
    rows = [(cand.model_id, (cand.revision or "")[:12], Text(cand.decision, style=_STYLE.get(cand.decision, "")),
             ",".join(cand.recipes) if cand.queued else "", _params(cand.params_b), cand.reason)
            for cand in result.plan.candidates]
    print_table("watch plan", ("model", "revision", "decision", "recipes", "params", "reason"), rows, target=console)
    queued, skipped = len(result.plan.queued), len(result.plan.skipped)
    lines = [f"{queued} to publish, {skipped} skipped"]
    for action in result.actions:
        line = f"{action.kind}: {action.model_id}@{(action.revision or '')[:12]}"
        lines.append(line + (f" ({action.detail})" if action.detail else ""))
    write(console, "".join(f"{line}\n" for line in lines))


def watch(
    watchlist: Path = typer.Option(Path("watchlist.yaml"), "--watchlist", envvar="BOT_WATCHLIST",
                                   help="The watchlist file."),
    dispatch: bool = typer.Option(False, "--dispatch", help="Dispatch publish.yml on GitHub Actions per model."),
    run: bool = typer.Option(False, "--run", help="Run the pipeline here, one model after another."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; write, dispatch and run nothing."),
    ref: str = typer.Option("main", "--ref", help="Git ref that publish.yml runs on."),
    limit: Optional[str] = typer.Option(None, "--limit", metavar="N|all",
                                        help=f"Dispatch or run at most N models ({LIMIT_VALUES}, default all); "
                                             "the rest wait for the next cycle."),
) -> None:
    """Look for new models and new revisions of the watched authors; dispatch or run the publishing."""
    if dispatch and run:
        raise ConfigError("--dispatch and --run exclude each other", hint="pick one")
    most = parse_limit_option(limit)
    wl = load_watchlist(watchlist)
    result = watch_cycle(wl, wl.layers(), dispatch=dispatch, run=run, dry_run=dry_run, ref=ref,
                         limit=None if most == WHOLE_TASK else most)
    render(result, Console())
    if result.failed:
        raise typer.Exit(code=5)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
