"""JSON shapes the Hub answers with (model info, list items, tree entries, commits), built from storage."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from bot.localhub.index import split_front_matter
from bot.localhub.storage import Commit, FileEntry, HubStorage


def read_entry(storage: HubStorage, repo_id: str, entry: FileEntry) -> bytes:
    return storage.blob_path(repo_id, entry.sha256).read_bytes()


def card_data(storage: HubStorage, repo_id: str, commit: Commit) -> dict[str, Any] | None:
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    front, _ = split_front_matter(read_entry(storage, repo_id, entry).decode("utf-8", errors="replace"))
    return front or None


def _config(storage: HubStorage, repo_id: str, commit: Commit) -> dict[str, Any] | None:
    entry = commit.files.get("config.json")
    if entry is None or entry.size > 1 << 20:
        return None
    try:
        data = json.loads(read_entry(storage, repo_id, entry))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    keep = ("architectures", "model_type", "quantization_config", "torch_dtype", "dtype", "auto_map")
    return {k: data[k] for k in keep if k in data}


def safetensors_info(storage: HubStorage, repo_id: str, commit: Commit) -> dict[str, Any] | None:
    """Parameter counts per dtype from the safetensors headers (what the Hub shows as `safetensors`)."""
    params: dict[str, int] = {}
    for path, entry in commit.files.items():
        if not path.endswith(".safetensors"):
            continue
        try:
            with open(storage.blob_path(repo_id, entry.sha256), "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > 100 << 20:
                    return None
                header = json.loads(fh.read(length))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
            return None
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count = 1
            for dim in tensor.get("shape", []):
                count *= int(dim)
            params[tensor.get("dtype", "?")] = params.get(tensor.get("dtype", "?"), 0) + count
    return {"parameters": params, "total": sum(params.values())} if params else None


def model_json(storage: HubStorage, repo_id: str, sha: str, *, blobs: bool = False,
               full: bool = True) -> dict[str, Any]:
    meta = storage.meta(repo_id)
    commit = storage.get_commit(repo_id, sha)
    card = card_data(storage, repo_id, commit)
    config = _config(storage, repo_id, commit)
    tags = list(meta.get("tags", []))
    card_tags = (card or {}).get("tags") or []
    tags += [t for t in (card_tags if isinstance(card_tags, list) else [card_tags]) if isinstance(t, str)]
    library = (card or {}).get("library_name") or ("transformers" if config else None)
    pipeline = (card or {}).get("pipeline_tag")
    if pipeline is None and config and any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or []):
        pipeline = "text-generation"
    if any(p.endswith(".safetensors") for p in commit.files):
        tags.append("safetensors")
    license_id = (card or {}).get("license")
    for extra in (library, f"license:{license_id}" if isinstance(license_id, str) else None):
        if isinstance(extra, str):
            tags.append(extra)
    out: dict[str, Any] = {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/", 1)[0],
        "sha": sha,
        "private": bool(meta.get("private")),
        "gated": meta.get("gated", False),
        "disabled": False,
        "downloads": int(meta.get("downloads", 0)),
        "likes": 0,
        "tags": list(dict.fromkeys(tags)),
        "pipeline_tag": pipeline,
        "library_name": library,
        "createdAt": meta["createdAt"],
        "lastModified": commit.date,
    }
    if not full:
        return out
    siblings = []
    for path, entry in sorted(commit.files.items()):
        sib: dict[str, Any] = {"rfilename": path}
        if blobs:
            sib.update(size=entry.size, blobId=entry.oid)
            tree = entry.tree_json()
            if "lfs" in tree:
                sib["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": tree["lfs"]["pointerSize"]}
        siblings.append(sib)
    out.update(
        siblings=siblings,
        cardData=card,
        config=config,
        safetensors=safetensors_info(storage, repo_id, commit),
        usedStorage=sum(e.size for e in commit.files.values()),
    )
    return out


def tree_json(commit: Commit, path: str, recursive: bool) -> list[dict[str, Any]] | None:
    """Entries under `path` (files and folders); None when `path` is neither a file nor a folder."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and prefix[:-1] in commit.files:
        return [commit.files[prefix[:-1]].tree_json()]
    files: list[dict[str, Any]] = []
    folders: set[str] = set()
    for p, entry in sorted(commit.files.items()):
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):]
        parts = rest.split("/")
        for i in range(1, len(parts)):
            if recursive or i == 1:
                folders.add(prefix + "/".join(parts[:i]))
        if recursive or len(parts) == 1:
            files.append(entry.tree_json())
    if prefix and not files and not folders:
        return None
    folder_entries = [
        {"type": "directory", "path": f, "oid": hashlib.sha1(f"{commit.sha}:{f}".encode()).hexdigest(), "size": 0}
        for f in sorted(folders)
    ]
    return folder_entries + files


def commit_json(commit: Commit) -> dict[str, Any]:
    return {
        "id": commit.sha,
        "title": commit.title,
        "message": commit.message,
        "date": commit.date,
        "authors": [{"user": commit.author, "avatar": None}],
        "parents": commit.parents,
    }
