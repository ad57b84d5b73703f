"""The card stage: README.md (front matter + body), the chart and provenance files, from the manifests alone.

    render_card(rundir, variant, settings) -> CardRecord
    render_cards(rundir, settings, variant=None) -> list[CardOutcome]
    render_collection(rundir, settings, variants=None) -> CollectionText

Everything lands in `rundir.card_dir(variant)`, which is exactly what is uploaded next to the model files:
README.md, the chart PNG, `bot_manifest.json` (the manifests with local paths stripped, for machines) and
`.eval_results/*.yaml` where the Hub accepts them. The directory is built aside and swapped in whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import ModelCard

from bot.config import DEFAULT_TEMPLATES, Settings
from bot.errors import BotError, ConfigError, StageError
from bot.manifest import CardRecord, Status, now_iso
from bot.rundir import RunDir, atomic_write_text
from bot.stages.card.checks import check_checkpoint
from bot.stages.card.data import RunData, base_name, quantize_reason
from bot.stages.card.format import gb, one_line, pct, ratio
from bot.stages.card.meta import card_metadata, eval_results_files, front_matter
from bot.stages.card.view import build_variant_card
from bot.stages.card.chart import CHART_NAME, draw_chart
from bot.stages.publish import collection_title

VARIANT_TEMPLATE = "variant.md.j2"
COLLECTION_TEMPLATE = "collection.md.j2"
MANIFEST_COPY = "bot_manifest.json"
COLLECTION_DESCRIPTION_MAX = 150  # the Hub rejects longer collection descriptions
COLLECTION_NOTE_MAX = 500


# ---------------------------------------------------------------- templates


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_template(templates_dir: Path, name: str, **context: Any) -> str:
    """Render with StrictUndefined: a variable the view model lacks fails with the template, line and name."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    path = Path(templates_dir) / name
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"template {name} not found", path=str(templates_dir),
                          hint="pass --templates DIR with variant.md.j2 and collection.md.j2") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax error: {exc.message}", path=str(path), line=exc.lineno) from None
    try:
        text = template.render(**context)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"undefined template variable: {exc.message}", path=str(path),
                          line=_template_line(exc, template.filename),
                          hint="a card template may use only the fields of bot.stages.card.view.VariantCard "
                               "(collection: bot.stages.card.render.CollectionView)") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"template error: {exc}", path=str(path), line=_template_line(exc, template.filename)) from None
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ---------------------------------------------------------------- variant card


def _sanitized_manifests(run: RunData, variant: str) -> dict[str, Any]:
    """What `bot_manifest.json` holds: base and variant records as the card saw them (already scrubbed)."""
    vm = run.variants[variant]
    return {
        "schema": 1,
        "run_id": run.rundir.run_id,
        "repo_id": run.repo_id(variant),
        "base": run.base.model_dump(mode="json", by_alias=True, exclude={"base": {"path"}}),
        "variant": vm.model_dump(mode="json", by_alias=True, exclude={"card", "publish", "target"}),
    }


def _fail(run: RunData, variant: str, message: str, problems: list[str], notes: list[str], hint: str) -> StageError:
    vm = run.variants[variant]
    vm.card = CardRecord(status=Status.failed, started_at=vm.card.started_at if vm.card else None,
                         finished_at=now_iso(), error=message, hint=hint, problems=problems, notes=notes)
    run.rundir.write_variant(vm)
    return StageError("card", f"{variant}: {message}", hint=hint)


