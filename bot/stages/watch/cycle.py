"""One `bot watch` cycle with its real clients: the Hub client for the settings, the ledger under the runs
directory (in memory for a dry run that finds none, so a dry run writes nothing) and, for `dispatch`, the GitHub
dispatcher (made first, so a missing GITHUB_TOKEN fails before any work)."""

from __future__ import annotations

from pathlib import Path

from bot.config import SettingsLayers
from bot.ledger import LEDGER_FILE, Ledger
from bot.stages.watch.run import WatchResult, run_watch
from bot.watchlist import Watchlist


def watch_cycle(watchlist: Watchlist, layers: SettingsLayers, *, dispatch: bool = False, run: bool = False,
                dry_run: bool = False, ref: str = "main", limit: int | None = None) -> WatchResult:
    """Plan (and record, dispatch or run) one cycle; see `run_watch`."""
    from bot.clients.hub import make_hub_client

    settings = layers.merge()
    dispatcher = None
    if dispatch and not dry_run:
        from bot.clients.github import GitHubDispatcher

        dispatcher = GitHubDispatcher()
    client = make_hub_client(settings)
    path = Path(settings.runs_dir) / LEDGER_FILE
    with Ledger(":memory:" if dry_run and not path.exists() else path) as ledger:
        return run_watch(watchlist, client, ledger, layers, dispatch=dispatch, run=run, dry_run=dry_run, ref=ref,
                         limit=limit, dispatcher=dispatcher)
