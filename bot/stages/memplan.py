"""GPU memory plan of one `bot publish` (pure): how many quantize workers run at once, and the share of the GPU that
vLLM's validation engines get (`gpu_memory_utilization`), from the memory free on the device when the run starts.

What each process needs is estimated from measured peaks (8B Llama shape, H100, `benchmarks/scale-2026-11-23.md`
and `scale-2026-11-24.md`): a calibrated recipe onloads one decoder layer at a time (GPTQ, AWQ, W8A8, NVFP4 peaked at
0.17-0.25 of the base's bf16 size, AutoRound at 0.78); a data-free recipe moves the whole copy to the GPU when it
fits (FP8-Dynamic: 1.01); a calibration batch of 8 rows took GPTQ from 4.1 to 13.8 GB. Each estimate gets a
margin and a CUDA context. A validation engine needs its weights, the KV cache of a few full-length sequences and
the reserve of the tensor-parallel planner (bot/stages/validate/parallel.py); vLLM sizes everything inside
`gpu_memory_utilization` x total memory and refuses to start when less than that is free, so the share given to it
is what is left once the quantize workers' estimates are set aside.

Serial runs keep `validate.speed.gpu_memory_utilization` (the GPU is the engine's alone then) unless less than
that is free (another process holds some: the engine gets what is free); the number of workers is planned from
what fits. Overlapped runs use one share for every model of the run, so that the base and each variant
are measured under the same engine settings; a resumed run keeps the share its base was measured at when it
still fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from bot.recipes.resolve import ResolvedRecipe
from bot.stages.quantize import recipe_cost
from bot.stages.schedule import spread

GIB = 2**30
CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS workspace and allocator slack of one process
MARGIN = 1.25  # on every quantize estimate: they come from a handful of measurements
SLACK_FRACTION = 0.03  # of the GPU's memory left unplanned (fragmentation, the driver, nvidia-smi's own rounding)
VALIDATE_KV_SEQUENCES = 8  # full-length sequences of KV cache the engine gets at least (lm-eval's batches)
MAX_AUTO_WORKERS = 4  # more calibrated workers on one GPU contend for its compute more than they add
MIN_UTILIZATION = 0.05


def quantize_gpu_bytes(modifiers: Iterable[str], calibrated: bool, base_bytes: int, batch_size: int = 1) -> int:
    """Peak GPU memory of one quantize worker running a recipe with these modifier types (estimate)."""
    kinds = set(modifiers)
    if not calibrated:
        share = 1.05  # the whole copy on the GPU, and its quantized weights next to it while they are written
    elif "AutoRoundModifier" in kinds:
        share = 0.8
    else:
        share = 0.26
    if calibrated and batch_size > 1:
        share *= 1 + 0.3 * (batch_size - 1)  # activations of the batch (GPTQ: batch 8 took 3.4x batch 1)
    return int(base_bytes * share * MARGIN) + CONTEXT_BYTES


def validate_gpu_bytes(weights_bytes: int, kv_bytes_one_sequence: int, reserve_bytes: int) -> int:
    """What a validation engine needs at least: its weights, a few sequences of KV cache, the planner's reserve."""
    return weights_bytes + VALIDATE_KV_SEQUENCES * kv_bytes_one_sequence + reserve_bytes + CONTEXT_BYTES


@dataclass(frozen=True)
class MemoryPlan:
    """What this run does at once. `gpu_memory_utilization` None: `validate.speed.gpu_memory_utilization` as set
    (no GPU, or a serial run whose GPU has that much free)."""

    overlap: bool
    quantize_workers: int
    gpu_memory_utilization: float | None
    reason: str
    total_bytes: int | None = None
    free_bytes: int | None = None
    quantize_bytes: int = 0  # set aside for the quantize workers (each worker's largest recipe, summed)
    validate_bytes: int = 0  # what the validation engine needs at least
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {k: getattr(self, k) for k in ("overlap", "quantize_workers", "gpu_memory_utilization", "reason",
                                              "total_bytes", "free_bytes", "quantize_bytes", "validate_bytes",
                                              "notes")}


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.1f} GB"


