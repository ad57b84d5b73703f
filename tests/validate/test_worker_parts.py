"""The CPU-testable parts of the validation workers: generation checks, speed arithmetic, lengths, vLLM engine
arguments and kernel description, lm-eval arguments and result parsing, local task folders, backend choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bot.clients.serve_env import ServeEnv, choose_backend, speed_label
from bot.errors import EnvironmentMissingError
from bot.stages.validate.plan import BUNDLED_TASKS, BUNDLED_TASKS_DIR
from bot.workers import lmeval_worker as lw
from bot.workers import validate_common as vc
from bot.workers import vllm_backend as vb

# ---------------------------------------------------------------- generation checks


def test_generation_problems():
    assert vc.generation_problems("The capital of France is Paris, known for the Eiffel Tower.") == []
    assert vc.generation_problems("   \n") == ["empty output"]
    assert vc.generation_problems("caf\ufffd\ufffd ok")[0].startswith("2 U+FFFD")
    loop = " ".join(["the cat sat on"] * 8)
    problems = vc.generation_problems(loop)
    assert any(p.startswith("repetitive") for p in problems)
    same = vc.generation_problems("x", token_ids=[7] * 20)
    assert "one token is 100% of the output" in same
    assert vc.generation_problems("short", token_ids=[7] * 5) == []  # too short to judge repetition
    assert vc.generation_problems("fine", nonfinite_logits=True) == ["NaN or inf in the logits"]


def test_repetition_ratio():
    assert vc.repetition_ratio(list(range(20))) == 0.0
    assert vc.repetition_ratio([1, 2] * 10) == pytest.approx(1 - 2 / 17)
    assert vc.repetition_ratio([1, 2, 3]) == 0.0


def test_generation_record():
    rec = vc.generation_record("p", "", [0, 0])
    assert rec == {"prompt": "p", "output": "", "ok": False, "problems": ["empty output"], "num_tokens": 2}


# ---------------------------------------------------------------- speed arithmetic


def test_batch1_summary_medians():
    out = vc.batch1_summary([0.020, 0.030, 0.025], [1.040, 1.050, 3.0], input_len=128, output_len=256)
    # per run TPOT = (latency - TTFT) / 255: 4.0 ms, 4.0 ms, 11.667 ms -> median 4.0 ms
    assert out["ttft_ms"] == 25.0 and out["tpot_ms"] == 4.0 and out["decode_tokens_per_s"] == 250.0
    assert (out["input_len"], out["output_len"], out["runs"], out["latency_ms"]) == (128, 256, 3, 1050.0)
    with pytest.raises(ValueError):
        vc.batch1_summary([0.1], [], 1, 2)


def test_batched_summary():
    out = vc.batched_summary(256, 1024, 256, elapsed_s=32.0, output_tokens=65536)
    assert out["output_tokens_per_s"] == 2048.0 and out["requests_per_s"] == 8.0
    assert out["total_tokens_per_s"] == (256 * 1024 + 65536) / 32
    with pytest.raises(ValueError):
        vc.batched_summary(1, 1, 1, 0.0, 1)


def test_lengths():
    assert vc.model_max_len({"max_position_embeddings": 8192}) == 8192
    assert vc.model_max_len({"text_config": {"max_position_embeddings": 4096}, "max_position_embeddings": 9}) == 4096
    assert vc.resolve_max_model_len(4096, {"max_position_embeddings": 2048}) == 2048
    assert vc.resolve_max_model_len(4096, {}) == 4096
    assert vc.resolve_max_model_len(None, {"max_position_embeddings": 2048}) == 2048
    assert vc.fit_lengths(4096, 1024, 256) == (1024, 256)
    inp, out = vc.fit_lengths(512, 1024, 256)
    assert inp + out + 8 <= 512 and out == 128


def test_synthetic_prompts_deterministic_and_avoid_specials():
    a = vc.synthetic_prompts(3, 50, 1000, seed=1, avoid={150, 151})
    assert a == vc.synthetic_prompts(3, 50, 1000, seed=1, avoid={150, 151})
    assert all(len(p) == 50 for p in a) and len({tuple(p) for p in a}) == 3
    assert not {150, 151} & {t for p in a for t in p} and all(100 <= t < 1000 for p in a for t in p)


# ---------------------------------------------------------------- vLLM


JOB = {"model_path": "/m", "speed": {"gpu_memory_utilization": 0.85, "enforce_eager": False, "kv_cache_dtype": "auto"},
       "tensor_parallel_size": 2, "trust_remote_code": False, "dtype": "auto", "seed": 0}


def test_engine_kwargs():
    kw = vb.engine_kwargs(JOB, 4096)
    assert kw == {"model": "/m", "tokenizer": "/m", "trust_remote_code": False, "tensor_parallel_size": 2,
                  "dtype": "auto", "gpu_memory_utilization": 0.85, "enforce_eager": False, "kv_cache_dtype": "auto",
                  "seed": 0, "enable_prefix_caching": False, "disable_log_stats": True, "max_model_len": 4096}
    minimal = vb.engine_kwargs({"model_path": "/m"}, None)
    assert "max_model_len" not in minimal and minimal["tensor_parallel_size"] == 1
    assert minimal["gpu_memory_utilization"] == 0.85 and minimal["kv_cache_dtype"] == "auto"
    eager = vb.engine_kwargs({**JOB, "speed": {"enforce_eager": True, "kv_cache_dtype": "fp8"}}, 2048)
    assert eager["enforce_eager"] is True and eager["kv_cache_dtype"] == "fp8"


def test_engine_kwargs_match_vllm_signature():
    """Every key is an `LLM(...)` parameter or an EngineArgs field in vLLM 0.26 (checked where vLLM exists)."""
    vllm = pytest.importorskip("vllm")
    import dataclasses
    import inspect

    from vllm.engine.arg_utils import EngineArgs

    known = set(inspect.signature(vllm.LLM.__init__).parameters) | {f.name for f in dataclasses.fields(EngineArgs)}
    assert set(vb.engine_kwargs(JOB, 4096)) <= known


def test_describe_kernels_and_summary():
    class Kernel:
        pass

    class MacheteLinearKernel(Kernel):
        pass

    class CompressedTensorsWNA16:
        def __init__(self):
            self.kernel = MacheteLinearKernel()

    class UnquantizedLinearMethod:
        pass

    class CompressedTensorsKVCacheMethod:
        pass

    class Layer:
        def __init__(self, scheme=None, method=None):
            self.scheme, self.quant_method = scheme, method

    class Model:
        def modules(self):
            return [Layer(CompressedTensorsWNA16()), Layer(CompressedTensorsWNA16()),
                    Layer(method=UnquantizedLinearMethod()), Layer(method=CompressedTensorsKVCacheMethod()),
                    object()]

    counts = vb.describe_kernels(Model())
    assert counts == {"CompressedTensorsWNA16 -> MacheteLinearKernel": 2}
    assert vb.kernel_summary(counts) == "CompressedTensorsWNA16 -> MacheteLinearKernel (x2)"
    assert vb.kernel_summary({}) is None


def test_weights_memory():
    class Runner:
        model_memory_usage = 5.5e9

    class Worker:
        model_runner = Runner()

    assert vb.weights_memory(Worker()) == 5_500_000_000


# ---------------------------------------------------------------- lm-eval


LM_JOB = {"backend": "vllm", "model_path": "/m", "tasks": ["arc_challenge", "gsm8k"], "limit": 250,
          "num_fewshot": None, "batch_size": "auto", "dtype": "auto", "tensor_parallel_size": 2,
          "gpu_memory_utilization": 0.85, "max_model_len": 4096, "include_paths": ["/x/tasks"], "seed": 1234}


def test_model_args():
    assert lw.model_args(LM_JOB) == {"pretrained": "/m", "dtype": "auto", "tensor_parallel_size": 2,
                                     "gpu_memory_utilization": 0.85, "max_model_len": 4096, "seed": 1234}
    hf = lw.model_args({"backend": "hf", "model_path": "/m", "trust_remote_code": True})
    assert hf == {"pretrained": "/m", "dtype": "auto", "trust_remote_code": True}


def test_command_line():
    cmd = lw.command_line(LM_JOB)
    assert cmd.startswith("lm_eval --model vllm --model_args pretrained=/m,dtype=auto,tensor_parallel_size=2,")
    assert ("--tasks arc_challenge,gsm8k --limit 250 --batch_size auto --seed 1234 --log_samples "
            "--output_path lm_eval_results --include_path /x/tasks") in cmd
    assert "--num_fewshot" not in cmd and "--device" not in cmd and "&&" not in cmd
    hf = lw.command_line({**LM_JOB, "backend": "hf", "num_fewshot": 5, "device": "cpu", "include_paths": [],
                          "batch_size": "auto"})
    assert "--num_fewshot 5" in hf and "--device cpu" in hf and "--batch_size 8" in hf


def test_command_line_one_line_per_run():
    runs = [{"tasks": ["arc_challenge"], "apply_chat_template": False, "fewshot_as_multiturn": False},
            {"tasks": ["gsm8k"], "apply_chat_template": True, "fewshot_as_multiturn": True}]
    first, second = lw.command_line({**LM_JOB, "num_fewshot": 5}, runs).split(" && ")
    assert "--tasks arc_challenge " in first and "--apply_chat_template" not in first
    assert "--tasks gsm8k " in second and "--apply_chat_template --fewshot_as_multiturn true" in second
    for line in (first, second):
        assert line.startswith("lm_eval --model vllm ") and "--num_fewshot 5 --limit 250" in line
        assert "--seed 1234" in line and "--log_samples --output_path lm_eval_results" in line
    zero_shot = lw.command_line(LM_JOB, [{**runs[1], "fewshot_as_multiturn": False}])
    assert "--apply_chat_template --fewshot_as_multiturn false" in zero_shot


def test_batch_size():
    assert lw.batch_size({"backend": "vllm", "batch_size": "auto"}) == "auto"  # vLLM's scheduler batches
    assert lw.batch_size({"backend": "vllm"}) == "auto"
    assert lw.batch_size({"backend": "vllm", "batch_size": 64}) == 64
    assert lw.batch_size({"backend": "hf", "batch_size": "auto"}) == lw.HF_BATCH_SIZE == 8
    assert lw.batch_size({"backend": "hf", "batch_size": "auto:4"}) == 8
    assert lw.batch_size({"backend": "hf", "batch_size": "16"}) == 16
    assert lw.batch_size({"backend": "hf", "batch_size": 2}) == 2


def test_effective_fewshot():
    assert lw.effective_fewshot(None, None) == 0
    assert lw.effective_fewshot(None, 5) == 5  # gsm8k's own default
    assert lw.effective_fewshot(3, 5) == 3
    assert lw.effective_fewshot(3, 0) == 0  # a config's 0 is never overridden (as simple_evaluate does)


def test_plan_runs():
    types = {"arc_challenge": ["multiple_choice"], "wikitext": ["loglikelihood_rolling"],
             "gsm8k": ["generate_until"], "ifeval": ["generate_until"],
             "mmlu": ["multiple_choice"] * 3, "mixed": ["multiple_choice", "generate_until"]}
    shots = {"gsm8k": 5, "ifeval": 0, "mixed": 0}
    tasks = ["gsm8k", "arc_challenge", "ifeval", "mmlu", "wikitext", "mixed"]
    assert lw.plan_runs(tasks, types, shots, False, True) == [
        {"tasks": tasks, "apply_chat_template": False, "fewshot_as_multiturn": False}]
    assert lw.plan_runs(tasks, types, shots, True, True) == [
        {"tasks": ["arc_challenge", "mmlu", "wikitext"], "apply_chat_template": False, "fewshot_as_multiturn": False},
        {"tasks": ["ifeval", "mixed"], "apply_chat_template": True, "fewshot_as_multiturn": False},
        {"tasks": ["gsm8k"], "apply_chat_template": True, "fewshot_as_multiturn": True}]
    assert lw.plan_runs(["gsm8k"], types, shots, True, False) == [
        {"tasks": ["gsm8k"], "apply_chat_template": True, "fewshot_as_multiturn": False}]
    assert lw.plan_runs(["mmlu"], types, shots, True, True) == [
        {"tasks": ["mmlu"], "apply_chat_template": False, "fewshot_as_multiturn": False}]


def test_compact_samples():
    def mc_row(doc_id, acc, filt="none"):
        return {"doc_id": doc_id, "doc": {"q": "long prompt"}, "arguments": [("ctx", " a")] * 4, "resps": [[(-1.0,)]],
                "filter": filt, "metrics": ["acc", "acc_norm"], "acc": acc, "acc_norm": 1.0 - acc}

    samples = {
        "mmlu_a": [mc_row(0, 1.0), mc_row(1, 0.0)], "mmlu_b": [mc_row(7, True)],
        "gsm8k": [{"doc_id": 0, "filter": "strict-match", "metrics": ["exact_match"], "exact_match": 1.0},
                  {"doc_id": 0, "filter": "flexible-extract", "metrics": ["exact_match"], "exact_match": 0.0}],
        "wiki": [{"doc_id": 3, "filter": "none", "word_perplexity": (-20.0, 10), "byte_perplexity": (-20.0, 50),
                  "bits_per_byte": (-20.0, 50)}],
        "f1task": [{"doc_id": 0, "filter": "none", "f1": ("a", "b")}],
    }
    layout = {"groups": {"mmlu": {"subtasks": ["mmlu_a", "mmlu_b"], "aggregate": {"acc": True}}},
              "leaves": {"mmlu_a": {"output_type": "multiple_choice", "aggregation": {"acc": "mean"}},
                         "mmlu_b": {"output_type": "multiple_choice", "aggregation": {"acc": "mean"}},
                         "gsm8k": {"output_type": "generate_until", "aggregation": {"exact_match": "mean"}},
                         "wiki": {"output_type": "loglikelihood_rolling",
                                  "aggregation": {"word_perplexity": "weighted_perplexity"}},
                         "f1task": {"output_type": "generate_until", "aggregation": {"f1": "f1"}}}}
    scores = [{"task": "mmlu", "metric": "acc", "higher_is_better": True},
              {"task": "gsm8k", "metric": "exact_match,strict-match", "higher_is_better": True},
              {"task": "wiki", "metric": "word_perplexity", "higher_is_better": False},
              {"task": "f1task", "metric": "f1", "higher_is_better": True}]
    out = lw.compact_samples(samples, layout, scores)
    assert out["requested"] == ["mmlu", "gsm8k", "wiki", "f1task"]
    assert out["groups"] == {"mmlu": {"metric": "acc", "filter": "none", "subtasks": ["mmlu_a", "mmlu_b"],
                                      "weight_by_size": True}}
    a, b = out["tasks"]["mmlu_a"], out["tasks"]["mmlu_b"]
    assert (a["kind"], a["metric"], a["output_type"]) == ("mean", "acc", "multiple_choice")
    assert a["docs"] == [{"doc_id": 0, "value": 1.0, "choices": 4}, {"doc_id": 1, "value": 0.0, "choices": 4}]
    assert b["docs"] == [{"doc_id": 7, "value": 1.0, "choices": 4}]
    gsm = out["tasks"]["gsm8k"]
    assert (gsm["metric"], gsm["filter"], gsm["docs"]) == ("exact_match", "strict-match", [{"doc_id": 0, "value": 1.0}])
    wiki = out["tasks"]["wiki"]
    assert wiki["kind"] == "perplexity" and wiki["higher_is_better"] is False
    assert wiki["docs"] == [{"doc_id": 3, "ll": -20.0, "words": 10, "bytes": 50, "value": math.exp(2.0)}]
    assert out["tasks"]["f1task"]["kind"] == "unsupported" and out["tasks"]["f1task"]["docs"] == []
    assert "long prompt" not in json.dumps(out)  # no prompts or responses


def test_pick_metric():
    mc = {"alias": "x", "acc,none": 0.5, "acc_stderr,none": 0.01, "acc_norm,none": 0.6, "acc_norm_stderr,none": 0.01}
    assert lw.pick_metric("bot_mc_facts", mc) == "acc,none"
    assert lw.pick_metric("arc_challenge", mc) == "acc_norm,none"
    gsm = {"exact_match,strict-match": 0.4, "exact_match_stderr,strict-match": 0.01,
           "exact_match,flexible-extract": 0.5}
    assert lw.pick_metric("gsm8k", gsm) == "exact_match,strict-match"
    ppl = {"word_perplexity,none": 9.0, "bits_per_byte,none": 0.6}
    assert lw.pick_metric("wikitext", ppl) == "word_perplexity,none"
    assert lw.pick_metric("t", {"alias": "t", "sample_len": 3}) is None


def test_parse_results():
    res = {
        "results": {"bot_mc_facts": {"acc,none": 0.55, "acc_stderr,none": 0.08, "acc_norm,none": 0.6, "alias": "m"},
                    "wiki": {"word_perplexity,none": math.nan, "word_perplexity_stderr,none": "N/A"}},
        "groups": {"mmlu": {"acc,none": 0.7, "acc_stderr,none": 0.004}},
        "group_subtasks": {"mmlu": ["mmlu_a", "mmlu_b"]},
        "higher_is_better": {"bot_mc_facts": {"acc": True}, "wiki": {"word_perplexity": False}},
        "n-samples": {"bot_mc_facts": {"original": 80, "effective": 40}, "mmlu_a": {"effective": 10},
                      "mmlu_b": {"effective": 5}},
    }
    mc, wiki, mmlu = lw.parse_results(res, ["bot_mc_facts", "wiki", "mmlu"])
    assert (mc["metric"], mc["value"], mc["stderr"]) == ("acc", 0.55, 0.08)
    assert (mc["samples"], mc["higher_is_better"]) == (40, True)
    assert wiki["metric"] == "word_perplexity" and math.isnan(wiki["value"]) and wiki["stderr"] is None
    assert wiki["higher_is_better"] is False and wiki["samples"] is None
    assert (mmlu["value"], mmlu["samples"], mmlu["higher_is_better"]) == (0.7, 15, True)
    with pytest.raises(KeyError, match="no results for task 'missing'"):
        lw.parse_results(res, ["missing"])


def test_prepare_include_makes_data_files_absolute(tmp_path):
    src = tmp_path / "tasks"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.jsonl").write_text('{"q": 1}\n')
    (src / "sub" / "t.yaml").write_text(
        "task: my_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\n"
        "process_results: !function utils.process\ntag: [my_tag]\n")
    (src / "hub.yaml").write_text("task: hub_task\ndataset_path: org/name\n")
    out, names = lw.prepare_include([str(src)], tmp_path / "out")
    assert names == {"my_task", "my_tag", "hub_task"}
    copied = Path(out[0]) / "sub" / "t.yaml"
    text = copied.read_text()
    assert "!function" in text and "utils.process" in text  # custom tags survive the rewrite
    doc = yaml.load(text, Loader=lw._Loader)  # noqa: S506
    assert doc["dataset_kwargs"]["data_files"]["test"] == str((src / "sub" / "data.jsonl").resolve())
    assert (Path(out[0]) / "hub.yaml").read_text() == "task: hub_task\ndataset_path: org/name\n"
    with pytest.raises(FileNotFoundError):
        lw.prepare_include([str(tmp_path / "nope")], tmp_path / "out2")


def test_bundled_tasks_data(tmp_path):
    names = lw.prepare_include([str(BUNDLED_TASKS_DIR)], tmp_path)[1]
    assert set(BUNDLED_TASKS) <= names
    rows = [json.loads(line) for line in (BUNDLED_TASKS_DIR / "bot_mc_facts.jsonl").read_text().splitlines()]
    assert 60 <= len(rows) <= 100 and len({r["question"] for r in rows}) == len(rows)
    assert all(len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and r["answer"] in range(4) for r in rows)
    mc = yaml.safe_load((BUNDLED_TASKS_DIR / "bot_mc_facts.yaml").read_text())
    assert mc["output_type"] == "multiple_choice" and mc["metric_list"][0]["metric"] == "acc"
    ppl = yaml.safe_load((BUNDLED_TASKS_DIR / "bot_wikitext_mini.yaml").read_text())
    assert ppl["output_type"] == "loglikelihood_rolling"
    assert {m["metric"] for m in ppl["metric_list"]} >= {"word_perplexity"}


# ---------------------------------------------------------------- backend choice


def env(*mods: str, gpus: int = 0) -> ServeEnv:
    gpu = {"name": "H100", "capability": "9.0", "memory_bytes": 80 * 2**30}
    return ServeEnv("/py", {m: True for m in mods}, tuple([gpu] * gpus))


FULL = ("vllm", "lm_eval", "transformers", "torch")


@pytest.mark.parametrize("requested, e, device, want", [
    ("auto", env(*FULL, gpus=1), "auto", ("vllm", "cuda")),
    ("auto", env(*FULL, gpus=0), "auto", ("hf", "cpu")),
    ("auto", env("lm_eval", "transformers", "torch", gpus=1), "auto", ("hf", "cuda")),
    ("auto", env(*FULL, gpus=1), "cpu", ("hf", "cpu")),
    ("hf", env(*FULL, gpus=1), "auto", ("hf", "cuda")),
    ("vllm", env(*FULL, gpus=2), "auto", ("vllm", "cuda")),
])
def test_choose_backend(requested, e, device, want):
    assert choose_backend(requested, e, device) == want


@pytest.mark.parametrize("requested, e, device, missing", [
    ("vllm", env("lm_eval", "transformers", "torch", gpus=1), "auto", "vllm"),
    ("vllm", env(*FULL, gpus=0), "auto", "a CUDA GPU"),
    ("auto", env("transformers", "torch"), "auto", "lm_eval"),
    ("hf", env("lm_eval", "transformers", "torch"), "cuda", "a CUDA GPU"),
])
def test_choose_backend_missing(requested, e, device, missing):
    with pytest.raises(EnvironmentMissingError) as info:
        choose_backend(requested, e, device)
    assert missing in info.value.one_line() and "BOT_SERVE_PYTHON" in info.value.one_line()


def test_speed_label():
    assert speed_label("vllm", "cuda") == "GPU" and speed_label("hf", "cpu") == "CPU"
    assert speed_label("hf", "cuda") == "GPU (transformers)"
    # the tensor-parallel choice is tested in test_parallel.py


# ---------------------------------------------------------------- lm-eval worker, end to end

GEN_TASK = """task: bot_gen_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: gen.jsonl
test_split: test
fewshot_split: test
output_type: generate_until
doc_to_text: "Q: {{q}}\\nA:"
doc_to_target: "{{a}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 4, do_sample: false}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
metadata: {version: 1.0}
"""
GROUP = "group: bot_grp\ntask: [bot_mc_facts]\naggregate_metric_list: [{metric: acc, weight_by_size: true}]\n"


def test_lmeval_worker_end_to_end_writes_per_document_results(tiny_llama, tmp_path):
    """The real worker on the tiny model: the bundled tasks (the multiple-choice one inside a group) plus a
    generative one (chat template, 1 shot as a multi-turn chat) in a second run of the same loaded model; the
    per-document file matches lm-eval's scores."""
    import shutil
    import subprocess
    import sys

    from bot.config import GateSettings
    from bot.stages.validate import paired

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    gen_cfg = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen_cfg, "max_new_tokens": 4}))  # CPU time
    gen = tmp_path / "gen_tasks"
    gen.mkdir()
    (gen / "bot_gen_tiny.yaml").write_text(GEN_TASK)
    (gen / "bot_grp.yaml").write_text(GROUP)
    (gen / "gen.jsonl").write_text("".join(json.dumps({"q": f"{i}+{i}", "a": str(2 * i)}) + "\n" for i in range(5)))
    job = {"backend": "hf", "model_path": str(model), "result_path": str(tmp_path / "result.json"),
           "samples_path": str(tmp_path / "out" / "samples.json"),
           "tasks": ["bot_grp", "bot_wikitext_mini", "bot_gen_tiny"],
           "limit": 6, "num_fewshot": 1, "batch_size": "auto", "device": "cpu", "dtype": "auto",
           "include_paths": [str(BUNDLED_TASKS_DIR), str(gen)], "seed": 1234,
           "apply_chat_template": True, "fewshot_as_multiturn": True}
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "bot.workers.lmeval_worker", str(tmp_path / "job.json")],
                          capture_output=True, text=True, timeout=600)
    result = json.loads((tmp_path / "result.json").read_text())
    assert proc.returncode == 0 and result["status"] == "done", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["batch_size"] == 8 and result["apply_chat_template"] and result["fewshot_as_multiturn"]
    assert result["runs"] == [
        {"tasks": ["bot_grp", "bot_wikitext_mini"], "apply_chat_template": False, "fewshot_as_multiturn": False},
        {"tasks": ["bot_gen_tiny"], "apply_chat_template": True, "fewshot_as_multiturn": True}]
    first, second = result["command"].split(" && ")
    assert "--apply_chat_template" not in first and "--apply_chat_template --fewshot_as_multiturn true" in second
    assert all("--batch_size 8 --device cpu --seed 1234" in c and "--log_samples" in c for c in (first, second))
    assert result["samples_path"] == job["samples_path"]

    data = json.loads(Path(job["samples_path"]).read_text())
    assert data["requested"] == job["tasks"]
    assert data["groups"] == {"bot_grp": {"metric": "acc", "filter": "none", "subtasks": ["bot_mc_facts"],
                                          "weight_by_size": True}}
    scores = {t["task"]: t for t in result["tasks"]}
    mc = data["tasks"]["bot_mc_facts"]
    assert (mc["metric"], mc["kind"], mc["higher_is_better"]) == ("acc", "mean", True)
    assert [d["doc_id"] for d in mc["docs"]] == list(range(6)) == list(range(scores["bot_grp"]["samples"]))
    assert all(set(d) == {"doc_id", "value", "choices"} and d["value"] in (0.0, 1.0) and d["choices"] == 4
               for d in mc["docs"])
    assert sum(d["value"] for d in mc["docs"]) / 6 == pytest.approx(scores["bot_grp"]["value"])
    wiki = data["tasks"]["bot_wikitext_mini"]
    assert (wiki["metric"], wiki["kind"], wiki["higher_is_better"], len(wiki["docs"])) == (
        "word_perplexity", "perplexity", False, 6)
    assert all(set(d) == {"doc_id", "value", "ll", "words", "bytes"} for d in wiki["docs"])
    ppl = math.exp(-sum(d["ll"] for d in wiki["docs"]) / sum(d["words"] for d in wiki["docs"]))
    assert ppl == pytest.approx(scores["bot_wikitext_mini"]["value"], rel=1e-9)
    g = data["tasks"]["bot_gen_tiny"]
    assert (g["kind"], g["output_type"], len(g["docs"])) == ("mean", "generate_until", 5)
    assert sum(d["value"] for d in g["docs"]) / 5 == pytest.approx(scores["bot_gen_tiny"]["value"])
    assert "Q: 1+1" not in Path(job["samples_path"]).read_text()  # compact: no prompts or responses

    same = paired.compare_tasks(data, data, GateSettings(bootstrap_resamples=200))
    by_task = {t.task: t for t in same.tasks}
    assert by_task["bot_grp"].base == pytest.approx(scores["bot_grp"]["value"]) and by_task["bot_grp"].docs == 6
    assert by_task["bot_wikitext_mini"].recovery == 100.0 and by_task["bot_wikitext_mini"].ci == [100.0, 100.0]
    assert "bot_wikitext_mini" in same.tasks_compared
