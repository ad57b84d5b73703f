"""Card sections that look beyond one variant: which GPUs run it, the sibling variants, which one to choose."""

from __future__ import annotations

from dataclasses import dataclass

from bot.manifest import (
    Comparison, GateDecision, GateState, HardwareVerdict, ValidateRecord, VariantManifest, VariantValidateRecord,
)
from bot.stages.card.data import (
    RecipeFacts, RunData, accuracy_reason, quantize_reason, speed_reason, state_reason,
)
from bot.stages.card.format import (
    GENERATIONS, Generation, Scrubber, brief, cc, confidence_level, gb, generation_of, md_cell, not_measured, one_line,
    pct, pct_range, ratio,
)


# ---------------------------------------------------------------- GPU generations


@dataclass(frozen=True)
class GenerationRow:
    generation: str
    capability: str
    examples: str
    support: str
    tested: str


@dataclass(frozen=True)
class HardwareView:
    rows: list[GenerationRow]
    kernel: str
    measured: str


def support_mode(recipe: RecipeFacts, capability: str) -> str:
    """"native", "fallback" or "unsupported" for a GPU of that compute capability."""
    have = cc(capability) or (0, 0)
    if recipe.native_min and have >= (cc(recipe.native_min) or (99, 0)):
        return "native"
    if recipe.fallback_min and have >= (cc(recipe.fallback_min) or (99, 0)):
        return "fallback"
    return "unsupported"


def _support_text(recipe: RecipeFacts, gen: Generation) -> str:
    mode = support_mode(recipe, gen.capability)
    if mode == "native":
        return "✅ native"
    if mode == "fallback":
        return f"⚠️ fallback: {recipe.fallback or 'weight-only'}"
    return f"❌ not supported (needs compute capability {recipe.fallback_min or recipe.native_min})"


def hardware_view(run: RunData, variant: str, scrub: Scrubber) -> HardwareView:
    recipe = run.recipes[variant]
    vv = run.variants[variant].validate_
    hw = vv.hardware if vv else None
    measured_gen = generation_of(hw.compute_capability) if hw is not None and hw.device == "cuda" else None
    rows = []
    for gen in GENERATIONS:
        tested = "not tested in this run"
        if measured_gen is not None and gen == measured_gen and hw is not None and vv is not None:
            tested = _tested_text(vv, hw.name, scrub)
        rows.append(GenerationRow(gen.name, gen.capability, gen.examples, _support_text(recipe, gen), tested))
    if hw is None:
        measured = f"No measurement of this variant yet: {scrub(state_reason(vv) or 'not validated')}."
    elif hw.device != "cuda":
        measured = (f"This run had no GPU: the variant was validated on CPU ({hw.name or 'unknown CPU'}), "
                    "so the table above comes from the recipe's hardware data only.")
    else:
        vllm = (vv.versions.get("vllm") if vv else None) or "unknown version"
        measured = f"Validated in this run on {hw.count}× {hw.name} (compute capability {hw.compute_capability}) with vLLM {vllm}."
    kernel = f"Kernels: {recipe.kernel}." if recipe.kernel else ""
    return HardwareView(rows, kernel, measured)


def _tested_text(vv: VariantValidateRecord, gpu: str, scrub: Scrubber) -> str:
    reason = state_reason(vv)
    if reason:
        return md_cell(f"❌ {gpu}: {scrub(one_line(reason))}")
    verdict = hardware_verdict(vv)  # the validate stage's, never re-derived here
    how = {"native": "loaded and ran natively", "fallback": "loaded and ran through the fallback",
           "unsupported": "loaded and ran, below the recipe's minimum compute capability"}.get(
        verdict.status if verdict else "", "loaded (no hardware verdict recorded)")
    kernel = f" (kernel: {vv.load.kernel})" if vv.load is not None and vv.load.kernel else ""
    return md_cell(f"✅ {gpu}: {how}{kernel}")


def hardware_verdict(vv: VariantValidateRecord) -> HardwareVerdict | None:
    """`hardware_verdict`; records of older bots kept the same fields in `compat`."""
    if vv.hardware_verdict is not None:
        return vv.hardware_verdict
    return HardwareVerdict.model_validate(vv.compat) if vv.compat.get("status") else None


# ---------------------------------------------------------------- siblings


@dataclass(frozen=True)
class SiblingRow:
    model: str
    scheme: str
    size: str
    recovery: str
    speedup_batch1: str
    speedup_batched: str
    gate: str


