"""A second, minimal Hub server for tests: in memory, werkzeug, a thread on port 0, a request log.

Independent of `bot.localhub` on purpose (a test of publishing must not rely on the bot's own server agreeing with
the bot's own client). It speaks just what huggingface_hub calls for publishing (see
shared/notes/hub-protocol.md): create_repo, model_info, list_repo_tree, preupload + validate-yaml + NDJSON commit
(every file "regular", base64 in the commit), and collections (create, get, add item, update item). A new repo
holds one commit with `.gitattributes`, as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    title: str
    files: dict[str, bytes]  # the whole tree after this commit
    changed: list[str]


@dataclass
class Repo:
    commits: list[Commit] = field(default_factory=list)  # oldest first

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class _Error(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


class MiniHub:
    """`with MiniHub() as hub:` serves on `hub.url`; `hub.log` lists (method, path) of every request."""

    def __init__(self, user: str = "tester") -> None:
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.collections: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._map = Map([
            Rule("/api/repos/create", endpoint="create_repo", methods=["POST"]),
            Rule("/api/validate-yaml", endpoint="validate_yaml", methods=["POST"]),
            Rule("/api/models/<ns>/<name>", endpoint="model_info", methods=["GET"]),
            Rule("/api/models/<ns>/<name>/revision/<rev>", endpoint="model_info", methods=["GET"]),
            Rule("/api/models/<ns>/<name>/tree/<rev>", endpoint="tree", methods=["GET"]),
            Rule("/api/models/<ns>/<name>/tree/<rev>/<path:path>", endpoint="tree", methods=["GET"]),
            Rule("/api/models/<ns>/<name>/preupload/<rev>", endpoint="preupload", methods=["POST"]),
            Rule("/api/models/<ns>/<name>/commit/<rev>", endpoint="commit", methods=["POST"]),
            Rule("/api/collections", endpoint="collection_create", methods=["POST"]),
            Rule("/api/collections/<ns>/<slug>", endpoint="collection_get", methods=["GET"]),
            Rule("/api/collections/<ns>/<slug>/items", endpoint="collection_add", methods=["POST"]),
            Rule("/api/collections/<ns>/<slug>/items/<item>", endpoint="collection_update", methods=["PATCH"]),
        ])
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "MiniHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)

    # ------------------------------------------------------------ what tests read
    def commit_requests(self) -> int:
        return sum(1 for method, path in self.log if method == "POST" and "/commit/" in path)

    def heads(self) -> dict[str, str]:
        return {repo_id: repo.head.sha for repo_id, repo in self.repos.items()}

    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].head.files)

    # ------------------------------------------------------------ the WSGI app
    def _app(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.log.append((request.method, request.path))
            try:
                endpoint, args = self._map.bind_to_environ(environ).match()
                response = getattr(self, f"_{endpoint}")(request, **args)
            except _Error as exc:
                response = _json({"error": exc.message, **exc.extra}, exc.status)
                response.headers["X-Error-Message"] = exc.message
            except NotFound:
                response = _json({"error": f"{request.path} not found"}, 404)
            except HTTPException as exc:
                response = _json({"error": str(exc)}, exc.code or 500)
        return response(environ, start_response)

    def _repo(self, ns: str, name: str) -> tuple[str, Repo]:
        repo_id = f"{ns}/{name}"
        if repo_id not in self.repos:
            raise _Error(404, f"Repository {repo_id} not found")
        return repo_id, self.repos[repo_id]

    def _new_commit(self, repo: Repo, title: str, files: dict[str, bytes], changed: list[str]) -> Commit:
        sha = hashlib.sha1(f"{len(repo.commits)}:{title}:{time.time_ns()}".encode()).hexdigest()
        commit = Commit(sha, title, files, changed)
        repo.commits.append(commit)
        return commit

    def _create_repo(self, request: Request) -> Response:
        body = request.get_json()
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            raise _Error(409, "You already created this model repo", url=url)
        repo = self.repos[repo_id] = Repo()
        self._new_commit(repo, "initial commit", {".gitattributes": GITATTRIBUTES}, [".gitattributes"])
        return _json({"url": url, "name": repo_id})

    def _validate_yaml(self, request: Request) -> Response:
        return _json({"errors": [], "warnings": []})

    def _model_info(self, request: Request, ns: str, name: str, rev: str = "main") -> Response:
        repo_id, repo = self._repo(ns, name)
        head = repo.head
        return _json({"id": repo_id, "modelId": repo_id, "sha": head.sha, "private": False, "disabled": False,
                      "gated": False, "downloads": 0, "likes": 0, "tags": [], "createdAt": "2026-01-01T00:00:00.000Z",
                      "lastModified": "2026-01-01T00:00:00.000Z",
                      "siblings": [{"rfilename": p} for p in sorted(head.files)]})

    def _tree(self, request: Request, ns: str, name: str, rev: str, path: str = "") -> Response:
        _, repo = self._repo(ns, name)
        commit = next((c for c in repo.commits if c.sha == rev), repo.head if rev == "main" else None)
        if commit is None:
            raise _Error(404, f"Revision {rev} not found")
        return _json([{"type": "file", "path": p, "size": len(data), "oid": git_oid(data)}
                      for p, data in sorted(commit.files.items()) if p.startswith(path)])

    def _preupload(self, request: Request, ns: str, name: str, rev: str) -> Response:
        self._repo(ns, name)
        files = request.get_json().get("files", [])
        return _json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                for f in files]})

    def _commit(self, request: Request, ns: str, name: str, rev: str) -> Response:
        repo_id, repo = self._repo(ns, name)
        header: dict[str, Any] = {}
        files = dict(repo.head.files)
        changed: list[str] = []
        for raw in request.get_data().splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                files[value["path"]] = (base64.b64decode(content) if value.get("encoding") == "base64"
                                        else content.encode())
                changed.append(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
                changed.append(value["path"])
            else:
                raise _Error(400, f"the minimal Hub does not take '{key}' operations")
        parent = header.get("parentCommit")
        if parent and parent != repo.head.sha:
            raise _Error(412, f"parent commit {parent} is not the head of {repo_id}")
        commit = self._new_commit(repo, header.get("summary", ""), files, changed)
        return _json({"commitOid": commit.sha, "commitUrl": f"{self.url}/{repo_id}/commit/{commit.sha}",
                      "pullRequestUrl": None})

    # ------------------------------------------------------------ collections
    def _collection(self, slug: str) -> dict[str, Any]:
        if slug not in self.collections:
            raise _Error(404, f"Collection {slug} not found")
        return self.collections[slug]

    def _collection_create(self, request: Request) -> Response:
        body = request.get_json()
        namespace = body.get("namespace") or self.user
        for slug, data in self.collections.items():
            if data["owner"]["name"] == namespace and data["title"] == body["title"]:
                raise _Error(409, "You already have a collection with this title", slug=slug)
        slug = f"{namespace}/{hashlib.sha1(body['title'].encode()).hexdigest()[:12]}"
        self.collections[slug] = {
            "slug": slug, "title": body["title"], "description": body.get("description"),
            "owner": {"name": namespace, "type": "user"}, "items": [], "lastUpdated": "2026-01-01T00:00:00.000Z",
            "position": 0, "private": bool(body.get("private")), "theme": "default", "upvotes": 0,
        }
        return _json(self.collections[slug])

    def _collection_get(self, request: Request, ns: str, slug: str) -> Response:
        return _json(self._collection(f"{ns}/{slug}"))

    def _collection_add(self, request: Request, ns: str, slug: str) -> Response:
        data = self._collection(f"{ns}/{slug}")
        body = request.get_json()
        item = body["item"]
        if any(i["id"] == item["id"] for i in data["items"]):
            raise _Error(409, "Item already in the collection")
        note = body.get("note")
        data["items"].append({"_id": hashlib.sha1(item["id"].encode()).hexdigest()[:24], "id": item["id"],
                              "type": item.get("type", "model"), "position": len(data["items"]),
                              **({"note": {"text": note, "html": note}} if note is not None else {})})
        return _json(data)

    def _collection_update(self, request: Request, ns: str, slug: str, item: str) -> Response:
        data = self._collection(f"{ns}/{slug}")
        body = request.get_json()
        for entry in data["items"]:
            if entry["_id"] == item:
                if body.get("note") is not None:
                    entry["note"] = {"text": body["note"], "html": body["note"]}
                return _json(data)
        raise _Error(404, f"Item {item} not found")
