"""Pure arithmetic of the validate stage: recovery (higher- and lower-is-better), speedups only between
comparable measurements, size ratio, hardware compatibility and the gate's thresholds and reasons."""

from __future__ import annotations

import math

import pytest

from bot.config import GateSettings
from bot.manifest import (
    AccuracyRecord, Batch1Speed, BatchedSpeed, Comparison, Generation, Hardware, LoadCheck, SpeedRecord, TaskScore,
    ValidateRecord,
)
from bot.recipes import load_recipes
from bot.stages.validate.compare import (
    compare, decide_gate, gate_threshold, hardware_compat, recoveries, speedups, task_recovery,
)

RECIPES = load_recipes()
LENGTHS = {"batch1_input_len": 128, "batch1_output_len": 256, "batched_input_len": 1024, "batched_output_len": 256,
           "batched_num_prompts": 256}
H100 = Hardware(device="cuda", name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def score(task: str, metric: str, value: float, hib: bool | None = None) -> TaskScore:
    return TaskScore(task=task, metric=metric, value=value, higher_is_better=hib)


def record(b1: float = 100.0, bt: float = 1000.0, label: str = "GPU", hw: Hardware | None = H100,
           tasks: list[TaskScore] | None = None, **lengths: int) -> ValidateRecord:
    settings = {**LENGTHS, **lengths}
    speed = SpeedRecord(label=label, settings=settings,
                        batch1=Batch1Speed(input_len=128, output_len=256, runs=3, decode_tokens_per_s=b1, ttft_ms=20,
                                           tpot_ms=1000 / b1),
                        batched=BatchedSpeed(num_prompts=256, input_len=1024, output_len=256, output_tokens_per_s=bt,
                                             requests_per_s=bt / 256))
    return ValidateRecord(hardware=hw, speed=speed, accuracy=AccuracyRecord(tasks=tasks or []),
                          load=LoadCheck(ok=True, backend="vllm"))


# ---------------------------------------------------------------- recovery


def test_recovery_higher_is_better():
    assert task_recovery(score("arc", "acc_norm", 0.50), score("arc", "acc_norm", 0.49)) == 98.0
    assert task_recovery(score("arc", "acc", 0.40), score("arc", "acc", 0.44)) == 110.0


def test_recovery_lower_is_better_inverts():
    base, var = score("wiki", "word_perplexity", 10.0), score("wiki", "word_perplexity", 12.5)
    assert task_recovery(base, var) == 80.0  # inferred from the metric name
    assert task_recovery(score("t", "loss", 2.0, hib=False), score("t", "loss", 4.0, hib=False)) == 50.0
    explicit = score("t", "word_perplexity", 2.0, hib=True), score("t", "word_perplexity", 4.0, hib=True)
    assert task_recovery(*explicit) == 200.0  # an explicit direction wins over the name


def test_recovery_edge_cases():
    assert task_recovery(score("t", "acc", 0.0), score("t", "acc", 0.3)) is None  # nothing to recover
    assert task_recovery(score("t", "acc", math.nan), score("t", "acc", 0.3)) is None
    assert task_recovery(score("t", "word_perplexity", 10.0), score("t", "word_perplexity", math.nan)) == 0.0
    assert task_recovery(score("t", "acc", 0.5), score("t", "acc", math.inf)) == 0.0
    assert task_recovery(score("t", "word_perplexity", 10.0), score("t", "word_perplexity", 0.0)) is None


def test_recoveries_match_task_and_metric():
    base = [score("a", "acc", 0.5), score("b", "acc_norm", 0.8), score("c", "acc", 0.6)]
    var = [score("a", "acc", 0.45), score("b", "acc", 0.8), score("d", "acc", 0.1)]
    assert recoveries(base, var) == {"a": 90.0}


# ---------------------------------------------------------------- speedups, size


def test_speedups_same_label_lengths_hardware():
    assert speedups(record(100, 1000), record(150, 1230)) == (1.5, 1.23)


@pytest.mark.parametrize("variant", [
    record(150, 1230, label="CPU"),
    record(150, 1230, batched_num_prompts=64),
    record(150, 1230, hw=Hardware(device="cuda", name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")),
])
def test_speedups_not_comparable(variant):
    assert speedups(record(100, 1000), variant) == (None, None)


def test_speedups_missing_parts():
    base = record()
    assert speedups(None, record()) == (None, None)
    part = record()
    part.speed.batched = None
    assert speedups(base, part) == (1.0, None)
    no_speed = record()
    no_speed.speed = None
    assert speedups(base, no_speed) == (None, None)


def test_compare_mean_and_size_ratio():
    base = record(tasks=[score("a", "acc", 0.5), score("w", "word_perplexity", 10.0)])
    var = record(120, 900, tasks=[score("a", "acc", 0.48), score("w", "word_perplexity", 10.5)])
    comp = compare(base, var, base_size=16_000, variant_size=5_700)
    assert comp.recovery == {"a": 96.0, "w": 95.24}
    assert comp.mean_recovery == 95.62
    assert (comp.speedup_batch1, comp.speedup_batched, comp.size_ratio) == (1.2, 0.9, 0.3563)
    assert compare(base, var, None, 5_700).size_ratio is None


# ---------------------------------------------------------------- hardware


@pytest.mark.parametrize("recipe_id, cap, status", [
    ("nvfp4", "10.0", "native"), ("nvfp4", "9.0", "fallback"), ("nvfp4", "7.5", "unsupported"),
    ("fp8-dynamic", "8.9", "native"), ("fp8-dynamic", "8.0", "fallback"), ("fp8-dynamic", "7.5", "unsupported"),
    ("w4a16-gptq", "9.0", "native"), ("w4a16-gptq", "7.5", "unsupported"), ("w8a8-int8", "7.5", "native"),
])
def test_hardware_compat(recipe_id, cap, status):
    recipe = RECIPES.get(recipe_id)
    out = hardware_compat(recipe, Hardware(device="cuda", name="gpu", compute_capability=cap), "SomeKernel")
    assert out["status"] == status and out["compute_capability"] == cap and out["kernel"] == "SomeKernel"
    assert out["native_min_capability"] == recipe.hardware.native_min_capability
    if status == "fallback":
        assert out["detail"] == recipe.hardware.fallback and "Marlin" in out["detail"]
    if status == "unsupported":
        assert cap in out["detail"]


def test_hardware_compat_cpu_and_unknown_recipe():
    cpu = hardware_compat(RECIPES.get("nvfp4"), Hardware(device="cpu", name="x"), None)
    assert cpu["status"] == "not-checked" and "GPU" in cpu["detail"]
    assert hardware_compat(None, H100, None)["status"] == "unknown"


# ---------------------------------------------------------------- gate


def test_gate_threshold_precedence():
    gate = GateSettings(min_recovery={"w4a16-gptq": 90.0})
    assert gate_threshold("w4a16-gptq", RECIPES.get("w4a16-gptq"), gate) == 90.0
    assert gate_threshold("fp8-dynamic", RECIPES.get("fp8-dynamic"), gate) == 98.0
    assert gate_threshold("nvfp4", RECIPES.get("nvfp4"), gate) == 95.0
    assert gate_threshold("custom", None, gate) == 96.0


def _variant(gens: list[Generation] | None = None, ok: bool = True) -> ValidateRecord:
    rec = record()
    rec.load = LoadCheck(ok=ok, backend="vllm", error=None if ok else "ValueError: no kernel for this GPU\ndetails")
    rec.generations = gens if gens is not None else [Generation(prompt="p", output="fine text", ok=True)]
    return rec


def test_gate_passes_at_threshold():
    decision = decide_gate(_variant(), Comparison(mean_recovery=96.0), 96.0, GateSettings())
    assert decision.passed and decision.reasons == [] and decision.threshold == 96.0


def test_gate_reasons():
    low = decide_gate(_variant(), Comparison(mean_recovery=95.99), 96.0, GateSettings())
    assert not low.passed and low.reasons == ["mean recovery 95.99% is below 96.00%"]
    bad = Generation(prompt="p", output="", ok=False, problems=["empty output"])
    gens = decide_gate(_variant([bad, Generation(prompt="q", output="x", ok=True)]), Comparison(mean_recovery=99),
                       96.0, GateSettings())
    assert gens.reasons == ["1/2 generations unusable: empty output"]
    none = decide_gate(_variant([]), Comparison(), 96.0, GateSettings())
    assert none.reasons == ["no generation was checked",
                            "mean recovery unavailable: no task score to compare with the base"]
    unmeasured = _variant()
    unmeasured.accuracy = None  # `bot validate --tasks none`: never a silent pass
    assert decide_gate(unmeasured, Comparison(), 96.0, GateSettings()).reasons == [
        "accuracy not measured (no lm-eval tasks): recovery cannot be checked"]
    noload = decide_gate(_variant(ok=False), None, 96.0, GateSettings())
    assert noload.reasons == ["does not load: ValueError: no kernel for this GPU"]


def test_gate_switches():
    relaxed = GateSettings(require_load=False, require_generation=False)
    bad = Generation(prompt="p", output="", ok=False, problems=["empty output"])
    assert decide_gate(_variant([bad]), Comparison(mean_recovery=99), 96.0, relaxed).passed
