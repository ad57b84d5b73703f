"""The paired statistics the gate decides on: recovery, paired bootstrap CIs, flips, chance detection."""

from __future__ import annotations

import math

import pytest

from bot.config import GateSettings
from bot.manifest import Comparison
from bot.stages.validate import paired

GATE = GateSettings()  # 95 %, 2000 resamples, seed 0


def mc(values: list[int], choices: int = 4, ids: list[int] | None = None, metric: str = "acc") -> dict:
    ids = list(range(len(values))) if ids is None else ids
    return {"metric": metric, "kind": "mean", "higher_is_better": True, "output_type": "multiple_choice",
            "docs": [{"doc_id": i, "value": v, "choices": choices} for i, v in zip(ids, values)]}


def gen(values: list[int]) -> dict:
    return {"metric": "exact_match,strict-match", "kind": "mean", "higher_is_better": True,
            "output_type": "generate_until", "docs": [{"doc_id": i, "value": v} for i, v in enumerate(values)]}


def ppl(rows: list[tuple[int, float, int]]) -> dict:
    return {"metric": "word_perplexity", "kind": "perplexity", "higher_is_better": False,
            "output_type": "loglikelihood_rolling",
            "docs": [{"doc_id": i, "value": math.exp(-ll / w), "ll": ll, "words": w, "bytes": 5 * w}
                     for i, ll, w in rows]}


def samples(**tasks: dict) -> dict:
    return {"requested": list(tasks), "tasks": tasks}


BASE_40 = [1] * 32 + [0] * 8  # 80 % right


def test_identical_base_and_variant_recover_100_with_a_point_interval():
    s = samples(t=mc(BASE_40))
    res = paired.compare_tasks(s, s, GATE)
    (t,) = res.tasks
    assert (t.recovery, t.ci, t.docs, t.used, t.at_chance) == (100.0, [100.0, 100.0], 40, True, False)
    assert (t.right_to_wrong, t.wrong_to_right, t.chance) == (0, 0, 0.25)
    assert (res.mean_recovery, res.mean_recovery_ci, res.tasks_compared) == (100.0, [100.0, 100.0], ["t"])
    assert res.bootstrap == {"method": "paired percentile bootstrap", "resamples": 2000, "seed": 0}
    assert res.confidence == 0.95


def test_variant_wrong_on_10_docs_the_base_got_right():
    variant = [0] * 10 + [1] * 22 + [0] * 8  # 22/40 right: 10 right->wrong, none wrong->right
    res = paired.compare_tasks(samples(t=mc(BASE_40)), samples(t=mc(variant)), GATE)
    (t,) = res.tasks
    assert t.recovery == round(22 / 32 * 100, 2) == 68.75
    assert (t.base, t.variant) == (0.8, 0.55)
    assert (t.right_to_wrong, t.wrong_to_right) == (10, 0)
    low, high = t.ci
    assert low < 68.75 < high < 100.0  # the variant is never better on a resample: 100 is outside
    assert 45 < low and high < 90  # sane width for 40 documents
    assert res.mean_recovery == 68.75 and res.mean_recovery_ci == t.ci  # one task: the mean is that task


def test_flips_both_ways_and_same_seed_same_result():
    variant = [0] * 10 + [1] * 22 + [1, 1, 0, 0, 0, 0, 0, 0]  # 10 right->wrong, 2 wrong->right
    a = paired.compare_tasks(samples(t=mc(BASE_40)), samples(t=mc(variant)), GATE)
    b = paired.compare_tasks(samples(t=mc(BASE_40)), samples(t=mc(variant)), GATE)
    assert (a.tasks[0].right_to_wrong, a.tasks[0].wrong_to_right) == (10, 2)
    assert a.tasks[0].recovery == 75.0
    assert a == b
    other = paired.compare_tasks(samples(t=mc(BASE_40)), samples(t=mc(variant)), GATE.model_copy(
        update={"bootstrap_seed": 7}))
    assert other.bootstrap["seed"] == 7 and other.tasks[0].recovery == 75.0
    lo_a, hi_a = a.tasks[0].ci
    lo_o, hi_o = other.tasks[0].ci
    assert lo_o < 75.0 < hi_o and abs(lo_o - lo_a) < 4 and abs(hi_o - hi_a) < 4


def test_base_at_chance_is_flagged_and_left_out_of_the_mean():
    at_chance = [1] * 10 + [0] * 30  # 25 % on 4-choice questions
    base = samples(chance=mc(at_chance), good=mc(BASE_40))
    variant = samples(chance=mc([0] * 40), good=mc(BASE_40))
    res = paired.compare_tasks(base, variant, GATE)
    chance, good = res.tasks
    assert chance.at_chance and not chance.used and chance.chance == 0.25
    assert chance.recovery == 0.0 and "chance" in chance.note and "not used" in chance.note
    assert good.used and not good.at_chance
    assert res.tasks_compared == ["good"] and res.recovery == {"good": 100.0}
    assert res.mean_recovery == 100.0 and res.mean_recovery_ci == [100.0, 100.0]


