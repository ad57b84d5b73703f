"""Tensor parallelism for models larger than one GPU, on CPU: the size arithmetic on real model shapes and GPU
sizes, vLLM's head-split rule, the `validate.tensor_parallel_size` override, and the stage handing the same size to
the vLLM engine and to lm-eval's vLLM model (jobs built by the stage, arguments by the workers' real functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.clients.serve_env import ServeEnv
from bot.config import Settings, SpeedSettings, ValidateSettings
from bot.errors import ModelError
from bot.manifest import Batch1Speed, SpeedRecord, ValidateRecord
from bot.rundir import RunDir
from bot.stages.validate.parallel import DEFAULT_RESERVE_GIB, GIB, ModelShape, choose_tp, kv_dtype_bytes
from bot.stages.validate.measure import ModelValidation, WorkerFailed
from bot.stages.validate.plan import Plan
from bot.stages.validate.compare import speedups
from bot.workers import lmeval_worker as lw
from bot.workers import vllm_backend as vb
from bot.workers.quantize_worker import fits_on_gpu

MIB = 2**20
H100 = 81559 * MIB  # H100 80GB HBM3 as nvidia-smi reports it (79.6 GiB)
H200 = 143771 * MIB  # H200 (140.4 GiB)
L4 = 23034 * MIB  # a 24 GB card (22.5 GiB)

# config.json excerpts of real models (the keys the choice reads)
LLAMA_70B = {"num_attention_heads": 64, "num_key_value_heads": 8, "num_hidden_layers": 80, "hidden_size": 8192}
LLAMA_8B = {"num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32, "hidden_size": 4096}
QWEN_32B = {"num_attention_heads": 40, "num_key_value_heads": 8, "num_hidden_layers": 64, "hidden_size": 5120}
QWEN_7B = {"num_attention_heads": 28, "num_key_value_heads": 4, "num_hidden_layers": 28, "hidden_size": 3584}
PHI3_MEDIUM = {"num_attention_heads": 40, "num_key_value_heads": 10, "num_hidden_layers": 40, "hidden_size": 5120}
GEMMA3_27B = {"architectures": ["Gemma3ForConditionalGeneration"], "vision_config": {"num_attention_heads": 16},
              "text_config": {"num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                              "num_hidden_layers": 62, "hidden_size": 5376}}
# checkpoint sizes (sum of the safetensors files)
W_70B_BF16 = 141_107_412_992
W_32B_FP8 = 33_600_000_000
W_8B_BF16 = 16_060_522_496
W_14B_BF16 = 27_920_000_000


def pick(weights: int | None, config: dict, gpus: list[int], **kw: Any):
    kw.setdefault("max_len", 4096)
    return choose_tp(weights, ModelShape.from_config(config), gpus, 0.85, **kw)


# ---------------------------------------------------------------- shapes and KV cache


def test_shape_from_config():
    assert ModelShape.from_config(LLAMA_70B) == ModelShape(heads=64, kv_heads=8, layers=80, head_dim=128)
    assert ModelShape.from_config(GEMMA3_27B) == ModelShape(heads=32, kv_heads=16, layers=62, head_dim=128)
    mha = ModelShape.from_config({"n_head": 12, "n_layer": 12, "n_embd": 768})  # GPT-2 keys, no KV heads: MHA
    assert mha == ModelShape(heads=12, kv_heads=12, layers=12, head_dim=64)
    assert ModelShape.from_config({}) == ModelShape()


def test_kv_cache_of_one_sequence():
    shape = ModelShape.from_config(LLAMA_70B)
    assert shape.kv_bytes(4096, 1) == 2 * 80 * 8 * 128 * 2 * 4096 == 1.25 * GIB
    assert shape.kv_bytes(4096, 2) == 0.625 * GIB  # KV heads split over the GPUs
    assert shape.kv_bytes(4096, 16) == shape.kv_bytes(4096, 8)  # more GPUs than KV heads: one replica each
    assert shape.kv_bytes(4096, 1, kv_dtype_bytes("fp8_e4m3")) == 0.625 * GIB
    assert kv_dtype_bytes("auto") == 2 and kv_dtype_bytes(None) == 2
    assert ModelShape().kv_bytes(4096, 1) == 0 and shape.kv_bytes(None, 1) == 0


@pytest.mark.parametrize("config, tp, ok", [
    (LLAMA_70B, 8, True),
    (QWEN_32B, 8, True),  # 40 % 8 == 0, 8 KV heads
    (QWEN_7B, 4, True),
    (QWEN_7B, 8, False),  # 28 % 8 != 0
    (PHI3_MEDIUM, 2, True),
    (PHI3_MEDIUM, 4, False),  # 10 KV heads: neither 10 % 4 nor 4 % 10
    ({"num_attention_heads": 12, "num_key_value_heads": 2}, 4, True),  # Qwen2-1.5B: KV heads replicated
    ({"num_attention_heads": 12, "num_key_value_heads": 2}, 8, False),
    ({}, 8, True),  # unknown heads: vLLM decides
])
def test_heads_split_like_vllm(config, tp, ok):
    assert ModelShape.from_config(config).splits(tp) is ok


# ---------------------------------------------------------------- automatic choice


@pytest.mark.parametrize("n, want", [(1, None), (2, None), (4, 4), (8, 4)])
def test_70b_bf16_on_h100s(n, want):
    """131.4 GiB of weights; an H100 gives 67.7 GiB at 0.85: tp=2 needs 65.7 + 0.6 KV + 2.0 reserve = 68.3."""
    if want is None:
        with pytest.raises(ModelError) as info:
            pick(W_70B_BF16, LLAMA_70B, [H100] * n)
        line = info.value.one_line()
        assert "\n" not in line and "131.4 GiB of weights do not fit" in line
        assert f"({n} x 79.6 GiB at gpu_memory_utilization 0.85)" in line
        assert "hint: run on a host with 4 such GPUs (tp=4), validate a smaller variant" in line
        assert "validate.speed.max_model_len" in line
        return
    choice = pick(W_70B_BF16, LLAMA_70B, [H100] * n)
    assert (choice.size, choice.source) == (want, "auto")
    assert choice.reason.startswith("tp=4: 131.4 GiB of weights over 4 x 79.6 GiB at 0.85 (35.2 GiB per GPU")


@pytest.mark.parametrize("n, want", [(1, None), (2, 2), (8, 2)])
def test_70b_bf16_on_h200s(n, want):
    if want is None:
        with pytest.raises(ModelError, match=r"tp=1 each GPU needs 134\.7 GiB .* but 119\.3 GiB are usable") as info:
            pick(W_70B_BF16, LLAMA_70B, [H200] * n)
        assert "2 such GPUs (tp=2)" in info.value.one_line()
    else:
        assert pick(W_70B_BF16, LLAMA_70B, [H200] * n).size == want


def test_smaller_models_take_one_gpu():
    assert pick(W_32B_FP8, QWEN_32B, [H100]).size == 1
    assert pick(W_32B_FP8, QWEN_32B, [H100] * 8).size == 1  # more GPUs are not used when one is enough
    assert pick(W_8B_BF16, LLAMA_8B, [H100] * 8).size == 1
    gemma = pick(54_900_000_000, GEMMA3_27B, [H100] * 2)
    assert gemma.size == 1 and gemma.reason.startswith("tp=1: 51.1 GiB of weights over 1 x 79.6 GiB")


def test_kv_cache_and_reserve_count():
    """32B BF16 (61 GiB) on one H100: the weights alone fit 67.7 GiB; with the KV cache of a 32k sequence they
    do not, and the choice moves to tp=2. Lowering max_model_len or the reserve brings it back to one GPU."""
    w = 65_500_000_000
    assert pick(w, QWEN_32B, [H100] * 2, max_len=32768).size == 2  # 61.0 + 8.0 KV + 2.0 > 67.7
    assert pick(w, QWEN_32B, [H100] * 2, max_len=4096).size == 1  # 61.0 + 1.0 + 2.0
    assert pick(w, QWEN_32B, [H100] * 2, max_len=4096, reserve_bytes=8 * GIB).size == 2
    assert pick(w, QWEN_32B, [H100] * 2, max_len=32768, kv_bytes_per_value=1).size == 1  # fp8 KV cache: 4.0


def test_heads_that_do_not_split_are_skipped_then_error():
    """Phi-3-medium (40 heads, 10 KV heads) splits over 1 or 2 GPUs only: on 24 GB cards it needs tp=2; on
    16 GB cards tp=2 is too small and tp=4/8 are not allowed, so it is an error that says why."""
    ok = pick(W_14B_BF16, PHI3_MEDIUM, [L4] * 8)
    assert ok.size == 2 and "(15.4 GiB per GPU" in ok.reason
    with pytest.raises(ModelError) as info:
        pick(W_14B_BF16, PHI3_MEDIUM, [16 * 10**9] * 8)
    line = info.value.one_line()
    assert "at tp=2 each GPU needs" in line and "tp=4,8 skipped (40 attention heads / 10 KV heads)" in line
    assert "use larger GPUs (8 are not enough)" in line
    # Qwen2.5-7B: tp=8 does not split 28 heads; tp=4 does and is chosen when it is the first fit
    assert pick(60 * GIB, QWEN_7B, [L4] * 8).size == 4
    assert "tp=8 skipped" not in pick(60 * GIB, QWEN_7B, [L4] * 8).reason  # only smaller skipped sizes are noted


def test_unknown_inputs_and_mixed_gpus():
    assert pick(None, LLAMA_70B, [H100] * 8).reason == "tp=1: weights size unknown (no safetensors)"
    assert pick(W_8B_BF16, LLAMA_8B, []).reason == "tp=1: no GPU seen"
    assert pick(W_8B_BF16, {}, [H100]).size == 1  # no shape: weights and reserve only
    # tp=k uses the first k GPUs: the smaller of them bounds the fit
    assert pick(W_70B_BF16, LLAMA_70B, [H200, H100, H200, H200]).size == 4
    assert pick(W_70B_BF16, LLAMA_70B, [H200, H200, H100, H100]).size == 2


def test_reserve_default_matches_the_setting():
    assert ValidateSettings().tensor_parallel_reserve_gib == DEFAULT_RESERVE_GIB


# ---------------------------------------------------------------- validate.tensor_parallel_size


def test_setting_wins_when_it_can_work():
    choice = pick(W_8B_BF16, LLAMA_8B, [H100] * 4, requested=2)
    assert (choice.size, choice.source) == (2, "setting")
    assert choice.reason.startswith("tp=2 (validate.tensor_parallel_size): 15.0 GiB of weights over 2 x 79.6 GiB")
    tight = pick(W_70B_BF16, LLAMA_70B, [H100] * 2, requested=2)  # over the estimate: kept, and said so
    assert tight.size == 2 and tight.reason.endswith("does not fit by the estimate, kept as set")
    assert pick(None, LLAMA_8B, [H100] * 2, requested=2).size == 2
    assert pick(W_8B_BF16, LLAMA_8B, [H100] * 2, requested=1).record() == {
        "size": 1, "source": "setting", "reason": pick(W_8B_BF16, LLAMA_8B, [H100] * 2, requested=1).reason}


def test_setting_beyond_the_gpus_or_heads_is_an_error():
    with pytest.raises(ModelError) as info:
        pick(W_70B_BF16, LLAMA_70B, [H100] * 2, requested=4)
    assert info.value.one_line() == ("validate.tensor_parallel_size=4 but the serve environment sees 2 GPU(s) "
                                     "(hint: lower validate.tensor_parallel_size, or unset it to choose automatically)")
    with pytest.raises(ModelError) as info:
        pick(W_14B_BF16, PHI3_MEDIUM, [H100] * 8, requested=4)
    assert info.value.one_line().startswith("validate.tensor_parallel_size=4 does not split 40 attention heads / "
                                            "10 KV heads (hint: use one of [1, 2]")
    with pytest.raises(ModelError, match="does not split 28 attention heads"):
        pick(W_8B_BF16, QWEN_7B, [H100] * 8, requested=8)


# ---------------------------------------------------------------- the stage hands one size to both workers


def model_dir(tmp_path: Path, config: dict, weights: int) -> Path:
    """A model folder as the choice sees it: config.json and safetensors files of the checkpoint's size
    (sparse files: no disk is used)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    for i in range(2):
        with open(path / f"model-0000{i + 1}-of-00002.safetensors", "wb") as f:
            f.truncate(weights // 2)
    return path


def plan(gpus: list[int], backend: str = "vllm") -> Plan:
    env = ServeEnv("/py", {"vllm": True, "lm_eval": True, "transformers": True, "torch": True},
                   tuple({"name": "H100", "capability": "9.0", "memory_bytes": m} for m in gpus))
    return Plan(backend, "cuda", "GPU", ["arc_challenge"], 10, None, [], env, ["hi"], 4,
                SpeedSettings().model_dump())


def run_stage(tmp_path: Path, path: Path, the_plan: Plan, settings: Settings | None = None,
              rec: ValidateRecord | None = None, reuse: bool = False):
    """ModelValidation.run with the two workers replaced by recorders of the jobs they are given."""
    jobs: dict[str, dict[str, Any]] = {}

    def call(self, module: str, kind: str, job: dict[str, Any], rec: ValidateRecord, timing: str,
             **_worker_options: Any) -> dict[str, Any]:
        jobs[kind] = dict(job)
        if kind == "validate" and job.get("lmeval"):  # hf: lm-eval in the same worker, its result in its own file
            jobs["lmeval"] = lm = dict(job["lmeval"])
            Path(lm["result_path"]).parent.mkdir(parents=True, exist_ok=True)
            Path(lm["result_path"]).write_text(json.dumps({"status": "done", "tasks": [],
                                                           "command": lw.command_line(lm)}))
        if kind == "validate":
            return {"status": "done", "load": {"ok": True, "backend": "vllm", "max_model_len": 4096}}
        return {"status": "done", "tasks": [], "command": lw.command_line(job)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModelValidation, "_call", call)
        rec = rec or ValidateRecord()
        work = ModelValidation(RunDir(tmp_path), settings or Settings(), the_plan, "base", path, lambda: None,
                               lambda _e, _d: None)
        work.run(rec, reuse)
    return rec, jobs


def test_stage_gives_vllm_and_lmeval_the_same_size(tmp_path):
    path = model_dir(tmp_path, LLAMA_70B, W_70B_BF16)
    rec, jobs = run_stage(tmp_path, path, plan([H100] * 8))
    engine = vb.engine_kwargs(jobs["validate"], 4096)
    margs = lw.model_args(jobs["lmeval"])
    assert engine["tensor_parallel_size"] == margs["tensor_parallel_size"] == 4
    assert "tensor_parallel_size=4," in lw.command_line(jobs["lmeval"])
    assert "tensor_parallel_size=4," in rec.accuracy.command
    assert engine["gpu_memory_utilization"] == margs["gpu_memory_utilization"] == 0.85
    tp = rec.compat["tensor_parallel"]
    assert (tp["size"], tp["source"]) == (4, "auto") and tp["reason"].startswith("tp=4: 131.4 GiB of weights")


def test_stage_setting_reaches_both_workers(tmp_path):
    path = model_dir(tmp_path, LLAMA_8B, W_8B_BF16)
    settings = Settings.model_validate({"validate": {"tensor_parallel_size": 2}})
    rec, jobs = run_stage(tmp_path, path, plan([H100] * 2), settings)
    assert vb.engine_kwargs(jobs["validate"], None)["tensor_parallel_size"] == 2
    assert lw.model_args(jobs["lmeval"])["tensor_parallel_size"] == 2
    assert rec.compat["tensor_parallel"]["source"] == "setting"


def test_stage_records_a_model_that_fits_nowhere(tmp_path):
    path = model_dir(tmp_path, LLAMA_70B, W_70B_BF16)
    with pytest.raises(WorkerFailed) as info:
        run_stage(tmp_path, path, plan([H100] * 2))
    assert str(info.value).startswith("131.4 GiB of weights do not fit the GPUs seen (2 x 79.6 GiB")
    assert info.value.hint.startswith("run on a host with 4 such GPUs (tp=4)")
    settings = Settings.model_validate({"validate": {"tensor_parallel_size": 8}})
    with pytest.raises(WorkerFailed, match="tensor_parallel_size=8 but the serve environment sees 2 GPU"):
        run_stage(tmp_path, path, plan([H100] * 2), settings)


def test_stage_hf_backend_uses_one_device(tmp_path):
    path = model_dir(tmp_path, LLAMA_70B, W_70B_BF16)
    settings = Settings.model_validate({"validate": {"tensor_parallel_size": 4}})
    rec, jobs = run_stage(tmp_path, path, plan([H100], backend="hf"), settings)
    assert jobs["validate"]["tensor_parallel_size"] == jobs["lmeval"]["tensor_parallel_size"] == 1
    assert "tensor_parallel_size" not in lw.model_args(jobs["lmeval"])  # lm-eval's hf model takes none
    assert rec.compat["tensor_parallel"] == {
        "size": 1, "source": "backend",
        "reason": "tp=1: the hf backend uses one device (validate.tensor_parallel_size=4 applies to vllm only)"}


def test_stage_measures_again_on_another_tp(tmp_path):
    """A resumed run reuses load and speed only when they were measured with the same number of GPUs."""
    path = model_dir(tmp_path, LLAMA_8B, W_8B_BF16)
    old = ValidateRecord(compat={"tensor_parallel": {"size": 2}})
    _rec, jobs = run_stage(tmp_path, path, plan([H100] * 2), rec=old, reuse=True)
    assert "validate" in jobs and jobs["validate"]["tensor_parallel_size"] == 1
    same = ValidateRecord(compat={"tensor_parallel": {"size": 1}})
    _rec, jobs = run_stage(tmp_path, path, plan([H100] * 2), rec=same, reuse=True)
    assert "validate" not in jobs


def test_speedups_only_between_equal_tp():
    def rec(tp: int, tok_s: float) -> ValidateRecord:
        return ValidateRecord(speed=SpeedRecord(label="GPU", settings={"tensor_parallel_size": tp}, batch1=Batch1Speed(
            input_len=128, output_len=256, runs=3, decode_tokens_per_s=tok_s, ttft_ms=20, tpot_ms=1000 / tok_s)))

    assert speedups(rec(4, 20.0), rec(4, 30.0)) == (1.5, None)
    assert speedups(rec(4, 20.0), rec(2, 30.0)) == (None, None)  # base over 4 GPUs, the variant over 2


# ---------------------------------------------------------------- quantize


def test_data_free_quantization_moves_the_model_to_the_gpu_only_when_it_fits():
    assert fits_on_gpu(W_8B_BF16, H100)
    assert not fits_on_gpu(W_70B_BF16, H100)  # stays in CPU memory; llm-compressor onloads a module at a time
