"""Seeding the local Hub's storage for tests (no HTTP): base models (files, config.json, README front matter, tags, gating) and new revisions."""

from __future__ import annotations

import json
from typing import Any, Mapping

import yaml

from bot.localhub.storage import AddOp, DeleteOp, HubStorage

FileContent = bytes | str | dict[str, Any]


def card_text(card_data: Mapping[str, Any] | None, body: str = "") -> str:
    """A README: YAML front matter (when given) and a Markdown body."""
    if not card_data:
        return body
    return f"---\n{yaml.safe_dump(dict(card_data), sort_keys=False)}---\n{body}"


def _as_bytes(content: FileContent) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, dict):
        return (json.dumps(content, indent=2) + "\n").encode()
    return content.encode()


def _ops(storage: HubStorage, repo_id: str, files: Mapping[str, FileContent],
         lfs_suffixes: tuple[str, ...]) -> list[AddOp]:
    ops: list[AddOp] = []
    for path, content in files.items():
        sha256, size = storage.put_bytes(repo_id, _as_bytes(content))
        ops.append(AddOp(path, sha256, size, lfs=path.endswith(lfs_suffixes)))
    return ops


def seed_model(
    storage: HubStorage,
    repo_id: str,
    *,
    files: Mapping[str, FileContent] | None = None,
    config: Mapping[str, Any] | None = None,
    card_data: Mapping[str, Any] | None = None,
    readme_body: str = "",
    tags: list[str] | None = None,
    gated: bool | str = False,
    gated_users: list[str] | None = None,
    private: bool = False,
    created_at: str | None = None,
    author: str | None = None,
    message: str = "Upload model",
    lfs_suffixes: tuple[str, ...] = (".safetensors",),
) -> str:
    """Create `repo_id` (if new) and commit its files in one commit; returns the commit sha.

    `config` becomes config.json; `card_data`/`readme_body` become README.md; `gated_users` are the user *names*
    allowed through the gate (tokens map to names on the server).
    """
    namespace = repo_id.split("/", 1)[0]
    storage.create_repo(repo_id, private=private, gated=gated, created_at=created_at, tags=tags,
                        author=author or namespace)
    storage.update_meta(repo_id, gated_users=list(gated_users or []))
    content: dict[str, FileContent] = dict(files or {})
    if config is not None:
        content["config.json"] = dict(config)
    if card_data or readme_body:
        content["README.md"] = card_text(card_data, readme_body)
    commit = storage.commit(repo_id, "main", list(_ops(storage, repo_id, content, lfs_suffixes)), title=message,
                            author=author or namespace, date=created_at)
    return commit.sha


def add_revision(
    storage: HubStorage,
    repo_id: str,
    files: Mapping[str, FileContent] | None = None,
    *,
    delete: list[str] | None = None,
    message: str = "Update model",
    author: str | None = None,
    date: str | None = None,
    lfs_suffixes: tuple[str, ...] = (".safetensors",),
) -> str:
    """Commit changed/added files (and deletions) on main: a new upstream revision. Returns the commit sha."""
    ops: list[AddOp | DeleteOp] = list(_ops(storage, repo_id, dict(files or {}), lfs_suffixes))
    ops.extend(DeleteOp(p) for p in delete or [])
    commit = storage.commit(repo_id, "main", ops, title=message, author=author or repo_id.split("/", 1)[0], date=date)
    return commit.sha