def render_card(rundir: RunDir, variant: str, settings: Settings, templates_dir: Path | None = None) -> CardRecord:
    """Render one variant's card into `rundir.card_dir(variant)` and record it in the variant manifest."""
    started = now_iso()
    run = RunData.load(rundir, settings)
    if variant not in run.variants:
        raise StageError("card", f"{rundir.run_id} has no variant '{variant}'",
                         hint=f"variants in this run: {', '.join(run.variants) or 'none'}")
    vm = run.variants[variant]
    reason = quantize_reason(vm)
    model_dir = rundir.model_dir(variant)
    if reason or not model_dir.is_dir():
        raise StageError("card", f"{variant} has no checkpoint to describe ({reason or f'{model_dir} is missing'})",
                         hint=f"run `bot quantize` for {variant} first")
    templates = Path(templates_dir or settings.templates_dir)
    base = run.base.base
    base_dir = Path(base.path) if base.path and Path(base.path).is_dir() else rundir.base_dir / "model"
    checks = check_checkpoint(model_dir, base_dir, base.license_files)
    if checks.errors:
        raise _fail(run, variant, "checkpoint check failed: " + "; ".join(checks.errors), checks.errors, checks.notes,
                    hint="the quantize stage copies tokenizer, chat template, generation config and licence files "
                         "from the base: rerun it, or fix the checkpoint")
    scrub = run.scrubber()
    clean = run.scrubbed(scrub)
    repo_id = run.repo_id(variant)
    card_dir = rundir.card_dir(variant)
    staging = card_dir.with_name(card_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        chart = CHART_NAME if draw_chart(clean, variant, staging / CHART_NAME) else None
        view = build_variant_card(clean, variant, scrub, chart)
        body = render_template(templates, VARIANT_TEMPLATE, card=view)
        readme = f"---\n{front_matter(card_metadata(clean, variant, repo_id))}\n---\n\n{body}"
        ModelCard(readme)  # the Hub's parser accepts it (raises on invalid front matter)
        leaks = scrub.leaks(readme)
        if leaks:
            raise StageError("card", f"{variant}: the card would publish local paths: {', '.join(leaks)}",
                             hint="a manifest field escaped the scrubber; report it")
        atomic_write_text(staging / "README.md", readme)
        eval_files, eval_notes = eval_results_files(clean, variant, repo_id)
        for name, entries in eval_files.items():
            atomic_write_text(staging / ".eval_results" / name, yaml.safe_dump(entries, sort_keys=False))
        copy = json.dumps(_sanitized_manifests(clean, variant), indent=2) + "\n"
        if scrub.leaks(copy):
            raise StageError("card", f"{variant}: {MANIFEST_COPY} would publish local paths",
                             hint="a manifest field escaped the scrubber; report it")
        atomic_write_text(staging / MANIFEST_COPY, copy)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = card_dir.with_name(card_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if card_dir.exists():
        os.replace(card_dir, old)
    os.replace(staging, card_dir)
    shutil.rmtree(old, ignore_errors=True)
    files = sorted(str(p.relative_to(card_dir)) for p in card_dir.rglob("*") if p.is_file())
    record = CardRecord(
        status=Status.done, started_at=started, finished_at=now_iso(),
        readme_sha256=hashlib.sha256(readme.encode("utf-8")).hexdigest(), chart=chart,
        template_dir="built-in" if templates.resolve() == DEFAULT_TEMPLATES.resolve() else str(templates),
        repo_id=repo_id, files=files, problems=[], notes=[*checks.notes, *eval_notes],
    )
    vm.card = record
    rundir.write_variant(vm)
    return record


@dataclass(frozen=True)
class CardOutcome:
    variant: str
    record: CardRecord | None
    error: BotError | None = None
    skipped: str | None = None


def render_cards(rundir: RunDir, settings: Settings, variant: str | None = None,
                 templates_dir: Path | None = None) -> list[CardOutcome]:
    """Cards for one variant, or for every quantized variant of the run (others are skipped with the reason).
    One variant's failure does not stop the others; the outcome carries its error."""
    run = RunData.load(rundir, settings)
    ids = [variant] if variant else list(run.variants)
    out = []
    for vid in ids:
        if variant is None and vid in run.variants and quantize_reason(run.variants[vid]):
            out.append(CardOutcome(vid, None, skipped=quantize_reason(run.variants[vid])))
            continue
        try:
            out.append(CardOutcome(vid, render_card(rundir, vid, settings, templates_dir)))
        except (StageError, ConfigError) as exc:
            if variant is not None or isinstance(exc, ConfigError):
                raise
            out.append(CardOutcome(vid, None, error=exc))
    return out


# ---------------------------------------------------------------- collection


@dataclass(frozen=True)
class CollectionItem:
    name: str
    repo_id: str
    size: str
    recovery: str


@dataclass(frozen=True)
class CollectionView:
    base_id: str
    base_name: str
    items: list[CollectionItem]
    count: int
    formats: str  # "W4A16 GPTQ, FP8 Dynamic"


@dataclass(frozen=True)
class CollectionText:
    title: str
    description: str
    notes: dict[str, str]  # repo id -> item note


def render_collection(rundir: RunDir, settings: Settings, variants: list[str] | None = None,
                      templates_dir: Path | None = None) -> CollectionText:
    """The collection's title, description (from collection.md.j2, at most 150 characters) and one note per item
    (at most 500), for `variants` (default: those published, or that passed the gate or were forced)."""
    run = RunData.load(rundir, settings)
    items, notes = [], {}
    for vid, vm in run.variants.items():
        if (vid not in variants) if variants is not None else not run.will_publish(vid):
            continue
        recipe = run.recipes[vid]
        comp = vm.validate_.comparison if vm.validate_ else None
        size = gb(vm.quantize.size_bytes) if vm.quantize.size_bytes is not None else "size not measured"
        recovery = pct(comp.mean_recovery) if comp and comp.mean_recovery is not None else "recovery not measured"
        repo_id = run.repo_id(vid)
        items.append(CollectionItem(recipe.name, repo_id, size, recovery))
        parts = [recipe.name, size, f"{recovery} mean recovery" if comp and comp.mean_recovery is not None else recovery]
        if comp is not None and comp.speedup_batch1 is not None and vm.validate_ and vm.validate_.speed:
            parts.append(f"batch-1 {ratio(comp.speedup_batch1)} ({vm.validate_.speed.label})")
        notes[repo_id] = one_line(" · ".join(parts), COLLECTION_NOTE_MAX)
    b = run.base.base
    view = CollectionView(b.model_id, base_name(b.model_id), items, len(items), ", ".join(i.name for i in items))
    templates = Path(templates_dir or settings.templates_dir)
    description = render_template(templates, COLLECTION_TEMPLATE, collection=view)
    # The Hub rejects longer descriptions; a long base name must not block publishing, so cut with an ellipsis.
    return CollectionText(collection_title(b.model_id), one_line(description, COLLECTION_DESCRIPTION_MAX), notes)
