"""`bot publish` with quantize and validate overlapped (`--overlap on`), for real on the CPU: the tiny random Llama,
FP8-Dynamic (data-free, seconds), then W4A16-GPTQ and W4A16-AWQ (calibrated on every bundled chat, a minute or
more each; one worker, cheapest first), the perplexity task. From the run's timeline: the base's validation
started before any quantize ended, and FP8-Dynamic was validated (a later gate round included) while the others
were still quantizing. Then the same checkpoints validated serially (`--overlap off`, a second run
directory holding only the quantize results): the same scores, ratios and gate states. Then the overlapped run
again: everything is complete, nothing is measured again, and the timeline holds both attempts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bot.cli import main
from bot.rundir import RunDir
from bot.stages.timeline import read_timeline

pytestmark = pytest.mark.slow

RECIPES = ["fp8-dynamic", "w4a16-gptq", "w4a16-awq"]
FP8_THRESHOLD = 100.1
ENV = {
    "BOT_VALIDATE__MAX_NEW_TOKENS": "16",
    "BOT_VALIDATE__PROMPTS": '["What is the capital of France?", "Name three colours."]',
    "BOT_VALIDATE__SPEED__BATCH1_RUNS": "2",
    "BOT_VALIDATE__SPEED__BATCH1_INPUT_LEN": "16",
    "BOT_VALIDATE__SPEED__BATCH1_OUTPUT_LEN": "4",
    "BOT_VALIDATE__SPEED__BATCHED_INPUT_LEN": "16",
    "BOT_VALIDATE__SPEED__BATCHED_OUTPUT_LEN": "4",
    "BOT_VALIDATE__SPEED__BATCHED_NUM_PROMPTS": "2",
    "BOT_VALIDATE__FIDELITY__TOKENS": "64",
    "BOT_VALIDATE__FIDELITY__WINDOW": "32",
    # thresholds on the random base: FP8-Dynamic's inside its CI at 4 documents (99.79-100.36%, float32 on the
    # CPU; FP8-Dynamic is data-free, so the same on every run), so the gate asks for a later round (base and
    # variant on all 8 documents, in the validation lane) and then decides; the W4A16 ones pass
    "BOT_GATE__MIN_RECOVERY": json.dumps({"fp8-dynamic": FP8_THRESHOLD, "w4a16-gptq": 0, "w4a16-awq": 0}),
    "BOT_GATE__REQUIRE_GENERATION": "false",
}


def _publish(model: Path, runs: Path, calibration: Path, overlap: str) -> int:
    args = ["publish", str(model), *sum((["-r", r] for r in RECIPES), []), "--tasks", "bot_wikitext_mini",
            "--limit", "4", "--target", "local", "--device", "cpu", "--runs-dir", str(runs), "--calibration",
            str(calibration), "--samples", "82", "--seq-len", "2048", "--overlap", overlap]
    # the fidelity bounds were measured on SmolLM2; this random base's 4-bit variants sit at the top-1 bound (50%)
    bounds = runs.parent / "bounds.yaml"
    bounds.write_text("overrides:\n" + "".join(f"  {r}: {{min_top1_agreement: 0.1}}\n" for r in RECIPES[1:]))
    args += ["--recipes-file", str(bounds)]
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("BOT_")]:
            mp.delenv(key)
        for key, value in ENV.items():
            mp.setenv(key, value)
        return main(args)


def _facts(rundir: RunDir, variant: str) -> dict:
    rec = rundir.read_variant(variant).validate_
    return {"state": rec.gate.outcome.value, "rounds": rec.gate.rounds, "limit": rec.accuracy.limit,
            "scores": [(t.task, t.metric, t.value) for t in rec.accuracy.tasks],
            "recovery": rec.comparison.mean_recovery, "ci": rec.comparison.mean_recovery_ci,
            "kl": rec.fidelity.kl_mean if rec.fidelity else None}


def _quantized_only(src: RunDir, runs: Path) -> RunDir:
    """The run's base and quantized checkpoints under another runs dir, with no validation, card or publish."""
    dest = RunDir(runs / src.run_id)
    base = src.read_base()
    base.validate_ = None
    dest.write_base(base)
    for variant in RECIPES:
        shutil.copytree(src.model_dir(variant), dest.model_dir(variant))
        m = src.read_variant(variant)
        m.validate_ = m.card = m.publish = m.target = None
        dest.write_variant(m)
    return dest


