"""A Qwen3-MoE-shaped model through `bot quantize` (W4A16-AWQ, asymmetric; W8A8-INT8, int8 experts): the checkpoint
holds every expert's tensors, and it reloads through the hf validation backend (which transformers 5.17 alone
cannot do: its MoE expert fusing drops zero points and int8 experts) with finite logits near the base's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.manifest import Status
from bot.rundir import RunDir

pytestmark = pytest.mark.slow

VARIANTS = ("w4a16-awq", "w8a8-int8")
# Per-expert tensors the checkpoint must hold (suffixes after `...experts.<n>.<proj>.`), and those it must not.
EXPERT_TENSORS = {
    "w4a16-awq": ({"weight_packed", "weight_scale", "weight_zero_point", "weight_shape"}, {"weight"}),
    "w8a8-int8": ({"weight", "weight_scale"}, {"weight_zero_point", "weight_packed"}),
}
MAX_REL = {"w4a16-awq": 0.4, "w8a8-int8": 0.1}  # as in test_quantize_tiny.py
IDS = [[1, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400]]


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory, calibration_file):
    from bot.workers.build_model import build_shape

    base = tmp_path_factory.mktemp("models") / "tiny-qwen3-moe"
    base.mkdir()
    build_shape(base, "tiny-qwen3-moe")
    runs = tmp_path_factory.mktemp("runs-moe")
    rc = main(["quantize", str(base), *[a for v in VARIANTS for a in ("-r", v)], "--calibration",
               str(calibration_file), "--samples", "4", "--seq-len", "64", "--runs-dir", str(runs), "--device", "cpu"])
    assert rc == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return base, RunDir(run)


def _tensors(model_dir: Path) -> dict[str, object]:
    from safetensors import safe_open

    out = {}
    for shard in model_dir.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            out.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
    return out


def _load(path: Path):
    from bot.workers import hf_backend

    record, model, tok = hf_backend.load({"device": "cpu", "model_path": str(path), "dtype": "auto"})
    assert record["ok"], record.get("error")
    return record, model, tok


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits.float()


@pytest.mark.parametrize("variant", VARIANTS)
def test_moe_checkpoint_reloads_and_generates(moe_run, variant):
    import torch

    from bot.workers import hf_backend

    base_dir, rundir = moe_run
    q = rundir.read_variant(variant).quantize
    assert q.status == Status.done, q.error
    model_dir = rundir.model_dir(variant)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3MoeForCausalLM"]
    qc = config["quantization_config"]
    (scheme,) = qc["config_groups"].values()
    assert scheme["weights"]["symmetric"] is (variant == "w8a8-int8")
    assert "lm_head" in qc["ignore"] and "model.layers.0.mlp.gate" in qc["ignore"]  # the router stays bf16

    # every expert of every layer is in the checkpoint, one tensor set per projection (what vLLM reads)
    tensors = _tensors(model_dir)
    must, must_not = EXPERT_TENSORS[variant]
    for layer in range(config["num_hidden_layers"]):
        for expert in range(config.get("num_experts") or config["num_local_experts"]):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                prefix = f"model.layers.{layer}.mlp.experts.{expert}.{proj}."
                held = {k[len(prefix):] for k in tensors if k.startswith(prefix)}
                assert must <= held and not (must_not & held), (prefix, held)
    if variant == "w8a8-int8":
        assert tensors["model.layers.0.mlp.experts.0.down_proj.weight"] == "I8"

    record, model, tok = _load(model_dir)
    assert "dequantized to dense bfloat16 by compressed-tensors" in record["kernel"]
    gens, _ = hf_backend.generate(model, tok, {"device": "cpu", "prompts": ["What is the capital of France?"],
                                               "max_new_tokens": 8})
    assert gens[0]["num_tokens"] and "NaN or inf in the logits" not in gens[0]["problems"]
    quant = _logits(model)
    assert torch.isfinite(quant).all()
    base = _logits(_load(base_dir)[1])
    rel = ((quant - base).norm() / base.norm()).item()
    print(f"{variant}: relative logit distance to the base {rel:.4f}")
    assert 0 < rel < MAX_REL[variant], f"{variant}: relative logit distance {rel:.3f}"


def test_base_is_loaded_as_it_is(moe_run, tmp_path):
    from bot.workers import hf_backend

    base_dir, _ = moe_run
    assert hf_backend.loadable_path(base_dir, tmp_path, "cpu") == (str(base_dir), None)
    assert not hf_backend.has_quantized_experts(base_dir)


def test_transformers_alone_still_cannot_load_them(moe_run):
    """Why hf_backend dequantizes first. When this fails, transformers loads these checkpoints itself
    (huggingface/transformers#47430 and an int8-experts fix landed): the dequantize step can then go."""
    from transformers import AutoModelForCausalLM

    _, rundir = moe_run
    for variant in VARIANTS:
        with pytest.raises(Exception, match="conversion of the weights"):
            AutoModelForCausalLM.from_pretrained(rundir.model_dir(variant), dtype="auto")


def test_bot_validate_measures_the_moe_variants(moe_run, tmp_path, monkeypatch):
    """The whole hf validation (load, generations, speed, lm-eval on the bundled tasks) on a copy of the run."""
    import shutil

    _, rundir = moe_run
    copy = RunDir(Path(shutil.copytree(rundir.root, tmp_path / rundir.root.name)))
    small = {"MAX_NEW_TOKENS": "8", "PROMPTS": '["What is the capital of France?"]', "SPEED__BATCH1_RUNS": "1",
             "SPEED__BATCH1_INPUT_LEN": "16", "SPEED__BATCH1_OUTPUT_LEN": "4", "SPEED__BATCHED_INPUT_LEN": "16",
             "SPEED__BATCHED_OUTPUT_LEN": "4", "SPEED__BATCHED_NUM_PROMPTS": "2"}
    for key, value in small.items():
        monkeypatch.setenv(f"BOT_VALIDATE__{key}", value)
    for key in ("BOT_SERVE_PYTHON", "BOT_DEVICE", "BOT_VALIDATE__BACKEND", "BOT_VALIDATE__TASKS"):
        monkeypatch.delenv(key, raising=False)
    assert main(["validate", str(copy.root), "--limit", "4"]) == 0
    for variant in VARIANTS:
        rec = copy.read_variant(variant).validate_
        assert rec.status == Status.done and rec.load.ok, rec.error or rec.load.error
        assert "dequantized to dense bfloat16 by compressed-tensors" in rec.load.kernel
        assert rec.accuracy.error is None and rec.accuracy.tasks and rec.comparison.mean_recovery is not None
