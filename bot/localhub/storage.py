"""On-disk storage of the local Hub: repos with their files and full commit history, and collections.

```
<root>/index.html                         regenerated after every change (see `index.py`)
<root>/repos/<ns>/<name>/repo.json        metadata (private, gated, createdAt, lastModified, tags)
<root>/repos/<ns>/<name>/refs.json        {"branches": {"main": sha}, "tags": {}}
<root>/repos/<ns>/<name>/commits/<sha>.json   one file per commit: parents, message, author, full file list
<root>/repos/<ns>/<name>/objects/<sha256>     content-addressed file contents
<root>/repos/<ns>/<name>/files/           a read-only checkout of `main`
<root>/repos/<ns>/<name>/history.log      one line per commit, newest last
<root>/collections/<ns>/<slug>.json   (see collections.py)
```
No token is ever written here: commits carry the user *name* the server resolved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from bot.localhub.collections import CollectionStore
from bot.localhub.common import StorageError, iso_now, read_json, write_json

DEFAULT_BRANCH = "main"
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.gguf", "*.h5", "*.model", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.zip")
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    oid: str  # git blob id of the content, or of the LFS pointer for LFS files
    lfs: bool = False

    def tree_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": self.path, "size": self.size, "oid": self.oid}
        if self.lfs:
            pointer = len(lfs_pointer(self.sha256, self.size))
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer}
        return out


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: list[str]
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry]
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {p: asdict(e) for p, e in sorted(self.files.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Commit":
        files = {p: FileEntry(**e) for p, e in data.pop("files").items()}
        return cls(files=files, **data)


@dataclass(frozen=True)
class AddOp:
    path: str
    sha256: str
    size: int
    lfs: bool = False


@dataclass(frozen=True)
class DeleteOp:
    path: str
    folder: bool = False


class HubStorage:
    """Thread-safe persistent store. `on_change` runs after each mutation (the server regenerates index.html)."""

    def __init__(self, root: Path, on_change: Callable[["HubStorage"], None] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.on_change = on_change
        self._counter = 0
        self.collections = CollectionStore(self)

    # ------------------------------------------------------------ repos
    def repo_dir(self, repo_id: str) -> Path:
        if not _REPO_ID.match(repo_id) or ".." in repo_id:
            raise StorageError(400, f"invalid repo id '{repo_id}' (expected 'namespace/name')", "InvalidRepoId")
        return self.root / "repos" / repo_id

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "repo.json").exists()

    def list_repos(self) -> list[str]:
        base = self.root / "repos"
        if not base.exists():
            return []
        return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in base.glob("*/*/repo.json"))

    def meta(self, repo_id: str) -> dict[str, Any]:
        path = self.repo_dir(repo_id) / "repo.json"
        if not path.exists():
            raise StorageError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return read_json(path)

    def update_meta(self, repo_id: str, **updates: Any) -> dict[str, Any]:
        with self.lock:
            data = self.meta(repo_id)
            data.update(updates)
            write_json(self.repo_dir(repo_id) / "repo.json", data)
        self.changed()
        return data

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        gated: bool | str = False,
        created_at: str | None = None,
        tags: list[str] | None = None,
        author: str = "bot-local",
    ) -> bool:
        """Create a repo with an initial commit holding `.gitattributes` (as the Hub does). False if it exists."""
        with self.lock:
            if self.exists(repo_id):
                return False
            rdir = self.repo_dir(repo_id)
            rdir.mkdir(parents=True, exist_ok=True)
            when = created_at or iso_now()
            meta = {
                "id": repo_id,
                "private": private,
                "gated": gated if gated in (False, "auto", "manual") else ("auto" if gated else False),
                "gated_users": [],
                "createdAt": when,
                "lastModified": when,
                "tags": list(tags or []),
            }
            write_json(rdir / "repo.json", meta)
            write_json(rdir / "refs.json", {"branches": {}, "tags": {}})
            sha256, size = self.put_bytes(repo_id, GITATTRIBUTES.encode())
            self.commit(repo_id, DEFAULT_BRANCH, [AddOp(".gitattributes", sha256, size)], title="initial commit",
                        author=author, date=when, create_branch=True)
        return True

    # ------------------------------------------------------------ refs and commits
    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        self.meta(repo_id)
        return read_json(self.repo_dir(repo_id) / "refs.json")

    def resolve(self, repo_id: str, revision: str) -> str:
        refs = self.refs(repo_id)
        for kind in ("branches", "tags"):
            if revision in refs[kind]:
                return refs[kind][revision]
        for prefix in ("refs/heads/", "refs/tags/"):
            if revision.startswith(prefix):
                name = revision[len(prefix):]
                found = refs["branches" if "heads" in prefix else "tags"].get(name)
                if found:
                    return found
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [p.stem for p in (self.repo_dir(repo_id) / "commits").glob(f"{revision}*.json")]
            if len(matches) == 1:
                return matches[0]
        raise StorageError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def get_commit(self, repo_id: str, sha: str) -> Commit:
        path = self.repo_dir(repo_id) / "commits" / f"{sha}.json"
        if not path.exists():
            raise StorageError(404, f"Invalid rev id: {sha}", "RevisionNotFound")
        return Commit.from_json(read_json(path))

    def history(self, repo_id: str, sha: str) -> list[Commit]:
        out: list[Commit] = []
        current: str | None = sha
        while current:
            commit = self.get_commit(repo_id, current)
            out.append(commit)
            current = commit.parents[0] if commit.parents else None
        return out

    def set_tag(self, repo_id: str, tag: str, revision: str) -> None:
        with self.lock:
            refs = self.refs(repo_id)
            if tag in refs["tags"]:
                raise StorageError(409, f"Tag {tag} already exists")
            refs["tags"][tag] = self.resolve(repo_id, revision)
            write_json(self.repo_dir(repo_id) / "refs.json", refs)

    # ------------------------------------------------------------ blobs
    def blob_path(self, repo_id: str, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise StorageError(400, f"invalid sha256 '{sha256}'")
        return self.repo_dir(repo_id) / "objects" / sha256

    def has_blob(self, repo_id: str, sha256: str) -> bool:
        return self.blob_path(repo_id, sha256).exists()

    def put_bytes(self, repo_id: str, data: bytes) -> tuple[str, int]:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(repo_id, sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        return sha256, len(data)

    def put_stream(self, repo_id: str, stream: IO[bytes], expected_sha256: str, expected_size: int | None) -> None:
        """Store an uploaded object (LFS PUT), checking its sha256 and size."""
        path = self.blob_path(repo_id, expected_sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{expected_sha256}.{threading.get_ident()}.tmp")
        digest, size = hashlib.sha256(), 0
        with open(tmp, "wb") as fh:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
        if digest.hexdigest() != expected_sha256 or (expected_size is not None and size != expected_size):
            tmp.unlink(missing_ok=True)
            raise StorageError(400, f"uploaded content does not match oid {expected_sha256} / size {expected_size}")
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)

    def entry_for(self, repo_id: str, path: str, sha256: str, size: int, lfs: bool) -> FileEntry:
        if lfs:
            return FileEntry(path, size, sha256, git_blob_oid(lfs_pointer(sha256, size)), True)
        return FileEntry(path, size, sha256, git_blob_oid(self.blob_path(repo_id, sha256).read_bytes()), False)

    # ------------------------------------------------------------ commits
    def commit(
        self,
        repo_id: str,
        branch: str,
        ops: list[AddOp | DeleteOp],
        *,
        title: str,
        message: str = "",
        author: str = "bot-local",
        parent: str | None = None,
        date: str | None = None,
        create_branch: bool = False,
    ) -> Commit:
        """Apply `ops` on top of `branch`. `parent` set and not the head -> 412 (someone committed meanwhile)."""
        with self.lock:
            refs = self.refs(repo_id)
            head = refs["branches"].get(branch)
            if head is None and not create_branch:
                raise StorageError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent is not None and parent != head:
                raise StorageError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self.get_commit(repo_id, head).files) if head else {}
            changed, deleted = self._apply(repo_id, files, ops)
            self._counter += 1
            when = date or iso_now()
            seed = json.dumps([repo_id, head, title, message, when, time.time_ns(), self._counter, sorted(changed)])
            sha = hashlib.sha1(seed.encode()).hexdigest()
            commit = Commit(sha, [head] if head else [], title, message, when, author, files, changed, deleted)
            rdir = self.repo_dir(repo_id)
            write_json(rdir / "commits" / f"{sha}.json", commit.to_json())
            refs["branches"][branch] = sha
            write_json(rdir / "refs.json", refs)
            with open(rdir / "history.log", "a", encoding="utf-8") as fh:
                fh.write(f"{when} {sha} {branch} {author}: {title}\n")
            if branch == DEFAULT_BRANCH:
                self._checkout(repo_id, commit)
            meta = self.meta(repo_id)
            meta["lastModified"] = when
            write_json(rdir / "repo.json", meta)
        self.changed()
        return commit

    def _apply(self, repo_id: str, files: dict[str, FileEntry],
               ops: list[AddOp | DeleteOp]) -> tuple[list[str], list[str]]:
        changed: list[str] = []
        deleted: list[str] = []
        for op in ops:
            if isinstance(op, AddOp):
                if not self.has_blob(repo_id, op.sha256):
                    raise StorageError(422, f"LFS object {op.sha256} for {op.path} was never uploaded")
                files[op.path] = self.entry_for(repo_id, op.path, op.sha256, op.size, op.lfs)
                changed.append(op.path)
            elif op.folder:
                prefix = op.path.rstrip("/") + "/"
                gone = [p for p in files if p.startswith(prefix)]
                for p in gone:
                    del files[p]
                deleted.extend(gone)
            else:
                if op.path not in files:
                    raise StorageError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
                del files[op.path]
                deleted.append(op.path)
        return changed, deleted

    def _checkout(self, repo_id: str, commit: Commit) -> None:
        """Make `files/` mirror the commit (hard links into objects/, copies where links fail)."""
        target = self.repo_dir(repo_id) / "files"
        tmp = target.with_name(f".files.{threading.get_ident()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for path, entry in commit.files.items():
            dest = tmp / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.blob_path(repo_id, entry.sha256), dest)
            except OSError:
                shutil.copyfile(self.blob_path(repo_id, entry.sha256), dest)
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
