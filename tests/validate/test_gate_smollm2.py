"""The quality gate on a real small model: SmolLM2-135M-Instruct (real weights) quantized with FP8-Dynamic is
accepted; a copy whose weight scales were overwritten with NaN on disk is rejected, for its generations and for
its recovery. 40 multiple-choice questions and the perplexity paragraphs of the bundled tasks, on CPU."""

from __future__ import annotations

import math

import pytest

from bot.manifest import Status
from validate_helpers import corrupt_scales, quantize, run_cli

pytestmark = pytest.mark.slow

# A gate threshold set through the settings (BOT_GATE__MIN_RECOVERY) wins over the recipe's own (98 for FP8).
# FP8 measured 96.7% mean recovery here with a 95% CI of [91.3, 101.4] at 80 questions: 95 cannot be told apart
# (the gate says inconclusive, as it should), so the threshold sits where the paired tasks can resolve it.
THRESHOLD = 85.0
ENV = {
    "BOT_VALIDATE__PROMPTS": '["What is the capital of France?"]',
    "BOT_VALIDATE__MAX_NEW_TOKENS": "12",
    "BOT_GATE__MIN_RECOVERY": f"{{fp8-dynamic: {THRESHOLD}, fp8-broken: {THRESHOLD}}}",
    "BOT_VALIDATE__FIDELITY__TOKENS": "1024",  # FP8's KL (0.03 nats on the H200) is far inside its bound (0.1)
}


@pytest.fixture(scope="module")
def smol_run(smollm2, tmp_path_factory, calibration_file):
    rundir = quantize(smollm2, tmp_path_factory.mktemp("validate-smol"), ["fp8-dynamic"], calibration_file)
    corrupt_scales(rundir, "fp8-dynamic", "fp8-broken")
    rc = run_cli(["validate", str(rundir.root), "--limit", "40"], env=ENV)
    return rundir, rc


def test_good_variant_accepted(smol_run):
    rundir, rc = smol_run
    assert rc == 0
    base = rundir.read_base().validate_
    mc = next(t for t in base.accuracy.tasks if t.task == "bot_mc_facts")
    manifest = rundir.read_variant("fp8-dynamic")
    rec = manifest.validate_
    # 40 first; an undecided first round doubles the limit (the base is evaluated on the same documents)
    assert mc.samples == min(40 * 2 ** (rec.gate.rounds - 1), mc.documents) and mc.value > 0.4  # chance: 0.25
    assert next(t for t in rec.accuracy.tasks if t.task == "bot_mc_facts").samples == mc.samples  # paired
    assert rec.status == Status.done and all(g.ok for g in rec.generations)
    assert "Paris" in rec.generations[0].output
    assert rec.gate.passed and rec.gate.reasons == [] and rec.gate.threshold == THRESHOLD
    assert rec.comparison.mean_recovery >= THRESHOLD
    assert all(90 <= r <= 110 for r in rec.comparison.recovery.values()), rec.comparison.recovery
    assert 0.5 < rec.comparison.size_ratio < 0.7  # FP8 linear weights, bf16 embeddings
    assert manifest.state() == "validated"


def test_broken_variant_rejected(smol_run):
    rundir, _ = smol_run
    manifest = rundir.read_variant("fp8-broken")
    rec = manifest.validate_
    assert rec.status == Status.done and rec.load.ok  # it loads: the gate, not a crash, rejects it
    assert manifest.state() == "rejected" and not rec.gate.passed
    (gen,) = rec.generations
    assert not gen.ok and "NaN or inf in the logits" in gen.problems
    reasons = " | ".join(rec.gate.reasons)
    assert "generations unusable" in reasons and "mean recovery" in reasons and "below 85.00%" in reasons
    ppl = next(t for t in rec.accuracy.tasks if t.task == "bot_wikitext_mini")
    assert not math.isfinite(ppl.value)  # NaN survives the JSON round trip
    assert rec.comparison.recovery["bot_wikitext_mini"] == 0.0
    assert rec.comparison.mean_recovery < 60
