"""The watch stage: new models and revisions of the watchlist's authors, checked and planned for publishing.

run (plan and dispatch) ; checks (per-model checks before anything is downloaded).
"""

from bot.stages.watch.run import WatchHub, WatchResult, run_watch

__all__ = ["WatchHub", "WatchResult", "run_watch"]
