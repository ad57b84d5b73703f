"""Pure helpers shared by the validation workers (standard library only, so they are unit-tested anywhere).

- generation checks: empty output, U+FFFD replacement characters, n-gram repetition, one token dominating;
- speed arithmetic: batch-1 TTFT/TPOT/decode rate (median over runs) and batched throughput;
- lengths: the context a model allows and speed lengths that fit in it; synthetic prompt token ids;
- environment: library versions, current RSS, ending child processes (vLLM's EngineCore) before exit.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import statistics
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

from bot.modelconfig import model_max_len, read_config, resolve_max_model_len  # noqa: F401 - re-exported

REPLACEMENT_CHAR = "\ufffd"
MAX_REPETITION = 0.5  # share of repeated 4-grams above which an output counts as a loop
MAX_TOKEN_SHARE = 0.5  # share of the output taken by its most common token
MIN_TOKENS_FOR_REPETITION = 16

VERSIONED = ("torch", "transformers", "vllm", "lm_eval", "compressed-tensors", "accelerate", "datasets",
             "flashinfer-python", "xformers")


# ---------------------------------------------------------------- generation checks


def repetition_ratio(tokens: Sequence[Any], n: int = 4) -> float:
    """Share of the n-grams that repeat an earlier one: 0 when all differ, close to 1 for a loop."""
    if len(tokens) < n + 1:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def generation_problems(text: str, token_ids: Sequence[int] | None = None, *, nonfinite_logits: bool = False,
                        max_repetition: float = MAX_REPETITION, max_token_share: float = MAX_TOKEN_SHARE,
                        min_tokens: int = MIN_TOKENS_FOR_REPETITION) -> list[str]:
    """Why an output is unusable; empty when it looks like text. Token ids are preferred over words when given."""
    problems: list[str] = []
    if not text.strip():
        problems.append("empty output")
    bad = text.count(REPLACEMENT_CHAR)
    if bad:
        problems.append(f"{bad} U+FFFD replacement character(s): broken byte sequences")
    units: list[Any] = list(token_ids) if token_ids else text.split()
    if len(units) >= min_tokens:
        ratio = repetition_ratio(units, 4)
        if ratio > max_repetition:
            problems.append(f"repetitive: {ratio:.0%} of its 4-grams repeat an earlier one")
        top, count = Counter(units).most_common(1)[0]
        if count / len(units) > max_token_share:
            problems.append(f"one token is {count / len(units):.0%} of the output")
    if nonfinite_logits:
        problems.append("NaN or inf in the logits")
    return problems


def generation_record(prompt: str, text: str, token_ids: Sequence[int] | None = None,
                      nonfinite_logits: bool = False) -> dict[str, Any]:
    problems = generation_problems(text, token_ids, nonfinite_logits=nonfinite_logits)
    return {"prompt": prompt, "output": text, "ok": not problems, "problems": problems,
            "num_tokens": len(token_ids) if token_ids is not None else None}


# ---------------------------------------------------------------- speed arithmetic


def batch1_summary(ttfts_s: Sequence[float], latencies_s: Sequence[float], input_len: int,
                   output_len: int) -> dict[str, Any]:
    """Median over runs. TTFT from a max_tokens=1 request; TPOT = (latency - TTFT) / (output_len - 1) for the
    paired full request; decode rate = 1000 / TPOT (tokens per second after the first)."""
    if not ttfts_s or len(ttfts_s) != len(latencies_s):
        raise ValueError("need one TTFT and one latency per run")
    steps = max(output_len - 1, 1)
    tpots = [max(lat - ttft, 1e-9) / steps for ttft, lat in zip(ttfts_s, latencies_s)]
    tpot_ms = statistics.median(tpots) * 1000.0
    return {
        "input_len": input_len, "output_len": output_len, "runs": len(ttfts_s),
        "ttft_ms": round(statistics.median(ttfts_s) * 1000.0, 3),
        "tpot_ms": round(tpot_ms, 3),
        "decode_tokens_per_s": round(1000.0 / tpot_ms, 3),
        "latency_ms": round(statistics.median(latencies_s) * 1000.0, 3),
    }


def batched_summary(num_prompts: int, input_len: int, output_len: int, elapsed_s: float, output_tokens: int,
                    input_tokens: int | None = None) -> dict[str, Any]:
    if elapsed_s <= 0:
        raise ValueError("elapsed time must be positive")
    in_tokens = input_tokens if input_tokens is not None else num_prompts * input_len
    return {
        "num_prompts": num_prompts, "input_len": input_len, "output_len": output_len,
        "output_tokens_per_s": round(output_tokens / elapsed_s, 3),
        "requests_per_s": round(num_prompts / elapsed_s, 4),
        "total_tokens_per_s": round((in_tokens + output_tokens) / elapsed_s, 3),
        "elapsed_s": round(elapsed_s, 3),
    }


# ---------------------------------------------------------------- lengths and prompts


def fit_lengths(max_len: int | None, input_len: int, output_len: int, margin: int = 8) -> tuple[int, int]:
    """Shrink (input, output) lengths so that input + output + margin fits the context."""
    if max_len is None or input_len + output_len + margin <= max_len:
        return input_len, output_len
    output_len = max(1, min(output_len, max_len // 4))
    input_len = max(1, min(input_len, max_len - output_len - margin))
    return input_len, output_len


def synthetic_prompts(count: int, length: int, vocab_size: int, seed: int = 0,
                      avoid: Iterable[int] = ()) -> list[list[int]]:
    """Random token ids (vLLM's benchmark convention): distinct prompts, so no prefix is shared."""
    rng = random.Random(seed)
    banned = set(avoid)
    low, high = min(100, vocab_size // 4), max(vocab_size - 1, 1)
    out = []
    for _ in range(count):
        ids: list[int] = []
        while len(ids) < length:
            tok = rng.randint(low, high)
            if tok not in banned:
                ids.append(tok)
        out.append(ids)
    return out


# ---------------------------------------------------------------- environment


def versions(names: Iterable[str] = VERSIONED) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def use_cpu_threads(job: dict[str, Any], device: str) -> int | None:
    """On a CPU, compute with the job's `cpu_threads` (the `cpu_threads` setting, one value for every job of a
    call; none: torch's default) and return the count in use; None on a GPU."""
    if device != "cpu":
        return None
    import torch

    if job.get("cpu_threads"):
        torch.set_num_threads(int(job["cpu_threads"]))
    return int(torch.get_num_threads())


def current_rss_bytes() -> int | None:
    """Resident memory now (not the peak): /proc/self/statm on Linux."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def end_children(timeout_s: float = 15.0) -> list[int]:
    """Terminate this process's own children (vLLM's EngineCore), then kill those that stay. Returns their pids."""
    try:
        import psutil
    except ImportError:
        return []
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(children, timeout=timeout_s)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return [c.pid for c in children]


def announce(event: str, **fields: Any) -> None:
    """A progress line on stdout (JSON), read by the stage while the worker runs."""
    print(json.dumps({"event": event, **fields}), flush=True)


def measure_speed(measure: Any, *args: Any) -> dict[str, Any]:
    """`measure(*args)` between `speed` start and end lines: `bot publish` pauses the quantize workers sharing the
    device meanwhile (bot.stages.validate.measure), so the figures are the model's alone."""
    announce("speed", phase="start")
    try:
        return measure(*args)
    finally:
        announce("speed", phase="end")


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Atomic write (temp + rename): the stage never reads half a result."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, target)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown: lm-eval and vLLM can abort there after the result is
    written, and the stage judges by the result file, not by a teardown crash."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
