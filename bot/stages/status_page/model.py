"""What the status site shows, read once from the ledger and the run directories into typed view rows.

One `RunView` per (model, revision): the watcher's state from the ledger, and per variant the manifest's state
with why (the gate's reasons and rule, or the stage that failed), mean recovery with its interval, fidelity,
speedups (only where base and variant were measured alike), size, the published repo and collection, and when
it last ran. A variant the ledger knows but no manifest holds shows the ledger's state with no numbers. Every
cell is worded by `bot.present`; nothing here formats a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from bot import present
from bot.config import Settings
from bot.ledger import LEDGER_FILE, Ledger, ModelRow, VariantRow
from bot.manifest import BaseManifest, Status, VariantManifest, now_iso
from bot.errors import UnknownRecipeError
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.rundir import RunDir, run_id_for
from bot.stages.card.chart import CHART_NAME

STATES = ("queued", "running", "quantized", "validated", "published", "rejected", "inconclusive", "failed")


@dataclass(frozen=True)
class Link:
    text: str
    href: str | None  # None: shown as text (a local target, or nothing to link to)


@dataclass(frozen=True)
class VariantView:
    variant: str
    name: str  # the recipe's display name
    state: str  # one of STATES
    reason: str  # why it is in that state ('' when there is nothing to say)
    rule: str  # the gate's rule as applied
    gate: str  # the gate's outcome in words
    recovery: str
    fidelity: str
    speedup_batch1: str
    speedup_batched: str
    speed_note: str
    size: str
    repo: Link | None
    collection: Link | None
    last_run: str
    failure: str  # '' or "<stage>: <first line of the error>"


@dataclass(frozen=True)
class RunView:
    model_id: str
    revision: str
    run_id: str
    page: str  # the run's page, relative to the site root
    base: Link
    watcher: str  # the ledger's state of the (model, revision), '-' when the ledger has no row
    watcher_reason: str
    attempts: str
    last_run: str
    failures: str
    variants: tuple[VariantView, ...]
    rundir: Path | None = field(default=None, compare=False)  # None: known to the ledger only
    chart_source: Path | None = field(default=None, compare=False)  # a chart the card stage already drew
    chart: str | None = None  # the chart's file on the run's page, set when the site is written
    sort_key: str = ""


@dataclass(frozen=True)
class SkipView:
    model_id: str
    revision: str
    reason: str
    last_seen: str


@dataclass(frozen=True)
class SiteView:
    generated_at: str
    runs: tuple[RunView, ...]
    skipped: tuple[SkipView, ...]
    counts: tuple[tuple[str, int], ...]  # (variant state, how many), in STATES order, zeros left out


def _parse(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def latest(*isos: str | None) -> str | None:
    """The latest of ISO timestamps (None when none parses)."""
    dated = [(at, iso) for iso in isos if (at := _parse(iso)) is not None]
    return max(dated)[1] if dated else None


def _stage_times(vm: VariantManifest) -> list[str | None]:
    out: list[str | None] = []
    for rec in (vm.quantize, vm.validate_, vm.card, vm.publish):
        if rec is not None:
            out += [rec.started_at, rec.finished_at]
    if vm.validate_ is not None:
        out.append(vm.validate_.validated_at)
    return out


def _failure(vm: VariantManifest) -> str:
    for stage, rec in (("publish", vm.publish), ("validate", vm.validate_), ("quantize", vm.quantize)):
        if rec is not None and rec.status == Status.failed:
            return present.stage_failure(stage, rec.error)
    return ""


def _state(vm: VariantManifest) -> tuple[str, str]:
    """(state, why) from the manifest: the furthest stage reached, or what stopped it."""
    state = vm.state()
    failure = _failure(vm)
    gate = vm.validate_.gate if vm.validate_ else None
    if state == "failed":
        return state, failure
    if state in ("rejected", "inconclusive"):
        return state, present.gate_reason(gate)
    running = next((name for name, rec in (("publish", vm.publish), ("validate", vm.validate_),
                                            ("quantize", vm.quantize))
                    if rec is not None and rec.status == Status.running), None)
    if running is not None and state != "published":
        rec = {"publish": vm.publish, "validate": vm.validate_, "quantize": vm.quantize}[running]
        return "running", f"{running} since {present.when_text(rec.started_at if rec else None)}"
    if state == "published" and vm.publish is not None and vm.publish.forced:
        return state, "forced over: " + "; ".join(vm.publish.forced_over or [present.gate_reason(gate)])
    return state, present.gate_reason(gate)


def _links(vm: VariantManifest) -> tuple[Link | None, Link | None]:
    pub = vm.publish
    if pub is None or pub.status != Status.done or not pub.repo_id:
        return None, None
    web = pub.url if pub.url and urlsplit(pub.url).scheme in ("http", "https") else None
    repo = Link(pub.repo_id, web)
    collection = None
    if pub.collection:
        href = None
        if web is not None and pub.target == "hub":
            parts = urlsplit(web)
            href = f"{parts.scheme}://{parts.netloc}/collections/{pub.collection}"
        collection = Link(present.collection_text(pub.collection), href)
    return repo, collection


def variant_view(vm: VariantManifest) -> VariantView:
    val = vm.validate_
    comp = val.comparison if val else None
    gate = val.gate if val else None
    state, reason = _state(vm)
    repo, collection = _links(vm)
    name = vm.quantize.recipe.name if vm.quantize.recipe is not None else vm.variant
    return VariantView(
        variant=vm.variant, name=name, state=state, reason=reason, rule=gate.rule if gate else "",
        gate=present.gate_text(gate), recovery=present.recovery_text(comp),
        fidelity=present.fidelity_text(val.fidelity if val else None),
        speedup_batch1=present.speedup_text(comp, "batch1"), speedup_batched=present.speedup_text(comp, "batched"),
        speed_note=present.speed_note(comp),
        size=present.size_text(vm.quantize.size_bytes, comp.size_ratio if comp else None),
        repo=repo, collection=collection,
        last_run=present.when_text(latest(*_stage_times(vm))),
        failure=_failure(vm))


def ledger_variant_view(row: VariantRow) -> VariantView:
    """A variant the ledger knows of but no manifest holds (dispatched, not run here): its state, no numbers."""
    state = row.state if row.state in STATES else "queued"
    try:
        name = load_recipes().get(row.variant).name
    except UnknownRecipeError:
        name = row.variant
    return VariantView(
        variant=row.variant, name=name, state=state, reason=row.reason, rule="", gate="-", recovery="-",
        fidelity="-", speedup_batch1="-", speedup_batched="-", speed_note="", size="-", repo=None, collection=None,
        last_run=present.when_text(row.updated_at), failure=row.reason if state == "failed" else "")


def _order(variant: str) -> tuple[int, str]:
    order = {rid: i for i, rid in enumerate(BUILTIN_ORDER)}
    return order.get(variant, len(order)), variant


def _chart_source(rundir: RunDir, variants: dict[str, VariantManifest]) -> Path | None:
    for vid, vm in variants.items():
        name = (vm.card.chart if vm.card and vm.card.chart else None) or CHART_NAME
        path = rundir.card_dir(vid) / Path(name).name
        if path.is_file():
            return path
    return None


def run_view(model_id: str, revision: str, *, base: BaseManifest | None, rundir: RunDir | None,
             manifests: dict[str, VariantManifest], model_row: ModelRow | None,
             ledger_rows: dict[str, VariantRow], hub_url: str) -> RunView:
    views = [variant_view(manifests[v]) if v in manifests else ledger_variant_view(ledger_rows[v])
             for v in sorted(set(manifests) | set(ledger_rows), key=_order)]
    source = base.base.source if base is not None else "hub"
    base_link = Link(model_id, f"{hub_url}/{model_id}" if source == "hub" and "/" in model_id else None)
    # the manifests' stage times; the ledger's (when the watcher dispatched or synced it) only without them
    times = [t for vm in manifests.values() for t in _stage_times(vm)]
    if base is not None:
        times += [base.base.started_at, base.base.finished_at]
    if not any(times):
        times = [r.updated_at for r in ledger_rows.values()] + [model_row.updated_at if model_row else None]
    last = latest(*times)
    run_id = rundir.run_id if rundir is not None else run_id_for(model_id, revision)
    return RunView(
        model_id=model_id, revision=revision, run_id=run_id, page=f"runs/{run_id}/index.html", base=base_link,
        watcher=model_row.state if model_row else "-", watcher_reason=model_row.reason if model_row else "",
        attempts=present.attempts_text(model_row.attempts if model_row else 0),
        last_run=present.when_text(last), failures=present.failures_text(
            sum(v.state == "failed" for v in views), len(views)),
        variants=tuple(views), rundir=rundir.root if rundir else None,
        chart_source=_chart_source(rundir, manifests) if rundir else None, sort_key=last or "")


def _run_dirs(runs_dir: Path) -> list[RunDir]:
    if not runs_dir.is_dir():
        return []
    return [RunDir(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and "@" in p.name]


def collect_site(settings: Settings) -> SiteView:
    """Every (model, revision) of the ledger and of the run directories under `settings.runs_dir`."""
    runs_dir = Path(settings.runs_dir)
    models: dict[tuple[str, str], ModelRow] = {}
    variants: dict[tuple[str, str], dict[str, VariantRow]] = {}
    if (runs_dir / LEDGER_FILE).exists():
        with Ledger(runs_dir / LEDGER_FILE) as ledger:
            for m in ledger.models():
                models.setdefault((m.model_id, m.revision[:12]), m)
            for v in ledger.variants():
                variants.setdefault((v.model_id, v.revision[:12]), {})[v.variant] = v
    found: dict[tuple[str, str], tuple[BaseManifest, RunDir, dict[str, VariantManifest]]] = {}
    for rundir in _run_dirs(runs_dir):
        base = rundir.read_base()
        if base is None:
            continue
        manifests = {v: vm for v in rundir.variants() if (vm := rundir.read_variant(v)) is not None}
        found[(base.base.model_id, base.base.revision[:12])] = (base, rundir, manifests)
    hub_url = (settings.hub_endpoint or "https://huggingface.co").rstrip("/")
    runs, skipped = [], []
    for key in sorted(set(models) | set(variants) | set(found)):
        row = models.get(key)
        if key not in found and not variants.get(key) and row is not None and row.state == "skipped":
            skipped.append(SkipView(row.model_id, row.revision, row.reason, present.when_text(row.updated_at)))
            continue
        base, rundir, manifests = found.get(key, (None, None, {}))
        revision = base.base.revision if base else (row.revision if row else next(iter(variants[key].values())).revision)
        runs.append(run_view(key[0], revision, base=base, rundir=rundir, manifests=manifests, model_row=row,
                             ledger_rows=variants.get(key, {}), hub_url=hub_url))
    runs.sort(key=lambda r: (_parse(r.sort_key) or datetime.min.replace(tzinfo=timezone.utc), r.model_id),
              reverse=True)
    tally = {s: sum(v.state == s for r in runs for v in r.variants) for s in STATES}
    return SiteView(generated_at=present.when_text(now_iso()), runs=tuple(runs), skipped=tuple(skipped),
                    counts=tuple((s, n) for s, n in tally.items() if n))
