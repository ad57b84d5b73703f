"""lm-eval worker: run lm-eval's Python API on one model dir and write per-task scores (serve environment; the
`hf` model also runs in the quantize environment on CPU).

    python -m bot.workers.lmeval_worker JOB.json

Job: {"backend": "vllm"|"hf", "model_path", "result_path", "samples_path", "tasks": [...], "limit", "num_fewshot",
      "batch_size", "device", "dtype", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
      "include_paths": [...], "trust_remote_code", "seed", "apply_chat_template", "fewshot_as_multiturn"}
Result: {"status", "tasks": [{task, metric, value, stderr, samples, higher_is_better, metrics}], "samples_path",
         "batch_size", "apply_chat_template", "fewshot_as_multiturn", "runs": [{tasks, apply_chat_template,
         fewshot_as_multiturn}], "command", "versions", "wall_time_s", "error"?, "traceback"?}

Chat template as publishers run it: lm-eval applies `apply_chat_template` to a whole run, so with a model that has
a chat template the loglikelihood tasks (multiple_choice, loglikelihood_rolling) run without it and the generative
ones (generate_until) with it, their few-shot examples as a multi-turn chat when `fewshot_as_multiturn` and they
have shots (`plan_runs`). The model is loaded once and `simple_evaluate` called per run with that LM; `command`
holds one `lm_eval` line per run, joined with ` && `.
Per-document results (`log_samples`) go, compact, to `samples_path` (see `compact_samples`): what the paired
statistics of bot/stages/validate/paired.py read.

Local tasks may name their data with paths relative to their YAML (`dataset_kwargs: {data_files: x.jsonl}`);
lm-eval hands those to `datasets`, which resolves them against the working directory. So each include folder is
copied to a temp folder with those paths made absolute. When every task asked for is one of those local tasks,
lm-eval's own task index (thousands of YAML files, seconds to scan) is not loaded.
The result is written as soon as lm-eval returns, then the process ends with os._exit: lm-eval with vLLM can
abort at interpreter teardown, and the stage judges the run by the file.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shlex
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml

from bot.workers.validate_common import Stopwatch, end_children, exit_now, use_cpu_threads, versions, write_result

LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity"}
METRIC_PREFERENCE = ("acc", "exact_match,strict-match", "exact_match,flexible-extract", "exact_match", "acc_norm",
                     "word_perplexity", "f1", "mcc", "bleu")
TASK_METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm"}  # what published comparisons report
_DATASET_LOADERS = {"json", "csv", "parquet", "text", "arrow"}
LOGLIKELIHOOD_TYPES = {"multiple_choice", "loglikelihood", "loglikelihood_rolling"}
PERPLEXITY_UNITS = {"word_perplexity": "words", "byte_perplexity": "bytes", "bits_per_byte": "bytes"}
# lm-eval's hf model with batch_size "auto" probes for the largest batch that fits: on a CPU that ends in an OOM kill,
# on a GPU it depends on free memory, so base and variant would run at different sizes, and the batch (its
# padding) moves the numbers slightly. An explicit integer keeps runs comparable and reproducible.
HF_BATCH_SIZE = 8
LMEVAL_OUTPUT = "lm_eval_results"  # `--output_path` in the recorded command (--log_samples requires one)


# ---------------------------------------------------------------- include folders


class _Tagged:
    """A YAML scalar with a custom tag (`!function utils.f`), kept as written."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: _Tagged("!" + suffix, loader.construct_scalar(node)))
_Dumper.add_representer(_Tagged, lambda dumper, data: dumper.represent_scalar(data.tag, str(data.value)))


def _absolute_files(files: Any, base: Path) -> Any:
    if isinstance(files, str):
        if "://" in files or Path(files).is_absolute():
            return files
        return str((base / files).resolve())
    if isinstance(files, list):
        return [_absolute_files(f, base) for f in files]
    if isinstance(files, dict):
        return {k: _absolute_files(v, base) for k, v in files.items()}
    return files


