"""The root cause of a vLLM engine that failed to start, read from the validate worker's log.

vLLM starts its engine in a child process: the worker only sees "Engine core initialization failed. See root cause
above." The cause is in the log the child shares with it. `root_cause` names it in one line, with what to do, so
the manifest, the gate's reason and the card say why a checkpoint did not load.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.clients.process import run_marker

MARKER = run_marker("validate_worker")  # opens each validate worker run in the model's log
_NEGATIVE_KV = re.compile(r"Available KV cache memory: (-\d+(?:\.\d+)?) GiB")
_NO_KV = "No available memory for the cache blocks"
_PROFILING = re.compile(r"Error in memory profiling\. Initial free memory (\d+(?:\.\d+)?) GiB, current free memory "
                        r"(\d+(?:\.\d+)?) GiB")
_OOM = re.compile(r"(?:torch\.)?(?:cuda\.)?OutOfMemoryError: CUDA out of memory\.[^\n]*")
_ERROR_LINE = re.compile(r"^\(EngineCore[^)]*\)(?: ERROR [^\]]*\])?\s*(\w+(?:Error|Exception): .+)$", re.MULTILINE)


def last_run(log_text: str) -> str:
    """The part of a model's log written by its last worker run (logs are appended to across reruns)."""
    at = log_text.rfind(MARKER)
    return log_text[at:] if at >= 0 else log_text


_NO_KV_CAUSE = "vLLM found no GPU memory left for the KV cache"
_PROFILE_CAUSE = "vLLM's memory profile was upset by another process"
_OOM_CAUSE = "the GPU ran out of memory while the engine started"


def root_cause(log_text: str) -> str | None:
    text = last_run(log_text)
    negative = _NEGATIVE_KV.search(text)
    if negative or _NO_KV in text:
        amount = f" ({negative.group(1)} GiB)" if negative else ""
        return (f"{_NO_KV_CAUSE}{amount}: another process took GPU memory while "
                "this engine started, or validate.speed.gpu_memory_utilization is too small for the weights; "
                "validate with the GPU to itself, or raise it")
    shifted = _PROFILING.search(text)
    if shifted:
        return (f"{_PROFILE_CAUSE} (free GPU memory went from {shifted.group(1)} "
                f"to {shifted.group(2)} GiB while this engine started): validate with the GPU to itself")
    oom = _OOM.search(text)
    if oom:
        return f"{_OOM_CAUSE}: {oom.group(0)[:200]}"
    errors = _ERROR_LINE.findall(text)
    return f"engine error: {errors[-1][:300]}" if errors else None


def explain_load_error(error: str | None, log_path: Path) -> str | None:
    """The root cause from the log first (the gate quotes the first 300 characters), then vLLM's own message."""
    if not error or not log_path.exists():
        return error
    cause = root_cause(log_path.read_text(errors="replace"))
    return f"{cause} [{error}]" if cause and cause not in error else error


def contended(error: str | None) -> bool:
    """The load error names a cause that other processes on the GPU can produce (memory taken or released
    while the engine started): with the GPU to itself, the same checkpoint may load."""
    return bool(error) and any(cause in error for cause in (_NO_KV_CAUSE, _PROFILE_CAUSE, _OOM_CAUSE))