@dataclass(frozen=True)
class SiblingsView:
    rows: list[SiblingRow]
    guidance: list[str]


def _label(vv: VariantValidateRecord | None) -> str:
    return vv.speed.label if vv is not None and vv.speed is not None else "GPU"


def _speedup(vv: VariantValidateRecord | None, value: float | None, part: str, base: ValidateRecord | None) -> str:
    if value is not None:
        return ratio(value) + (" (CPU)" if _label(vv) == "CPU" else "")
    comp = vv.comparison if vv is not None else None
    if comp is not None and not comp.speed_comparable and comp.speed_incomparable_reason:
        return f"not comparable ({brief(comp.speed_incomparable_reason)})"
    reason = speed_reason(vv, part)
    return not_measured(brief(reason) if reason else f"base: {brief(speed_reason(base, part) or 'comparison not recorded')}")


def gate_text(gate: GateDecision | None, vv: VariantValidateRecord | None, forced: bool = False) -> str:
    if gate is None:
        return not_measured(brief(state_reason(vv) or "gate not evaluated"))
    if gate.passed:
        return "✅ passed"
    why = one_line("; ".join(gate.reasons) or "no reason recorded", 80)
    if forced:
        return f"⚠️ {gate.outcome.value}, published with --force: {why}"
    return f"❔ inconclusive: {why}" if gate.outcome == GateState.inconclusive else f"❌ failed: {why}"


def recovery_cell(comp: Comparison) -> str:
    """The mean recovery with its CI where the validate stage recorded one."""
    assert comp.mean_recovery is not None
    if comp.mean_recovery_ci:
        return f"{pct(comp.mean_recovery)} ({confidence_level(comp.confidence)}CI {pct_range(comp.mean_recovery_ci)})"
    return pct(comp.mean_recovery)


def _sibling_row(run: RunData, vid: str, current: str, scrub: Scrubber) -> SiblingRow:
    vm: VariantManifest = run.variants[vid]
    recipe = run.recipes[vid]
    vv = vm.validate_
    comp = vv.comparison if vv else None
    name = recipe.name
    if vid == current:
        model = f"**{name}** (this model)"
    elif run.will_publish(vid):
        model = f"[{name}]({run.hub_url}/{run.repo_id(vid)})"
    else:
        model = name
    q_reason = quantize_reason(vm)
    scheme = " · ".join(x for x in (recipe.scheme, recipe.algorithm) if x) or recipe.id
    if q_reason:  # nothing was measured: say so once in full, briefly elsewhere
        short = not_measured(q_reason.split(":", 1)[0])
        return SiblingRow(model, md_cell(scheme), short, short, short, short,
                          md_cell(scrub(f"❌ {one_line(q_reason, 100)}")))
    size = gb(vm.quantize.size_bytes) if vm.quantize.size_bytes is not None else not_measured("size not recorded")
    if comp is not None and comp.mean_recovery is not None:
        recovery = recovery_cell(comp)
    else:
        why = accuracy_reason(vv)
        base_why = accuracy_reason(run.base.validate_) or "comparison not recorded"
        recovery = not_measured(brief(why) if why else f"base: {brief(base_why)}")
    s1 = _speedup(vv, comp.speedup_batch1 if comp else None, "batch1", run.base.validate_)
    sn = _speedup(vv, comp.speedup_batched if comp else None, "batched", run.base.validate_)
    gate = gate_text(vv.gate if vv else None, vv, run.forced(vid))
    return SiblingRow(model, md_cell(scheme), md_cell(scrub(size)), md_cell(scrub(recovery)), md_cell(scrub(s1)),
                      md_cell(scrub(sn)), md_cell(scrub(gate)))


def siblings_view(run: RunData, current: str, scrub: Scrubber) -> SiblingsView:
    b = run.base.base
    base_size = gb(b.size_bytes) if b.size_bytes is not None else not_measured("size not recorded")
    rows = [SiblingRow(f"[{b.model_id}]({run.base_url()}) (base)" if run.base_url() else f"{b.model_id} (base)",
                       md_cell(b.dtype or "original"), base_size, "100.00% (reference)", "1.00× (reference)",
                       "1.00× (reference)", "reference")]
    rows += [_sibling_row(run, vid, current, scrub) for vid in run.variants]
    return SiblingsView(rows, guidance(run))


# ---------------------------------------------------------------- which one should I choose


