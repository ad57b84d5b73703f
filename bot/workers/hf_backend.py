"""Validation with transformers (CPU, or a GPU without vLLM). Compressed-tensors checkpoints are decompressed to
dense weights on load, so this checks that the checkpoint loads and that its numbers are sane, not the speed of
quantized kernels: its speed is labelled and never compared with vLLM's.

MoE checkpoints whose experts are quantized take another road: transformers 5.17 fuses the per-expert tensors on
load (`DecompressExperts`), which cannot decompress asymmetric experts (their zero points are never collected:
"Asymmetric quant requires zero-point values", huggingface/transformers#47430) nor int8 (`int-quantized`) experts
(it looks for `weight_packed` only, so the merge gets no tensors). Such a checkpoint is dequantized first by
compressed-tensors' own model-free dequantizer into a dense copy, which transformers loads as a plain model."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bot.workers.validate_common import (
    Stopwatch, batch1_summary, batched_summary, cpu_name, current_rss_bytes, fit_lengths, generation_record,
    measure_speed, read_config, resolve_max_model_len, synthetic_prompts, use_cpu_threads,
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


# A per-expert quantization parameter (`model.layers.0.mlp.experts.3.down_proj.weight_scale`).
_EXPERT_QPARAM = re.compile(r"\.experts\.\d+\.[^.]+\.(weight_packed|weight_scale)$")


def _tensor_names(path: str | Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for shard in sorted(Path(path).glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            names.update(f.keys())
    return names


def has_quantized_experts(path: str | Path) -> bool:
    """A compressed-tensors checkpoint that stores quantized MoE experts one tensor per expert (llm-compressor's
    layout, the one vLLM reads), which transformers fuses on load."""
    qc = read_config(path).get("quantization_config") or {}
    if qc.get("quant_method") != "compressed-tensors":
        return False
    return any(_EXPERT_QPARAM.search(name) for name in _tensor_names(path))


def dequantized_copy(path: str | Path, dest: Path, device: str) -> str:
    """Dequantize a compressed-tensors checkpoint into `dest` (dense weights, no quantization_config, every
    other file copied) with compressed-tensors' `convert_checkpoint` + `CompressedTensorsDequantizer`; returns
    a note for the load record. Tensors without a `weight_scale` (norms, embeddings, ignored layers) are
    passed through: the dequantizer would otherwise take every `weight` under a `Linear` target for an
    int8 one and ask for its scale."""
    import torch
    from compressed_tensors import __version__ as ct_version
    from compressed_tensors.entrypoints.convert import CompressedTensorsDequantizer, convert_checkpoint

    names = _tensor_names(path)
    plain = sorted(n[: -len(".weight")] for n in names if n.endswith(".weight") and n + "_scale" not in names)
    config = read_config(path)
    dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "bfloat16"), torch.bfloat16)
    converter = CompressedTensorsDequantizer(str(path), ignore=plain, dtype=dtype)
    convert_checkpoint(str(path), str(dest), converter=converter, device="cuda" if device.startswith("cuda") else "cpu")
    name = str(dtype).replace("torch.", "")
    return (f"compressed-tensors checkpoint with quantized MoE experts, dequantized to dense {name} by "
            f"compressed-tensors {ct_version} before loading (activations not quantized; transformers cannot "
            "decompress these experts itself)")


def loadable_path(path: str | Path, scratch: Path, device: str) -> tuple[str, str | None]:
    """The directory transformers should load for `path`, and a note when it is a dequantized copy."""
    if not has_quantized_experts(path):
        return str(path), None
    dest = scratch / "dequantized"
    note = dequantized_copy(path, dest, device)
    return str(dest), note


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
    scratch = Path(tempfile.mkdtemp(prefix="bot-hf-load-"))
    note = None
    try:
        path, note = loadable_path(path, scratch, device)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(job.get("dtype", "auto")),
                                                     trust_remote_code=trust, use_safetensors=True)
        model.to(device).eval()
    except Exception as exc:  # noqa: BLE001 - a model that does not load is a finding, recorded as such
        return {"ok": False, "backend": "hf", "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc(limit=6)[-4000:]}, None, None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the loaded weights are in memory (or a still-open mapping)
    seconds = watch.seconds()
    if device == "cuda":
        memory = int(torch.cuda.max_memory_allocated())
    else:
        rss1 = current_rss_bytes()
        memory = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    max_len = resolve_max_model_len((job.get("speed") or {}).get("max_model_len"), read_config(job["model_path"]))
    return {"ok": True, "backend": "hf", "load_time_s": seconds, "memory_bytes": memory, "max_model_len": max_len,
            "kernel": note or _kernel_note(model)}, model, tok


def _encode(tok, prompt: str) -> tuple[list[int], bool]:
    """The prompt's token ids, through the chat template when the tokenizer has one."""
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        return list(ids), True
    return list(tok(prompt)["input_ids"]), False


def _eos_ids(model, tok) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    return ids


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """A row of a batched greedy run as a run of its own would return it: up to and including its first EOS (the
    batch pads a finished row until the longest one ends)."""
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def generate(model, tok, job: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Greedy generations for the job's prompts, all in one left-padded batch (one decode loop instead of one per
    prompt: on a CPU each step costs about the same for one row as for a few, so three prompts take a third of
    the time). Each row's attention mask hides its padding, and a row ends at its first EOS as alone."""
    import torch

    device = job["device"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded = [_encode(tok, prompt) for prompt in job["prompts"]]
    if not encoded:
        return [], True
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.tensor([[pad] * (width - len(row)) + row for row, _ in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row, _ in encoded], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=int(job["max_new_tokens"]),
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=pad)
    eos = _eos_ids(model, tok)
    steps = out.logits or ()
    records = []
    for row, (prompt, _) in enumerate(zip(job["prompts"], encoded)):
        new = _until_eos(out.sequences[row, width:].tolist(), eos)
        nonfinite = any(not bool(torch.isfinite(step[row]).all()) for step in steps[: len(new)])
        text = tok.decode(new, skip_special_tokens=True)
        records.append(generation_record(prompt, text, new, nonfinite_logits=nonfinite))
    return records, all(templated for _, templated in encoded)


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
    if device == "cpu":
        settings["threads"] = int(torch.get_num_threads())
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
    use_cpu_threads(job, job["device"])
    load_rec, model, tok = load(job)
    result["load"] = load_rec
    if model is None:
        return result
    result["generations"], result["chat_template_applied"] = generate(model, tok, job)
    if job.get("speed"):
        result["speed"] = measure_speed(speed, model, tok, job, load_rec.get("max_model_len"))
    return result


def close(_handle: Any = None) -> None:
    """Nothing to shut down: the model lives in this process."""
