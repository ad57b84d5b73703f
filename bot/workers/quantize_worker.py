"""Quantize worker (quantize environment: llm-compressor 0.14, compressed-tensors 0.19, auto-round).

    python -m bot.workers.quantize_worker JOB.json

The base model is loaded once; each variant quantizes a fresh copy with the exact llm-compressor recipe YAML that
the bot resolved, saves it compressed into its `out_dir` (the run directory's `model.partial/`), and writes its
result JSON (status, timings, memory, versions, calibration fingerprint, applied mappings). One failing variant
does not stop the others. Progress lines on stdout are JSON: {"event": ..., "variant": ...}.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import platform
import re
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bot.workers.calibration import CalibrationCache
from bot.workers.validate_common import use_cpu_threads, versions as library_versions

COPY_FROM_BASE = ("generation_config.json", "chat_template.jinja", "chat_template.json")
_VERSIONED = ("torch", "transformers", "llmcompressor", "compressed-tensors", "auto-round", "datasets", "accelerate")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


_LAYER = re.compile(r"\((\d+)/(\d+)\): Calibrating")
_current: dict[str, str] = {}  # the variant being quantized, for the layer events


def layer_events() -> bool:
    """An event per decoder layer: llm-compressor's sequential pipeline calibrates one subgraph (a decoder layer)
    at a time and labels each pass '(i/n): Calibrating'. Without that hook (another llm-compressor) no layer events."""
    try:
        from llmcompressor.pipelines.sequential import pipeline as seq
    except ImportError:
        return False
    original = getattr(seq, "_get_batches", None)
    if original is None:
        return False

    def batches(activations, num_batches, input_names, desc, *args, **kwargs):
        match = _LAYER.match(str(desc))
        if match and _current.get("variant"):
            emit("layer", variant=_current["variant"], index=int(match[1]), total=int(match[2]))
        return original(activations, num_batches, input_names, desc, *args, **kwargs)

    seq._get_batches = batches
    return True


def versions() -> dict[str, str]:
    return library_versions(_VERSIONED)


def hardware(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "name": props.name, "count": torch.cuda.device_count(),
                "compute_capability": f"{props.major}.{props.minor}", "memory_bytes": props.total_memory,
                "driver": _driver()}
    return {"device": "cpu", "name": platform.processor() or platform.machine(), "count": 1}


def _driver() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _cpu_quirks() -> None:
    """llm-compressor's AWQ pins its intermediates cache for faster host-to-GPU copies; without an accelerator
    `pin_memory` fails ("Cannot access accelerator device"). Pinning is only an optimisation: skip it on CPU."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None  # type: ignore[method-assign]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _awq_mappings(arch: str) -> list[str] | None:
    try:
        from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY, default_mappings
    except ImportError:
        return None
    maps = AWQ_MAPPING_REGISTRY.get(arch, default_mappings)
    return [f"{m.smooth_layer} -> {', '.join(m.balance_layers)}" for m in maps]


def fits_on_gpu(model_bytes: int, free_bytes: int, headroom: float = 0.8) -> bool:
    """Whether a data-free recipe may move the whole model to the GPU. A model larger than that stays in CPU
    memory and llm-compressor onloads one module at a time (as the calibrated, sequential pipeline always does)."""
    return model_bytes <= free_bytes * headroom


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def compute_dtype(device: str, stored: Any) -> Any:
    """What a calibrated recipe's passes compute in (a data-free one quantizes in the checkpoint's dtype, as on a
    GPU). On a CPU float32 for a 16-bit checkpoint: a CPU without native bfloat16 matmul (AVX2 only, as this
    project's 2-core machines) runs bf16 products about 8.5 times slower (18.5 vs 157 GFLOP/s), and float32 holds
    every bf16 weight exactly. On a GPU the checkpoint's own dtype. (The validate stage decides its own compute
    dtype, per call, in bot.stages.validate.plan.compute_dtype: another fact, for another interpreter.)"""
    import torch

    if device == "cpu" and stored in (torch.bfloat16, torch.float16):
        return torch.float32
    return stored


def store_in(model: Any, dtype: Any, base_names: set[str]) -> None:
    """Back to the checkpoint's dtype before the compressed save, after a float32 calibration, as the same recipe
    stores a 16-bit run: the base's own tensors (`base_names`) and the per-group/channel scales that follow the
    weight's dtype; the global scales stay float32, as llm-compressor creates them. The weights the save compresses
    stay float32, so that the save's round(weight / scale), with the scale already in `dtype`, gives the grid values
    the algorithm chose (a bf16-rounded int8 weight over a bf16-rounded scale can cross a rounding boundary)."""
    import torch

    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        compressed = scheme is not None and getattr(scheme, "weights", None) is not None
        for pname, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.dtype != torch.float32 or (compressed and pname == "weight"):
                continue
            full = f"{name}.{pname}" if name else pname
            if full in base_names or (pname.endswith("_scale") and not pname.endswith("global_scale")):
                tensor.data = tensor.data.to(dtype)
    model.config.dtype = dtype


