"""Pure arithmetic of validation: recovery, speedups, size ratio, hardware compatibility and the quality gate.

Recovery is variant / base * 100 for higher-is-better metrics (accuracy) and base / variant * 100 for
lower-is-better ones (perplexity), so 100 means "as good as the base" either way. A non-finite variant score (a
model that produced NaN) recovers 0. Speedups compare only numbers with the same label, the same lengths and the
same hardware and tensor-parallel size (a CPU figure says nothing about a GPU; a base measured on another GPU,
or split over another number of GPUs, is not a baseline).
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import TYPE_CHECKING, Any

from bot.config import GateSettings
from bot.manifest import (
    Comparison, FidelityRecord, GateDecision, GateState, Hardware, HardwareVerdict, TaskScore, ValidateRecord,
    VariantValidateRecord,
)
from bot.recipes import GateSpec, Recipe

if TYPE_CHECKING:
    from bot.stages.validate.paired import PairedResult

LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity"}
SPEED_LENGTH_KEYS = ("batch1_input_len", "batch1_output_len", "batched_input_len", "batched_output_len",
                     "batched_num_prompts")


def higher_is_better(score: TaskScore) -> bool:
    explicit = getattr(score, "higher_is_better", None)
    if explicit is not None:
        return bool(explicit)
    return score.metric.split(",", 1)[0] not in LOWER_IS_BETTER


def task_recovery(base: TaskScore, variant: TaskScore) -> float | None:
    """Percent of the base's score kept by the variant; None when it cannot be computed."""
    b, v = base.value, variant.value
    if not math.isfinite(b):
        return None
    if not math.isfinite(v):
        return 0.0
    if higher_is_better(base):
        return round(v / b * 100.0, 2) if b > 0 else None
    return round(b / v * 100.0, 2) if v > 0 and b > 0 else None


def recoveries(base: list[TaskScore], variant: list[TaskScore]) -> dict[str, float]:
    by_key = {(s.task, s.metric): s for s in base}
    out: dict[str, float] = {}
    for score in variant:
        ref = by_key.get((score.task, score.metric))
        if ref is None:
            continue
        rec = task_recovery(ref, score)
        if rec is not None:
            out[score.task] = rec
    return out


def speed_incomparable(base: ValidateRecord | None, variant: ValidateRecord) -> str | None:
    """Why the variant's speed cannot be divided by the base's; None when it can. Decided here only: the card,
    the CLI and the reports read `Comparison.speed_comparable` and its reason."""
    if base is None or base.speed is None:
        return "the base's speed was not measured"
    if variant.speed is None:
        return "the variant's speed was not measured"
    b, v = base.speed, variant.speed
    if b.label != v.label:
        return f"measured on {v.label}, the base on {b.label}"
    for key in SPEED_LENGTH_KEYS:
        if b.settings.get(key) != v.settings.get(key):
            return f"other lengths ({key}: {v.settings.get(key)} vs the base's {b.settings.get(key)})"
    tp_b, tp_v = b.settings.get("tensor_parallel_size"), v.settings.get("tensor_parallel_size")
    if tp_b != tp_v:
        return f"split over {tp_v} GPU(s), the base over {tp_b}"
    bh, vh = base.hardware, variant.hardware
    if bh is not None and vh is not None and (bh.device, bh.name, bh.count) != (vh.device, vh.name, vh.count):
        return f"measured on {vh.count} x {vh.name or vh.device}, the base on {bh.count} x {bh.name or bh.device}"
    return None


def speedups(base: ValidateRecord | None, variant: ValidateRecord) -> tuple[float | None, float | None]:
    """(batch-1 decode speedup, batched throughput speedup), variant / base, or None where not comparable."""
    if speed_incomparable(base, variant) is not None:
        return None, None
    assert base is not None and base.speed is not None and variant.speed is not None
    b1 = bt = None
    if base.speed.batch1 and variant.speed.batch1 and base.speed.batch1.decode_tokens_per_s > 0:
        b1 = round(variant.speed.batch1.decode_tokens_per_s / base.speed.batch1.decode_tokens_per_s, 3)
    if base.speed.batched and variant.speed.batched and base.speed.batched.output_tokens_per_s > 0:
        bt = round(variant.speed.batched.output_tokens_per_s / base.speed.batched.output_tokens_per_s, 3)
    return b1, bt


