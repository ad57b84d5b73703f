"""The watcher: which watched models need quantizing, and (optionally) dispatching or running that work.

`plan_watch` lists each followed author newest first and stops at the newest model the ledger has already
seen (one listing request per author when nothing is new), looks again at models still in progress, and checks
every candidate (`watch_checks`). Whether a model is already published at its current revision is read from the
Hub: each recipe's target repo carries `base_model_revision` in its card front matter.
`run_watch` records the plan in the ledger, then dispatches `publish.yml` or runs the pipeline here.

Each model's settings are merged once, with its watch entry as the profile layer (`bot.config`: above the
watchlist's `defaults:`, below BOT_* and the command line). A Hub that cannot be reached stops the cycle at its
first failure (one `HubUnreachable`, exit 6, nothing recorded): the Hub is down, not the model, so the other
models are not tried (and retried) one after another. A failure of one model (404, a bad card) skips that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Literal, Mapping, Protocol

from huggingface_hub import ModelInfo
from huggingface_hub.errors import HfHubHTTPError

from bot.clients.hub_support import is_transport_error
from bot.config import Settings, SettingsLayers
from bot.errors import BotError, ConfigError, HubAuthError, HubError, ModelError, StageError
from bot.ledger import AuthorCursor, Ledger, sync_from_run
from bot.recipes import load_recipes
from bot.rundir import RunDir
from bot.stages.watch.checks import check_model, is_gated_skip
from bot.watchlist import WatchEntry, Watchlist, entry_layers, group_fingerprint, recipes_for

Decision = Literal["new", "new-revision", "skip"]
CARD_REVISION_KEY = "base_model_revision"  # front matter key of our published cards: the base's commit sha
DISPATCH_STALE = timedelta(hours=24)  # a dispatch without a published result after this is sent again
MAX_ATTEMPTS = 3
NO_REVISION = "-"  # ledger revision of a model whose Hub lookup failed (so it is looked at again)
PUBLISH_WORKFLOW = "publish.yml"
SUFFIXES = {r.id: r.suffix for r in load_recipes()}  # the built-in recipes' repo suffixes, from the recipe book


class WatchHub(Protocol):
    """What the watcher needs from `bot.clients.hub.HubClient`."""

    endpoint: str

    def list_author_models(self, author: str, sort: str = "createdAt", limit: int | None = None) -> Iterable[ModelInfo]: ...

    def model_info(self, repo_id: str, revision: str | None = None) -> ModelInfo: ...

    def repo_card_data(self, repo_id: str) -> dict[str, Any] | None: ...

    def can_read(self, repo_id: str, revision: str | None = None) -> bool: ...


class Dispatcher(Protocol):
    """What the watcher needs from `bot.clients.github.GitHubDispatcher`."""

    def dispatch(self, workflow: str = ..., ref: str = ..., inputs: Mapping[str, str] | None = None) -> Any: ...


PublishFn = Callable[[str, str, list[str], Settings], Any]


@dataclass(frozen=True)
class Candidate:
    """One model the watcher looked at, and what it decided."""

    model_id: str
    revision: str | None
    decision: Decision
    reason: str
    recipes: tuple[str, ...] = ()  # the recipes still to publish at this revision
    published: tuple[str, ...] = ()  # recipes whose target repo already holds this revision
    previous_revision: str | None = None
    params_b: float | None = None
    retry: bool = False  # a skip that may pass later
    ledger_state: str | None = None  # what the ledger records for it (None: leave the ledger as it is)
    entry: WatchEntry | None = field(default=None, compare=False, repr=False)
    settings: Settings | None = field(default=None, compare=False, repr=False)  # merged with the entry's profile

    @property
    def queued(self) -> bool:
        return self.decision != "skip"


@dataclass(frozen=True)
class WatchPlan:
    candidates: tuple[Candidate, ...]
    cursors: tuple[AuthorCursor, ...] = ()

    @property
    def queued(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.queued)

    @property
    def skipped(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if not c.queued)


@dataclass(frozen=True)
class Action:
    model_id: str
    revision: str | None
    kind: Literal["dispatched", "published", "failed", "queued", "would-dispatch", "would-run", "would-queue"]
    detail: str = ""


@dataclass(frozen=True)
class WatchResult:
    plan: WatchPlan
    actions: tuple[Action, ...] = ()

    @property
    def failed(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind == "failed")


def recipe_suffixes(settings: Settings) -> dict[str, str]:
    """Recipe id -> repo suffix, from `bot.recipes` (with the user's recipes file) or the built-in table."""
    try:
        from bot.recipes import load_recipes
    except ImportError:
        return dict(SUFFIXES)
    return {r.id: r.suffix for r in load_recipes(settings.recipes_file)}


def target_repo_id(settings: Settings, model_id: str, recipe_id: str, suffix: str) -> str:
    """Our repo for one variant: `settings.repo_name` filled in (namespace, base_name, suffix, recipe)."""
    base_name = model_id.split("/")[-1]
    return settings.repo_name.format(namespace=settings.namespace, base_name=base_name, suffix=suffix,
                                     recipe=recipe_id)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class HubUnreachable(HubError):
    """The Hub itself failed (no connection after the bounded retries, or a gateway 502/503/504): the cycle stops."""


UNREACHABLE_STATUSES = frozenset({502, 503, 504})


def _stop_if_hub_down(exc: BaseException, client: WatchHub, stopped: str = "stopped and recorded nothing") -> None:
    """Raise `HubUnreachable` when `exc` is the Hub's failure rather than one model's (the caller then skips)."""
    if not isinstance(exc, HubError) or isinstance(exc, HubAuthError):
        return
    if not (is_transport_error(exc) or exc.status in UNREACHABLE_STATUSES):
        return
    endpoint = getattr(client, "endpoint", "the Hub")
    detail = exc.message.replace(f": cannot reach {endpoint} (", " (")
    raise HubUnreachable(
        f"cannot reach {endpoint}: {detail}; the watch cycle {stopped}",
        status=exc.status,
        hint="check the network and HF_ENDPOINT / hub_endpoint; the next cycle starts over; hub_retries and "
             "hub_retry_base_s / hub_retry_max_s bound each request's retries") from exc


class _Planner:
    def __init__(self, client: WatchHub, ledger: Ledger, layers: SettingsLayers, now: datetime) -> None:
        self.client, self.ledger, self.layers, self.now = client, ledger, layers, now
        self.settings = layers.merge()
        self.suffixes = recipe_suffixes(self.settings)

    def list_new(self, author: str, cursor: AuthorCursor | None, stop_before: datetime | None) -> list[ModelInfo]:
        """Newest first, up to (not including) the cursor's model or anything older than it."""
        seen_at = _parse_time(cursor.newest_created_at) if cursor else None
        out: list[ModelInfo] = []
        for info in self.client.list_author_models(author, sort="createdAt"):
            created = _aware(info.created_at)
            if cursor is not None and (info.id == cursor.newest_id or (created and seen_at and created < seen_at)):
                break
            if stop_before is not None and created is not None and created < stop_before:
                break
            out.append(info)
        return out

    def evaluate(self, model_id: str, entry: WatchEntry) -> Candidate:
        settings = entry_layers(self.layers, entry, model_id).merge()
        recipes = recipes_for(entry, settings, list(self.suffixes))
        try:
            info = self.client.model_info(model_id)
        except HubAuthError:
            raise
        except (HubError, ModelError, HfHubHTTPError) as exc:
            _stop_if_hub_down(exc, self.client)
            return Candidate(model_id, None, "skip", f"Hub: {_one_line(exc)}", retry=True, ledger_state="skipped",
                             entry=entry, settings=settings)
        sha = info.sha
        if not sha:
            return Candidate(model_id, None, "skip", "the Hub gave no revision", retry=True, ledger_state="skipped",
                             entry=entry, settings=settings)
        recorded = self.ledger.final_skip(model_id, sha)
        if info.gated and recorded is not None and is_gated_skip(recorded.reason):  # access is not asked again
            return Candidate(model_id, sha, "skip", recorded.reason, entry=entry, settings=settings)
        try:
            check = check_model(info, entry, settings, self.now, lambda: self.client.can_read(model_id, sha))
            if check.reason:
                return Candidate(model_id, sha, "skip", check.reason, params_b=check.params_b, retry=check.retry,
                                 ledger_state="skipped", entry=entry, settings=settings)
            return self._publish_state(model_id, sha, recipes, settings, entry, check.params_b)
        except HubAuthError:
            raise
        except (HubError, HfHubHTTPError) as exc:
            _stop_if_hub_down(exc, self.client)
            return Candidate(model_id, sha, "skip", f"Hub: {_one_line(exc)}", retry=True, entry=entry,
                             settings=settings)

    def _publish_state(self, model_id: str, sha: str, recipes: tuple[str, ...], settings: Settings,
                       entry: WatchEntry, params_b: float | None) -> Candidate:
        common: dict[str, Any] = {"params_b": params_b, "entry": entry, "settings": settings}
        row = self.ledger.get_model(model_id, sha)
        if row is not None and row.state == "published" and set(recipes) <= set(row.recipes):
            return Candidate(model_id, sha, "skip", f"already published at {sha[:12]}", published=recipes, **common)
        published: list[str] = []
        older: dict[str, str] = {}
        for rid in recipes:
            suffix = self.suffixes.get(rid, SUFFIXES.get(rid, f"-{rid}"))
            data = self.client.repo_card_data(target_repo_id(settings, model_id, rid, suffix)) or {}
            revision = data.get(CARD_REVISION_KEY)
            if revision == sha:
                published.append(rid)
            elif revision:
                older[rid] = str(revision)
        missing = tuple(r for r in recipes if r not in published)
        if not missing:
            return Candidate(model_id, sha, "skip", f"already published at {sha[:12]}", recipes=recipes,
                             published=tuple(published), ledger_state="published", **common)
        if row is not None and row.state in ("dispatched", "in-flight"):
            since = _parse_time(row.updated_at) or self.now
            if self.now - since < DISPATCH_STALE:
                hours = (self.now - since).total_seconds() / 3600
                return Candidate(model_id, sha, "skip", f"{row.state} {hours:.1f} h ago; waiting for its result",
                                 recipes=missing, published=tuple(published), retry=True, **common)
        if row is not None and row.state == "failed" and row.attempts >= MAX_ATTEMPTS:
            return Candidate(model_id, sha, "skip", f"failed {row.attempts} times (last: {row.reason})",
                             recipes=missing, published=tuple(published), **common)
        previous = next(iter(older.values()), None)
        if previous is None:
            last = self.ledger.latest(model_id, state="published")
            previous = last.revision if last is not None and last.revision != sha else None
        reason = f"published at {previous[:12]}, now at {sha[:12]}" if previous else "not published yet"
        if published:
            reason += f"; {len(published)} of {len(recipes)} recipes already at this revision"
        if row is not None and row.state in ("dispatched", "in-flight", "failed"):
            reason += f"; again after {row.state} ({row.attempts} attempt{'s' if row.attempts != 1 else ''})"
        return Candidate(model_id, sha, "new-revision" if previous else "new", reason, recipes=missing,
                         published=tuple(published), previous_revision=previous, ledger_state="queued", **common)


def _one_line(exc: Exception) -> str:
    return exc.one_line() if isinstance(exc, BotError) else str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def plan_watch(watchlist: Watchlist, client: WatchHub, ledger: Ledger, layers: SettingsLayers,
               *, now: datetime | None = None) -> WatchPlan:
    """Decide, for every watched model, new / new-revision / skip (with the reason). Reads only.
    `layers`: the settings' merge inputs (normally `watchlist.layers()`); each model adds its entry's profile."""
    planner = _Planner(client, ledger, layers, now or datetime.now(timezone.utc))
    candidates: dict[str, Candidate] = {}
    for entry in watchlist.watch:
        for model_id in entry.model_ids():
            if model_id not in candidates:
                candidates[model_id] = planner.evaluate(model_id, entry)
    cursors: list[AuthorCursor] = []
    for author, entries in watchlist.listed_authors().items():
        fingerprint = group_fingerprint(entries)
        cursor = ledger.cursor(author)
        if cursor is not None and cursor.fingerprint != fingerprint:
            cursor = None  # the entries changed: look at everything again
        days = [e.created_after for e in entries]
        stop = None if None in days else datetime.combine(min(d for d in days if d), datetime.min.time(), timezone.utc)
        try:
            listed = planner.list_new(author, cursor, stop)
        except HubAuthError:
            raise
        except (HubError, HfHubHTTPError) as exc:
            _stop_if_hub_down(exc, client)
            candidates[f"{author}/*"] = Candidate(f"{author}/*", None, "skip", f"listing failed: {_one_line(exc)}",
                                                  retry=True)
            continue
        if listed:
            newest = listed[0]
            created = _aware(newest.created_at)
            cursors.append(AuthorCursor(author, created.isoformat() if created else None, newest.id, fingerprint))
        else:
            cursors.append(AuthorCursor(author, cursor.newest_created_at if cursor else None,
                                        cursor.newest_id if cursor else None, fingerprint))
        new_ids = [i.id for i in listed]
        for model_id in dict.fromkeys(new_ids + [r.model_id for r in ledger.to_revisit(author)]):
            if model_id in candidates:
                continue
            entry = next((e for e in entries if e.covers(model_id)), None)
            if entry is not None:
                candidates[model_id] = planner.evaluate(model_id, entry)
            elif model_id in new_ids:
                candidates[model_id] = Candidate(model_id, None, "skip",
                                                 f"not matched by the include/exclude patterns of {author}")
    return WatchPlan(tuple(candidates.values()), tuple(cursors))


def _load_publish() -> PublishFn:
    try:
        from bot.stages.pipeline import publish_model
    except ImportError as exc:
        raise StageError("watch", f"cannot run the pipeline here: bot.stages.pipeline.publish_model is missing ({exc})",
                         hint="use --dispatch, or update the bot") from None
    return publish_model


def _sync_variants(ledger: Ledger, settings: Settings, model_id: str, revision: str) -> list[str]:
    return sync_from_run(ledger, RunDir.for_model(settings.runs_dir, model_id, revision), model_id, revision)


def run_watch(watchlist: Watchlist, client: WatchHub, ledger: Ledger, layers: SettingsLayers, *,
              dispatch: bool = False, run: bool = False, dry_run: bool = False,
              dispatcher: Dispatcher | None = None, ref: str = "main", limit: int | None = None,
              publish: PublishFn | None = None, now: datetime | None = None) -> WatchResult:
    """Plan, record in the ledger (not with `dry_run`), then dispatch `publish.yml` or run the pipeline here.

    At most `limit` models are dispatched or run; the rest stay queued for the next cycle.
    """
    if dispatch and run:
        raise ConfigError("--dispatch and --run exclude each other", hint="dispatch to the GPU runner, or run here")
    plan = plan_watch(watchlist, client, ledger, layers, now=now)
    todo = plan.queued if limit is None else plan.queued[:limit]
    if dry_run:
        kind: Literal["would-dispatch", "would-run", "would-queue"] = (
            "would-dispatch" if dispatch else "would-run" if run else "would-queue")
        return WatchResult(plan, tuple(Action(c.model_id, c.revision, kind, ",".join(c.recipes)) for c in todo))
    for cursor in plan.cursors:
        ledger.set_cursor(cursor)
    for cand in plan.candidates:
        if cand.revision and ledger.get_model(cand.model_id, NO_REVISION) is not None:
            ledger.forget(cand.model_id, NO_REVISION)
        if cand.ledger_state:
            ledger.set_model(cand.model_id, cand.revision or NO_REVISION, cand.ledger_state, cand.reason,
                             recipes=cand.recipes, retry=cand.retry)
        for rid in cand.published:
            if cand.revision:
                ledger.set_variant(cand.model_id, cand.revision, rid, "published")
    actions: list[Action] = []
    if dispatch:
        if dispatcher is None:
            from bot.clients.github import GitHubDispatcher

            dispatcher = GitHubDispatcher()
        for cand in todo:
            assert cand.revision is not None
            inputs = {"model": cand.model_id, "revision": cand.revision, "recipes": ",".join(cand.recipes)}
            dispatcher.dispatch(workflow=PUBLISH_WORKFLOW, ref=ref, inputs=inputs)
            ledger.set_model(cand.model_id, cand.revision, "dispatched", f"{PUBLISH_WORKFLOW}@{ref}", attempt=True)
            for rid in cand.recipes:
                ledger.set_variant(cand.model_id, cand.revision, rid, "queued")
            actions.append(Action(cand.model_id, cand.revision, "dispatched", inputs["recipes"]))
    elif run:
        publish = publish or _load_publish()
        for cand in todo:
            actions.append(_run_one(cand, ledger, publish, client))
    else:
        actions = [Action(c.model_id, c.revision, "queued", ",".join(c.recipes)) for c in todo]
    return WatchResult(plan, tuple(actions))


def _run_one(cand: Candidate, ledger: Ledger, publish: PublishFn, client: WatchHub) -> Action:
    assert cand.revision is not None and cand.settings is not None
    model_settings = cand.settings
    ledger.set_model(cand.model_id, cand.revision, "in-flight", "running here", attempt=True)
    try:
        publish(cand.model_id, cand.revision, list(cand.recipes), model_settings)
    except BotError as exc:
        ledger.set_model(cand.model_id, cand.revision, "failed", exc.one_line())
        _sync_variants(ledger, model_settings, cand.model_id, cand.revision)
        _stop_if_hub_down(exc, client, "stopped")  # the next models would fail the same way
        return Action(cand.model_id, cand.revision, "failed", exc.one_line())
    except Exception as exc:
        ledger.set_model(cand.model_id, cand.revision, "failed", f"{type(exc).__name__}: {exc}")
        raise
    states = _sync_variants(ledger, model_settings, cand.model_id, cand.revision)
    summary = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "done"
    ledger.set_model(cand.model_id, cand.revision, "published", summary, recipes=cand.recipes)
    return Action(cand.model_id, cand.revision, "published", summary)