def test_overlapped_publish_validates_while_quantizing_and_matches_the_serial_run(tiny_llama, calibration_file,
                                                                                  tmp_path):
    assert _publish(tiny_llama, tmp_path / "overlap", calibration_file, "on") == 0  # the W4A16 ones published
    (root,) = [p for p in (tmp_path / "overlap").iterdir() if p.name != "_local_hub" and p.is_dir()]
    run = RunDir(root)
    (attempt,) = read_timeline(run).attempts
    assert attempt.mode == "overlap" and attempt.outcome == "finished" and attempt.gpu_sampling is None
    assert attempt.samples == []  # no nvidia-smi here: no samples at all
    quantized = {s.model: s for s in attempt.spans if s.stage == "quantize" and s.what == "quantize"}
    assert [s.model for s in sorted(quantized.values(), key=lambda s: s.start_s)] == RECIPES  # cheapest first
    validated = [s for s in attempt.spans if s.lane == "validate"]
    base_first = min(s.start_s for s in validated if s.model == "base")
    fp8 = [s for s in validated if s.model == "fp8-dynamic"]
    assert base_first < quantized["fp8-dynamic"].end_s  # the base is measured while the first recipe quantizes
    assert quantized["fp8-dynamic"].end_s <= fp8[0].start_s < quantized["w4a16-awq"].end_s, attempt.spans
    assert any("round 2" in s.what for s in fp8)  # the later round ran in the lane too
    assert all(s.end_s is not None for s in attempt.spans)
    assert run.timeline_chart_path.is_file()
    # The record names every quantize worker that ran during FP8's first measurement (load, speed, lm-eval, all
    # between the record's start and finish); which ones did is a matter of timing (GPTQ may end just before it).
    first = [s for s in fp8 if "round" not in s.what]
    start, end = min(s.start_s for s in first), max(s.end_s for s in first)
    during = {m for m, s in quantized.items() if m != "fp8-dynamic" and s.start_s < end and s.end_s > start}
    concurrent = run.read_variant("fp8-dynamic").validate_.concurrent_with
    assert during and during <= set(concurrent) <= set(RECIPES[1:]), (during, concurrent)
    overlapped = {v: _facts(run, v) for v in RECIPES}
    assert overlapped["fp8-dynamic"]["rounds"] == 2 and overlapped["fp8-dynamic"]["limit"] == 8  # a later round
    lo, hi = overlapped["fp8-dynamic"]["ci"]  # at 8 documents: decided, or out of rounds, as its CI says
    fp8_state = "passed" if lo >= FP8_THRESHOLD else "rejected" if hi < FP8_THRESHOLD else "inconclusive"
    assert [overlapped[v]["state"] for v in RECIPES] == [fp8_state, "passed", "passed"]
    assert run.read_base().validate_.accuracy.limit == 8

    serial_run = _quantized_only(run, tmp_path / "serial")
    assert _publish(tiny_llama, tmp_path / "serial", calibration_file, "off") == 0
    (serial_attempt,) = read_timeline(serial_run).attempts
    assert serial_attempt.mode == "serial" and not any(s.lane.startswith("quantize") for s in serial_attempt.spans)
    assert {v: _facts(serial_run, v) for v in RECIPES} == overlapped
    assert all(not serial_run.read_variant(v).validate_.concurrent_with for v in RECIPES)

    before = {v: run.read_variant(v).validate_.validated_at for v in RECIPES}
    assert _publish(tiny_llama, tmp_path / "overlap", calibration_file, "on") == 0  # resumed: all complete
    assert {v: run.read_variant(v).validate_.validated_at for v in RECIPES} == before
    again = read_timeline(run).attempts
    assert len(again) == 2 and again[1].outcome == "finished"
    assert not any(s.stage == "quantize" and s.what == "quantize" for s in again[1].spans)  # nothing quantized
    assert {v: _facts(run, v) for v in RECIPES} == overlapped
