"""The publish stage: one variant's checkpoint and card to its repo in one commit; one collection per base model.

The upload is the union of `model/` and `card/` (the card's files win on a name clash). Publishing refuses a
variant that is not quantized, validated and through the gate unless forced; a forced publish is recorded in
the manifest (`publish.forced`, `publish.forced_over`). Nothing here talks to the network except through the
`HubClient` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bot import __version__
from bot.clients.hub_support import CollectionOutcome, PublishPlan, scan_folder
from bot.errors import BotError, GateRejected, StageError, UnknownRecipeError
from bot.manifest import BaseManifest, PublishRecord, RepoTarget, Status, VariantManifest, now_iso
from bot.recipes import load_recipes
from bot.rundir import RunDir
from bot.secrets import redact

if TYPE_CHECKING:
    from bot.clients.hub import HubClient
    from bot.config import Settings

COLLECTION_TITLE_MAX = 59  # the Hub refuses collection titles of 60 characters or more


@dataclass(frozen=True)
class VariantUpload:
    """Everything a publish of one variant needs, checked, before any request is made."""

    variant: str
    target: RepoTarget
    repo_id: str
    base_id: str
    base_revision: str
    files: dict[str, Path]  # repo path -> local file
    message: str
    description: str
    forced_over: list[str]


@dataclass(frozen=True)
class VariantPlan:
    """A dry run: what publishing would upload, delete and whether it would make a commit."""

    upload: VariantUpload
    target: str
    url: str
    remote: PublishPlan

    @property
    def would_commit(self) -> bool:
        return self.remote.changed

    def sizes(self) -> dict[str, int]:
        return dict(self.remote.sizes)


def base_name(model_id: str) -> str:
    return model_id.split("/")[-1]


def repo_id_for(settings: "Settings", base_id: str, variant: str, suffix: str) -> str:
    """`settings.repo_name` filled in (the same formula as the watcher's `target_repo_id`)."""
    return settings.repo_name.format(namespace=settings.namespace, base_name=base_name(base_id), suffix=suffix,
                                     recipe=variant)


def variant_suffix(m: VariantManifest, settings: "Settings") -> str:
    """The recipe's repo suffix: the applied recipe's, else the recipe book's of the same id."""
    if m.quantize.recipe is not None:
        return m.quantize.recipe.suffix
    try:
        return load_recipes(settings.recipes_file).get(m.variant).suffix
    except (UnknownRecipeError, BotError):
        return f"-{m.variant}"


def target_for(m: VariantManifest, base_id: str, settings: "Settings", *, force: bool = False) -> RepoTarget:
    """Where `m` goes and whether this run publishes it: the one place a repo id is decided."""
    reasons, _ = _blocking(m)
    through = m.quantize.status == Status.done and m.validate_ is not None and m.validate_.status == Status.done
    return RepoTarget(repo_id=repo_id_for(settings, base_id, m.variant, variant_suffix(m, settings)),
                      publish=not reasons or (force and through), forced=bool(reasons) and force and through)


def plan_targets(rundir: RunDir, settings: "Settings", variants: list[str] | None = None, *, force: bool = False,
                 without: frozenset[str] = frozenset()) -> dict[str, RepoTarget]:
    """Decide every variant's repo id and whether this run publishes it, before any card is rendered or anything
    uploaded, and store it in the variant manifests (`target`): sibling links then name exactly the repos this
    run publishes. `without`: variants that will not be published after all (their card failed)."""
    base = rundir.read_base()
    if base is None or not base.base.model_id:
        raise StageError("publish", f"no base manifest in {rundir.root}", hint="run `bot quantize` for this model first")
    out: dict[str, RepoTarget] = {}
    for variant in variants if variants is not None else rundir.variants():
        m = rundir.read_variant(variant)
        if m is None:
            continue
        target = target_for(m, base.base.model_id, settings, force=force)
        if variant in without:
            target = target.model_copy(update={"publish": False, "forced": False})
        m.target = out[variant] = target
        rundir.write_variant(m)
    return out


def render_for_publish(rundir: RunDir, settings: "Settings", variants: list[str], *, force: bool = False,
                       on_failure: Callable[[str, StageError], None] | None = None) -> list[str]:
    """The card stage of a publish run: plan the targets of `variants`, then render the cards of those validated.
    A card that fails its checkpoint check drops its variant from the plan, and the cards are rendered again
    without it, so that no card links to a repo this run does not publish. Returns the variants with a card."""
    from bot.stages.card.render import render_card  # the card stage reads the targets planned here

    def validated(variant: str) -> bool:
        m = rundir.read_variant(variant)
        return bool(m and m.quantize.status == Status.done and m.validate_ and m.validate_.status == Status.done)

    def render(todo: list[str], failed: set[str]) -> list[str]:
        plan_targets(rundir, settings, variants, force=force, without=frozenset(failed))
        cards = []
        for variant in todo:
            try:
                render_card(rundir, variant, settings)
                cards.append(variant)
            except StageError as exc:  # a failed checkpoint check stops that variant, not the run
                failed.add(variant)
                if on_failure is not None:
                    on_failure(variant, exc)
        return cards

    failed: set[str] = set()
    cards = render([v for v in variants if validated(v)], failed)
    return render(cards, failed) if failed and cards else cards


def _blocking(m: VariantManifest) -> tuple[list[str], bool]:
    """(reasons publishing should not happen, whether they are only the gate's)."""
    reasons: list[str] = []
    if m.quantize.status != Status.done:
        reasons.append(f"quantize is {m.quantize.status.value}")
    val = m.validate_
    if val is None or val.status != Status.done:
        reasons.append(f"validate is {val.status.value if val else 'not run'}")
    only_gate = not reasons
    if val is not None and val.status == Status.done:
        if val.gate is None:
            reasons.append("no gate decision")
        elif not val.gate.passed:
            reasons.append(f"gate {val.gate.outcome.value}: " + ("; ".join(val.gate.reasons) or "no reason recorded"))
    return reasons, only_gate


def _manifests(rundir: RunDir, variant: str) -> tuple[BaseManifest, VariantManifest]:
    base = rundir.read_base()
    if base is None or not base.base.model_id:
        raise StageError("publish", f"no base manifest in {rundir.root}",
                         hint="run `bot quantize` for this model first")
    m = rundir.read_variant(variant)
    if m is None:
        raise StageError("publish", f"variant {variant} has no manifest in {rundir.root}",
                         hint=f"run `bot quantize --recipe {variant}` first")
    return base, m


def upload_files(rundir: RunDir, variant: str) -> dict[str, Path]:
    """model/ and card/ files by repo path; the card's README.md is required."""
    model_dir, card_dir = rundir.model_dir(variant), rundir.card_dir(variant)
    model_files = scan_folder(model_dir) if model_dir.is_dir() else {}
    if not model_files:
        raise StageError("publish", f"{variant}: no checkpoint in {model_dir}", hint="run `bot quantize` first")
    card_files = scan_folder(card_dir) if card_dir.is_dir() else {}
    if "README.md" not in card_files:
        raise StageError("publish", f"{variant}: no README.md in {card_dir}", hint="run `bot card` first")
    return {**model_files, **card_files}


def prepare(rundir: RunDir, variant: str, settings: "Settings", *, force: bool = False) -> VariantUpload:
    """Check the variant may be published and gather what goes up. Raises before any network request."""
    base, m = _manifests(rundir, variant)
    reasons, only_gate = _blocking(m)
    if reasons and not force:
        text = f"{variant} of {base.base.model_id} is not ready to publish: {'; '.join(reasons)}"
        if only_gate:
            raise GateRejected(text, hint="improve the recipe, or pass --force to publish anyway (recorded)")
        raise StageError("publish", text, hint="run `bot validate` first, or pass --force (recorded in the manifest)")
    base_id, sha = base.base.model_id, base.base.revision
    # planned by this run (`render_for_publish`); a variant published on its own is planned here, once
    target = m.target or target_for(m, base_id, settings, force=force)
    return VariantUpload(
        variant=variant,
        target=target,
        repo_id=target.repo_id,
        base_id=base_id,
        base_revision=sha,
        files=upload_files(rundir, variant),
        message=f"bot {__version__}: {variant} of {base_id}@{sha[:12]}",
        description=f"{variant} quantization of {base_id} at revision {sha}, published by bot {__version__} "
                    f"(run {rundir.run_id}).",
        forced_over=reasons if force else [],
    )


def plan_variant(rundir: RunDir, variant: str, settings: "Settings", client: "HubClient", *,
                 force: bool = False) -> VariantPlan:
    """What `publish_variant` would do (reads the remote repo; uploads nothing)."""
    up = prepare(rundir, variant, settings, force=force)
    return VariantPlan(up, client.target, client.repo_url(up.repo_id), client.plan_publish(up.repo_id, up.files))


def publish_variant(rundir: RunDir, variant: str, settings: "Settings", client: "HubClient", *, force: bool = False,
                    dry_run: bool = False) -> PublishRecord:
    """Publish one variant in one commit (none when the repo already holds the same files).

    The manifest's `publish` section is `running` during the upload, then `done` or `failed` with the error.
    `dry_run` returns a `pending` record (changed: whether a commit would be made) and writes nothing;
    `plan_variant` gives the same plan with file sizes.
    """
    if dry_run:
        plan = plan_variant(rundir, variant, settings, client, force=force)
        up = plan.upload
        return PublishRecord(status=Status.pending, target=plan.target, repo_id=up.repo_id, url=plan.url,
                             base_revision=up.base_revision, files=sorted(up.files), changed=plan.would_commit,
                             commit=plan.remote.head, forced=bool(up.forced_over), forced_over=up.forced_over)
    up = prepare(rundir, variant, settings, force=force)
    manifest = rundir.read_variant(variant) or VariantManifest(run_id=rundir.run_id, variant=variant)
    record = PublishRecord(status=Status.running, started_at=now_iso(), target=client.target, repo_id=up.repo_id,
                           base_revision=up.base_revision, files=sorted(up.files), forced=bool(up.forced_over),
                           forced_over=up.forced_over)
    manifest.publish = record
    manifest.target = manifest.target or up.target
    rundir.write_variant(manifest)
    try:
        outcome = client.publish_files(up.repo_id, up.files, up.message, up.description, private=settings.private,
                                      gated=settings.repo_gated(rundir.read_base().base.gated))
    except BotError as exc:
        _fail(rundir, manifest, redact(exc.message), exc.hint)
        raise
    except Exception as exc:  # recorded in the manifest, then re-raised unchanged
        _fail(rundir, manifest, redact(f"{type(exc).__name__}: {exc}"), "rerun with BOT_DEBUG=1 for the traceback")
        raise
    done = record.model_copy(update={"status": Status.done, "finished_at": now_iso(), "commit": outcome.commit,
                                     "url": outcome.url, "changed": outcome.changed})
    manifest.publish = done
    rundir.write_variant(manifest)
    return done


def _fail(rundir: RunDir, manifest: VariantManifest, error: str, hint: str | None) -> None:
    assert manifest.publish is not None
    manifest.publish = manifest.publish.model_copy(
        update={"status": Status.failed, "finished_at": now_iso(), "error": error, "hint": hint})
    rundir.write_variant(manifest)


def variant_note(m: VariantManifest) -> str:
    """`w4a16-gptq: 99.2% mean recovery, 4.1 GB` with whatever the manifest has."""
    parts: list[str] = []
    comparison = m.validate_.comparison if m.validate_ else None
    if comparison is not None and comparison.mean_recovery is not None:
        parts.append(f"{comparison.mean_recovery:.1f}% mean recovery")
    if m.quantize.size_bytes:
        parts.append(f"{m.quantize.size_bytes / 1e9:.2f} GB")
    return f"{m.variant}: {', '.join(parts)}" if parts else m.variant


def collection_title(base_id: str) -> str:
    """One collection per base model; a long base name is cut with an ellipsis (the title must stay short)."""
    text = f"{base_name(base_id)} quantized"
    return text if len(text) <= COLLECTION_TITLE_MAX else text[: COLLECTION_TITLE_MAX - 1].rstrip() + "…"


def publish_collection(rundir: RunDir, settings: "Settings", client: "HubClient",
                       variants: list[str] | None = None, text=None) -> CollectionOutcome | None:
    """One collection per base model with a note per published variant; None when nothing is published."""
    base = rundir.read_base()
    if base is None:
        raise StageError("publish", f"no base manifest in {rundir.root}", hint="run `bot quantize` first")
    published: list[VariantManifest] = []
    for variant in variants if variants is not None else rundir.variants():
        m = rundir.read_variant(variant)
        if m is not None and m.publish is not None and m.publish.status == Status.done and m.publish.repo_id:
            published.append(m)
    if not published:
        return None
    base_id, sha = base.base.model_id, base.base.revision
    # `text` (bot.stages.card.render.CollectionText) carries the title, description and notes rendered from the
    # collection template; without it a plain description is used.
    title = text.title if text is not None else collection_title(base_id)
    description = (text.description if text is not None
                   else f"Quantized variants of {base_id} (revision {sha[:12]}), validated in vLLM and lm-eval.")
    notes = text.notes if text is not None else {}
    outcome = client.ensure_collection(
        settings.namespace, title, description,
        [(m.publish.repo_id, notes.get(m.publish.repo_id) or variant_note(m)) for m in published if m.publish is not None],
        private=settings.private)
    for m in published:
        assert m.publish is not None
        m.publish = m.publish.model_copy(update={"collection": outcome.slug})
        rundir.write_variant(m)
    return outcome
