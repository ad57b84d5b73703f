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
from typing import Any

from bot.config import GateSettings
from bot.manifest import Comparison, GateDecision, Hardware, SpeedRecord, TaskScore, ValidateRecord
from bot.recipes import GateSpec, Recipe

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


def _same_run_conditions(base: SpeedRecord, variant: SpeedRecord, base_hw: Hardware | None,
                         variant_hw: Hardware | None) -> bool:
    if base.label != variant.label:
        return False
    if any(base.settings.get(k) != variant.settings.get(k) for k in (*SPEED_LENGTH_KEYS, "tensor_parallel_size")):
        return False  # other lengths, or another number of GPUs (a base on tp=4, a variant on tp=2)
    if base_hw is not None and variant_hw is not None:
        if (base_hw.device, base_hw.name, base_hw.count) != (variant_hw.device, variant_hw.name, variant_hw.count):
            return False
    return True


def speedups(base: ValidateRecord | None, variant: ValidateRecord) -> tuple[float | None, float | None]:
    """(batch-1 decode speedup, batched throughput speedup), variant / base, or None where not comparable."""
    if base is None or base.speed is None or variant.speed is None:
        return None, None
    if not _same_run_conditions(base.speed, variant.speed, base.hardware, variant.hardware):
        return None, None
    b1 = bt = None
    if base.speed.batch1 and variant.speed.batch1 and base.speed.batch1.decode_tokens_per_s > 0:
        b1 = round(variant.speed.batch1.decode_tokens_per_s / base.speed.batch1.decode_tokens_per_s, 3)
    if base.speed.batched and variant.speed.batched and base.speed.batched.output_tokens_per_s > 0:
        bt = round(variant.speed.batched.output_tokens_per_s / base.speed.batched.output_tokens_per_s, 3)
    return b1, bt


def compare(base: ValidateRecord | None, variant: ValidateRecord, base_size: int | None,
            variant_size: int | None) -> Comparison:
    rec: dict[str, float] = {}
    if base is not None and base.accuracy and variant.accuracy:
        rec = recoveries(base.accuracy.tasks, variant.accuracy.tasks)
    b1, bt = speedups(base, variant)
    ratio = round(variant_size / base_size, 4) if base_size and variant_size else None
    return Comparison(recovery=rec, mean_recovery=round(fmean(rec.values()), 2) if rec else None,
                      speedup_batch1=b1, speedup_batched=bt, size_ratio=ratio,
                      base_validated_at=base.validated_at if base is not None else None)


# ---------------------------------------------------------------- hardware


def _cap(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(p) for p in str(value).split("."))
    except ValueError:
        return None


def hardware_compat(recipe: Recipe | None, hardware: Hardware | None, kernel: str | None) -> dict[str, Any]:
    """native / fallback / unsupported for the GPU it ran on; not-checked on CPU. Never silent."""
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


def decide_gate(record: ValidateRecord, comparison: Comparison | None, threshold: float,
                gate: GateSettings) -> GateDecision:
    reasons: list[str] = []
    if gate.require_load and (record.load is None or not record.load.ok):
        error = (record.load.error if record.load else None) or "no load result"
        reasons.append(f"does not load: {error.splitlines()[0][:300]}")
    if gate.require_generation and record.load is not None and record.load.ok:
        bad = [g for g in record.generations if not g.ok]
        if not record.generations:
            reasons.append("no generation was checked")
        elif bad:
            reasons.append(f"{len(bad)}/{len(record.generations)} generations unusable: {'; '.join(bad[0].problems)}")
    if record.load is not None and record.load.ok:
        mean = comparison.mean_recovery if comparison else None
        if mean is None and record.accuracy is None:
            reasons.append("accuracy not measured (no lm-eval tasks): recovery cannot be checked")
        elif mean is None:
            reasons.append("mean recovery unavailable: no task score to compare with the base")
        elif mean < threshold:
            reasons.append(f"mean recovery {mean:.2f}% is below {threshold:.2f}%")
    return GateDecision(passed=not reasons, reasons=reasons, threshold=threshold)
