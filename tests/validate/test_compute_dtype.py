"""One compute dtype per validate call: float32 on a CPU, bf16 on a CPU when the run holds an NVFP4 checkpoint
(transformers reloads those only in bf16), the checkpoint's own on a GPU; a record measured in another dtype is
measured again."""

from __future__ import annotations

import json
from pathlib import Path

from bot.config import Settings
from bot.manifest import AccuracyRecord, TaskScore
from bot.modelconfig import reloads_only_in_bf16
from bot.stages.validate.plan import compute_dtype, eval_matches, plan_for


def _checkpoint(path: Path, qcfg: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"quantization_config": qcfg} if qcfg else {}))
    return path


def test_the_dtype_follows_the_device_and_the_runs_checkpoints(tmp_path: Path) -> None:
    assert (compute_dtype("cpu"), compute_dtype("cpu", bf16_only=True), compute_dtype("cuda")) == (
        "float32", "bfloat16", "auto")
    nvfp4 = _checkpoint(tmp_path / "nvfp4", {"format": "nvfp4-pack-quantized", "quant_method": "compressed-tensors"})
    fp8 = _checkpoint(tmp_path / "fp8", {"format": "float-quantized", "quant_method": "compressed-tensors"})
    assert reloads_only_in_bf16(nvfp4) and not reloads_only_in_bf16(fp8)
    assert not reloads_only_in_bf16(tmp_path / "absent")


def test_an_evaluation_in_another_dtype_is_not_current(tmp_path: Path) -> None:
    settings = Settings(runs_dir=tmp_path, device="cpu", validate={"backend": "hf", "limit": 4,
                                                                   "tasks": ["bot_wikitext_mini"]})
    plan = plan_for(settings)
    assert plan.dtype == "float32" and plan.speed["dtype"] == "float32"
    done = AccuracyRecord(backend="hf", dtype="float32", limit=4,
                          tasks=[TaskScore(task="bot_wikitext_mini", metric="word_perplexity", value=38.2)])
    assert eval_matches(done, plan)
    assert not eval_matches(done.model_copy(update={"dtype": "bfloat16"}), plan)
    assert not eval_matches(done, plan_for(settings, bf16_only=True))  # an NVFP4 variant joined the run
