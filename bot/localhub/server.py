"""The local Hub server: routing and auth around `api.py`, run in a thread.

`serve_local_hub(root)` is the product's embedded publish target. Tests build `LocalHub` with a `hooks` object
(bot.localhub.hooks) that records the requests and injects faults; the server itself carries no test code.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from bot.localhub import api
from bot.localhub.api import Ctx, HubConfig, error_response
from bot.localhub.hooks import Intercept, LoggedRequest, RequestHooks, summarize
from bot.localhub.index import write_index
from bot.localhub.storage import HubStorage, StorageError

log = logging.getLogger(__name__)

_M = "/api/models/<ns>/<name>"
_JSON_TYPES = ("application/json", "application/vnd.git-lfs+json")


def _rules() -> list[Rule]:
    return [
        Rule("/", endpoint="index"),
        Rule("/repos/<path:path>", endpoint="browse"),
        Rule("/api/whoami-v2", endpoint="whoami"),
        Rule("/api/repos/create", methods=["POST"], endpoint="repo_create"),
        Rule("/api/validate-yaml", methods=["POST"], endpoint="validate_yaml"),
        Rule("/api/models", methods=["GET"], endpoint="list_models"),
        Rule(_M, methods=["GET"], endpoint="model_info"),
        Rule(f"{_M}/revision/<path:rev>", methods=["GET"], endpoint="model_info"),
        Rule(f"{_M}/preupload/<rev>", methods=["POST"], endpoint="preupload"),
        Rule(f"{_M}/commit/<rev>", methods=["POST"], endpoint="commit"),
        Rule(f"{_M}/tree/<rev>", methods=["GET"], endpoint="tree"),
        Rule(f"{_M}/tree/<rev>/<path:path>", methods=["GET"], endpoint="tree"),
        Rule(f"{_M}/refs", methods=["GET"], endpoint="refs"),
        Rule(f"{_M}/commits/<rev>", methods=["GET"], endpoint="commits"),
        Rule(f"{_M}/tag/<rev>", methods=["POST"], endpoint="create_tag"),
        Rule(f"{_M}/settings", methods=["PUT"], endpoint="settings"),
        Rule("/api/collections", methods=["GET"], endpoint="collections_list"),
        Rule("/api/collections", methods=["POST"], endpoint="collection_create"),
        Rule("/api/collections/<ns>/<slug>", methods=["GET"], endpoint="collection_get"),
        Rule("/api/collections/<ns>/<slug>/items", methods=["POST"], endpoint="collection_add"),
        Rule("/api/collections/<ns>/<slug>/items/<item>", methods=["PATCH"], endpoint="collection_update_item"),
        Rule("/<ns>/<repo_git>/info/lfs/objects/batch", methods=["POST"], endpoint="lfs_batch"),
        Rule("/_lfs/<ns>/<name>/<oid>", methods=["PUT"], endpoint="lfs_put"),
        Rule("/<ns>/<name>/resolve/<rev>/<path:path>", methods=["GET", "HEAD"], endpoint="resolve"),
    ]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, self.path, code)

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 - werkzeug's signature
        log.debug(message, *args)


class LocalHub:
    """A Hub-compatible server over `HubStorage(root)`. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        root: Path,
        *,
        tokens: Mapping[str, str] | None = None,
        default_user: str = "bot-local",
        lfs_threshold: int | None = None,
        lfs_patterns: tuple[str, ...] = (),
        hooks: RequestHooks | None = None,
    ) -> None:
        self.storage = HubStorage(Path(root), on_change=write_index)
        self.config = HubConfig(dict(tokens) if tokens is not None else None, default_user, lfs_threshold,
                                tuple(lfs_patterns), secrets.token_bytes(16))
        self.hooks = hooks
        self._map = Map(_rules())
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        write_index(self.storage)

    # ------------------------------------------------------------ lifecycle
    @property
    def root(self) -> Path:
        return self.storage.root

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local Hub is not running")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = make_server(host, port, self.wsgi, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-hub", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "LocalHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ reading the storage (no HTTP)
    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.storage.resolve(repo_id, branch)

    def commits(self, repo_id: str) -> list[Any]:
        """Commits on main, newest first (`storage.Commit` objects)."""
        return self.storage.history(repo_id, self.head(repo_id))

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.storage.get_commit(repo_id, self.storage.resolve(repo_id, revision))
        return {p: self.storage.blob_path(repo_id, e.sha256).read_bytes() for p, e in commit.files.items()}

    # ------------------------------------------------------------ WSGI
    def _user(self, request: Request) -> tuple[str | None, bool]:
        """(user name, token valid). No token: anonymous, valid."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            return None, True
        if self.config.tokens is None:
            return self.config.default_user, True
        user = self.config.tokens.get(token)
        return user, user is not None

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        user, token_ok = self._user(request)
        body: Any = None
        if request.method in ("POST", "PUT", "PATCH") and request.mimetype in _JSON_TYPES:
            try:
                body = json.loads(request.get_data() or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
        ctx = Ctx(request, self.storage, self.config, user, body, summarize(body) if self.hooks else None)
        fault: Intercept | None = self.hooks.intercept(request.method, request.path) if self.hooks else None
        if fault is not None and fault.drop:
            if fault.after_handling:  # the request takes effect, its answer is lost
                self._dispatch(ctx)
            self._record(ctx, None)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("connection dropped by fault injection")
        if fault is not None:
            response = error_response(fault.status or 500, fault.message, retry_after=fault.retry_after)
        elif not token_ok:
            response = error_response(401, "Invalid credentials in Authorization header")
        else:
            response = self._dispatch(ctx)
        self._record(ctx, response.status_code)
        return response(environ, start_response)

    def _dispatch(self, ctx: Ctx) -> Response:
        adapter = self._map.bind_to_environ(ctx.request.environ)
        try:
            endpoint, args = adapter.match()
            if endpoint == "index":
                write_index(self.storage)
                return send_from_directory(self.storage.root, "index.html", ctx.request.environ)
            if endpoint == "browse":
                return send_from_directory(self.storage.root / "repos", args["path"], ctx.request.environ)
            return getattr(api, endpoint)(ctx, **args)
        except StorageError as exc:
            return error_response(exc.status, exc.message, exc.code)
        except HTTPException as exc:
            return error_response(exc.code or 500, exc.description or exc.name)
        except (KeyError, ValueError, TypeError) as exc:
            return error_response(400, f"bad request: {type(exc).__name__}: {exc}")
        except OSError as exc:
            log.exception("local hub: %s %s failed", ctx.request.method, ctx.request.path)
            return error_response(500, f"internal error: {exc}")

    def _record(self, ctx: Ctx, status: int | None) -> None:
        if self.hooks is None:
            return
        headers = {k: v for k, v in ctx.request.headers.items() if k.lower() not in ("authorization", "cookie")}
        self.hooks.seen(LoggedRequest(ctx.request.method, ctx.request.path, ctx.request.args.to_dict(flat=False), headers,
                                   ctx.summary, status, ctx.user))


@contextmanager
def serve_local_hub(root: Path, **kwargs: Any) -> Iterator[str]:
    """Run a local Hub over `root` (created if missing) on 127.0.0.1, a free port; yield its URL."""
    os.makedirs(root, exist_ok=True)
    hub = LocalHub(Path(root), **kwargs)
    hub.start()
    try:
        yield hub.url
    finally:
        hub.stop()
