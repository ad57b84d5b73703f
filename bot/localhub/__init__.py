"""A Hub-compatible local server with persistent storage: the default publish target without HF_TOKEN, and the
test double for everything that talks to the Hub.

`serve_local_hub(root)` yields the URL of a server over `root`; `LocalHub` adds the request log, fault
injection (`hub.faults`) and seeding helpers (`hub.seed_model`, `hub.add_revision`) that tests use.
"""

from bot.localhub.faults import FaultInjector, LoggedRequest, RequestLog
from bot.localhub.server import LocalHub, serve_local_hub
from bot.localhub.common import StorageError
from bot.localhub.storage import HubStorage

__all__ = ["FaultInjector", "HubStorage", "LocalHub", "LoggedRequest", "RequestLog", "StorageError", "serve_local_hub"]
