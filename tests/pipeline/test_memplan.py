"""The GPU memory plan of `bot publish` (bot.stages.memplan), with the numbers of one H200 and an 8B Llama: how many
quantize workers run at once and which share of the GPU vLLM's validation engines get, from what is free."""

from __future__ import annotations

import pytest

from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.recipes.resolve import resolve
from bot.stages.memplan import (
    CONTEXT_BYTES, GIB, MemoryPlan, plan_memory, quantize_gpu_bytes, recipe_needs, validate_gpu_bytes,
)
from bot.stages.validate.parallel import ModelShape
from bot.workers.build_model import SHAPES

MIB = 2**20
H200_TOTAL = 143771 * MIB  # what nvidia-smi reports for one H200 (141 GB): 150.8e9 bytes
LLAMA_8B_BYTES = 16_060_522_496  # Llama-3.1-8B in bf16
_shape = dict(SHAPES["llama-3.1-8b"])
_shape.pop("arch")
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **_shape}


def _six():
    book = load_recipes(None)
    return recipe_needs([resolve(book.get(r), LLAMA_8B) for r in BUILTIN_ORDER], LLAMA_8B_BYTES)


def _engine() -> int:
    kv = ModelShape.from_config(LLAMA_8B).kv_bytes(4096, 1)  # one 4096-token sequence: 0.5 GiB
    assert kv == 2 * 32 * 8 * 128 * 2 * 4096
    return validate_gpu_bytes(LLAMA_8B_BYTES, kv, 2 * GIB)


def _plan(free: int = H200_TOTAL, *, overlap: bool = True, workers: int | str = "auto", host: int = 3,
          utilization: float = 0.85, previous: float | None = None, needs=None) -> MemoryPlan:
    n, c = needs or _six()
    return plan_memory(total_bytes=H200_TOTAL, free_bytes=free, needs=n, costs=c, validate_bytes=_engine(),
                       overlap=overlap, requested_workers=workers, host_workers=host, utilization=utilization,
                       previous_utilization=previous)


def test_recipe_estimates_follow_the_measured_peaks():
    needs, costs = _six()
    gb = dict(zip(BUILTIN_ORDER, (n / 1e9 for n in needs)))
    # calibrated recipes onload a layer at a time; AutoRound holds more; FP8-Dynamic moves the whole copy
    assert gb["w4a16-gptq"] == gb["w4a16-awq"] == gb["w8a8-int8"] == gb["nvfp4"] == pytest.approx(6.29, abs=0.01)
    assert gb["w4a16-autoround"] == pytest.approx(17.13, abs=0.01)
    assert gb["fp8-dynamic"] == pytest.approx(22.15, abs=0.01)
    assert dict(zip(BUILTIN_ORDER, costs))["w4a16-autoround"] == max(costs)
    # a calibration batch of 8 rows: GPTQ measured 13.8 GB against 4.1 GB at batch 1 (x3.4); the estimate follows
    one, eight = (quantize_gpu_bytes(["GPTQModifier"], True, LLAMA_8B_BYTES, b) - CONTEXT_BYTES for b in (1, 8))
    assert eight / one == pytest.approx(3.1)


def test_an_idle_h200_runs_three_workers_next_to_validation():
    plan = _plan()
    assert plan.overlap and plan.quantize_workers == 3  # host memory holds three (36 GB each of 128 GB)
    # three workers: [AutoRound], [AWQ, NVFP4, FP8] (FP8's 22.2 GB is that worker's peak), [GPTQ, W8A8]
    assert plan.quantize_bytes == pytest.approx((17.13 + 22.15 + 6.29) * 1e9, rel=1e-3)
    usable = H200_TOTAL * 0.97
    assert plan.gpu_memory_utilization == 0.66 == int((usable - plan.quantize_bytes) / H200_TOTAL * 100) / 100
    assert plan.gpu_memory_utilization * H200_TOTAL >= plan.validate_bytes == _engine()  # 23.6 GB
    assert plan.validate_bytes / 1e9 == pytest.approx(23.57, abs=0.01)
    assert plan.gpu_memory_utilization * H200_TOTAL + plan.quantize_bytes <= usable
    assert "3 quantize worker(s) (45.6 GB set aside) and validation at gpu_memory_utilization 0.66" in plan.reason


