"""Pure arithmetic of the validate stage: recovery (higher- and lower-is-better), speedups only between
comparable measurements, size ratio, hardware compatibility and the gate's thresholds and reasons."""

from __future__ import annotations

import math

import pytest

from bot.config import GateSettings
from bot.manifest import (
    AccuracyRecord, Batch1Speed, BatchedSpeed, Comparison, FidelityRecord, GateState, Generation, Hardware, LoadCheck,
    SpeedRecord, TaskScore, ValidateRecord, VariantValidateRecord,
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
    assert out.status == status and out.compute_capability == cap and out.kernel == "SomeKernel"
    assert out.native_min_capability == recipe.hardware.native_min_capability
    if status == "fallback":
        assert out.detail == recipe.hardware.fallback and "Marlin" in out.detail
    if status == "unsupported":
        assert cap in out.detail


def test_hardware_compat_cpu_and_unknown_recipe():
    cpu = hardware_compat(RECIPES.get("nvfp4"), Hardware(device="cpu", name="x"), None)
    assert cpu.status == "not-checked" and "GPU" in cpu.detail
    assert hardware_compat(None, H100, None).status == "unknown"


# ---------------------------------------------------------------- gate


def test_gate_threshold_precedence():
    gate = GateSettings(min_recovery={"w4a16-gptq": 90.0})
    assert gate_threshold("w4a16-gptq", RECIPES.get("w4a16-gptq"), gate) == 90.0
    assert gate_threshold("fp8-dynamic", RECIPES.get("fp8-dynamic"), gate) == 98.0
    assert gate_threshold("nvfp4", RECIPES.get("nvfp4"), gate) == 95.0
    assert gate_threshold("custom", None, gate) == 96.0


def _variant(gens: list[Generation] | None = None, ok: bool = True) -> VariantValidateRecord:
    rec = VariantValidateRecord.model_validate(record().model_dump())
    rec.load = LoadCheck(ok=ok, backend="vllm", error=None if ok else "ValueError: no kernel for this GPU\ndetails")
    rec.generations = gens if gens is not None else [Generation(prompt="p", output="fine text", ok=True)]
    return rec


def _ci(mean: float, lo: float, hi: float) -> Comparison:
    return Comparison(mean_recovery=mean, mean_recovery_ci=[lo, hi])


def test_gate_passes_when_the_ci_lower_bound_reaches_the_threshold():
    decision = decide_gate(_variant(), _ci(97.0, 96.0, 98.0), 96.0, GateSettings())
    assert decision.passed and decision.state == GateState.passed and decision.reasons == []
    assert decision.threshold == 96.0 and "lower bound" in decision.rule


def test_a_threshold_set_by_the_run_is_named_beside_the_recipes_own():
    """The quick demo holds FP8 to 85% (its settings), not the recipe's 98%: the rule the card prints says both."""
    recipe = RECIPES.get("fp8-dynamic")
    decision = decide_gate(_variant(), _ci(95.1, 89.5, 100.4), 85.0, GateSettings(), recipe)
    assert decision.passed and decision.threshold == 85.0
    assert "at or above 85% (its lower bound; set by this run, the recipe's own: 98%)" in decision.rule
    assert "recipe's own" not in decide_gate(_variant(), _ci(99.0, 98.5, 99.5), 98.0, GateSettings(), recipe).rule


def test_gate_rejects_only_when_the_whole_ci_is_below():
    low = decide_gate(_variant(), _ci(94.0, 92.5, 95.99), 96.0, GateSettings())
    assert low.state == GateState.rejected and not low.passed
    assert low.reasons == ["mean recovery 94.00% (95% CI 92.50-95.99%) is below 96.00%"]


def test_gate_straddling_ci_is_inconclusive_and_says_whether_more_samples_come():
    more = decide_gate(_variant(), _ci(96.5, 94.0, 99.0), 96.0, GateSettings(), can_grow=True)
    assert more.state == GateState.inconclusive and not more.passed
    assert more.reasons[0].endswith("more samples are evaluated")
    final = decide_gate(_variant(), _ci(96.5, 94.0, 99.0), 96.0, GateSettings(), rounds=3, limit=None)
    assert final.state == GateState.inconclusive and final.rounds == 3
    assert "after 3 round(s) at the whole task" in final.reasons[0] and "--force" in final.reasons[0]


def test_gate_without_per_document_results_never_passes_on_a_point_estimate():
    assert decide_gate(_variant(), Comparison(mean_recovery=99.0), 96.0, GateSettings()).state == \
        GateState.inconclusive
    assert decide_gate(_variant(), Comparison(mean_recovery=90.0), 96.0, GateSettings()).state == \
        GateState.rejected


def test_gate_rejects_non_finite_logits_and_fidelity_out_of_bounds_even_with_a_good_ci():
    recipe = RECIPES.get("w8a8-int8").model_copy(deep=True)
    recipe.gate.max_kl_mean, recipe.gate.min_top1_agreement = 0.05, 0.9
    good = FidelityRecord(kl_mean=0.01, top1_agreement=0.97, tokens=4096)
    ok = _variant()
    ok.fidelity = good
    assert decide_gate(ok, _ci(100, 99, 101), 98.0, GateSettings(), recipe).passed
    nan = _variant()
    nan.fidelity = good.model_copy(update={"nonfinite": 7, "tokens": 4089})
    assert decide_gate(nan, _ci(133, 120, 140), 98.0, GateSettings(), recipe).reasons == [
        "non-finite logits at 7 of 4096 held-out positions"]  # a high recovery never hides NaN
    far = _variant()
    far.fidelity = good.model_copy(update={"kl_mean": 0.4, "top1_agreement": 0.6})
    reasons = decide_gate(far, _ci(100, 99, 101), 98.0, GateSettings(), recipe).reasons
    assert reasons == ["next-token KL divergence 0.4 nats is above the recipe's bound 0.05",
                       "top-1 agreement 60.0% is below the recipe's bound 90%"]
    broken = _variant()
    broken.fidelity = FidelityRecord(error="fidelity_worker: OSError")
    assert "fidelity could not be measured" in decide_gate(broken, _ci(100, 99, 101), 98.0, GateSettings(),
                                                           recipe).reasons[0]


def test_gate_reasons():
    bad = Generation(prompt="p", output="", ok=False, problems=["empty output"])
    gens = decide_gate(_variant([bad, Generation(prompt="q", output="x", ok=True)]), _ci(99, 98, 100),
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
    assert decide_gate(_variant([bad]), _ci(99, 97, 100), 96.0, relaxed).passed


def test_speed_comparability_is_one_typed_fact_with_its_reason():
    base, other_tp = record(100, 1000, tensor_parallel_size=4), record(150, 1500, tensor_parallel_size=2)
    comp = compare(base, other_tp, 16 * 10**9, 4 * 10**9)
    assert (comp.speed_comparable, comp.speedup_batch1, comp.speedup_batched) == (False, None, None)
    assert comp.speed_incomparable_reason == "split over 2 GPU(s), the base over 4"
    same = compare(base, record(150, 1500, tensor_parallel_size=4), None, None)
    assert same.speed_comparable and same.speed_incomparable_reason is None and same.speedup_batch1 == 1.5
    cpu = compare(base, record(label="CPU"), None, None)
    assert not cpu.speed_comparable and cpu.speed_incomparable_reason == "measured on CPU, the base on GPU"
