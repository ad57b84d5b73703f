"""The local Hub as the tests use it: `bot.localhub.LocalHub` with a request log (`hub.log`), fault injection
(`hub.faults`) and seeding helpers (`hub.seed_model`, `hub.add_revision`), handed to the server as its optional
`hooks` object; the product's server imports nothing from here.

Importable from any test module: tests/conftest.py's directory is on sys.path (pytest's rootdir conftest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bot.localhub import HubStorage, Intercept, LoggedRequest, serve_local_hub
from bot.localhub import LocalHub as _ServerHub

from . import faults, seed
from .faults import FaultInjector, RequestLog
from .seed import FileContent, card_text

__all__ = ["FaultInjector", "HubStorage", "LocalHub", "LoggedRequest", "RequestLog", "card_text", "faults", "seed",
           "serve_local_hub"]


class _Hooks:
    """The server's `RequestHooks`: faults decide, the log records (looked up per call, so tests may wrap it)."""

    def __init__(self, hub: "LocalHub") -> None:
        self._hub = hub

    def intercept(self, method: str, path: str) -> Intercept | None:
        return self._hub.faults.intercept(method, path)

    def seen(self, request: LoggedRequest) -> None:
        self._hub.log.add(request)


class LocalHub(_ServerHub):
    """A local Hub server with the tests' request log, fault injection and seeding."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.log = RequestLog()
        self.faults = FaultInjector()
        super().__init__(root, hooks=_Hooks(self), **kwargs)

    def seed_model(self, repo_id: str, **kwargs: Any) -> str:
        """See `seed.seed_model`; returns the commit sha."""
        return seed.seed_model(self.storage, repo_id, **kwargs)

    def add_revision(self, repo_id: str, files: Mapping[str, FileContent] | None = None, **kwargs: Any) -> str:
        """See `seed.add_revision`; returns the commit sha."""
        return seed.add_revision(self.storage, repo_id, files, **kwargs)
