"""The synthetic tasks of benchmarks/suite_shape.py: deterministic, the default suite's templates and settings
(compared with lm-eval's own task YAMLs), its request counts and token lengths at the default limit as lm-eval
itself builds the requests from the generated files (SmolLM2's tokenizer, which the random-weight shapes use),
and runnable by the lm-eval worker on CPU with the tiny model."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from bot.clients.process import run_worker
from bot.config import ValidateSettings
from bot.workers import lmeval_worker as lw

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("suite_shape", ROOT / "benchmarks" / "suite_shape.py")
shape = sys.modules.setdefault("suite_shape", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(shape)  # benchmarks/ is scripts, not a package: loaded by path

SUITE = [shape.PREFIX + t for t in shape.SUITE]
# lm-eval 0.4.13 at --limit 250: documents x choices (MMLU: the sum over its 57 subjects of min(250, test size))
REQUESTS_AT_250 = {"shape_arc_challenge": 1000, "shape_hellaswag": 1000, "shape_winogrande": 500,
                   "shape_gsm8k": 250, "shape_mmlu": 40876}


@pytest.fixture(scope="module")
def shape_dir(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("shape") / "tasks"
    shape.generate(dest, seed=0)
    return dest


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_the_shape_is_of_the_default_suite_and_limit():
    assert list(ValidateSettings().tasks) == list(shape.SUITE)
    assert ValidateSettings().limit == 250
    counts = shape.requests_at(250)
    assert {k: v["requests"] for k, v in counts.items()} == REQUESTS_AT_250
    assert counts["shape_mmlu"]["subtasks"] == 57 and counts["shape_mmlu"]["docs"] == 10219
    assert sum(n for _b, n in shape.MMLU_TEST.values()) == 14042  # MMLU's test split


def test_generation_is_deterministic(shape_dir, tmp_path):
    again = tmp_path / "again"
    shape.generate(again, seed=0)
    assert _digest(again) == _digest(shape_dir)
    other = tmp_path / "other"
    shape.generate(other, seed=1)
    assert _digest(other) != _digest(shape_dir)
    assert [len((d / "data" / "gsm8k.test.jsonl").read_text().splitlines()) for d in (shape_dir, other)] == [1319] * 2


def test_filler_words_are_one_token_each(tokenizer):
    assert [w for w in shape.WORDS if len(tokenizer(" " + w, add_special_tokens=False).input_ids) != 1] == []


class _AnyTag(yaml.SafeLoader):
    pass


_AnyTag.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {loader.construct_scalar(node)}")


def _lm_eval_tasks() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _lm_eval_yaml(rel: str) -> dict:
    """One of the installed lm-eval's own task files (custom tags kept as text)."""
    return yaml.load((_lm_eval_tasks() / rel).read_text(), Loader=_AnyTag)  # noqa: S506


def test_templates_and_settings_are_lm_eval_s(shape_dir):
    def ours(name: str) -> dict:
        sub = "mmlu/" if name.startswith("mmlu_") else ""
        return yaml.safe_load((shape_dir / f"{sub}{shape.PREFIX}{name}.yaml").read_text())

    arc = _lm_eval_yaml("arc/arc_easy.yaml")
    assert {k: ours("arc_challenge")[k] for k in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type")} \
        == {k: arc[k] for k in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type")}
    assert ours("hellaswag")["doc_to_text"] == _lm_eval_yaml("hellaswag/hellaswag.yaml")["doc_to_text"]
    real = _lm_eval_yaml("gsm8k/gsm8k.yaml")
    mine = ours("gsm8k")
    assert mine["generation_kwargs"] == {**real["generation_kwargs"], "max_gen_toks": 256}
    for key in ("doc_to_text", "num_fewshot", "output_type", "filter_list", "metric_list", "repeats"):
        assert mine[key] == real[key], key
    template = _lm_eval_yaml("mmlu/default/_default_template_yaml")
    sub = _lm_eval_yaml("mmlu/default/mmlu_anatomy.yaml")
    anatomy = ours("mmlu_anatomy")
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type", "fewshot_config"):
        assert anatomy[key] == template[key], key
    assert anatomy["description"] == sub["description"]
    files = (_lm_eval_tasks() / "mmlu" / "default").glob("mmlu_*.yaml")
    subjects = sorted(p.name[len("mmlu_"):-len(".yaml")] for p in files)
    assert subjects == sorted(shape.MMLU_TEST)


@pytest.fixture(scope="module")
def loaded(shape_dir, tmp_path_factory) -> dict:
    """The suite loaded by lm-eval from the generated files, through the worker's include handling."""
    from lm_eval.tasks import TaskManager

    includes, names = lw.prepare_include([str(shape_dir)], tmp_path_factory.mktemp("include"))
    assert set(SUITE) <= names
    return TaskManager(include_path=includes, include_defaults=False).load(SUITE)["tasks"]


def _mean_tokens(tokenizer, texts: list[str]) -> float:
    return statistics.mean(len(t) for t in tokenizer(texts, add_special_tokens=False).input_ids)