def guidance(run: RunData) -> list[str]:
    """Advice derived from this run's numbers and the recipes' hardware data; passing variants only."""
    passed = {vid: vm for vid, vm in run.variants.items()
              if vm.validate_ is not None and vm.validate_.gate is not None and vm.validate_.gate.passed}
    if not passed:
        return ["No variant passed the quality gate in this run, so none is recommended: the table above says why."]
    name = {vid: run.recipes[vid].name for vid in passed}
    out: list[str] = []
    sized = {vid: vm.quantize.size_bytes for vid, vm in passed.items() if vm.quantize.size_bytes is not None}
    comps = {vid: vm.validate_.comparison for vid, vm in passed.items() if vm.validate_ and vm.validate_.comparison}
    rec = {vid: c.mean_recovery for vid, c in comps.items() if c.mean_recovery is not None}
    if sized:
        vid = min(sized, key=lambda v: (sized[v], v))
        extra = f", {pct(rec[vid])} mean recovery" if vid in rec else ""
        out.append(f"**Smallest:** {name[vid]} ({gb(sized[vid])}{extra}).")
    if rec:
        out.append(_closest(rec, {vid: comps[vid] for vid in rec}, name))
    gpu = {vid: c for vid, c in comps.items() if _label(passed[vid].validate_) == "GPU"}
    hw = next((vm.validate_.hardware for vm in passed.values() if vm.validate_ and vm.validate_.hardware
               and vm.validate_.hardware.device == "cuda"), None)
    where = f" on {hw.name}" if hw is not None else ""
    for attr, what in (("speedup_batch1", "Fastest at batch 1"), ("speedup_batched", "Highest batched throughput")):
        vals = {vid: getattr(c, attr) for vid, c in gpu.items() if getattr(c, attr) is not None}
        if vals:
            vid = max(vals, key=lambda v: (vals[v], v))
            out.append(f"**{what}{where}:** {name[vid]} ({ratio(vals[vid])} the base).")
    if not gpu and comps:
        out.append("Speed was measured on CPU only in this run, so no GPU speed advice is given.")
    out += _hardware_guidance({vid: run.recipes[vid] for vid in passed})
    return out


def _closest(rec: dict[str, float], comps: dict[str, Comparison], name: dict[str, str]) -> str:
    """Which variant keeps the most accuracy, only when the intervals say so: the best one's CI must lie above
    every other's. Overlapping (or unrecorded) intervals are reported as a tie, never ranked."""
    best = max(rec, key=lambda v: (rec[v], v))
    if len(rec) == 1:
        return f"**Accuracy:** {name[best]} keeps {recovery_cell(comps[best])} mean recovery."
    cis = {vid: comps[vid].mean_recovery_ci for vid in rec}
    listed = ", ".join(f"{name[v]} {recovery_cell(comps[v])}" for v in sorted(rec, key=lambda v: -rec[v]))
    if all(cis.values()) and all(cis[best][0] > cis[v][-1] for v in rec if v != best):
        return f"**Closest to the base:** {name[best]} ({recovery_cell(comps[best])} mean recovery; its interval " \
               "lies above every other variant's)."
    why = "their confidence intervals overlap" if all(cis.values()) else "no confidence intervals were recorded"
    return f"**Accuracy:** the variants cannot be told apart ({why}): {listed}."


def _hardware_guidance(recipes: dict[str, RecipeFacts]) -> list[str]:
    """One line per run of GPU generations on which the same variants run natively / through a fallback."""
    groups: list[tuple[list[Generation], tuple[str, ...], tuple[str, ...]]] = []
    for gen in GENERATIONS:
        native = tuple(r.name for r in recipes.values() if support_mode(r, gen.capability) == "native")
        fallback = tuple(r.name for r in recipes.values() if support_mode(r, gen.capability) == "fallback")
        if groups and groups[-1][1:] == (native, fallback):
            groups[-1][0].append(gen)
        else:
            groups.append(([gen], native, fallback))
    out: list[str] = []
    for i, (gens, native, fallback) in enumerate(groups):
        if not native and not fallback:
            continue
        first, last = gens[0], gens[-1]
        if i == len(groups) - 1 and len(gens) > 1:
            where = f"{first.name} and newer ({first.capability}+)"
        elif len(gens) > 1:
            where = f"{first.name} to {last.name} ({first.capability}–{last.capability})"
        else:
            where = f"{first.name} ({first.capability}, e.g. {first.examples.split(',')[0]})"
        parts = [f"natively: {', '.join(native)}" if native else "none natively"]
        if fallback:
            parts.append(f"weight-only fallback: {', '.join(fallback)}")
        out.append(f"**On {where}:** " + "; ".join(parts) + ".")
    return out