def compare(base: ValidateRecord | None, variant: ValidateRecord, base_size: int | None,
            variant_size: int | None, paired: PairedResult | None = None) -> Comparison:
    """The variant against the base. With `paired` (per-document results of both), recovery per task and the
    mean come from the paired statistics with their CIs; without, from the aggregated scores (older runs)."""
    rec: dict[str, float] = {}
    if base is not None and base.accuracy and variant.accuracy:
        rec = recoveries(base.accuracy.tasks, variant.accuracy.tasks)
    b1, bt = speedups(base, variant)
    why = speed_incomparable(base, variant)
    ratio = round(variant_size / base_size, 4) if base_size and variant_size else None
    out = Comparison(recovery=rec, mean_recovery=round(fmean(rec.values()), 2) if rec else None,
                     speedup_batch1=b1, speedup_batched=bt, size_ratio=ratio, speed_comparable=why is None,
                     speed_incomparable_reason=why, tasks_compared=sorted(rec),
                     base_validated_at=base.validated_at if base is not None else None)
    if paired is not None:
        out.tasks = paired.tasks
        out.recovery = dict(paired.recovery)  # the tasks used: at-chance ones are in `tasks`, flagged
        out.tasks_compared = list(paired.tasks_compared)
        out.mean_recovery, out.mean_recovery_ci = paired.mean_recovery, paired.mean_recovery_ci
        out.confidence, out.bootstrap = paired.confidence, dict(paired.bootstrap)
    return out


# ---------------------------------------------------------------- hardware


def _cap(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(p) for p in str(value).split("."))
    except ValueError:
        return None


def hardware_compat(recipe: Recipe | None, hardware: Hardware | None, kernel: str | None) -> HardwareVerdict:
    """native / fallback / unsupported for the GPU it ran on; not-checked on CPU. Never silent."""
    return HardwareVerdict.model_validate(_verdict(recipe, hardware, kernel))


def _verdict(recipe: Recipe | None, hardware: Hardware | None, kernel: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"kernel": kernel}
    if recipe is not None:
        out.update(native_min_capability=recipe.hardware.native_min_capability,
                   fallback_min_capability=recipe.hardware.fallback_min_capability,
                   expected_kernel=recipe.hardware.kernel)
    cc = _cap(hardware.compute_capability) if hardware is not None and hardware.device == "cuda" else None
    if cc is None:
        out.update(status="not-checked", compute_capability=None,
                   detail="validated without a GPU: transformers decompressed the checkpoint, so no quantized "
                          "GPU kernel ran")
        return out
    out["compute_capability"] = hardware.compute_capability if hardware else None
    if recipe is None:
        out.update(status="unknown", detail="recipe not found: no capability requirement to check")
        return out
    native = _cap(recipe.hardware.native_min_capability)
    fallback = _cap(recipe.hardware.fallback_min_capability)
    if native is not None and cc >= native:
        out.update(status="native", detail=recipe.hardware.kernel or "native kernels")
    elif fallback is not None and cc >= fallback:
        out.update(status="fallback", detail=recipe.hardware.fallback or "fallback kernels")
    else:
        need = recipe.hardware.fallback_min_capability or recipe.hardware.native_min_capability
        out.update(status="unsupported", detail=f"compute capability {hardware.compute_capability} is below {need}")
    return out


# ---------------------------------------------------------------- gate


def gate_threshold(recipe_id: str, recipe: Recipe | None, gate: GateSettings) -> float:
    if recipe_id in gate.min_recovery:
        return float(gate.min_recovery[recipe_id])
    return float(recipe.gate.min_mean_recovery if recipe is not None else GateSpec().min_mean_recovery)


def gate_rule(threshold: float, confidence: float, recipe_threshold: float | None = None) -> str:
    """The rule in words; `recipe_threshold`: the recipe's own, named when the run's settings set another."""
    own = (f"; set by this run, the recipe's own: {recipe_threshold:g}%"
           if recipe_threshold is not None and recipe_threshold != threshold else "")
    return (f"passed when the {confidence:.0%} CI of the mean recovery lies at or above {threshold:g}% (its lower "
            f"bound{own}), rejected when it lies below; in between, more samples, then inconclusive")