def prepare_include(paths: list[str], dest: Path) -> tuple[list[str], set[str]]:
    """Copy each include folder under `dest` with relative `data_files` made absolute.
    Returns the new folders and the task, group and tag names they define."""
    out: list[str] = []
    names: set[str] = set()
    for i, src in enumerate(Path(p).resolve() for p in paths):
        if not src.is_dir():
            raise FileNotFoundError(f"include path {src} is not a folder")
        target = dest / f"include{i}"
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        for yml in [*target.rglob("*.yaml"), *target.rglob("*.yml")]:
            doc = yaml.load(yml.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - safe loader subclass
            if not isinstance(doc, dict):
                continue
            for key in ("task", "group", "tag"):
                value = doc.get(key)
                for name in value if isinstance(value, list) else [value]:
                    if isinstance(name, str):
                        names.add(name)
            kwargs = doc.get("dataset_kwargs")
            if doc.get("dataset_path") in _DATASET_LOADERS and isinstance(kwargs, dict) and "data_files" in kwargs:
                original_dir = src / yml.parent.relative_to(target)
                kwargs["data_files"] = _absolute_files(kwargs["data_files"], original_dir)
                yml.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True), encoding="utf-8")
        out.append(str(target))
    return out, names


# ---------------------------------------------------------------- arguments


def model_args(job: dict[str, Any]) -> dict[str, Any]:
    """lm-eval `model_args` for the hf or vllm model class (pure, unit-tested)."""
    args: dict[str, Any] = {"pretrained": job["model_path"], "dtype": job.get("dtype") or "auto"}
    if job.get("trust_remote_code"):
        args["trust_remote_code"] = True
    if job["backend"] == "vllm":
        args["tensor_parallel_size"] = int(job.get("tensor_parallel_size") or 1)
        args["gpu_memory_utilization"] = float(job.get("gpu_memory_utilization") or 0.85)
        if job.get("max_model_len"):
            args["max_model_len"] = int(job["max_model_len"])
        args["seed"] = int(job.get("seed", 1234))
        if job.get("enforce_eager"):
            args["enforce_eager"] = True
    return args


def batch_size(job: dict[str, Any]) -> int | str:
    """The batch size lm-eval runs with (pure).

    vllm: "auto". lm-eval 0.4's vllm class then hands every request of a type to vLLM in one call
    (`get_batched(n=0)`) and vLLM's own scheduler batches them (max_num_seqs, max_num_batched_tokens); an integer
    only cuts the requests into chunks and idles the GPU between them. An explicit integer is honoured.
    hf: an integer (HF_BATCH_SIZE when "auto" is asked for): see HF_BATCH_SIZE."""
    requested = job.get("batch_size") or "auto"
    if isinstance(requested, str) and not requested.isdigit():
        return "auto" if job["backend"] == "vllm" else HF_BATCH_SIZE
    return int(requested)


def effective_fewshot(job_fewshot: int | None, task_fewshot: int | None) -> int:
    """Shots lm-eval's simple_evaluate gives a task: 0 in its config wins, then the job's, then the config's."""
    if task_fewshot == 0:
        return 0
    return int(job_fewshot if job_fewshot is not None else task_fewshot or 0)


def plan_runs(tasks: list[str], output_types: dict[str, list[str]], fewshot: dict[str, int],
              apply_chat_template: bool, fewshot_as_multiturn: bool) -> list[dict[str, Any]]:
    """The simple_evaluate runs (pure): loglikelihood tasks without the chat template, generative tasks with it
    (a group with any generative subtask counts as generative), their shots as a multi-turn chat when asked for
    and the task has shots. Without a template to apply: one run of everything."""
    if not apply_chat_template:
        return [{"tasks": list(tasks), "apply_chat_template": False, "fewshot_as_multiturn": False}]
    runs: dict[tuple[bool, bool], list[str]] = {(False, False): [], (True, False): [], (True, True): []}
    for task in tasks:
        if all(t in LOGLIKELIHOOD_TYPES for t in output_types.get(task) or []):
            runs[(False, False)].append(task)
        else:
            runs[(True, bool(fewshot_as_multiturn and fewshot.get(task, 0) > 0))].append(task)
    return [{"tasks": names, "apply_chat_template": chat, "fewshot_as_multiturn": multi}
            for (chat, multi), names in runs.items() if names]


