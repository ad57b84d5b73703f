"""Fidelity worker: how far each variant's next-token distributions are from its base's on held-out text (never
the calibration text). Transformers backend; compressed-tensors variants are decompressed to dense weights on load
by `hf_backend.load` (the same loading code as validation).

    python -m bot.workers.fidelity_worker JOB.json

Job: {"base_path", "variants": [{"name", "model_path"}], "device": "cpu"|"cuda", "dtype": "auto"|"bfloat16"|
      "float32", "text_path", "tokens" (scored positions budget), "window" (tokens per forward pass),
      "trust_remote_code", "result_path", "base_cache_bytes"? (default 8 GiB)}
Result: {"status": "done"|"failed", "text", "text_fingerprint", "tokens", "windows", "window", "dtype",
         "bos_per_window", "base_logits": "cached"|"recomputed", "base": {"ppl", "nonfinite", "seconds"},
         "variants": {NAME: FidelityRecord fields}, "versions", "hardware", "wall_time_s", "error"?}
Written (atomically) before the process exits; exit 0 done, 3 failed, 2 a job that names something unusable.

Text. Tokenized once, as plain text (no chat template). When the tokenizer opens a sequence with special tokens
(Llama's BOS; SmolLM2 adds none) they head every window, so each window starts the way the tokenizer starts a
sequence; the text tokens are cut into non-overlapping windows until `tokens` positions are scored (position t
predicts token t+1; a window of L tokens scores L - 1). A text too short for the budget scores what it has.

Statistics (bot.workers.fidelity_math): KL(base || variant) over the full vocabulary, exact, log_softmax in
float32, float64 sums; top-1 agreement; perplexity of each and their ratio, all over the positions whose logits are
finite in both models; positions with NaN/inf logits are counted (`nonfinite`) and excluded.

Memory. The base is loaded once and its logits of every window are kept on the CPU in the compute dtype (exactly
what a recomputation gives) when they fit `base_cache_bytes` (8B model, 128k vocabulary, 4096 positions: 1 GiB in
bf16); the base is then freed, so one model is resident at a time. A larger budget keeps the base resident and
recomputes its logits per window (base + one decompressed variant: 32 GB for an 8B model on an H200). Each variant
is freed (and the CUDA cache emptied) before the next.

dtype. Base and variant run in the same dtype, recorded; a variant that loads in another dtype is an error, not a
comparison. "auto": bfloat16 on cuda (the checkpoints' dtype, and what vLLM serves); on cpu float32, unless a
variant of the job is NVFP4, which reloads in transformers only in bf16: then the whole job runs in bfloat16 (the
stage may give NVFP4 a job of its own to keep the others in float32). Measured on cpu (SmolLM2-135M vs its
FP8-Dynamic variant, heldout-v1, 4096 positions, windows of 512, 2 shared AVX2 cores without native bf16):
float32 KL mean 0.0256 nats, top-1 90.3 %, ppl ratio 1.024 in 552 s (215 s of CPU); bfloat16 0.0283, 90.1 %,
1.023 in 1872 s (472 s of CPU). float32 on the CPU is 2-3x faster and leaves out bf16's own rounding: the base in
bfloat16 against itself in float32 alone gives KL 0.0011 nats and top-1 97.1 % (ppl ratio 1.0014).

Deterministic: fixed seed, torch deterministic algorithms (warn only), no sampling, fixed window order, so the same
inputs on the same machine give identical numbers. Nothing is rounded here.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from bot.modelconfig import reloads_only_in_bf16
from bot.workers.validate_common import Stopwatch, exit_now, use_cpu_threads, versions, write_result

DTYPES = ("auto", "bfloat16", "float32")
DEFAULT_CACHE_BYTES = 8 * 1024**3
# bot.manifest.FidelityRecord's fields (workers import no bot code outside bot.workers; the tests hold the two equal)
RECORD_DEFAULTS: dict[str, Any] = {
    "kl_mean": None, "kl_p99": None, "kl_max": None, "top1_agreement": None, "ppl_base": None, "ppl_variant": None,
    "ppl_ratio": None, "tokens": 0, "windows": 0, "window": None, "nonfinite": 0, "text": "", "text_fingerprint": "",
    "vocab": "full", "topk": None, "truncation_bound": None, "backend": "hf", "device": "", "dtype": "",
    "seconds": None, "error": None}
REQUIRED = ("base_path", "variants", "device", "text_path", "tokens", "window", "result_path")


class JobError(ValueError):
    """The job names something unusable: one line, exit 2."""


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def resolve_dtype(requested: str, device: str, variant_paths: list[str]) -> str:
    """"auto": bfloat16 on cuda; on cpu float32, or bfloat16 when a variant is NVFP4 (see the module docstring)."""
    if requested not in DTYPES:
        raise JobError(f"dtype {requested!r} is not one of {', '.join(DTYPES)}")
    if requested != "auto":
        return requested
    if device == "cuda" or any(reloads_only_in_bf16(p) for p in variant_paths):
        return "bfloat16"
    return "float32"


def check_job(job: Any) -> None:
    if not isinstance(job, dict):
        raise JobError("the job must be a JSON object")
    missing = [k for k in REQUIRED if k not in job]
    if missing:
        raise JobError(f"the job lacks {', '.join(missing)}")
    if job["device"] not in ("cpu", "cuda"):
        raise JobError(f"device {job['device']!r} is not 'cpu' or 'cuda'")
    if not Path(job["text_path"]).is_file():
        raise JobError(f"text_path {job['text_path']} is not a file")
    for key, low in (("tokens", 1), ("window", 2)):
        if not isinstance(job[key], int) or job[key] < low:
            raise JobError(f"{key} must be an integer >= {low}, got {job[key]!r}")
    names = [v.get("name") for v in job["variants"]]
    if any(not n for n in names) or len(set(names)) != len(names) or any("model_path" not in v for v in job["variants"]):
        raise JobError("each variant needs a unique 'name' and a 'model_path'")


def read_text(path: str | Path) -> tuple[str, str, str]:
    """(text, name, fingerprint 'sha256:<hex>' of the file's bytes)."""
    raw = Path(path).read_bytes()
    return raw.decode("utf-8"), Path(path).stem, "sha256:" + hashlib.sha256(raw).hexdigest()


def tokenize(tok, text: str) -> tuple[list[int], list[int]]:
    """(special tokens the tokenizer opens a sequence with, the text's own ids)."""
    with_special = list(tok(text)["input_ids"])
    plain = list(tok(text, add_special_tokens=False)["input_ids"])
    k = len(with_special) - len(plain)
    prefix = with_special[:k] if k > 0 and with_special[k:] == plain else []
    return prefix, plain


def hardware(device: str) -> dict[str, Any]:
    from bot.workers.hf_backend import hardware as hf_hardware

    return hf_hardware(device)


def load_model(path: str, job: dict[str, Any], dtype: str) -> tuple[dict[str, Any], Any, Any]:
    from bot.workers.hf_backend import load

    if dtype != "bfloat16" and reloads_only_in_bf16(path):
        return {"ok": False, "error": f"an NVFP4 checkpoint reloads in transformers only in bfloat16, not {dtype}: "
                                      "use dtype auto or bfloat16"}, None, None
    rec, model, tok = load({"model_path": path, "device": job["device"], "dtype": dtype,
                            "trust_remote_code": bool(job.get("trust_remote_code", False))})
    if model is not None:
        got = str(model.dtype).replace("torch.", "")
        if got != dtype:
            free(model)
            return {"ok": False, "error": f"loaded in {got}, not {dtype}: base and variant must run in the same "
                                          "dtype (NVFP4 reloads only in bfloat16: use dtype auto or bfloat16)"}, None, None
    return rec, model, tok


def free(model: Any) -> None:
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def window_logits(model, ids: list[int], device: str):
    """Logits [len(ids) - 1, V] (compute dtype) predicting ids[1:], and the targets [len(ids) - 1] (CPU)."""
    import torch

    x = torch.tensor([ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=x, use_cache=False).logits[0, :-1]
    return logits, x[0, 1:].cpu()


def vocab_rows(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


class Windows:
    """The job's windows (token ids per forward pass) and, once the base ran, its logits or the base itself."""

    def __init__(self, prefix: list[int], text_ids: list[int], window: int, tokens: int) -> None:
        from bot.workers.fidelity_math import plan_windows

        self.prefix = prefix
        self.inputs = [prefix + text_ids[s:e] for s, e in plan_windows(len(text_ids), window, tokens, len(prefix))]
        self.positions = sum(len(w) - 1 for w in self.inputs)
        self.cache: list[Any] | None = None
        self.base_model: Any = None

    def base_logits(self, i: int, device: str):
        if self.cache is not None:
            return self.cache[i].to(device)
        return window_logits(self.base_model, self.inputs[i], device)[0]


def run_base(job: dict[str, Any], dtype: str, text: str) -> tuple[dict[str, Any], Windows]:
    import torch

    from bot.workers.fidelity_math import finite_rows, perplexity, target_nll

    device = job["device"]
    watch = Stopwatch()
    rec, model, tok = load_model(job["base_path"], job, dtype)  # tok: the base's, for every model
    if model is None:
        raise RuntimeError(f"the base did not load: {rec.get('error')}")
    prefix, text_ids = tokenize(tok, text)
    wins = Windows(prefix, text_ids, int(job["window"]), int(job["tokens"]))
    if not wins.inputs:
        raise RuntimeError(f"the text gives no scored position ({len(text_ids)} tokens)")
    itemsize = torch.empty(0, dtype=model.dtype).element_size()
    keep = wins.positions * vocab_rows(model) * itemsize <= int(job.get("base_cache_bytes", DEFAULT_CACHE_BYTES))
    cache, nlls, nonfinite = [], [], 0
    for ids in wins.inputs:
        logits, targets = window_logits(model, ids, device)
        ok = finite_rows(logits)
        nonfinite += int((~ok).sum())
        nlls.append(target_nll(logits[ok], targets.to(logits.device)[ok]).cpu())
        if keep:
            cache.append(logits.cpu())
        del logits
    if keep:
        wins.cache = cache
        free(model)
    else:
        wins.base_model = model
    base = {"ppl": perplexity(nlls), "nonfinite": nonfinite, "seconds": watch.seconds(),
            "load_time_s": rec.get("load_time_s"), "memory_bytes": rec.get("memory_bytes")}
    return base, wins


def run_variant(job: dict[str, Any], variant: dict[str, Any], dtype: str, wins: Windows,
                common: dict[str, Any]) -> dict[str, Any]:
    from bot.workers.fidelity_math import Accumulator, position_stats

    device = job["device"]
    watch = Stopwatch()
    rec: dict[str, Any] = {**RECORD_DEFAULTS, **common}
    try:
        load_rec, model, _tok = load_model(variant["model_path"], job, dtype)
        if model is None:
            rec["error"] = load_rec.get("error") or "did not load"
        else:
            acc = Accumulator()
            for i, ids in enumerate(wins.inputs):
                logits, targets = window_logits(model, ids, device)
                base = wins.base_logits(i, device)
                acc.add(position_stats(base, logits, targets.to(device)), len(ids) - 1)
                del logits, base
            free(model)
            rec.update(acc.summary())
    except Exception as exc:  # noqa: BLE001 - one variant failing does not stop the others
        traceback.print_exc()
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    rec["seconds"] = watch.seconds()
    return rec


def run(job: dict[str, Any]) -> dict[str, Any]:
    check_job(job)
    dtype = resolve_dtype(job.get("dtype", "auto"), job["device"], [v["model_path"] for v in job["variants"]])
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    use_cpu_threads(job, job["device"])
    text, name, fingerprint = read_text(job["text_path"])
    result: dict[str, Any] = {"text": name, "text_fingerprint": fingerprint, "window": int(job["window"]),
                              "dtype": dtype, "hardware": hardware(job["device"])}
    emit("base", model=job["base_path"])
    base, wins = run_base(job, dtype, text)
    result.update(tokens=wins.positions, windows=len(wins.inputs), bos_per_window=bool(wins.prefix),
                  base_logits="cached" if wins.cache is not None else "recomputed", base=base)
    common = {"text": name, "text_fingerprint": fingerprint, "window": int(job["window"]), "vocab": "full",
              "topk": None, "truncation_bound": None, "backend": "hf", "device": job["device"], "dtype": dtype}
    result["variants"] = {}
    for variant in job["variants"]:
        emit("variant", name=variant["name"], model=variant["model_path"])
        result["variants"][variant["name"]] = run_variant(job, variant, dtype, wins, common)
    return result


def main(argv: list[str]) -> int:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; before CUDA starts
    if len(argv) != 1:
        print("error: usage: python -m bot.workers.fidelity_worker JOB.json", file=sys.stderr)
        return 2
    try:
        job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read the job {argv[0]}: {exc}", file=sys.stderr)
        return 2
    watch = Stopwatch()
    code = 0
    try:
        result = run(job)
        result["status"] = "done"
    except JobError as exc:
        result, code = {"status": "failed", "error": str(exc)}, 2
        print(f"error: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the stage reads the failure from the result file
        traceback.print_exc()
        result, code = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "traceback": traceback.format_exc(limit=10)[-6000:]}, 3
    result["versions"] = versions()
    result["wall_time_s"] = watch.seconds()
    if isinstance(job, dict) and job.get("result_path"):
        write_result(job["result_path"], result)
    emit("end", status=result["status"], seconds=result["wall_time_s"])
    return code


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