def test_request_counts_at_the_default_limit(loaded):
    """Documents x choices of the first 250 documents of each task (MMLU: of each subject), and the splits."""
    assert len(loaded) == 4 + 57
    counts: dict[str, int] = {}
    for name, task in loaded.items():
        target = shape.TARGETS[name[len(shape.PREFIX):]]
        docs = list(task.eval_docs)
        assert len(docs) == target.docs and task.OUTPUT_TYPE == target.output_type, name
        per_doc = [len(task.doc_to_choice(d)) if task.OUTPUT_TYPE == "multiple_choice" else 1 for d in docs[:250]]
        top = "shape_mmlu" if name.startswith("shape_mmlu_") else name
        counts[top] = counts.get(top, 0) + sum(per_doc)
    assert counts == REQUESTS_AT_250
    assert loaded["shape_gsm8k"].config.num_fewshot == 5
    assert all(t.config.num_fewshot in (None, 0) for n, t in loaded.items() if n != "shape_gsm8k")


@pytest.mark.parametrize("name", ["shape_arc_challenge", "shape_hellaswag", "shape_winogrande", "shape_gsm8k"])
def test_request_lengths_at_the_default_limit(loaded, tokenizer, name):
    """Mean tokens of each request's context (gsm8k: its 5 shots included) and continuation, within 10%/15% of the
    target, as lm-eval builds the requests of the first 250 documents."""
    task, target = loaded[name], shape.TARGETS[name[len(shape.PREFIX):]]
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=250)
    assert len({i.doc_id for i in task.instances}) == 250
    assert _mean_tokens(tokenizer, [i.args[0] for i in task.instances]) == pytest.approx(target.context_tokens,
                                                                                         rel=0.1)
    if task.OUTPUT_TYPE == "generate_until":
        assert all(i.args[1]["until"] == shape.GSM8K_STOP and i.args[1]["max_gen_toks"] == 256 for i in task.instances)
    else:
        assert _mean_tokens(tokenizer, [i.args[1] for i in task.instances]) == pytest.approx(
            target.continuation_tokens, rel=0.15)


def test_mmlu_lengths_follow_the_subjects(loaded, tokenizer):
    """Per subject, the mean context of its first 20 documents is within 15% of its target (history passages and
    law long, facts short), and the document-weighted mean over the 57 subjects within 5%; continuations ' A'."""
    got, want, weights = [], [], []
    for name, task in loaded.items():
        if not name.startswith("shape_mmlu_"):
            continue
        task.build_all_requests(limit=20)
        mean = _mean_tokens(tokenizer, [i.args[0] for i in task.instances])
        target = shape.TARGETS[name[len(shape.PREFIX):]].context_tokens
        assert mean == pytest.approx(target, rel=0.15), name
        assert {i.args[1] for i in task.instances} == {" A", " B", " C", " D"}
        got.append(mean)
        want.append(target)
        weights.append(min(250, len(task.eval_docs)))
    assert len(got) == 57
    total = sum(g * w for g, w in zip(got, weights)) / sum(weights)
    assert total == pytest.approx(sum(t * w for t, w in zip(want, weights)) / sum(weights), rel=0.05)


@pytest.mark.slow  # minutes on two CPU cores: 57 MMLU subjects (some 400-token contexts) and 256 generated tokens
def test_the_lmeval_worker_runs_the_shape_tasks_on_cpu(shape_dir, tiny_llama, tmp_path):
    job = {"backend": "hf", "model_path": str(tiny_llama), "tasks": SUITE, "limit": 1, "num_fewshot": None,
           "batch_size": 8, "device": "cpu", "dtype": "auto", "apply_chat_template": True,
           "fewshot_as_multiturn": True, "samples_path": str(tmp_path / "samples.json"),
           "include_paths": [str(shape_dir)], "trust_remote_code": False, "seed": 1234,
           "result_path": str(tmp_path / "result.json")}
    run = run_worker(sys.executable, "lmeval_worker", job, tmp_path / "job.json", tmp_path / "lmeval.log",
                     timeout_s=1200)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "done", run.log_tail(40)
    docs = {t["task"]: t["samples"] for t in result["tasks"]}
    assert docs == {"shape_arc_challenge": 1, "shape_hellaswag": 1, "shape_winogrande": 1, "shape_gsm8k": 1,
                    "shape_mmlu": 57}
    # as `bot validate` runs the suite: the loglikelihood tasks without the chat template, gsm8k with it (5 shots
    # as a multi-turn chat); the tiny model ships SmolLM2's template
    assert result["runs"] == [
        {"tasks": SUITE[:3] + SUITE[4:], "apply_chat_template": False, "fewshot_as_multiturn": False},
        {"tasks": ["shape_gsm8k"], "apply_chat_template": True, "fewshot_as_multiturn": True}]
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert {d["choices"] for d in samples["tasks"]["shape_winogrande"]["docs"]} == {2}
    assert {d["choices"] for d in samples["tasks"]["shape_mmlu_anatomy"]["docs"]} == {4}