def command_line(job: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> str:
    """The equivalent `lm_eval` commands, one per run joined with ` && `, for the manifest and the card."""
    margs = ",".join(f"{k}={v}" for k, v in model_args(job).items())
    lines = []
    for run in runs or [{"tasks": list(job["tasks"]), "apply_chat_template": False}]:
        parts = ["lm_eval", "--model", job["backend"], "--model_args", margs, "--tasks", ",".join(run["tasks"])]
        if job.get("num_fewshot") is not None:
            parts += ["--num_fewshot", str(job["num_fewshot"])]
        if job.get("limit") is not None:
            parts += ["--limit", str(job["limit"])]
        parts += ["--batch_size", str(batch_size(job))]
        if job["backend"] == "hf":
            parts += ["--device", str(job.get("device") or "cpu")]
        parts += ["--seed", str(int(job.get("seed", 1234)))]
        if run.get("apply_chat_template"):
            parts += ["--apply_chat_template", "--fewshot_as_multiturn", str(bool(run["fewshot_as_multiturn"])).lower()]
        parts += ["--log_samples", "--output_path", LMEVAL_OUTPUT]
        for path in job.get("include_paths") or []:
            parts += ["--include_path", str(path)]
        env = []  # the thread count the worker computed with on a CPU (torch reads OMP_NUM_THREADS at start)
        if job["backend"] == "hf" and (job.get("device") or "cpu") == "cpu" and job.get("cpu_threads"):
            env = [f"OMP_NUM_THREADS={int(job['cpu_threads'])}"]
        lines.append(" ".join([*env, *(shlex.quote(p) for p in parts)]))
    return " && ".join(lines)


# ---------------------------------------------------------------- results


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def pick_metric(task: str, metrics: dict[str, Any]) -> str | None:
    """The `metric,filter` key reported for a task: its usual metric, else the first of METRIC_PREFERENCE."""
    keys = [k for k in metrics if "," in k and "_stderr," not in k and _num(metrics[k]) is not None]
    by_name = {k.split(",", 1)[0]: k for k in reversed(keys)}
    wanted = [TASK_METRIC[task]] if task in TASK_METRIC else []
    for pref in [*wanted, *METRIC_PREFERENCE]:
        if "," in pref and pref in keys:
            return pref
        if pref in by_name:
            return by_name[pref]
    return keys[0] if keys else None


def _samples(task: str, res: dict[str, Any], key: str = "effective") -> int | None:
    """Documents evaluated (`effective`) or in the task (`original`), summed over a group's subtasks."""
    n = res.get("n-samples", {}).get(task)
    if isinstance(n, dict) and isinstance(n.get(key), int):
        return n[key]
    subtasks = res.get("group_subtasks", {}).get(task)
    if subtasks:
        counts = [_samples(t, res, key) for t in subtasks]
        return sum(c for c in counts if c) or None
    return None


def parse_results(res: dict[str, Any], tasks: list[str]) -> list[dict[str, Any]]:
    """One score per task asked for (groups included), from `simple_evaluate`'s return value."""
    out = []
    for task in tasks:
        metrics = res.get("results", {}).get(task) or res.get("groups", {}).get(task)
        if not metrics:
            raise KeyError(f"lm-eval returned no results for task {task!r}")
        key = pick_metric(task, metrics)
        if key is None:
            raise KeyError(f"task {task!r} has no numeric metric in {sorted(metrics)}")
        name, _, filt = key.partition(",")
        stderr = _num(metrics.get(f"{name}_stderr,{filt}"))
        hib = res.get("higher_is_better", {}).get(task, {}).get(name)
        value = float(metrics[key])
        out.append({
            "task": task, "metric": name if filt == "none" else key, "value": value,
            "stderr": stderr if stderr is not None and math.isfinite(stderr) else None,
            "samples": _samples(task, res), "documents": _samples(task, res, "original"),
            "higher_is_better": bool(hib) if hib is not None else name not in LOWER_IS_BETTER,
            "metrics": {k: v for k, v in metrics.items() if _num(v) is not None},
        })
    return out


# ---------------------------------------------------------------- per-document results


def _doc_record(kind: str, metric: str, sample: dict[str, Any], output_type: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"doc_id": sample["doc_id"]}
    if kind == "perplexity":
        ll, units = sample[metric]
        doc["ll"] = float(ll)
        for name, unit in PERPLEXITY_UNITS.items():
            if isinstance(sample.get(name), (list, tuple)):
                doc[unit] = int(sample[name][1])
        try:
            doc["value"] = (-ll / units / math.log(2) if metric == "bits_per_byte" else math.exp(-ll / units))
        except (OverflowError, ZeroDivisionError):
            doc["value"] = math.inf
        return doc
    doc["value"] = float(sample[metric])
    if output_type == "multiple_choice":  # one loglikelihood request per choice (twice with acc_mutual_info)
        doc["choices"] = len(sample["arguments"]) // (2 if "acc_mutual_info" in sample.get("metrics", []) else 1)
    return doc


def compact_samples(samples: dict[str, list[dict[str, Any]]], layout: dict[str, Any],
                    scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-document file (pure): per leaf task its scored metric, its kind ("mean": documents' values
    averaged, "perplexity": from summed loglikelihoods and word/byte counts; else "unsupported", no documents) and
    one entry per document; per requested group its subtasks and how lm-eval weights them."""
    out: dict[str, Any] = {"requested": [s["task"] for s in scores], "tasks": {}, "groups": {}}
    for score in scores:
        name = score["task"]
        metric_key = score["metric"] if "," in score["metric"] else f"{score['metric']},none"
        metric, _, filt = metric_key.partition(",")
        group = layout["groups"].get(name)
        if group is not None:
            out["groups"][name] = {"metric": metric, "filter": filt, "subtasks": list(group["subtasks"]),
                                   "weight_by_size": bool(group["aggregate"].get(metric, True))}
        for leaf in group["subtasks"] if group is not None else [name]:
            info = layout["leaves"].get(leaf, {})
            rows = [r for r in samples.get(leaf, []) if r.get("filter", "none") == filt and metric in r]
            if metric in PERPLEXITY_UNITS:
                kind = "perplexity"
            elif info.get("aggregation", {}).get(metric) == "mean" and all(
                    isinstance(r[metric], numbers.Real) for r in rows):
                kind = "mean"
            else:
                kind = "unsupported"
            otype = info.get("output_type", "")
            out["tasks"][leaf] = {"metric": metric, "filter": filt, "kind": kind, "output_type": otype,
                                  "higher_is_better": score["higher_is_better"],
                                  "docs": [_doc_record(kind, metric, r, otype) for r in rows if kind != "unsupported"]}
    return out


def write_compact(path: str | Path, data: dict[str, Any]) -> None:
    """Atomic (temp + rename) and small (no indentation)."""
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- main


def _load_tasks(manager: Any, names: list[str], shots: int | None) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Each requested name built once (datasets loaded once): its lm-eval objects, and the plain layout."""
    objects: dict[str, list[Any]] = {}
    layout: dict[str, Any] = {"groups": {}, "leaves": {}, "output_types": {}, "fewshot": {}}
    for name in names:
        loaded = manager.load([name])
        top = loaded["groups"].get(name) or loaded["tasks"].get(name)
        objects[name] = [top] if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
        for group in loaded["groups"].values():
            layout["groups"][group.name] = {
                "subtasks": [t.task_name for t in group.get_all_tasks()],
                "aggregate": {a.metric: a.weight_by_size for a in group.aggregate_metric_list or []}}
        for leaf, task in loaded["tasks"].items():
            layout["leaves"][leaf] = {"output_type": task.get_config("output_type"), "num_fewshot":
                                      task.get_config("num_fewshot"), "aggregation": {
                                          m: getattr(fn, "__name__", "") for m, fn in task.aggregation().items()}}
        leaves = [layout["leaves"][t] for t in loaded["tasks"]]
        layout["output_types"][name] = [leaf["output_type"] for leaf in leaves]
        layout["fewshot"][name] = max((effective_fewshot(shots, leaf["num_fewshot"]) for leaf in leaves), default=0)
    return objects, layout


MERGED_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
               "n-samples", "samples")


def evaluate(job: dict[str, Any], tmp: Path, state: dict[str, Any]) -> dict[str, Any]:
    import lm_eval
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    includes, local = prepare_include(list(job.get("include_paths") or []), tmp)
    only_local = bool(includes) and all(t in local for t in job["tasks"])
    manager = TaskManager(include_path=includes or None, include_defaults=not only_local)
    objects, layout = _load_tasks(manager, list(job["tasks"]), job.get("num_fewshot"))
    size = batch_size(job)
    device = (job.get("device") or "cpu") if job["backend"] == "hf" else None
    if device is not None:
        from bot.workers.hf_backend import loadable_path

        use_cpu_threads(job, device)
        # MoE checkpoints with quantized experts are evaluated from a dequantized copy (see hf_backend); the
        # recorded command names the checkpoint itself
        job = {**job, "model_path": loadable_path(job["model_path"], tmp, device)[0]}
    lm = get_model(job["backend"]).create_from_arg_obj(model_args(job), {"batch_size": size, "device": device})
    has_template = bool(getattr(getattr(lm, "tokenizer", None), "chat_template", None))
    chat = bool(job.get("apply_chat_template")) and has_template
    runs = plan_runs(list(job["tasks"]), layout["output_types"], layout["fewshot"], chat,
                     bool(job.get("fewshot_as_multiturn")))
    state["runs"] = runs
    seed = int(job.get("seed", 1234))
    merged: dict[str, Any] = {k: {} for k in MERGED_KEYS}
    for run in runs:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=[o for n in run["tasks"] for o in objects[n]], num_fewshot=job.get("num_fewshot"),
            limit=job.get("limit"), task_manager=manager, log_samples=True,
            apply_chat_template=run["apply_chat_template"], fewshot_as_multiturn=run["fewshot_as_multiturn"],
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        if res is None:
            raise RuntimeError("lm-eval returned no results (not the main rank?)")
        for key in MERGED_KEYS:
            merged[key].update(res.get(key) or {})
    scores = parse_results(merged, list(job["tasks"]))
    out: dict[str, Any] = {"status": "done", "tasks": scores, "n_shot": merged["n-shot"], "batch_size": size,
                           "apply_chat_template": chat, "chat_template_available": has_template,
                           "fewshot_as_multiturn": any(r["fewshot_as_multiturn"] for r in runs), "samples_path": None}
    if job.get("samples_path"):
        write_compact(job["samples_path"], compact_samples(merged["samples"], layout, scores))
        out["samples_path"] = str(job["samples_path"])
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One lm-eval job, its result written to the job's result_path (also returned): this worker's `main`, and the
    validate worker's second part when its job carries one (`lmeval`: one interpreter for both, hf backend)."""
    watch = Stopwatch()
    print(json.dumps({"event": "start", "model": job["model_path"], "tasks": job["tasks"]}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bot-lmeval-"))
    state: dict[str, Any] = {}
    try:
        result = evaluate(job, tmp, state)
    except Exception as exc:  # noqa: BLE001 - the stage reads the failure from the result file
        traceback.print_exc()  # into the log, whose tail the manifest quotes
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc(limit=10)[-6000:]}
    result.update(runs=state.get("runs"), command=command_line(job, state.get("runs")), versions=versions(),
                  wall_time_s=watch.seconds())
    write_result(job["result_path"], result)
    print(json.dumps({"event": "end", "status": result["status"], "seconds": result["wall_time_s"]}), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: list[str]) -> int:
    result = run_job(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    end_children()  # vLLM's EngineCore, which os._exit would leave behind
    return 0 if result["status"] == "done" else 3


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
