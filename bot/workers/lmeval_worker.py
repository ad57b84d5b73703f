"""lm-eval worker: run lm-eval's Python API on one model dir and write per-task scores (serve environment; the
`hf` model also runs in the quantize environment on CPU).

    python -m bot.workers.lmeval_worker JOB.json

Job: {"backend": "vllm"|"hf", "model_path", "result_path", "tasks": [...], "limit", "num_fewshot", "batch_size",
      "device", "dtype", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "include_paths": [...],
      "trust_remote_code", "seed"}
Result: {"status", "tasks": [{task, metric, value, stderr, samples, higher_is_better, metrics}], "command",
         "versions", "wall_time_s", "error"?, "traceback"?}

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
import shlex
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml

from bot.workers.validate_common import Stopwatch, end_children, exit_now, versions, write_result

LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity"}
METRIC_PREFERENCE = ("acc", "exact_match,strict-match", "exact_match,flexible-extract", "exact_match", "acc_norm",
                     "word_perplexity", "f1", "mcc", "bleu")
TASK_METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm"}  # what published comparisons report
_DATASET_LOADERS = {"json", "csv", "parquet", "text", "arrow"}


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


def command_line(job: dict[str, Any]) -> str:
    """The equivalent `lm_eval` command, for the manifest and the card."""
    margs = ",".join(f"{k}={v}" for k, v in model_args(job).items())
    parts = ["lm_eval", "--model", job["backend"], "--model_args", margs, "--tasks", ",".join(job["tasks"])]
    if job.get("num_fewshot") is not None:
        parts += ["--num_fewshot", str(job["num_fewshot"])]
    if job.get("limit") is not None:
        parts += ["--limit", str(job["limit"])]
    parts += ["--batch_size", str(job.get("batch_size") or "auto")]
    if job["backend"] == "hf":
        parts += ["--device", str(job.get("device") or "cpu")]
    for path in job.get("include_paths") or []:
        parts += ["--include_path", str(path)]
    return " ".join(shlex.quote(p) for p in parts)


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


def _samples(task: str, res: dict[str, Any]) -> int | None:
    n = res.get("n-samples", {}).get(task)
    if isinstance(n, dict) and isinstance(n.get("effective"), int):
        return n["effective"]
    subtasks = res.get("group_subtasks", {}).get(task)
    if subtasks:
        counts = [_samples(t, res) for t in subtasks]
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
            "samples": _samples(task, res),
            "higher_is_better": bool(hib) if hib is not None else name not in LOWER_IS_BETTER,
            "metrics": {k: v for k, v in metrics.items() if _num(v) is not None},
        })
    return out


# ---------------------------------------------------------------- main


def evaluate(job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    includes, local = prepare_include(list(job.get("include_paths") or []), tmp)
    only_local = bool(includes) and all(t in local for t in job["tasks"])
    manager = TaskManager(include_path=includes or None, include_defaults=not only_local)
    kwargs: dict[str, Any] = {}
    if job["backend"] == "hf":
        from bot.workers.hf_backend import loadable_path

        kwargs["device"] = job.get("device") or "cpu"
        # MoE checkpoints with quantized experts are evaluated from a dequantized copy (see hf_backend)
        job = {**job, "model_path": loadable_path(job["model_path"], tmp, kwargs["device"])[0]}
    res = lm_eval.simple_evaluate(
        model=job["backend"], model_args=model_args(job), tasks=list(job["tasks"]), num_fewshot=job.get("num_fewshot"),
        limit=job.get("limit"), batch_size=job.get("batch_size") or "auto", task_manager=manager,
        log_samples=False, random_seed=int(job.get("seed", 1234)), **kwargs,
    )
    if res is None:
        raise RuntimeError("lm-eval returned no results (not the main rank?)")
    return {"status": "done", "tasks": parse_results(res, list(job["tasks"])), "n_shot": res.get("n-shot", {})}


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    watch = Stopwatch()
    print(json.dumps({"event": "start", "model": job["model_path"], "tasks": job["tasks"]}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bot-lmeval-"))
    try:
        result = evaluate(job, tmp)
    except Exception as exc:  # noqa: BLE001 - the stage reads the failure from the result file
        traceback.print_exc()  # into the log, whose tail the manifest quotes
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc(limit=10)[-6000:]}
    result.update(command=command_line(job), versions=versions(), wall_time_s=watch.seconds())
    write_result(job["result_path"], result)
    print(json.dumps({"event": "end", "status": result["status"], "seconds": result["wall_time_s"]}), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    end_children()  # vLLM's EngineCore, which os._exit would leave behind
    return 0 if result["status"] == "done" else 3


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
