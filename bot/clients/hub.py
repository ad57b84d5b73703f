"""The only module that talks to the Hugging Face Hub, or to the local Hub target (`bot.localhub`).

Every call goes through `HubClient._call`: bounded retries with backoff and jitter on 429 (Retry-After
honoured), 5xx and connection errors; 401/403 are never retried and become `HubAuthError`; every error is a
`HubError` that names the repo and the next step, with no token in it. Publishing is one `create_commit` with
operations computed here (changed files uploaded, stale files deleted, nothing committed when nothing changed),
made against the head read first (`parent_commit`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Literal, Mapping, TypeVar

import httpx
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelInfo
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.hf_api import RepoFile

from bot.clients.hub_support import (
    CollectionOutcome,
    PublishOutcome,
    PublishPlan,
    RemoteFile,
    RetryPolicy,
    digest,
    diff,
    http_status,
    is_retryable,
    retry_after,
    scan_folder,
    scrub,
    to_hub_error,
)
from bot.errors import HubAuthError, HubError

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = ["CollectionOutcome", "HubClient", "PublishOutcome", "PublishPlan", "RetryPolicy", "hub_endpoint",
           "make_hub_client", "open_target", "retry_policy", "source_client"]

log = logging.getLogger("bot.hub")
T = TypeVar("T")
DEFAULT_ENDPOINT = "https://huggingface.co"
LOCAL_TOKEN = "local-hub-token"  # the embedded local Hub accepts any token; this one is never a secret
LOCAL_LFS_THRESHOLD = 10 << 20  # the local target takes files this large through LFS PUTs (streamed, not base64)
NEVER_DOWNLOAD = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.gguf", "*.ckpt", "*.h5", "*.msgpack", "*.onnx"]
DEFAULT_DOWNLOAD = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.model", "*.tiktoken",
                    "*.txt", "*.md", "*.jinja", "LICENSE*", "LICENCE*", "license*", "NOTICE*", "USE_POLICY*",
                    "COPYING*"]
# ConnectionError: what hf_xet raises for a failed transfer (not an HfHubHTTPError); it becomes a HubError too.
_HF_ERRORS = (HfHubHTTPError, httpx.HTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_NOTE_MAX = 500  # the Hub's limits for collection notes and descriptions
_DESCRIPTION_MAX = 150
DEFAULT_RETRIES = RetryPolicy()


class _QuietXetFallback(logging.Filter):
    """The local target sends file objects on purpose (LFS over HTTP); huggingface_hub's notice about it is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not supported by Xet Storage" not in record.getMessage()


