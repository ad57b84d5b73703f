"""`bot publish`'s display while quantize and validate overlap: both stages' lines reach one console, the validate
plan is said once although the lane calls validate once per model, each model counts once, and quantize's
status stops when quantize is over."""

from __future__ import annotations

import io

from rich.console import Console

from bot.cli._progress import PipelineDisplay

PLAN = {"backend": "hf", "device": "cpu", "tasks": ["bot_wikitext_mini"], "limit": 4}


def test_both_stages_report_while_they_overlap():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with PipelineDisplay(target=console) as display:
        display.on_stage("plan", {"plan": "no GPU seen: validation keeps its settings", "notes": []})
        display.on_stage("stage", {"stage": "quantize+validate"})
        display.on_validate("plan", {**PLAN, "models": ["base"]})
        display.on_quantize({"event": "begin", "variants": ["fp8-dynamic", "w4a16-gptq"], "worker": 0})
        display.on_quantize({"event": "start", "variant": "fp8-dynamic", "worker": 0})
        display.on_validate("model-end", {"model": "base", "state": "done"})
        display.on_quantize({"event": "end", "variant": "fp8-dynamic", "status": "done", "seconds": 2, "worker": 0})
        for variant in ("fp8-dynamic", "w4a16-gptq"):
            display.on_validate("plan", {**PLAN, "models": ["base", variant]})
            display.on_validate("skip", {"model": "base", "reason": "validated"})
            display.on_validate("model-end", {"model": variant, "state": "validated"})
        display.on_quantize({"event": "over"})
        quantize = display._quantize
        assert quantize is not None and quantize.activity._thread is None  # no heartbeat after quantize
        validate = display._validate
        assert validate is not None and (validate.activity.completed, validate.activity.total) == (3, 3)
        display.on_stage("stage", {"stage": "validate"})
    text = buffer.getvalue()
    assert "plan: no GPU seen" in text and "stage: quantize+validate" in text
    assert text.count("validate: backend hf on cpu") == 1
    assert "fp8-dynamic: done in " in text and "w4a16-gptq: validated" in text
    assert "\x1b[" not in text
