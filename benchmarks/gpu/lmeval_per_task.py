"""Per-task wall times of lm-eval as `bot validate` runs it (issue 16), and the report of a shape session.

    python benchmarks/gpu/lmeval_per_task.py time JOB.json OUT.json      (serve interpreter: vLLM + lm-eval)
    python benchmarks/gpu/lmeval_per_task.py report RUN OUT.json [PER_TASK.json ...]

`time`: JOB.json is the lm-eval job `bot validate` wrote for one model (RUN/jobs/lmeval-<model>.json): the same model
arguments, batch size, tasks, limit, include folders, chat-template decision and seeds. The model is loaded once,
with the lm-eval worker's own functions (bot/workers/lmeval_worker.py), then each task is evaluated alone in the run
the worker would put it in (loglikelihood tasks without the chat template, generative ones with it), timed from
the call to lm-eval until its results. One `bot validate` call evaluates all tasks together (lm-eval batches every
loglikelihood request of the suite in one go), so its time is not the sum of these: it is in the manifest
(`validate.timings.lmeval_worker`, start-up included), which `report` reads. OUT.json is rewritten after every
task, so a machine taken away keeps the tasks already timed.

`report`: one JSON with, per model of RUN, the lm-eval worker's and the runtime worker's wall times from the
manifests, the batch size, limit and lm-eval command recorded, and the per-task files' figures.
Nothing here is a claim: the numbers are what the run measured, on random weights (speed depends on shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _requests(samples: dict[str, list[dict[str, Any]]]) -> tuple[int, int]:
    """(documents, requests) evaluated, from lm-eval's logged samples: one row per document and filter (gsm8k logs
    each document once per filter), one `arguments` entry per request."""
    per_doc = {(task, r.get("doc_id")): len(r.get("arguments") or []) for task, rows in samples.items() for r in rows}
    return len(per_doc), sum(per_doc.values())


def time_tasks(job_path: Path, out_path: Path, only: list[str] | None = None) -> dict[str, Any]:
    import lm_eval
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from bot.workers import lmeval_worker as lw
    from bot.workers.validate_common import versions

    job = json.loads(job_path.read_text(encoding="utf-8"))
    tasks = only or list(job["tasks"])
    out: dict[str, Any] = {"job": str(job_path), "model_path": job["model_path"], "backend": job["backend"],
                           "limit": job.get("limit"), "tasks": {}, "status": "running"}
    started = time.perf_counter()
    includes, local = lw.prepare_include(list(job.get("include_paths") or []), Path(tempfile.mkdtemp()))
    manager = TaskManager(include_path=includes or None,
                          include_defaults=not (includes and all(t in local for t in tasks)))
    objects, layout = lw._load_tasks(manager, tasks, job.get("num_fewshot"))  # the worker's loading, exactly
    out["task_load_s"] = round(time.perf_counter() - started, 2)
    size = lw.batch_size(job)
    device = (job.get("device") or "cpu") if job["backend"] == "hf" else None
    started = time.perf_counter()
    lm = get_model(job["backend"]).create_from_arg_obj(lw.model_args(job), {"batch_size": size, "device": device})
    out.update(engine_start_s=round(time.perf_counter() - started, 2), batch_size=size,
               model_args=lw.model_args(job), versions=versions())
    has_template = bool(getattr(getattr(lm, "tokenizer", None), "chat_template", None))
    chat = bool(job.get("apply_chat_template")) and has_template
    seed = int(job.get("seed", 1234))
    _write(out_path, out)
    for task in tasks:
        (run,) = lw.plan_runs([task], layout["output_types"], layout["fewshot"], chat,
                              bool(job.get("fewshot_as_multiturn")))
        started = time.perf_counter()
        res = lm_eval.simple_evaluate(
            model=lm, tasks=objects[task], num_fewshot=job.get("num_fewshot"), limit=job.get("limit"),
            task_manager=manager, log_samples=True, apply_chat_template=run["apply_chat_template"],
            fewshot_as_multiturn=run["fewshot_as_multiturn"], random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed)
        seconds = time.perf_counter() - started
        docs, requests = _requests((res or {}).get("samples") or {})
        out["tasks"][task] = {"seconds": round(seconds, 2), "docs": docs, "requests": requests,
                              "apply_chat_template": run["apply_chat_template"],
                              "fewshot_as_multiturn": run["fewshot_as_multiturn"]}
        print(json.dumps({"event": "task", "task": task, **out["tasks"][task]}), flush=True)
        _write(out_path, out)
    out["status"] = "done"
    _write(out_path, out)
    return out


def report(run_dir: Path, out_path: Path, per_task: list[Path]) -> dict[str, Any]:
    models: dict[str, Any] = {}
    variants = sorted(p for p in run_dir.glob("*/manifest.json") if p.parent.name != "base")
    for path in [run_dir / "base" / "manifest.json", *variants]:
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        rec = data.get("validate") or {}
        acc = rec.get("accuracy") or {}
        models[data.get("variant") or "base"] = {
            "status": rec.get("status"), "timings": rec.get("timings") or {}, "limit": acc.get("limit"),
            "batch_size": acc.get("batch_size"), "tasks": [t.get("task") for t in acc.get("tasks") or []],
            "command": acc.get("command"), "error": rec.get("error") or acc.get("error")}
    for path in per_task:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            name = next((m for m in models if f"/lmeval-{m}.json" in data.get("job", "")), path.stem)
            models.setdefault(name, {})["per_task"] = data
    out = {"run": str(run_dir), "models": models}
    _write(out_path, out)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lmeval_per_task")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("job", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--tasks", default=None, help="comma-separated subset of the job's tasks")
    r = sub.add_parser("report")
    r.add_argument("run", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("per_task", type=Path, nargs="*")
    args = ap.parse_args(argv)
    if args.cmd == "report":
        report(args.run, args.out, args.per_task)
        return 0
    from bot.workers.validate_common import end_children, exit_now

    code = 0
    try:
        time_tasks(args.job, args.out, args.tasks.split(",") if args.tasks else None)
    except Exception as exc:  # noqa: BLE001 - recorded in the output file, like the worker's result
        import traceback

        traceback.print_exc()
        data = json.loads(args.out.read_text()) if args.out.is_file() else {"job": str(args.job)}
        _write(args.out, {**data, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        code = 3
    end_children()  # vLLM's EngineCore (see bot/workers/lmeval_worker.py)
    exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