class HubClient:
    """A Hub endpoint and a token. `target` says what it points at ("hub" or the embedded "local" one)."""

    def __init__(
        self,
        endpoint: str | None,
        token: str | None,
        retries: RetryPolicy = DEFAULT_RETRIES,
        *,
        target: Literal["hub", "local"] = "hub",
        token_name: str = "HF_TOKEN",
        lfs_via_http: bool = False,
        local_root: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.retries = retries
        self.target = target
        self.token_name = token_name
        self.local_root = local_root
        self._token = token
        self._lfs_via_http = lfs_via_http
        self._cache_dir = str(cache_dir) if cache_dir else None
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def __repr__(self) -> str:
        token = "set" if self._token else "unset"
        return f"HubClient(endpoint={self.endpoint!r}, target={self.target!r}, token={token})"

    # ------------------------------------------------------------ the one way out
    def _error(self, exc: BaseException, what: str, repo_id: str | None, write: bool, attempts: int = 1) -> HubError:
        return to_hub_error(exc, what=what, repo_id=repo_id, endpoint=self.endpoint, token_name=self.token_name,
                            secret=self._token, write=write, attempts=attempts)

    def _call(self, what: str, fn: Callable[[], T], *, repo_id: str | None = None, write: bool = False) -> T:
        """Run `fn` (one huggingface_hub call), retrying what is worth retrying, mapping errors to HubError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except _HF_ERRORS as exc:
                if attempt < self.retries.attempts and is_retryable(exc):
                    wait = self.retries.delay(attempt, retry_after(exc))
                    log.warning("%s %s: %s; retry %d/%d in %.1fs", what, repo_id or "", self._why(exc), attempt,
                                self.retries.attempts - 1, wait)
                    self.retries.sleep(wait)
                    continue
                raise self._error(exc, what, repo_id, write, attempt) from exc

    def _why(self, exc: BaseException) -> str:
        status = http_status(exc)
        return f"HTTP {status}" if status is not None else scrub(type(exc).__name__, self._token)

    # ------------------------------------------------------------ reads
    def whoami(self) -> str:
        return str(self._call("whoami", lambda: self._api.whoami(cache=False))["name"])

    def model_info(self, repo_id: str, revision: str | None = None) -> ModelInfo:
        return self._call("read model info of", lambda: self._api.model_info(repo_id, revision=revision),
                          repo_id=repo_id)

    def repo_exists(self, repo_id: str) -> bool:
        return self._call("look up", lambda: self._api.repo_exists(repo_id), repo_id=repo_id)

    def other_repo_type(self, repo_id: str) -> str | None:
        """'dataset' or 'space' when `repo_id` names one of those rather than a model (one try each, no retries:
        only the wording of an error depends on it)."""
        for kind in ("dataset", "space"):
            try:
                if self._api.repo_exists(repo_id, repo_type=kind):
                    return kind
            except Exception:  # noqa: BLE001 - a failed probe only means the plainer message
                continue
        return None

    def can_read(self, repo_id: str, revision: str | None = None, filename: str = "config.json") -> bool:
        """Whether this token can download from the repo (False for a gated repo it was not granted)."""
        try:
            return self._call("check access to", lambda: self._api.file_exists(repo_id, filename, revision=revision),
                              repo_id=repo_id)
        except HubAuthError:
            return False

    def list_author_models(self, author: str, sort: str = "createdAt", limit: int | None = None) -> Iterator[ModelInfo]:
        """The author's models, newest first (by `sort`), with card data. Lazy: pages are fetched as consumed."""

        def first_page() -> tuple[Iterator[ModelInfo], ModelInfo | None]:
            it = iter(self._api.list_models(author=author, sort=sort, limit=limit, cardData=True))
            return it, next(it, None)

        it, first = self._call(f"list the models of {author}", first_page)
        if first is None:
            return
        yield first
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except _HF_ERRORS as exc:
                raise self._error(exc, f"list the models of {author}", None, False) from exc
            yield item

    def repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
        return self._call("list files of", lambda: self._api.list_repo_files(repo_id, revision=revision),
                          repo_id=repo_id)

    def remote_files(self, repo_id: str, revision: str | None = None) -> dict[str, RemoteFile]:
        """Files at `revision` with their git blob id, size and (LFS files) sha256."""
        entries = self._call("list files of",
                             lambda: list(self._api.list_repo_tree(repo_id, recursive=True, revision=revision)),
                             repo_id=repo_id)
        return {e.path: RemoteFile(e.path, e.size, e.blob_id, e.lfs.sha256 if e.lfs else None)
                for e in entries if isinstance(e, RepoFile)}

    def download(self, repo_id: str, revision: str, local_dir: Path, allow_patterns: list[str] | None = None) -> Path:
        """Snapshot into `local_dir`: weights as safetensors plus config/tokenizer/licence files, never pickles."""
        patterns = list(allow_patterns) if allow_patterns is not None else list(DEFAULT_DOWNLOAD)
        path = self._call("download", lambda: self._api.snapshot_download(
            repo_id, revision=revision, local_dir=str(local_dir), allow_patterns=patterns,
            ignore_patterns=NEVER_DOWNLOAD, cache_dir=self._cache_dir), repo_id=repo_id)
        return Path(path)

    def read_text(self, repo_id: str, filename: str, revision: str | None = None) -> str | None:
        """A small file's text; None when the repo, revision or file does not exist."""
        try:
            path = self._call(f"read {filename} of", lambda: self._api.hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=self._cache_dir), repo_id=repo_id)
        except HubAuthError:
            raise
        except HubError as exc:
            if exc.status == 404:
                return None
            raise
        return Path(path).read_text(encoding="utf-8", errors="replace")

    def repo_card_data(self, repo_id: str, revision: str | None = None) -> dict[str, Any] | None:
        """The README front matter (our cards carry `base_model` and `base_model_revision`); None: no repo/card."""
        text = self.read_text(repo_id, "README.md", revision)
        return card_front_matter(text) if text is not None else None

    # ------------------------------------------------------------ writes
    def repo_url(self, repo_id: str) -> str:
        if self.local_root is not None:
            return (Path(self.local_root) / "repos" / repo_id).resolve().as_uri()
        return f"{self.endpoint}/{repo_id}"

    def create_repo(self, repo_id: str, private: bool = False, gated: bool = False) -> str:
        """Create (or keep) the repo; `gated`: access requests, approved automatically, as the base's terms ask."""
        self._call("create", lambda: self._api.create_repo(repo_id, private=private, exist_ok=True), repo_id=repo_id,
                   write=True)
        if gated:
            self._call("gate", lambda: self._api.update_repo_settings(repo_id, gated="auto"), repo_id=repo_id,
                       write=True)
        return self.repo_url(repo_id)

    def _head(self, repo_id: str) -> str | None:
        return self.model_info(repo_id).sha

    def plan_publish(self, repo_id: str, files: Mapping[str, Path]) -> PublishPlan:
        """What `publish_files` would do now; uploads nothing."""
        local = {p: digest(p, Path(src)) for p, src in sorted(files.items())}
        if not self.repo_exists(repo_id):
            return diff(repo_id, None, local, {})
        head = self._head(repo_id)
        return diff(repo_id, head, local, self.remote_files(repo_id, head))

    def publish_folder(self, repo_id: str, folder: Path, message: str, description: str = "",
                       private: bool = False, gated: bool = False) -> PublishOutcome:
        return self.publish_files(repo_id, scan_folder(Path(folder)), message, description, private, gated)

    def publish_files(self, repo_id: str, files: Mapping[str, Path], message: str, description: str = "",
                      private: bool = False, gated: bool = False) -> PublishOutcome:
        """Make the repo hold exactly `files` (repo path -> local file) in one commit, or none if it already does.

        A 412 (someone committed meanwhile) re-reads the head and tries once more; a commit whose answer was lost
        (5xx, dropped connection) is recognised on the re-read instead of being made twice.
        """
        local = {p: digest(p, Path(src)) for p, src in sorted(files.items())}
        if not local:
            raise HubError(f"nothing to publish to {repo_id}: no files", repo_id=repo_id, hint="check the folder")
        url = self.create_repo(repo_id, private=private, gated=gated)
        conflicts, attempt = 0, 0
        pending: PublishPlan | None = None  # a commit that may have landed although its answer was lost
        while True:
            attempt += 1
            head = self._head(repo_id)
            plan = diff(repo_id, head, local, self.remote_files(repo_id, head))
            if not plan.changed:
                landed = pending is not None and head != pending.head
                return PublishOutcome(repo_id, head, url, landed, list(pending.upload) if landed and pending else [],
                                      list(pending.delete) if landed and pending else [], list(local))
            try:
                commit = self._commit(plan, local, message, description)
                return PublishOutcome(repo_id, commit, url, True, list(plan.upload), list(plan.delete), list(local))
            except _HF_ERRORS as exc:
                status = http_status(exc)
                if status == 412 and conflicts == 0:
                    conflicts += 1
                    log.warning("publish %s: the repo moved since %s; re-reading it", repo_id, (head or "")[:12])
                    continue
                if attempt < self.retries.attempts and is_retryable(exc):
                    if status != 429:
                        pending = plan
                    wait = self.retries.delay(attempt, retry_after(exc))
                    log.warning("publish %s: %s; retry in %.1fs", repo_id, self._why(exc), wait)
                    self.retries.sleep(wait)
                    continue
                raise self._error(exc, "publish to", repo_id, True, attempt) from exc

    def _commit(self, plan: PublishPlan, local: Mapping[str, Any], message: str, description: str) -> str:
        with ExitStack() as stack:
            if self._lfs_via_http:
                quiet, commit_log = _QuietXetFallback(), logging.getLogger("huggingface_hub._commit_api")
                commit_log.addFilter(quiet)
                stack.callback(commit_log.removeFilter, quiet)
            ops: list[CommitOperationAdd | CommitOperationDelete] = []
            for path in plan.upload:
                source: str | BinaryIO = str(local[path].source)
                if self._lfs_via_http:  # file objects make huggingface_hub use the LFS HTTP path, not xet
                    source = stack.enter_context(open(local[path].source, "rb"))
                ops.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=source))
            ops.extend(CommitOperationDelete(path_in_repo=p) for p in plan.delete)
            try:
                info = self._api.create_commit(plan.repo_id, operations=ops, commit_message=message,
                                               commit_description=description or None, parent_commit=plan.head)
            except ValueError as exc:
                if isinstance(exc, HfHubHTTPError) or "metadata" not in str(exc):
                    raise
                raise HubError(f"the Hub rejected README.md of {plan.repo_id}: {scrub(str(exc), self._token)}",
                               repo_id=plan.repo_id, hint="fix the card's YAML front matter") from exc
        return info.oid

    def ensure_collection(self, namespace: str, title: str, description: str,
                          items: list[tuple[str, str | None]], private: bool = False) -> CollectionOutcome:
        """The namespace's collection titled `title` (created if missing) holding `items` with their notes."""
        coll = self._call("create collection", lambda: self._api.create_collection(
            title, namespace=namespace, description=description[:_DESCRIPTION_MAX], private=private, exists_ok=True),
            write=True)
        present = {i.item_id: i for i in coll.items}
        for repo_id, note in items:
            note = note[:_NOTE_MAX] if note else note
            if repo_id not in present:
                self._call("add to collection", partial(self._api.add_collection_item, coll.slug, repo_id, "model",
                                                        note=note, exists_ok=True), repo_id=repo_id, write=True)
            elif note is not None and present[repo_id].note != note:
                self._call("update the collection note of", partial(
                    self._api.update_collection_item, coll.slug, present[repo_id].item_object_id, note=note),
                    repo_id=repo_id, write=True)
        final = self._call("read collection", lambda: self._api.get_collection(coll.slug))
        url = ((Path(self.local_root) / "collections" / f"{final.slug}.json").resolve().as_uri()
               if self.local_root is not None else final.url)
        return CollectionOutcome(final.slug, url, final.title, [(i.item_id, i.note) for i in final.items])