def recipe_needs(resolved: Sequence[ResolvedRecipe], base_bytes: int, batch_size: int = 1
                 ) -> tuple[list[int], list[float]]:
    """Each recipe's GPU estimate (quantize_gpu_bytes) and relative cost (recipe_cost), in order."""
    needs = [quantize_gpu_bytes([m.type for m in r.recipe.modifiers], bool(r.samples), base_bytes, batch_size)
             for r in resolved]
    return needs, [recipe_cost(r) for r in resolved]


def plan_memory(*, total_bytes: int | None, free_bytes: int | None, needs: Sequence[int], costs: Sequence[float],
                validate_bytes: int, overlap: bool, requested_workers: int | str, host_workers: int,
                utilization: float, previous_utilization: float | None = None) -> MemoryPlan:
    """The plan for one run.

    total/free_bytes: the GPU the run uses (None: no GPU seen); needs/costs: each pending quantize variant's
    estimate and relative cost (recipe_needs); validate_bytes: the largest model to validate
    (validate_gpu_bytes); requested_workers: `quantize_workers` (an int, or "auto"); host_workers: how many
    workers host memory holds; utilization: `validate.speed.gpu_memory_utilization`, the ceiling;
    previous_utilization: the share the run's base was measured at by an earlier overlapped attempt (kept when
    it still fits, so that the models of one run are measured alike)."""
    pending = len(needs)
    asked = requested_workers if isinstance(requested_workers, int) else None
    cap = max(1, min(asked or MAX_AUTO_WORKERS, pending or 1, max(1, host_workers)))
    if total_bytes is None or free_bytes is None:
        workers = min(asked or 1, pending or 1, max(1, host_workers))
        return MemoryPlan(overlap, workers, None, "no GPU seen: validation keeps its settings"
                          + ("; quantize and validate run at once on the CPU" if overlap else ""))
    usable = free_bytes - int(total_bytes * SLACK_FRACTION)

    def reserved(w: int) -> int:
        return sum(max(needs[i] for i in g) for g in spread(costs, w)) if needs and w else 0

    def share(left: int) -> float:
        return min(utilization, math.floor(max(0, left) / total_bytes * 100) / 100)

    def engine_fits(fraction: float) -> bool:
        return fraction >= MIN_UTILIZATION and fraction * total_bytes >= validate_bytes

    sizes = dict(total_bytes=total_bytes, free_bytes=free_bytes, validate_bytes=validate_bytes)
    if overlap:
        for w in (range(cap, 0, -1) if pending else [0]):
            fraction = share(usable - reserved(w))
            if not engine_fits(fraction):
                continue
            if previous_utilization is not None and previous_utilization <= fraction and engine_fits(
                    previous_utilization):
                fraction = previous_utilization
            notes = [] if asked is None or w == asked else [
                f"{asked} quantize workers asked for, {w} fit next to validation"]
            return MemoryPlan(True, w, fraction, f"{w} quantize worker(s) ({_gb(reserved(w))} set aside) and "
                              f"validation at gpu_memory_utilization {fraction:g} ({_gb(fraction * total_bytes)}) "
                              f"in {_gb(usable)} usable of {_gb(total_bytes)}", quantize_bytes=reserved(w),
                              notes=notes, **sizes)
    workers = min(asked, cap) if asked else next((w for w in range(cap, 0, -1) if reserved(w) <= usable), 1)
    why = "serial"
    if overlap:
        why = (f"validation waits for quantize: a quantize worker ({_gb(reserved(1))}) and a validation engine "
               f"({_gb(validate_bytes)}) do not both fit {_gb(usable)} usable")
    fraction: float | None = None  # the setting holds when the GPU has that much free; else what is free
    if utilization * total_bytes > usable and engine_fits(share(usable)):
        fraction = share(usable)
    engine = f"validation at gpu_memory_utilization {fraction:g} (what is free)" if fraction else \
        "validation with the GPU to itself"
    return MemoryPlan(False, workers, fraction, f"{why}: {workers} quantize worker(s) in {_gb(usable)} usable, then "
                      f"{engine}", quantize_bytes=reserved(workers), **sizes)
