"""Validate worker: load one model dir, generate, time it; write a result JSON (serve environment; the `hf` backend
also runs in the quantize environment on CPU).

    python -m bot.workers.validate_worker JOB.json

Job: {"backend": "vllm"|"hf", "model_path", "result_path", "device": "cuda"|"cpu", "label": "GPU"|"CPU"|...,
      "prompts": [...], "max_new_tokens", "speed": {SpeedSettings fields} | null, "dtype", "tensor_parallel_size",
      "trust_remote_code", "seed", "cpu_threads"?, "lmeval"?: {an lmeval_worker job, hf backend only: run here
      after the result is written, into its own result file}}
Result: {"status": "done"|"failed", "backend", "hardware", "versions", "load": {...}, "generations": [...],
         "chat_template_applied", "speed": {...}, "wall_time_s", "error"?, "traceback"?}
A model that does not load is a result (load.ok false, status done), not a crash. The result is written before
the engine is shut down, and the process ends with os._exit so that library teardown cannot turn a finished run
into a failed one.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from bot.workers.validate_common import Stopwatch, end_children, exit_now, versions, write_result


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def run(job: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """Returns (result, backend module, handle to close)."""
    backend = job["backend"]
    if backend == "vllm":
        from bot.workers import vllm_backend as mod

        result, handle = mod.run(job)
    elif backend == "hf":
        from bot.workers import hf_backend as mod

        result, handle = mod.run(job), None
    else:
        raise ValueError(f"unknown backend {backend!r} (expected 'vllm' or 'hf')")
    return result, mod, handle


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    watch = Stopwatch()
    emit("start", model=job["model_path"], backend=job["backend"])
    mod: Any = None
    handle: Any = None
    try:
        result, mod, handle = run(job)
        result["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - the stage reads the failure from the result file
        traceback.print_exc()  # into the log, whose tail the manifest quotes
        result = {"status": "failed", "backend": job.get("backend"), "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc(limit=10)[-6000:]}
    result["versions"] = versions()
    result["wall_time_s"] = watch.seconds()
    write_result(job["result_path"], result)
    emit("runtime-done")  # the stage records the runtime result now, while lm-eval (when asked for) runs
    emit("end", status=result["status"], seconds=result["wall_time_s"])
    try:
        if mod is not None:
            mod.close(handle)
        else:
            end_children()  # a crash after vLLM started: end its EngineCore
    except Exception as exc:  # noqa: BLE001 - the result is already on disk
        print(f"close: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    if result["status"] != "done":
        return 3
    return then_lmeval(job, result)


def then_lmeval(job: dict[str, Any], result: dict[str, Any]) -> int:
    """The job's second part (`lmeval`, hf backend only): lm-eval in this interpreter once the model loaded and was
    measured, its own result file written by lmeval_worker.run_job. 0 when none was asked for or it succeeded."""
    lm = job.get("lmeval")
    if not lm or job["backend"] != "hf" or not (result.get("load") or {}).get("ok"):
        return 0
    import gc

    gc.collect()  # the measured model is no longer referenced: freed before lm-eval loads its own
    from bot.workers.lmeval_worker import run_job

    return 0 if run_job(lm)["status"] == "done" else 3


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