def card_front_matter(text: str) -> dict[str, Any]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- factories


def hub_endpoint(settings: "Settings") -> str:
    return (settings.hub_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def retry_policy(settings: "Settings") -> RetryPolicy:
    """The settings' bound on Hub retries (`hub_retries`, `hub_retry_base_s`, ...), with jitter."""
    return RetryPolicy(attempts=settings.hub_retries, base_delay_s=settings.hub_retry_base_s,
                       max_delay_s=settings.hub_retry_max_s, max_retry_after_s=settings.hub_retry_after_max_s)


@contextmanager
def open_target(settings: "Settings", retries: RetryPolicy | None = None, *,
                read_only: bool = False) -> Iterator[HubClient]:
    """The publish target: the embedded local Hub under the runs directory, or the Hub with HF_TOKEN.
    `read_only` (dry runs): a local target that does not exist yet is not created; an empty stand-in answers."""
    retries = retries or retry_policy(settings)
    if settings.resolved_hub_target == "local":
        from bot.localhub import serve_local_hub

        root = settings.local_hub_root()
        scratch = tempfile.TemporaryDirectory(prefix="bot-dry-hub-") if read_only and not root.exists() else None
        if scratch is not None:
            root = Path(scratch.name)
        with scratch or nullcontext(), serve_local_hub(root, lfs_threshold=LOCAL_LFS_THRESHOLD) as url:
            yield HubClient(url, LOCAL_TOKEN, retries, target="local", token_name="the local Hub token",
                            lfs_via_http=True, local_root=root)
    else:
        yield HubClient(hub_endpoint(settings), os.environ.get("HF_TOKEN") or None, retries, target="hub")


@contextmanager
def source_client(settings: "Settings", retries: RetryPolicy | None = None) -> Iterator[HubClient]:
    """Where base models come from: the Hub (or `hub_endpoint`), with HF_TOKEN when set."""
    yield HubClient(hub_endpoint(settings), os.environ.get("HF_TOKEN") or None, retries or retry_policy(settings))


class _LocalCardsClient(HubClient):
    """Reads sources from the Hub but published cards from the local target's files on disk."""

    def __init__(self, *args: Any, cards_root: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cards_root = Path(cards_root)

    def repo_card_data(self, repo_id: str, revision: str | None = None) -> dict[str, Any] | None:
        from bot.localhub.storage import HubStorage

        readme = HubStorage(self._cards_root).repo_dir(repo_id) / "files" / "README.md"
        return card_front_matter(readme.read_text(encoding="utf-8")) if readme.is_file() else None


def make_hub_client(settings: "Settings", retries: RetryPolicy | None = None) -> HubClient:
    """The watcher's client: sources from the Hub, published cards from wherever the publish target is."""
    token = os.environ.get("HF_TOKEN") or None
    retries = retries or retry_policy(settings)
    if settings.resolved_hub_target == "local":
        return _LocalCardsClient(hub_endpoint(settings), token, retries, cards_root=settings.local_hub_root())
    return HubClient(hub_endpoint(settings), token, retries)