def test_chance_levels_and_wilson_bound():
    assert paired.wilson_lower(10, 40, 1.959964) == pytest.approx(0.1419, abs=2e-4)
    two_choice = paired.compare_tasks(samples(t=mc([1] * 24 + [0] * 16, choices=2)),
                                      samples(t=mc([1] * 24 + [0] * 16, choices=2)), GATE).tasks[0]
    assert two_choice.chance == 0.5 and two_choice.at_chance  # 60 % of 40 two-way questions: not above chance
    g = paired.compare_tasks(samples(t=gen([1] * 5 + [0] * 35)), samples(t=gen([1] * 4 + [0] * 36)), GATE).tasks[0]
    assert g.chance == 0.0 and not g.at_chance and g.used and g.recovery == 80.0
    assert (g.right_to_wrong, g.wrong_to_right) == (1, 0)


def test_perplexity_pairs_on_shared_documents():
    base = samples(w=ppl([(0, -200.0, 100), (1, -150.0, 80), (2, -90.0, 40), (3, -100.0, 50)]))
    # the variant lacks document 3 and has a document 9 the base never scored
    variant = samples(w=ppl([(0, -220.0, 100), (1, -160.0, 80), (2, -95.0, 40), (9, -10.0, 50)]))
    res = paired.compare_tasks(base, variant, GATE)
    (t,) = res.tasks
    b_ppl = math.exp(440.0 / 220)
    v_ppl = math.exp(475.0 / 220)
    assert t.docs == 3 and t.base == pytest.approx(b_ppl) and t.variant == pytest.approx(v_ppl)
    assert t.recovery == round(b_ppl / v_ppl * 100, 2)
    assert t.chance is None and not t.at_chance and t.right_to_wrong is None
    assert "3 documents both scored (base 4, variant 4)" in t.note
    low, high = t.ci
    assert low <= t.recovery <= high < 100.0  # the variant is worse on every document


def test_nan_variant_recovers_zero():
    base = samples(w=ppl([(0, -200.0, 100), (1, -150.0, 80)]), t=mc(BASE_40))
    variant = samples(w=ppl([(0, math.nan, 100), (1, math.nan, 80)]), t=mc(BASE_40))
    res = paired.compare_tasks(base, variant, GATE)
    w, t = res.tasks
    assert math.isnan(w.variant) and w.recovery == 0.0 and w.ci == [0.0, 0.0] and w.used
    assert res.mean_recovery == 50.0 and res.mean_recovery_ci == [50.0, 50.0]


def test_mismatched_and_missing_documents():
    base = samples(t=mc([1, 0, 1, 1], ids=[0, 1, 2, 3]), gone=mc([1, 1]))
    variant = samples(t=mc([9, 9], ids=[10, 11]))
    res = paired.compare_tasks(base, variant, GATE)
    t, gone = res.tasks
    assert (t.docs, t.used, t.recovery, t.ci) == (0, False, None, None)
    assert t.note == "no document scored by both base (4 documents) and variant (2)"
    assert not gone.used and gone.note == "the variant has no per-document results for this task"
    assert res.mean_recovery is None and res.mean_recovery_ci is None and res.tasks_compared == []
    with pytest.raises(ValueError, match="doc_id 0 twice"):
        paired.compare_tasks(samples(t=mc([1, 1], ids=[0, 0])), base, GATE)


def test_group_aggregates_its_subtasks_like_lm_eval():
    def grouped(a: list[int], b: list[int], weight: bool) -> dict:
        return {"requested": ["grp"], "tasks": {"grp_a": mc(a), "grp_b": mc(b)},
                "groups": {"grp": {"metric": "acc", "subtasks": ["grp_a", "grp_b"], "weight_by_size": weight}}}

    a, b = [1] * 30 + [0] * 10, [1] * 5 + [0] * 5  # 75 % on 40, 50 % on 10
    worse_b = [1] * 2 + [0] * 8
    weighted = paired.compare_tasks(grouped(a, b, True), grouped(a, worse_b, True), GATE).tasks[0]
    assert weighted.base == pytest.approx(35 / 50) and weighted.variant == pytest.approx(32 / 50)
    assert weighted.recovery == round(32 / 35 * 100, 2) and weighted.docs == 50 and weighted.right_to_wrong == 3
    plain = paired.compare_tasks(grouped(a, b, False), grouped(a, worse_b, False), GATE).tasks[0]
    assert plain.base == pytest.approx(0.625) and plain.recovery == round(0.475 / 0.625 * 100, 2) == 76.0


def test_fills_a_comparison():
    variant = [0] * 10 + [1] * 22 + [0] * 8
    res = paired.compare_tasks(samples(t=mc(BASE_40), w=ppl([(0, -200.0, 100), (1, -150.0, 80)])),
                               samples(t=mc(variant), w=ppl([(0, -210.0, 100), (1, -150.0, 80)])), GATE)
    comp = Comparison(**res.comparison_fields())
    assert comp.tasks_compared == ["t", "w"] and len(comp.tasks) == 2
    assert comp.mean_recovery == round((comp.recovery["t"] + comp.recovery["w"]) / 2, 2)
    low, high = comp.mean_recovery_ci
    assert low < comp.mean_recovery < high
    assert Comparison.model_validate_json(comp.model_dump_json()) == comp


def test_a_base_near_zero_leaves_resamples_without_a_ratio():
    base = samples(t=gen([1] + [0] * 39))  # one right answer: most resamples of the base score 0
    res = paired.compare_tasks(base, base, GATE)
    (t,) = res.tasks
    assert t.recovery == 100.0 and t.ci is None and "resamples left no ratio: no interval" in t.note
    assert res.mean_recovery == 100.0 and res.mean_recovery_ci is None  # the gate cannot lean on it