class Phases:
    """Wall time per named phase of one variant (copy, calibration data, oneshot, save): where the time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def quantize_one(master, tokenizer, cal: CalibrationCache | None, job: dict[str, Any], variant: dict[str, Any],
                 device: str) -> dict[str, Any]:
    import torch
    from llmcompressor import oneshot

    out_dir = Path(variant["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    phases = Phases()
    stored = master.dtype
    # data-free: nothing to calibrate; AutoRound tunes in float32 on a CPU by itself (and stores its norms so)
    own = not variant.get("samples") or "AutoRoundModifier" in variant["llmcompressor_yaml"]
    compute = stored if own else compute_dtype(device, stored)
    with phases("copy"):
        model = copy.deepcopy(master)
        if compute != stored:
            model.to(compute)
            model.config.dtype = compute  # modules made during oneshot (linearized MoE experts) follow the config
    kwargs: dict[str, Any] = {}
    cal_info = None
    if variant.get("samples"):
        with phases("calibration_data"):  # cached per (samples, seq_len): near zero after the first recipe
            ds, cal_info = cal.get(int(variant["samples"]), int(variant["seq_len"]), bool(variant.get("pack")))
        kwargs.update(dataset=ds, num_calibration_samples=cal_info["samples"], max_seq_length=cal_info["seq_len"])
        if cal_info["batch_size"] > 1:  # rows already shuffled with the seed: llm-compressor groups them by length
            kwargs.update(batch_size=cal_info["batch_size"], shuffle_calibration_samples=False)
    elif device == "cuda" and fits_on_gpu(_param_bytes(model), torch.cuda.mem_get_info()[0]):
        with phases("to_gpu"):
            model.to("cuda")  # data-free: quantize the weights where they are fast to read
    with phases("oneshot"):
        model = oneshot(model=model, recipe=variant["llmcompressor_yaml"], **kwargs)
    if compute != stored:
        store_in(model, stored, {n for n, _ in master.named_parameters()} | {n for n, _ in master.named_buffers()})
    with phases("save"):
        model.save_pretrained(out_dir, save_compressed=True)
        tokenizer.save_pretrained(out_dir)
        base = Path(job["model_path"])
        for name in [*COPY_FROM_BASE, *job.get("license_files", [])]:
            if (base / name).is_file() and not (out_dir / name).exists():
                shutil.copy2(base / name, out_dir / name)
    wall = time.perf_counter() - started
    config = json.loads((out_dir / "config.json").read_text())
    applied: dict[str, Any] = {}
    if "AWQModifier" in variant["llmcompressor_yaml"]:
        applied["awq_mappings"] = _awq_mappings(job.get("architecture", ""))
    if compute != stored:  # calibrated in float32 on the CPU, stored in the base's dtype
        applied["compute_dtype"] = str(compute).replace("torch.", "")
    del model
    gc.collect()
    result = {
        "status": "done", "wall_time_s": round(wall, 2), "size_bytes": dir_size(out_dir),
        "files": sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()),
        "quantization_config": config.get("quantization_config", {}), "calibration": cal_info,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "applied": applied,
        "timings": phases.seconds,
    }
    if device == "cuda":
        result["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        torch.cuda.empty_cache()
    return result


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = job.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        _cpu_quirks()
    threads = use_cpu_threads(job, device)
    layer_events()
    common = {"versions": versions(), "hardware": hardware(device)}
    emit("load", model=job["model_path"])
    started = time.perf_counter()
    trust = bool(job.get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(job["model_path"], trust_remote_code=trust)
    master = AutoModelForCausalLM.from_pretrained(job["model_path"], dtype="auto", trust_remote_code=trust,
                                                  use_safetensors=True)
    master.eval()
    load_s = round(time.perf_counter() - started, 2)  # the base is read once per worker, for all its variants
    emit("loaded", seconds=load_s)
    cal = CalibrationCache(job["calibration"], tokenizer) if job.get("calibration") else None
    failures = 0
    for variant in job["variants"]:
        emit("start", variant=variant["recipe_id"])
        _current["variant"] = variant["recipe_id"]
        try:
            result = quantize_one(master, tokenizer, cal, job, variant, device)
            result["timings"]["worker_load_base"] = load_s
            if threads is not None:  # calibration numerics follow the thread count (reduction order): recorded
                result["applied"]["cpu_threads"] = threads
        except Exception as exc:  # noqa: BLE001 - one variant's failure is recorded, the others go on
            failures += 1
            tb = traceback.format_exc(limit=8)
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tb[-6000:]}
            shutil.rmtree(variant["out_dir"], ignore_errors=True)
        result.update(common)
        Path(variant["result_path"]).write_text(json.dumps(result, indent=2, default=str))
        emit("end", variant=variant["recipe_id"], status=result["status"], seconds=result.get("wall_time_s"))
    return 0 if failures == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
