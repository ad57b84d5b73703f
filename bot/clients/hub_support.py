"""Pure helpers for `bot.clients.hub` (no network here): retry policy, error mapping, file digests, the
publish diff and the result types."""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import httpx
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from bot.errors import HubAuthError, HubError
from bot.secrets import redact

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
KEEP_REMOTE = frozenset({".gitattributes"})  # never deleted by a publish
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter; a Retry-After header (capped) wins over the backoff."""

    attempts: int = 5  # tries in all, the first included
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0
    jitter: float = 0.25  # up to +25 % on each backoff delay
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        base = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return base * (1 + self.jitter * random.random())


# ---------------------------------------------------------------- error inspection


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from (snapshot_download wraps the HTTP error it met)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_error(exc: BaseException) -> HfHubHTTPError | None:
    return next((e for e in causes(exc) if isinstance(e, HfHubHTTPError) and e.response is not None), None)


def http_status(exc: BaseException) -> int | None:
    err = http_error(exc)
    return err.response.status_code if err is not None else None


def retry_after(exc: BaseException) -> float | None:
    err = http_error(exc)
    value = err.response.headers.get("Retry-After") if err is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_transport_error(exc: BaseException) -> bool:
    return any(isinstance(e, (httpx.TransportError, ConnectionResetError, ConnectionRefusedError, BrokenPipeError))
               for e in causes(exc))


def is_retryable(exc: BaseException) -> bool:
    status = http_status(exc)
    if status is not None:
        return status in RETRY_STATUSES
    return is_transport_error(exc)


def scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 6:
        text = text.replace(secret, "***")
    return redact(text)


def to_hub_error(exc: BaseException, *, what: str, repo_id: str | None, endpoint: str, token_name: str,
                 secret: str | None, write: bool, attempts: int = 1) -> HubError:
    """One typed, token-free error naming what failed and what to do next."""
    status = http_status(exc)
    err = http_error(exc)
    server = scrub((err.server_message or "").strip() if err is not None else "", secret)
    detail = f": {server}" if server else ""
    where = f" {repo_id}" if repo_id else ""
    if any(isinstance(e, GatedRepoError) for e in causes(exc)):
        return HubAuthError(
            f"{what}{where}: the repo is gated and the token ({token_name}) has not been granted access "
            f"(HTTP {status})",
            repo_id=repo_id, status=status,
            hint=f"accept the conditions on {endpoint}/{repo_id} with the account that owns {token_name}, then rerun")
    if status == 401:
        return HubAuthError(
            f"{what}{where}: the Hub answered 401 (token {token_name} missing, invalid or expired{detail})",
            repo_id=repo_id, status=401,
            hint=f"set {token_name} to a valid token with {'write' if write else 'read'} access "
                 "(https://huggingface.co/settings/tokens); a private or missing repo also answers 401")
    if status == 403:
        namespace = repo_id.split("/", 1)[0] if repo_id else "this namespace"
        need = f"write access to '{namespace}'" if write else f"read access to{where or ' this resource'}"
        return HubAuthError(f"{what}{where}: the Hub answered 403: the token ({token_name}) lacks {need}{detail}",
                            repo_id=repo_id, status=403,
                            hint=f"give {token_name} {need} (fine-grained tokens list it), or change the namespace")
    if any(isinstance(e, RevisionNotFoundError) for e in causes(exc)):
        return HubError(f"{what}{where}: revision not found{detail}", repo_id=repo_id, status=status,
                        hint="check the revision (a branch, tag or full commit sha)")
    if any(isinstance(e, RemoteEntryNotFoundError) for e in causes(exc)):
        return HubError(f"{what}{where}: file not found{detail}", repo_id=repo_id, status=status,
                        hint="check the file name and revision")
    if status == 404 or any(isinstance(e, RepositoryNotFoundError) for e in causes(exc)):
        return HubError(f"{what}{where}: repository not found on {endpoint}", repo_id=repo_id, status=404,
                        hint="check the repo id; a private repo needs a token that can read it")
    if status == 412:
        return HubError(f"{what}{where}: the repo changed while publishing (HTTP 412{detail})", repo_id=repo_id,
                        status=412, hint="rerun: the next publish compares against the new head")
    if any(isinstance(e, OfflineModeIsEnabled) for e in causes(exc)):
        return HubError(f"{what}{where}: HF_HUB_OFFLINE is set", repo_id=repo_id, hint="unset HF_HUB_OFFLINE")
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status is not None:
        return HubError(f"{what}{where} failed{tries}: HTTP {status}{detail}", repo_id=repo_id, status=status,
                        hint="the Hub may be down or rate limiting; rerun later (the run resumes where it stopped)")
    return HubError(f"{what}{where} failed{tries}: cannot reach {endpoint} ({scrub(type(exc).__name__, secret)})",
                    repo_id=repo_id, hint="check the network, or HF_ENDPOINT / hub_endpoint")


# ---------------------------------------------------------------- local files and the diff


@dataclass(frozen=True)
class LocalFile:
    path: str  # path in the repo
    source: Path
    size: int
    sha256: str
    git_oid: str  # git blob sha1, what the tree endpoint answers as `oid` for regular files


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    oid: str
    lfs_sha256: str | None = None


def digest(path_in_repo: str, source: Path) -> LocalFile:
    """sha256 and git blob id in one read."""
    size = os.path.getsize(source)
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(source, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return LocalFile(path_in_repo, source, size, sha256.hexdigest(), sha1.hexdigest())


# Hidden folders that are content, not tooling: the Hub's evaluation-results files.
UPLOADED_HIDDEN = frozenset({".eval_results"})


def scan_folder(folder: Path) -> dict[str, Path]:
    """Files under `folder` by repo path; hidden files and folders (.cache, .git, ...) are left out."""
    out: dict[str, Path] = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") and part not in UPLOADED_HIDDEN for part in rel.parts):
            out[rel.as_posix()] = path
    return out


def same_content(local: LocalFile, remote: RemoteFile) -> bool:
    if remote.lfs_sha256:
        return local.sha256 == remote.lfs_sha256 and local.size == remote.size
    return local.git_oid == remote.oid and local.size == remote.size


@dataclass(frozen=True)
class PublishPlan:
    """What a publish would do against the remote head `head` (None: the repo does not exist yet)."""

    repo_id: str
    head: str | None
    upload: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: tuple[str, ...]
    sizes: Mapping[str, int]

    @property
    def changed(self) -> bool:
        return bool(self.upload or self.delete)

    @property
    def upload_bytes(self) -> int:
        return sum(self.sizes[p] for p in self.upload)


def diff(repo_id: str, head: str | None, local: Mapping[str, LocalFile],
         remote: Mapping[str, RemoteFile]) -> PublishPlan:
    upload = tuple(p for p, f in sorted(local.items()) if p not in remote or not same_content(f, remote[p]))
    delete = tuple(p for p in sorted(remote) if p not in local and p not in KEEP_REMOTE)
    unchanged = tuple(p for p in sorted(local) if p not in upload)
    return PublishPlan(repo_id, head, upload, delete, unchanged, {p: f.size for p, f in local.items()})


@dataclass(frozen=True)
class PublishOutcome:
    repo_id: str
    commit: str | None  # the repo's head after publishing (the new commit when changed)
    url: str
    changed: bool  # False: the repo already held identical content, no commit was made
    uploaded: list[str]
    deleted: list[str]
    files: list[str]  # every local file published


@dataclass(frozen=True)
class CollectionOutcome:
    slug: str
    url: str
    title: str
    items: list[tuple[str, str | None]]  # (repo id, note), in collection order