def test_more_host_memory_gives_a_fourth_worker_and_less_to_vllm():
    plan = _plan(host=8)
    assert plan.quantize_workers == 4 and plan.gpu_memory_utilization < 0.66
    assert plan.gpu_memory_utilization * H200_TOTAL >= plan.validate_bytes


def test_the_utilization_never_exceeds_the_setting():
    fp8_only = ([quantize_gpu_bytes(["QuantizationModifier"], False, LLAMA_8B_BYTES)], [0.1])
    assert _plan(needs=fp8_only).gpu_memory_utilization == 0.82  # 124 of 150.8 GB left by its 22.2 GB worker
    gptq_only = ([quantize_gpu_bytes(["GPTQModifier"], True, LLAMA_8B_BYTES)], [3.0])
    plan = _plan(needs=gptq_only)
    assert plan.quantize_workers == 1 and plan.gpu_memory_utilization == 0.85  # 0.92 would be left


def test_a_gpu_mostly_taken_by_another_process_drops_workers_then_overlap():
    busy = _plan(free=H200_TOTAL - 90 * 10**9)  # 60.8 GB free: two workers (28.4 GB) and an engine at 0.18
    assert busy.overlap and busy.quantize_workers == 2 and busy.gpu_memory_utilization == 0.18
    assert busy.gpu_memory_utilization * H200_TOTAL >= busy.validate_bytes
    assert busy.gpu_memory_utilization * H200_TOTAL + busy.quantize_bytes <= busy.free_bytes
    tight = _plan(free=H200_TOTAL - 110 * 10**9)  # 40.8 GB free: a worker and an engine do not both fit
    assert not tight.overlap and tight.quantize_workers >= 1
    assert tight.reason.startswith("validation waits for quantize")
    # the engine then gets what is free, not the 0.85 that vLLM would refuse to start with
    assert tight.gpu_memory_utilization is not None and tight.gpu_memory_utilization * H200_TOTAL <= tight.free_bytes


def test_a_resumed_run_keeps_the_share_its_base_was_measured_at():
    assert _plan(previous=0.5).gpu_memory_utilization == 0.5  # fits: the models of one run are measured alike
    assert _plan(previous=0.8).gpu_memory_utilization == 0.66  # no longer fits: what is free now
    assert _plan(previous=0.1).gpu_memory_utilization == 0.66  # too small for the engine: not kept
    nothing_left = _plan(previous=0.5, needs=([], []))
    assert nothing_left.overlap and nothing_left.quantize_workers == 0 and nothing_left.gpu_memory_utilization == 0.5


def test_asked_workers_are_a_ceiling_with_a_note():
    assert _plan(workers=6, host=8).quantize_workers == 6  # asked for, and they fit (auto stops at four)
    plan = _plan(free=80 * 10**9, workers=6, host=8)
    assert plan.quantize_workers == 3 and plan.notes == ["6 quantize workers asked for, 3 fit next to validation"]
    assert _plan(workers=2).quantize_workers == 2 and _plan(workers=2).notes == []


def test_serial_keeps_the_setting_on_an_idle_gpu():
    plan = _plan(overlap=False)
    assert not plan.overlap and plan.gpu_memory_utilization is None and plan.quantize_workers == 3
    assert plan.reason.startswith("serial: 3 quantize worker(s)")
    assert _plan(overlap=False, workers=1).quantize_workers == 1


def test_without_a_gpu_nothing_is_planned():
    plan = plan_memory(total_bytes=None, free_bytes=None, needs=[1, 2], costs=[1.0, 2.0], validate_bytes=0,
                       overlap=True, requested_workers="auto", host_workers=4, utilization=0.85)
    assert plan.overlap and plan.quantize_workers == 1 and plan.gpu_memory_utilization is None
    assert "quantize and validate run at once on the CPU" in plan.reason
    cpu = plan_memory(total_bytes=None, free_bytes=None, needs=[1, 2], costs=[1.0, 2.0], validate_bytes=0,
                      overlap=False, requested_workers=2, host_workers=4, utilization=0.85)
    assert not cpu.overlap and cpu.quantize_workers == 2 and cpu.gpu_memory_utilization is None
