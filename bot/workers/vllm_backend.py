"""Validation in vLLM (serve environment, vLLM 0.26, GPU).

Load with `vllm.LLM(...)`, then: greedy chat generations, batch-1 latency (TTFT from a max_tokens=1 request,
TPOT = (latency - TTFT) / (output_len - 1)) and batched offline throughput, timed by the wall clock around
`LLM.generate` as vLLM's own benchmarks do. Prompts for speed are random token ids with prefix caching off, so
no run reuses another's KV cache. What vLLM chose per quantized layer (scheme -> kernel class) is read from the
model inside the worker through `LLM.apply_model`. The engine runs in a child process (EngineCore): `close()`
shuts it down and ends any child left, because a driver that exits without it leaves the GPU memory held.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import Counter
from typing import Any

from bot.workers.validate_common import (
    Stopwatch, batch1_summary, batched_summary, fit_lengths, generation_record, read_config, resolve_max_model_len,
    measure_speed, synthetic_prompts,
)

# Environment for the engine: apply_model ships a function to the EngineCore (pickled by reference to this
# module); FlashInfer's sampler is not installed on the GPU host.
ENGINE_ENV = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
_KERNEL_ATTRS = ("kernel", "fp8_linear", "linear_kernel", "mp_linear_kernel")


def engine_kwargs(job: dict[str, Any], max_model_len: int | None) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from the job (pure, unit-tested); `engine_extra` wins over the rest."""
    s = job.get("speed") or {}
    kwargs: dict[str, Any] = {
        "model": job["model_path"],
        "tokenizer": job["model_path"],
        "trust_remote_code": bool(job.get("trust_remote_code", False)),
        "tensor_parallel_size": int(job.get("tensor_parallel_size") or 1),
        "dtype": job.get("dtype") or "auto",
        "gpu_memory_utilization": float(s.get("gpu_memory_utilization", 0.85)),
        "enforce_eager": bool(s.get("enforce_eager", False)),
        "kv_cache_dtype": s.get("kv_cache_dtype") or "auto",
        "seed": int(job.get("seed", 0)),
        "enable_prefix_caching": False,
        "disable_log_stats": True,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = int(max_model_len)
    kwargs.update(job.get("engine_extra") or {})  # a serving-search configuration (linear_backend, kv_cache_dtype)
    return kwargs


def describe_kernels(model: Any) -> dict[str, int]:
    """Runs inside the vLLM worker (via LLM.apply_model): '<scheme> -> <kernel class>' per quantized layer."""
    counts: Counter[str] = Counter()
    for module in model.modules():
        scheme = getattr(module, "scheme", None)
        method = getattr(module, "quant_method", None)
        impl = scheme if scheme is not None else method
        if impl is None:
            continue
        name = type(impl).__name__
        if "Unquantized" in name or name.endswith("KVCacheMethod"):  # attention's KV-cache hook, not a GEMM
            continue
        kernel = next((type(k).__name__ for k in (getattr(impl, a, None) for a in _KERNEL_ATTRS) if k is not None),
                      None)
        counts[f"{name} -> {kernel}" if kernel else name] += 1
    return dict(counts)


def weights_memory(worker: Any) -> int:
    """Runs inside the vLLM worker (via LLM.collective_rpc): bytes its model weights took on the GPU."""
    return int(getattr(worker.model_runner, "model_memory_usage", 0) or 0)


def kernel_summary(counts: dict[str, int]) -> str | None:
    if not counts:
        return None
    return "; ".join(f"{name} (x{n})" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def hardware() -> dict[str, Any]:
    from vllm.platforms import current_platform

    cap = current_platform.get_device_capability()
    return {"device": "cuda", "name": current_platform.get_device_name(), "count": current_platform.device_count(),
            "compute_capability": f"{cap.major}.{cap.minor}" if cap else None,
            "memory_bytes": int(current_platform.get_device_total_memory()), "driver": _driver()}


def _driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def load(job: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    from vllm import LLM

    max_len = resolve_max_model_len((job.get("speed") or {}).get("max_model_len"), read_config(job["model_path"]))
    watch = Stopwatch()
    try:
        llm = LLM(**engine_kwargs(job, max_len))
    except Exception as exc:  # noqa: BLE001 - a model that does not load is a finding, recorded as such
        return {"ok": False, "backend": "vllm", "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc(limit=6)[-4000:]}, None
    record: dict[str, Any] = {"ok": True, "backend": "vllm", "load_time_s": watch.seconds(),
                              "max_model_len": int(llm.llm_engine.model_config.max_model_len)}
    try:
        record["memory_bytes"] = sum(llm.collective_rpc(weights_memory)) or None
    except Exception as exc:  # noqa: BLE001 - informative only
        record["memory_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        counts = llm.apply_model(describe_kernels)[0]
        record["kernels"] = counts
        record["kernel"] = kernel_summary(counts)
    except Exception as exc:  # noqa: BLE001 - informative only
        record["kernel_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return record, llm


def generate(llm: Any, job: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=int(job["max_new_tokens"]), temperature=0.0)
    prompts = list(job["prompts"])
    templated = bool(getattr(llm.get_tokenizer(), "chat_template", None))
    if templated:
        outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    else:
        outs = llm.generate(prompts, params, use_tqdm=False)
    records = []
    for prompt, out in zip(prompts, outs):
        completion = out.outputs[0]
        records.append(generation_record(prompt, completion.text, list(completion.token_ids)))
    return records, templated


def _timed(llm: Any, prompts: list[dict[str, Any]], params: Any) -> tuple[float, int]:
    started = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    return elapsed, sum(len(o.outputs[0].token_ids) for o in outs)


def speed(llm: Any, job: dict[str, Any], max_len: int | None) -> dict[str, Any]:
    from vllm import SamplingParams

    s = job["speed"]
    in1, out1 = fit_lengths(max_len, int(s["batch1_input_len"]), int(s["batch1_output_len"]))
    inb, outb = fit_lengths(max_len, int(s["batched_input_len"]), int(s["batched_output_len"]))
    n = int(s["batched_num_prompts"])
    runs = int(s["batch1_runs"])
    settings = {"batch1_input_len": in1, "batch1_output_len": out1, "batch1_runs": runs,
                "batched_input_len": inb, "batched_output_len": outb, "batched_num_prompts": n, "backend": "vllm",
                "enforce_eager": bool(s.get("enforce_eager", False)), "kv_cache_dtype": s.get("kv_cache_dtype", "auto"),
                "tensor_parallel_size": int(job.get("tensor_parallel_size") or 1), "max_model_len": max_len}
    record: dict[str, Any] = {"label": job["label"], "settings": settings}
    try:
        tok = llm.get_tokenizer()
        vocab = int(llm.llm_engine.model_config.get_vocab_size())
        special = set(getattr(tok, "all_special_ids", None) or [])
        one = [{"prompt_token_ids": synthetic_prompts(1, in1, vocab, seed=1, avoid=special)[0]}]
        first = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        full = SamplingParams(max_tokens=out1, temperature=0.0, ignore_eos=True)
        _timed(llm, one, full)  # warm-up (CUDA graphs, allocator)
        ttfts, lats = [], []
        for _ in range(runs):
            ttfts.append(_timed(llm, one, first)[0])
            lats.append(_timed(llm, one, full)[0])
        record["batch1"] = batch1_summary(ttfts, lats, in1, out1)
        many = [{"prompt_token_ids": ids} for ids in synthetic_prompts(n, inb, vocab, seed=2, avoid=special)]
        elapsed, produced = _timed(llm, many, SamplingParams(max_tokens=outb, temperature=0.0, ignore_eos=True))
        record["batched"] = batched_summary(n, inb, outb, elapsed, produced)
    except Exception as exc:  # noqa: BLE001 - speed is optional; the error is recorded
        record["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    return record


def run(job: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    result: dict[str, Any] = {"backend": "vllm"}
    try:
        result["hardware"] = hardware()
    except Exception as exc:  # noqa: BLE001 - informative only
        result["hardware_error"] = f"{type(exc).__name__}: {exc}"[:300]
    load_rec, llm = load(job)
    result["load"] = load_rec
    if llm is None:
        return result, None
    result["generations"], result["chat_template_applied"] = generate(llm, job)
    if job.get("speed"):
        result["speed"] = measure_speed(speed, llm, job, load_rec.get("max_model_len"))
    return result, llm


def close(llm: Any) -> None:
    """Shut the engine down (EngineCore child included); whatever child is left is ended by its pid."""
    from bot.workers.validate_common import end_children

    if llm is not None:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # noqa: BLE001 - the children are ended below anyway
            print(f"engine shutdown: {type(exc).__name__}: {exc}", flush=True)
    end_children()
