"""The whole job for one model: resolve -> quantize -> validate -> card -> publish (+ collection).

Each stage reads the previous stage's manifests and skips what is already complete, so rerunning the same
command after a crash resumes where it stopped. The run directory is locked for the duration (a lease that
expires if its holder dies). The ledger mirrors each variant's state for `bot status` and the watcher.

Quantize and validate overlap when `pipeline.overlap` says so (auto: quantize on a GPU): each variant is validated
as soon as it is quantized (bot.stages.overlap), within the memory plan of the attempt (bot.stages.memplan); the
validate call after it then only judges again what the overlap measured. Every attempt's quantize and validate
go on one time axis in the run directory (timeline.json and timeline.png, bot.stages.timeline).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bot.config import Settings
from bot.errors import BotError, GateRejected, StageError
from bot.ledger import sync_from_run
from bot.manifest import BaseManifest, PublishRecord, Status
from bot.recipes import Recipe, load_recipes
from bot.rundir import RunDir
from bot.secrets import redact
from bot.stages.model import resolve_model

Event = Callable[[str, dict], None]


@dataclass
class VariantOutcome:
    variant: str
    state: str
    repo_id: str | None = None
    commit: str | None = None
    changed: bool | None = None
    reason: str = ""


@dataclass
class PipelineResult:
    model_id: str
    revision: str
    run_dir: Path
    variants: list[VariantOutcome] = field(default_factory=list)
    collection: str | None = None
    dry_run: bool = False

    @property
    def published(self) -> list[VariantOutcome]:
        return [v for v in self.variants if v.state == "published"]


def _noop(stage: str, data: dict) -> None:
    return None


def publish_model(
    model: str,
    revision: str | None,
    recipes: list[str] | None,
    settings: Settings,
    *,
    force: bool = False,
    dry_run: bool = False,
    on_event: Event | None = None,
    quantize_events: Callable[[dict], None] | None = None,
    validate_events: Event | None = None,
) -> PipelineResult:
    """Run every stage for `model` and publish the variants that pass the gate (all of them with `force`)."""
    from bot.clients.hub import open_target
    from bot.ledger import Ledger
    from bot.stages.card.render import render_collection
    from bot.stages.publish import publish_collection, render_for_publish

    emit = on_event or _noop
    chosen = load_recipes(settings.recipes_file).select(recipes or settings.recipes)
    rundir, base = resolve_model(model, revision, settings)
    model_id, sha = base.base.model_id, base.base.revision
    emit("resolved", {"model": model_id, "revision": sha, "run_dir": str(rundir.root)})
    result = PipelineResult(model_id, sha, rundir.root, dry_run=dry_run)
    ids = [r.id for r in chosen]
    with Ledger.for_settings(settings) as ledger, rundir.lock(settings.lock_ttl_s, owner="publish"):
        if not dry_run:
            ledger.set_model(model_id, sha, "in-flight", "publishing", recipes=ids)
        try:
            _quantize_and_validate(rundir, base, chosen, settings, emit, quantize_events, validate_events,
                                   sync=lambda: _sync(ledger, rundir, model_id, sha, ids, dry_run))
            _sync(ledger, rundir, model_id, sha, ids, dry_run)
            emit("stage", {"stage": "card"})
            # every repo id and which variants this run publishes are decided first: the cards link to exactly those
            cards = render_for_publish(rundir, settings, ids, force=force, on_failure=lambda variant, exc: emit(
                "card-failed", {"variant": variant, "error": exc.one_line()}))
            emit("stage", {"stage": "publish"})
            # Nothing to upload (every variant failed, was rejected or has no card): no Hub traffic at all.
            with (open_target(settings, read_only=dry_run) if cards else nullcontext(None)) as client:
                for variant in ids:
                    result.variants.append(_publish_one(rundir, variant, settings, client, force, dry_run, cards))
                published = [v.variant for v in result.variants if v.state == "published"]
                if published and not dry_run:
                    text = render_collection(rundir, settings, published)
                    outcome = publish_collection(rundir, settings, client, published, text=text)
                    result.collection = getattr(outcome, "slug", None) if outcome else None
        except BotError as exc:
            if not dry_run:
                ledger.set_model(model_id, sha, "failed", exc.one_line())
            _sync(ledger, rundir, model_id, sha, ids, dry_run)
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (bot.cli): record it, release the lock, resume on rerun
            if not dry_run:
                ledger.set_model(model_id, sha, "failed", "interrupted: rerun the same command to resume")
            _sync(ledger, rundir, model_id, sha, ids, dry_run)
            raise
        except Exception as exc:  # a bug or an unmapped library error: the ledger must not say in-flight forever
            if not dry_run:
                ledger.set_model(model_id, sha, "failed", redact(f"{type(exc).__name__}: {exc}")[:500])
            _sync(ledger, rundir, model_id, sha, ids, dry_run)
            raise
        _sync(ledger, rundir, model_id, sha, ids, dry_run)
        if not dry_run:
            states = [v.state for v in result.variants]
            summary = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
            ledger.set_model(model_id, sha, "published" if result.published else "failed", summary, recipes=ids)
    return result


def _quantize_and_validate(rundir: RunDir, base: BaseManifest, chosen: list[Recipe], settings: Settings, emit: Event,
                           quantize_events: Callable[[dict], None] | None, validate_events: Event | None,
                           sync: Callable[[], None]) -> None:
    """Quantize, then validate what was quantized; overlapped when the memory plan says so. Recorded on the run's
    timeline either way."""
    from bot.stages.overlap import overlap_wanted, plan_run, run_overlapped
    from bot.stages.quantize import quantize_run
    from bot.stages.timeline import TimelineRecorder
    from bot.stages.validate.run import validate_run

    plan = plan_run(rundir, base, chosen, settings, overlap_wanted(settings))
    mode = "overlap" if plan.overlap else "serial"
    with TimelineRecorder(rundir, mode, plan.record(), interval_s=settings.pipeline.sample_interval_s) as timeline:
        if plan.overlap or plan.total_bytes is not None:  # a CPU run in series has nothing to say
            emit("plan", {"plan": plan.reason, "notes": plan.notes})
        if plan.overlap:
            emit("stage", {"stage": "quantize+validate"})
            run_overlapped(rundir, base, chosen, settings, plan, timeline, quantize_events=quantize_events,
                           validate_events=validate_events, on_note=lambda text: emit("note", {"text": text}),
                           after_each=sync)
        else:
            emit("stage", {"stage": "quantize"})
            quantize_run(rundir, base, chosen, settings, on_event=timeline.on_quantize(quantize_events),
                         workers=plan.quantize_workers)
        sync()
        done = [r.id for r in chosen if _quantized(rundir, r.id)]
        if done:  # overlapped: every model is measured already, and is judged again here
            emit("stage", {"stage": "validate"})
            validate_run(rundir, settings, variants=done, on_event=timeline.on_validate(validate_events),
                         gpu_memory_utilization=plan.gpu_memory_utilization)


def _quantized(rundir: RunDir, variant: str) -> bool:
    m = rundir.read_variant(variant)
    return bool(m and m.quantize.status == Status.done)


def _publish_one(rundir: RunDir, variant: str, settings: Settings, client, force: bool, dry_run: bool,
                 cards: list[str]) -> VariantOutcome:
    from bot.stages.publish import publish_variant

    manifest = rundir.read_variant(variant)
    if manifest is None:
        return VariantOutcome(variant, "failed", reason="no manifest")
    if variant not in cards:
        reason = next((r.error for r in (manifest.card, manifest.validate_, manifest.quantize) if r and r.error), "")
        reason = reason or manifest.state()
        return VariantOutcome(variant, manifest.state(), reason=reason)
    try:
        record: PublishRecord = publish_variant(rundir, variant, settings, client, force=force, dry_run=dry_run)
    except GateRejected as exc:
        return VariantOutcome(variant, manifest.state(), reason=exc.message)  # rejected, or inconclusive
    except StageError as exc:
        return VariantOutcome(variant, "failed", reason=exc.one_line())
    state = "planned" if dry_run else ("published" if record.status == Status.done else "failed")
    return VariantOutcome(variant, state, record.repo_id, record.commit, record.changed, record.error or "")


def _sync(ledger, rundir: RunDir, model_id: str, sha: str, ids: list[str], dry_run: bool) -> None:
    if not dry_run:
        sync_from_run(ledger, rundir, model_id, sha, ids)
