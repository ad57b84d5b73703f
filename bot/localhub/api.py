"""Endpoint handlers of the local Hub. Each takes a `Ctx` and the URL arguments and returns a Response."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import yaml
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from bot.localhub.storage import DEFAULT_BRANCH, AddOp, DeleteOp, HubStorage, StorageError
from bot.localhub.views import commit_json, model_json, tree_json


@dataclass
class HubConfig:
    """Server behaviour. `tokens` maps token -> user name (None: any token is `default_user`)."""

    tokens: dict[str, str] | None = None
    default_user: str = "bot-local"
    lfs_threshold: int | None = None  # files this large (bytes) or larger are answered "lfs" in preupload
    lfs_patterns: tuple[str, ...] = ()
    secret: bytes = b""


@dataclass
class Ctx:
    request: Request
    storage: HubStorage
    config: HubConfig
    user: str | None
    body: Any = None  # parsed JSON body, if any
    summary: Any = field(default=None)  # what the request log records for the body

    @property
    def base_url(self) -> str:
        return self.request.host_url.rstrip("/")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, mimetype="application/json")


def error_response(status: int, message: str, code: str | None = None, retry_after: float | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return json_response({"error": message, **(extra or {})}, status, headers)


def require_user(ctx: Ctx) -> str:
    if ctx.user is None:
        raise StorageError(401, "You must be authenticated to do this (send a token)")
    return ctx.user


def _readable(ctx: Ctx, repo_id: str) -> dict[str, Any]:
    meta = ctx.storage.meta(repo_id)
    if meta.get("private") and ctx.user is None:
        raise StorageError(401, f"Repository {repo_id} not found", "RepoNotFound")
    return meta


def _rid(ns: str, name: str) -> str:
    return f"{ns}/{name}"


# ---------------------------------------------------------------- account and repos


def whoami(ctx: Ctx) -> Response:
    user = require_user(ctx)
    return json_response({"type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user,
                          "fullname": user, "orgs": [],
                          "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}})


def repo_create(ctx: Ctx) -> Response:
    user = require_user(ctx)
    body = ctx.body or {}
    if body.get("type", "model") != "model":
        raise StorageError(400, "the local Hub only holds model repos")
    repo_id = f"{body.get('organization') or user}/{body['name']}"
    private = body.get("private") is True or body.get("visibility") == "private"
    url = f"{ctx.base_url}/{repo_id}"
    if not ctx.storage.create_repo(repo_id, private=private, author=user):
        return error_response(409, "You already created this model repo", extra={"url": url})
    return json_response({"url": url, "name": repo_id, "id": repo_id})


def validate_yaml(ctx: Ctx) -> Response:
    content = (ctx.body or {}).get("content", "")
    if content.startswith("---"):
        end = content.find("\n---", 3)
        try:
            data = yaml.safe_load(content[3:end] if end > 0 else "")
        except yaml.YAMLError as exc:
            return json_response({"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, 400)
        if data is not None and not isinstance(data, dict):
            return json_response({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, 400)
    return json_response({"errors": [], "warnings": []})


def model_info(ctx: Ctx, ns: str, name: str, rev: str | None = None) -> Response:
    repo_id = _rid(ns, name)
    _readable(ctx, repo_id)
    sha = ctx.storage.resolve(repo_id, rev or DEFAULT_BRANCH)
    blobs = ctx.request.args.get("blobs", "").lower() in ("1", "true")
    return json_response(model_json(ctx.storage, repo_id, sha, blobs=blobs))


def list_models(ctx: Ctx) -> Response:
    args = ctx.request.args
    author, search = args.get("author"), args.get("search")
    sort = args.get("sort") or "createdAt"
    sort = {"created_at": "createdAt", "last_modified": "lastModified"}.get(sort, sort)
    if sort not in ("createdAt", "lastModified"):
        sort = "createdAt"
    rich = any(args.get(k, "").lower() in ("1", "true") for k in ("full", "cardData", "config")) or bool(
        args.getlist("expand"))
    items = []
    for repo_id in ctx.storage.list_repos():
        meta = ctx.storage.meta(repo_id)
        if (author and not repo_id.startswith(author + "/")) or (search and search.lower() not in repo_id.lower()):
            continue
        if meta.get("private") and ctx.user is None:
            continue
        head = ctx.storage.resolve(repo_id, DEFAULT_BRANCH)
        items.append(model_json(ctx.storage, repo_id, head, full=rich))
    reverse = args.get("direction", "-1") != "1"
    items.sort(key=lambda m: (m[sort], m["id"]), reverse=reverse)
    if args.get("limit"):
        items = items[: int(args["limit"])]
    return json_response(items)


def tree(ctx: Ctx, ns: str, name: str, rev: str, path: str = "") -> Response:
    repo_id = _rid(ns, name)
    _readable(ctx, repo_id)
    commit = ctx.storage.get_commit(repo_id, ctx.storage.resolve(repo_id, rev))
    entries = tree_json(commit, path, ctx.request.args.get("recursive", "").lower() in ("1", "true"))
    if entries is None:
        raise StorageError(404, f"{path} does not exist on {rev}", "EntryNotFound")
    return json_response(entries)


def refs(ctx: Ctx, ns: str, name: str) -> Response:
    repo_id = _rid(ns, name)
    _readable(ctx, repo_id)
    data = ctx.storage.refs(repo_id)

    def fmt(kind: str, prefix: str) -> list[dict[str, str]]:
        return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": s} for n, s in sorted(data[kind].items())]

    return json_response({"branches": fmt("branches", "refs/heads/"), "converts": [], "tags": fmt("tags", "refs/tags/"),
                          "pullRequests": []})


def commits(ctx: Ctx, ns: str, name: str, rev: str) -> Response:
    repo_id = _rid(ns, name)
    _readable(ctx, repo_id)
    history = ctx.storage.history(repo_id, ctx.storage.resolve(repo_id, rev))
    return json_response([commit_json(c) for c in history])


def create_tag(ctx: Ctx, ns: str, name: str, rev: str) -> Response:
    require_user(ctx)
    ctx.storage.set_tag(_rid(ns, name), (ctx.body or {})["tag"], rev)
    return json_response({})


def settings(ctx: Ctx, ns: str, name: str) -> Response:
    require_user(ctx)
    body, updates = ctx.body or {}, {}
    if "gated" in body:
        updates["gated"] = body["gated"]
    if "private" in body or "visibility" in body:
        updates["private"] = body.get("private") is True or body.get("visibility") == "private"
    ctx.storage.update_meta(_rid(ns, name), **updates)
    return json_response({})


# ---------------------------------------------------------------- uploads and commits


def preupload(ctx: Ctx, ns: str, name: str, rev: str) -> Response:
    require_user(ctx)
    repo_id = _rid(ns, name)
    ctx.storage.resolve(repo_id, rev)
    answers = []
    for item in (ctx.body or {}).get("files", []):
        size, path = int(item.get("size", 0)), item["path"]
        lfs = (ctx.config.lfs_threshold is not None and size >= ctx.config.lfs_threshold) or any(
            fnmatch.fnmatch(path, pat) for pat in ctx.config.lfs_patterns)
        answers.append({"path": path, "uploadMode": "lfs" if lfs and size > 0 else "regular", "shouldIgnore": False,
                        "oid": None})
    return json_response({"files": answers, "commitOid": ctx.storage.resolve(repo_id, rev)})


def commit(ctx: Ctx, ns: str, name: str, rev: str) -> Response:
    user = require_user(ctx)
    repo_id = _rid(ns, name)
    ctx.storage.meta(repo_id)
    if ctx.request.args.get("create_pr"):
        raise StorageError(400, "pull requests are not supported by the local Hub")
    header: dict[str, Any] = {}
    ops: list[AddOp | DeleteOp] = []
    logged: list[dict[str, Any]] = []
    for raw in ctx.request.get_data(cache=False).splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        key, value = line["key"], line["value"]
        if key == "header":
            header = value
            continue
        logged.append({"key": key, "path": value.get("path")})
        if key == "file":
            content = value["content"]
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            sha256, size = ctx.storage.put_bytes(repo_id, data)
            ops.append(AddOp(value["path"], sha256, size))
        elif key == "lfsFile":
            ops.append(AddOp(value["path"], value["oid"], int(value["size"]), lfs=True))
        elif key in ("deletedFile", "deletedFolder"):
            ops.append(DeleteOp(value["path"], folder=key == "deletedFolder"))
        else:
            raise StorageError(400, f"unsupported commit operation '{key}'")
    ctx.summary = {"header": header, "ops": logged}
    done = ctx.storage.commit(repo_id, rev, ops, title=header.get("summary", ""), message=header.get("description", ""),
                              author=user, parent=header.get("parentCommit"))
    return json_response({"success": True, "commitOid": done.sha,
                          "commitUrl": f"{ctx.base_url}/{repo_id}/commit/{done.sha}", "pullRequestUrl": None})


def _sign(ctx: Ctx, repo_id: str, oid: str) -> str:
    return hmac.new(ctx.config.secret, f"{repo_id}:{oid}".encode(), hashlib.sha256).hexdigest()


def lfs_batch(ctx: Ctx, ns: str, repo_git: str) -> Response:
    require_user(ctx)
    repo_id = _rid(ns, repo_git.removesuffix(".git"))
    ctx.storage.meta(repo_id)
    body = ctx.body or {}
    if body.get("operation") != "upload":
        raise StorageError(400, "only LFS uploads are supported")
    objects = []
    for obj in body.get("objects", []):
        oid, size = obj["oid"], int(obj["size"])
        entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if not ctx.storage.has_blob(repo_id, oid):
            href = f"{ctx.base_url}/_lfs/{quote(repo_id)}/{oid}?size={size}&sig={_sign(ctx, repo_id, oid)}"
            entry["actions"] = {"upload": {"href": href, "expires_in": 3600}}
        objects.append(entry)
    return Response(json.dumps({"transfer": "basic", "objects": objects}), mimetype="application/vnd.git-lfs+json")


def lfs_put(ctx: Ctx, ns: str, name: str, oid: str) -> Response:
    repo_id = _rid(ns, name)
    if not hmac.compare_digest(ctx.request.args.get("sig", ""), _sign(ctx, repo_id, oid)):
        raise StorageError(403, "bad or missing upload signature")
    size = ctx.request.args.get("size")
    ctx.storage.put_stream(repo_id, ctx.request.stream, oid, int(size) if size else None)
    return Response(status=200)


# ---------------------------------------------------------------- downloads


def resolve(ctx: Ctx, ns: str, name: str, rev: str, path: str) -> Response:
    repo_id = _rid(ns, name)
    meta = _readable(ctx, repo_id)
    if meta.get("gated"):
        if ctx.user is None:
            raise StorageError(401, f"Access to model {repo_id} is restricted. You must be authenticated.", "GatedRepo")
        if ctx.user != ns and ctx.user not in meta.get("gated_users", []):
            raise StorageError(403, f"Access to model {repo_id} is restricted: ask for access on its page.",
                               "GatedRepo")
    sha = ctx.storage.resolve(repo_id, rev)
    entry = ctx.storage.get_commit(repo_id, sha).files.get(path)
    if entry is None:
        raise StorageError(404, f"Entry not found: {path}", "EntryNotFound")
    fh = open(ctx.storage.blob_path(repo_id, entry.sha256), "rb")  # noqa: SIM115 - closed by the response
    resp = Response(wrap_file(ctx.request.environ, fh), direct_passthrough=True, mimetype="application/octet-stream")
    etag = entry.sha256 if entry.lfs else entry.oid
    resp.headers["X-Repo-Commit"] = sha
    resp.headers["ETag"] = f'"{etag}"'
    if entry.lfs:
        resp.headers["X-Linked-Etag"] = f'"{etag}"'
        resp.headers["X-Linked-Size"] = str(entry.size)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.content_length = entry.size
    if ctx.request.range is not None:
        return resp.make_conditional(ctx.request, accept_ranges=True, complete_length=entry.size)
    return resp


# ---------------------------------------------------------------- collections


def collections_list(ctx: Ctx) -> Response:
    owner = ctx.request.args.get("owner")
    return json_response(ctx.storage.collections.by_owner(owner))


def collection_create(ctx: Ctx) -> Response:
    user = require_user(ctx)
    body = ctx.body or {}
    data, created = ctx.storage.collections.create(body.get("namespace") or user, body["title"],
                                                   body.get("description"), bool(body.get("private")))
    if not created:
        return error_response(409, "You already have a collection with this title", extra={"slug": data["slug"]})
    return json_response(data)


def collection_get(ctx: Ctx, ns: str, slug: str) -> Response:
    return json_response(ctx.storage.collections.get(f"{ns}/{slug}"))


def collection_add(ctx: Ctx, ns: str, slug: str) -> Response:
    require_user(ctx)
    body = ctx.body or {}
    item = body.get("item") or {}
    data, created = ctx.storage.collections.add_item(f"{ns}/{slug}", item["id"], item.get("type", "model"),
                                                    body.get("note"))
    if not created:
        return error_response(409, "Item already in the collection")
    return json_response(data)


def collection_update_item(ctx: Ctx, ns: str, slug: str, item: str) -> Response:
    require_user(ctx)
    body = ctx.body or {}
    ctx.storage.collections.update_item(f"{ns}/{slug}", item, body.get("note"), body.get("position"))
    return json_response({})
