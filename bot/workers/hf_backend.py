"""Validation with transformers (CPU, or a GPU without vLLM). Compressed-tensors checkpoints are decompressed to
dense weights on load, so this checks that the checkpoint loads and that its numbers are sane, not the speed of
quantized kernels: its speed is labelled and never compared with vLLM's."""

from __future__ import annotations

import time
import traceback
from typing import Any

from bot.workers.validate_common import (
    Stopwatch, batch1_summary, batched_summary, cpu_name, current_rss_bytes, fit_lengths, generation_record,
    read_config, resolve_max_model_len, synthetic_prompts,
)


def hardware(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "name": props.name, "count": torch.cuda.device_count(),
                "compute_capability": f"{props.major}.{props.minor}", "memory_bytes": int(props.total_memory)}
    return {"device": "cpu", "name": cpu_name(), "count": 1}


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _kernel_note(model) -> str | None:
    qcfg = getattr(model.config, "quantization_config", None)
    if qcfg is None:
        return None
    method = getattr(qcfg, "quant_method", None) or (qcfg.get("quant_method") if isinstance(qcfg, dict) else None)
    method = getattr(method, "value", method)
    dtype = str(model.dtype).replace("torch.", "")
    return f"transformers {method or 'quantized'} checkpoint, decompressed to dense {dtype}"


def load(job: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = job["device"]
    path = job["model_path"]
    trust = bool(job.get("trust_remote_code", False))
    rss0 = current_rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    watch = Stopwatch()
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(job.get("dtype", "auto")),
                                                     trust_remote_code=trust, use_safetensors=True)
        model.to(device).eval()
    except Exception as exc:  # noqa: BLE001 - a model that does not load is a finding, recorded as such
        return {"ok": False, "backend": "hf", "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc(limit=6)[-4000:]}, None, None
    seconds = watch.seconds()
    if device == "cuda":
        memory = int(torch.cuda.max_memory_allocated())
    else:
        rss1 = current_rss_bytes()
        memory = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    max_len = resolve_max_model_len((job.get("speed") or {}).get("max_model_len"), read_config(path))
    return {"ok": True, "backend": "hf", "load_time_s": seconds, "memory_bytes": memory, "max_model_len": max_len,
            "kernel": _kernel_note(model)}, model, tok


def _encode(tok, prompt: str, device: str) -> tuple[dict[str, Any], bool]:
    if getattr(tok, "chat_template", None):
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        used_template = True
    else:
        enc = tok(prompt, return_tensors="pt")
        used_template = False
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}, used_template


def generate(model, tok, job: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    import torch

    device = job["device"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    records = []
    templated = True
    for prompt in job["prompts"]:
        enc, templated = _encode(tok, prompt, device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=int(job["max_new_tokens"]), do_sample=False,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=pad)
        new = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
        nonfinite = any(not bool(torch.isfinite(step).all()) for step in (out.logits or ()))
        text = tok.decode(new, skip_special_tokens=True)
        records.append(generation_record(prompt, text, new, nonfinite_logits=nonfinite))
    return records, templated


def _timed_generate(model, ids, new_tokens: int, pad: int) -> float:
    import torch

    mask = torch.ones_like(ids)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=pad)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def speed(model, tok, job: dict[str, Any], max_len: int | None) -> dict[str, Any]:
    import torch

    s = job["speed"]
    device = job["device"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    vocab = int(getattr(model.config, "vocab_size", None) or len(tok))
    special = set(tok.all_special_ids or [])
    in1, out1 = fit_lengths(max_len, int(s["batch1_input_len"]), int(s["batch1_output_len"]))
    inb, outb = fit_lengths(max_len, int(s["batched_input_len"]), int(s["batched_output_len"]))
    n = int(s["batched_num_prompts"])
    settings = {"batch1_input_len": in1, "batch1_output_len": out1, "batch1_runs": int(s["batch1_runs"]),
                "batched_input_len": inb, "batched_output_len": outb, "batched_num_prompts": n,
                "backend": "hf", "device": device, "dtype": str(model.dtype).replace("torch.", "")}
    record: dict[str, Any] = {"label": job["label"], "settings": settings}
    try:
        ids = torch.tensor(synthetic_prompts(1, in1, vocab, seed=1, avoid=special), device=device)
        _timed_generate(model, ids, min(out1, 4), pad)  # warm-up
        ttfts, lats = [], []
        for _ in range(int(s["batch1_runs"])):
            ttfts.append(_timed_generate(model, ids, 1, pad))
            lats.append(_timed_generate(model, ids, out1, pad))
        record["batch1"] = batch1_summary(ttfts, lats, in1, out1)
        batch = torch.tensor(synthetic_prompts(n, inb, vocab, seed=2, avoid=special), device=device)
        elapsed = _timed_generate(model, batch, outb, pad)
        record["batched"] = batched_summary(n, inb, outb, elapsed, n * outb)
    except Exception as exc:  # noqa: BLE001 - speed is optional; the error is recorded
        record["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    return record


def run(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": "hf", "hardware": hardware(job["device"])}
    load_rec, model, tok = load(job)
    result["load"] = load_rec
    if model is None:
        return result
    result["generations"], result["chat_template_applied"] = generate(model, tok, job)
    if job.get("speed"):
        result["speed"] = speed(model, tok, job, load_rec.get("max_model_len"))
    return result


def close(_handle: Any = None) -> None:
    """Nothing to shut down: the model lives in this process."""
