"""A Hub-compatible local server with persistent storage: the default publish target without HF_TOKEN, and what
the tests run the real huggingface_hub client against.

`serve_local_hub(root)` yields the URL of a server over `root`. `LocalHub(root, hooks=...)` takes an optional
`RequestHooks` object that sees each request and may make it fail; the tests' (request log, fault injection,
seeding) live in tests/localhub_support.
"""

from bot.localhub.common import StorageError
from bot.localhub.hooks import Intercept, LoggedRequest, RequestHooks
from bot.localhub.server import LocalHub, serve_local_hub
from bot.localhub.storage import HubStorage

__all__ = ["HubStorage", "Intercept", "LocalHub", "LoggedRequest", "RequestHooks", "StorageError", "serve_local_hub"]
