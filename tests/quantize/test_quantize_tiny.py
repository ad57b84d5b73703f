"""All six recipes on tiny Llama- and Qwen3-shaped models through `bot quantize`: the saved
quantization_config, a reload in transformers, and logits that differ from the base but stay close."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.manifest import Status
from bot.recipes import BUILTIN_ORDER
from bot.rundir import RunDir

# Expected compressed-tensors metadata per recipe: format, weight bits/type/strategy/group, activation quantization.
EXPECTED = {
    "w4a16-gptq": ("pack-quantized", 4, "int", "group", 128, True, None),
    "w4a16-awq": ("pack-quantized", 4, "int", "group", 128, False, None),
    "w4a16-autoround": ("pack-quantized", 4, "int", "group", 128, True, None),
    "w8a8-int8": ("int-quantized", 8, "int", "channel", None, True, ("int", 8, True)),
    "fp8-dynamic": ("float-quantized", 8, "float", "channel", None, True, ("float", 8, True)),
    "nvfp4": ("nvfp4-pack-quantized", 4, "float", "tensor_group", 16, True, ("float", 4, True)),
}
# Relative L2 distance of the logits to the base's on a fixed input: 4-bit weights move them more than 8-bit.
MAX_REL = {"w4a16-gptq": 0.4, "w4a16-awq": 0.4, "w4a16-autoround": 0.4, "w8a8-int8": 0.1, "fp8-dynamic": 0.15,
           "nvfp4": 0.45}


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def quantized_run(request, tmp_path_factory, calibration_file):
    model = request.getfixturevalue(f"tiny_{request.param}")
    runs = tmp_path_factory.mktemp(f"runs-{request.param}")
    overrides = runs / "overrides.yaml"
    overrides.write_text("overrides:\n  w4a16-autoround: {iters: 4, lr: 0.005}\n")
    # The Qwen3 run spreads the six recipes over two worker processes (parallel quantize) and calibrates 4 samples
    # per forward pass; the Llama run uses one worker, one sample at a time.
    workers = ["--workers", "2", "--calibration-batch-size", "4"] if request.param == "qwen3" else []
    rc = main(["quantize", str(model), "--calibration", str(calibration_file), "--samples", "16", "--seq-len", "128",
               "--runs-dir", str(runs), "--recipes-file", str(overrides), "--device", "cpu", *workers])
    assert rc == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return model, RunDir(run)


def _logits(path: Path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("variant", BUILTIN_ORDER)
def test_variant(quantized_run, variant):
    import torch

    base_dir, rundir = quantized_run
    manifest = rundir.read_variant(variant)
    q = manifest.quantize
    assert q.status == Status.done, q.error
    assert q.versions["llmcompressor"] == "0.14.0.1" and q.versions["compressed-tensors"] == "0.19.0"
    assert q.hardware.device == "cpu" and q.wall_time_s > 0 and q.size_bytes > 0 and q.peak_rss_bytes > 0
    assert q.llmcompressor_recipe and q.recipe.id == variant
    assert {"copy", "oneshot", "save", "worker_load_base"} <= set(q.timings), q.timings
    assert q.timings["oneshot"] < q.wall_time_s and all(v >= 0 for v in q.timings.values())
    assert ("calibration_data" in q.timings) == (variant != "fp8-dynamic")
    assert q.applied["cpu_threads"] >= 1  # the count the worker computed with (calibration sums follow it)
    if variant == "fp8-dynamic":
        assert q.calibration is None
    else:
        assert q.calibration.samples == 16 and q.calibration.seq_len == 128 and q.calibration.seed == 42
        assert q.calibration.fingerprint.startswith("sha256:") and q.calibration.chat_template_applied
        assert q.calibration.batch_size == (4 if base_dir.name == "tiny-qwen3" else 1)

    model_dir = rundir.model_dir(variant)
    assert not rundir.partial_model_dir(variant).exists()
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "LICENSE"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)

    qc = json.loads((model_dir / "config.json").read_text())["quantization_config"]
    fmt, bits, wtype, strategy, group, symmetric, act = EXPECTED[variant]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
    assert qc["ignore"] == ["lm_head"]
    (scheme,) = qc["config_groups"].values()
    w = scheme["weights"]
    assert (w["num_bits"], w["type"], w["strategy"], w["group_size"], w["symmetric"]) == (bits, wtype, strategy, group, symmetric)
    if act is None:
        assert scheme["input_activations"] is None
    else:
        a = scheme["input_activations"]
        assert (a["type"], a["num_bits"], a["dynamic"] in (True, "local")) == act
    assert q.quantization_config == qc

    ids = torch.tensor([[1, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400]])
    base, quant = _logits(base_dir, ids), _logits(model_dir, ids)
    assert torch.isfinite(quant).all()
    rel = ((quant - base).norm() / base.norm()).item()
    assert 0 < rel < MAX_REL[variant], f"{variant}: relative logit distance {rel:.3f}"


def test_rerun_skips_complete_variants(quantized_run, calibration_file, capsys):
    base_dir, rundir = quantized_run
    before = {v: rundir.read_variant(v).quantize.finished_at for v in BUILTIN_ORDER}
    rc = main(["quantize", str(base_dir), "--calibration", str(calibration_file), "--runs-dir", str(rundir.root.parent),
               "-r", "w4a16-gptq", "-r", "fp8-dynamic"])
    assert rc == 0
    assert "already complete" in capsys.readouterr().out
    after = {v: rundir.read_variant(v).quantize.finished_at for v in BUILTIN_ORDER}
    assert after == before


def test_parallel_workers_share_the_variants(quantized_run):
    base_dir, rundir = quantized_run
    manifests = {v: rundir.read_variant(v).quantize for v in BUILTIN_ORDER}
    logs = sorted(p.name for p in rundir.logs_dir.glob("quantize*.log"))
    if base_dir.name == "tiny-llama":  # one worker for all six
        assert logs == ["quantize.log"] and all(not q.concurrent_with for q in manifests.values())
        return
    # two workers: two logs; each variant names exactly the variants of the other worker
    assert logs == ["quantize-0.log", "quantize-1.log"]
    for vid, q in manifests.items():
        assert q.concurrent_with and vid not in q.concurrent_with
        assert all(vid in manifests[other].concurrent_with for other in q.concurrent_with)
    groups = {frozenset(set(BUILTIN_ORDER) - set(q.concurrent_with)) for q in manifests.values()}
    assert len(groups) == 2 and frozenset().union(*groups) == set(BUILTIN_ORDER)