def decide_gate(record: VariantValidateRecord, comparison: Comparison | None, threshold: float, gate: GateSettings,
                recipe: Recipe | None = None, *, can_grow: bool = False, rounds: int = 1,
                limit: int | None = None) -> GateDecision:
    """One decision from the measured facts.

    Rejected on a failed load or generation, non-finite numbers (logits or scores), fidelity outside the recipe's
    bounds, or a CI of the mean recovery wholly below the threshold. Passed only when nothing rejects and the CI
    lies at or above the threshold. Otherwise inconclusive: `can_grow` says whether more samples can still be
    evaluated (the stage then runs another round and decides again)."""
    reasons: list[str] = []
    if gate.require_load and (record.load is None or not record.load.ok):
        error = (record.load.error if record.load else None) or "no load result"
        reasons.append(f"does not load: {error.splitlines()[0][:300]}")
    loaded = record.load is not None and record.load.ok
    if gate.require_generation and loaded:
        bad = [g for g in record.generations if not g.ok]
        if not record.generations:
            reasons.append("no generation was checked")
        elif bad:
            reasons.append(f"{len(bad)}/{len(record.generations)} generations unusable: {'; '.join(bad[0].problems)}")
    if loaded:
        reasons += _nonfinite_reasons(record)
        reasons += _fidelity_reasons(record.fidelity, recipe)
    state, why = _recovery_state(record, comparison, threshold, gate.confidence) if loaded else (None, None)
    if why and state == GateState.rejected:
        reasons.append(why)
    own = recipe.gate.min_mean_recovery if recipe is not None else None
    kw = dict(threshold=threshold, rule=gate_rule(threshold, gate.confidence, own), rounds=rounds, limit=limit)
    if reasons:
        return GateDecision(passed=False, state=GateState.rejected, reasons=reasons, **kw)
    if state == GateState.passed:
        return GateDecision(passed=True, state=GateState.passed, **kw)
    more = "; more samples are evaluated" if can_grow else (
        f" after {rounds} round(s) at {'the whole task' if limit is None else f'{limit} samples per task'}: "
        "the tasks cannot tell this variant from the threshold (publish with --force to override)")
    return GateDecision(passed=False, state=GateState.inconclusive, reasons=[f"{why}{more}"], **kw)


def _nonfinite_reasons(record: VariantValidateRecord) -> list[str]:
    out = []
    fid = record.fidelity
    if fid is not None and fid.nonfinite:
        out.append(f"non-finite logits at {fid.nonfinite} of {fid.nonfinite + fid.tokens} held-out positions")
    if record.accuracy is not None:
        bad = [t.task for t in record.accuracy.tasks if not math.isfinite(t.value)]
        if bad:
            out.append(f"non-finite score on {', '.join(bad)}")
    return out


def _fidelity_reasons(fid: FidelityRecord | None, recipe: Recipe | None) -> list[str]:
    if fid is None:
        return []
    if fid.error:
        return [f"fidelity could not be measured: {fid.error.splitlines()[0][:300]}"]
    if recipe is None:
        return []
    spec, out = recipe.gate, []
    if spec.max_kl_mean is not None and fid.kl_mean is not None and not fid.kl_mean <= spec.max_kl_mean:
        out.append(f"next-token KL divergence {fid.kl_mean:.4g} nats is above the recipe's bound {spec.max_kl_mean:g}")
    if (spec.min_top1_agreement is not None and fid.top1_agreement is not None
            and not fid.top1_agreement >= spec.min_top1_agreement):
        out.append(f"top-1 agreement {fid.top1_agreement:.1%} is below the recipe's bound "
                   f"{spec.min_top1_agreement:.0%}")
    return out


def _recovery_state(record: VariantValidateRecord, comparison: Comparison | None, threshold: float,
                    confidence: float) -> tuple[GateState, str]:
    mean = comparison.mean_recovery if comparison else None
    if mean is None:
        if record.accuracy is None:
            return GateState.rejected, "accuracy not measured (no lm-eval tasks): recovery cannot be checked"
        return GateState.rejected, "mean recovery unavailable: no task score to compare with the base"
    ci = comparison.mean_recovery_ci if comparison else None
    if ci is None:  # a record without per-document results: the point estimate is all there is
        if mean < threshold:
            return GateState.rejected, f"mean recovery {mean:.2f}% is below {threshold:.2f}%"
        return GateState.inconclusive, (f"mean recovery {mean:.2f}% has no confidence interval (no per-document "
                                        "results)")
    lo, hi = ci
    band = f"mean recovery {mean:.2f}% ({confidence:.0%} CI {lo:.2f}-{hi:.2f}%)"
    if lo >= threshold:
        return GateState.passed, f"{band}: lower bound at or above {threshold:.2f}%"
    if hi < threshold:
        return GateState.rejected, f"{band} is below {threshold:.2f}%"
    return GateState.inconclusive, f"{band} straddles {threshold:.2f}%"
