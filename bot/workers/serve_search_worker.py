"""Serving-search worker: one vLLM engine started with one configuration, benchmarked with repeated runs (serve
environment, vLLM 0.26, GPU). One process per configuration, because vLLM reads its kernel switches
(`VLLM_DISABLED_KERNELS`, ...) from the environment when it starts: the stage sets them on this process.

    python -m bot.workers.serve_search_worker JOB.json

Job: {"model_path", "result_path", "config": {"id", "env", "engine"}, "speed": {validate.speed fields, max_model_len
      raised to fit the long point}, "search": {"runs", "batched_runs", "long": {"input_len", "output_len",
      "num_prompts", "runs"} | null}, "tensor_parallel_size", "trust_remote_code", "dtype", "seed", "label"}
Result: {"status", "config_id", "load": {ok, kernel, kernels, memory_bytes, load_time_s, max_model_len, error?},
         "hardware", "versions", "lengths", "runs": {workload: [tokens/s per run]}, "bench_s", "wall_time_s"}

Method: that of vLLM's offline benchmarks (vllm/benchmarks/latency.py, throughput.py), reproduced, not their code:
`LLM.generate` on random token-id prompts with `ignore_eos`, timed by the wall clock around it, prefix caching off,
after a warm-up; greedy sampling where the benchmarks sample at temperature 1. Batch 1 per run: decode tokens/s =
(output_len - 1) / (latency - TTFT), TTFT from a max_tokens=1 request (as bot/workers/validate_common.py); batched
per run: output tokens / wall time.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bot.workers.validate_common import (
    Stopwatch, end_children, exit_now, fit_lengths, synthetic_prompts, versions, write_result,
)


def lengths(job: dict[str, Any], max_len: int | None) -> dict[str, int]:
    """The lengths this engine runs, each fitted to the context it got (pure)."""
    s, search = job["speed"], job["search"]
    in1, out1 = fit_lengths(max_len, int(s["batch1_input_len"]), int(s["batch1_output_len"]))
    inb, outb = fit_lengths(max_len, int(s["batched_input_len"]), int(s["batched_output_len"]))
    out = {"batch1_input_len": in1, "batch1_output_len": out1, "batch1_runs": int(search["runs"]),
           "batched_input_len": inb, "batched_output_len": outb, "batched_num_prompts": int(s["batched_num_prompts"]),
           "batched_runs": int(search["batched_runs"])}
    long = search.get("long")
    if long:
        inl, outl = fit_lengths(max_len, int(long["input_len"]), int(long["output_len"]))
        out.update(long_input_len=inl, long_output_len=outl, long_num_prompts=int(long["num_prompts"]),
                   long_runs=int(long["runs"]))
    return out


def decode_rate(ttft_s: float, latency_s: float, output_len: int) -> float:
    """Tokens/s after the first token of one batch-1 request (pure)."""
    return max(output_len - 1, 1) / max(latency_s - ttft_s, 1e-9)


def _timed(llm: Any, prompts: list[dict[str, Any]], params: Any) -> tuple[float, int]:
    started = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outs)


def _prompts(llm: Any, count: int, length: int, seed: int) -> list[dict[str, Any]]:
    tok = llm.get_tokenizer()
    vocab = int(llm.llm_engine.model_config.get_vocab_size())
    special = set(getattr(tok, "all_special_ids", None) or [])
    return [{"prompt_token_ids": ids} for ids in synthetic_prompts(count, length, vocab, seed=seed, avoid=special)]


def _batch1(llm: Any, in_len: int, out_len: int, runs: int, seed: int) -> list[float]:
    from vllm import SamplingParams

    one = _prompts(llm, 1, in_len, seed)
    first = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    full = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    _timed(llm, one, full)  # warm-up
    return [round(decode_rate(_timed(llm, one, first)[0], _timed(llm, one, full)[0], out_len), 3)
            for _ in range(runs)]


def _batched(llm: Any, n: int, in_len: int, out_len: int, runs: int, seed: int) -> list[float]:
    from vllm import SamplingParams

    many = _prompts(llm, n, in_len, seed)
    params = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    _timed(llm, many[: min(n, 4)], params)  # warm-up at this length (a few prompts: the long point is dear)
    values = []
    for _ in range(runs):
        elapsed, produced = _timed(llm, many, params)
        values.append(round(produced / elapsed, 3))
    return values


def bench(llm: Any, lg: dict[str, int]) -> dict[str, list[float]]:
    out = {"batch1": _batch1(llm, lg["batch1_input_len"], lg["batch1_output_len"], lg["batch1_runs"], 1),
           "batched": _batched(llm, lg["batched_num_prompts"], lg["batched_input_len"], lg["batched_output_len"],
                               lg["batched_runs"], 2)}
    if "long_input_len" in lg:
        out["long_batch1"] = _batch1(llm, lg["long_input_len"], lg["long_output_len"], lg["long_runs"], 3)
        out["long_batched"] = _batched(llm, lg["long_num_prompts"], lg["long_input_len"], lg["long_output_len"],
                                       lg["long_runs"], 4)
    return out


def run(job: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from bot.workers import vllm_backend

    config = job["config"]
    result: dict[str, Any] = {"config_id": config["id"]}
    try:
        result["hardware"] = vllm_backend.hardware()
    except Exception as exc:  # noqa: BLE001 - informative only
        result["hardware_error"] = f"{type(exc).__name__}: {exc}"[:300]
    engine_job = dict(job, engine_extra=config.get("engine") or {})
    load, llm = vllm_backend.load(engine_job)
    result["load"] = load
    if llm is None:
        return result, None
    result["lengths"] = lg = lengths(job, load.get("max_model_len"))
    watch = Stopwatch()
    result["runs"] = bench(llm, lg)
    result["bench_s"] = watch.seconds()
    return result, llm


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    watch = Stopwatch()
    print(json.dumps({"event": "start", "config": job["config"]["id"]}), flush=True)
    llm = None
    try:
        result, llm = run(job)
        result["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - the stage reads the failure from the result file
        traceback.print_exc()
        result = {"status": "failed", "config_id": job["config"]["id"], "error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["versions"] = versions()
    result["wall_time_s"] = watch.seconds()
    write_result(job["result_path"], result)
    try:
        from bot.workers import vllm_backend

        vllm_backend.close(llm)
    except Exception as exc:  # noqa: BLE001 - the result is already on disk
        print(f"close: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        end_children()
    return 0 if result["status"] == "done" else 3


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
