"""Do a run's checkpoints load and generate in vLLM? One JSON line per variant (GPU host, serve environment).

    python benchmarks/gpu/moe_check.py RUN_DIR [--variant ID ...] [--base] [--out FILE.jsonl] [--timeout S]

Made for the Qwen3-MoE checkpoints (W4A16-AWQ: asymmetric int4 experts with zero points; W8A8-INT8: int8
experts), which transformers 5.17 cannot decompress itself; this checks vLLM 0.26 reads the same files. Each
variant `RUN_DIR/<id>/model/` (and with --base the base model the run recorded) is loaded in its own process with
`vllm.LLM(model=..., enforce_eager=True, max_model_len=512)`, generates 8 greedy tokens, and reports
{"variant", "path", "ok", "error", "kernel", "kernels", "text", "token_ids", "load_s", "vllm"}. `kernel` is what
vLLM chose per quantized layer (scheme -> kernel class, the MoE method included), read as `bot validate` reads it.
A fresh process per variant means a crash or a GPU memory leak in one cannot spoil the next. Exit 1 if any failed.

A run to check, in the quantize environment (a few minutes on a GPU host; BOT_BUILD_TOKENIZER=.gput offline):
    python -m bot.workers.build_model shape /tmp/moe/base --shape tiny-qwen3-moe
    bot quantize /tmp/moe/base -r w4a16-awq -r w8a8-int8 --calibration bot/data/calibration.jsonl \\
        --samples 16 --seq-len 128 --runs-dir /tmp/moe/runs
then, in the serve environment: python benchmarks/gpu/moe_check.py /tmp/moe/runs/local--base@* --base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"


def one(path: str) -> dict:
    """Runs in the child: load, generate 8 tokens, describe the kernels."""
    sys.path.insert(0, str(REPO))
    from bot.workers.vllm_backend import ENGINE_ENV, describe_kernels, kernel_summary

    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    import vllm
    from vllm import LLM, SamplingParams

    rec: dict = {"path": path, "ok": False, "error": None, "kernel": None, "vllm": vllm.__version__}
    started = time.perf_counter()
    try:
        llm = LLM(model=path, enforce_eager=True, max_model_len=512)
    except Exception as exc:  # noqa: BLE001 - the finding
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        return rec
    rec["load_s"] = round(time.perf_counter() - started, 1)
    try:
        counts = llm.apply_model(describe_kernels)[0]
        rec["kernels"], rec["kernel"] = counts, kernel_summary(counts)
    except Exception as exc:  # noqa: BLE001 - informative only
        rec["kernel_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        out = llm.generate([PROMPT], SamplingParams(max_tokens=8, temperature=0.0))[0].outputs[0]
        rec.update(ok=len(out.token_ids) > 0, text=out.text, token_ids=list(out.token_ids))
        if not out.token_ids:
            rec["error"] = "no tokens generated"
    except Exception as exc:  # noqa: BLE001 - the finding
        rec["error"] = f"generate: {type(exc).__name__}: {exc}"[:2000]
    return rec


def targets(run: Path, variants: list[str], base: bool) -> list[tuple[str, Path]]:
    found = sorted(p.parent.parent.name for p in run.glob("*/model/config.json"))
    if variants:
        missing = sorted(set(variants) - set(found))
        if missing:
            raise SystemExit(f"error: no checkpoint for {', '.join(missing)} in {run} (have: {', '.join(found)})")
        found = [v for v in found if v in variants]
    out = [(v, run / v / "model") for v in found]
    if base:
        manifest = json.loads((run / "base" / "manifest.json").read_text(encoding="utf-8"))
        out.insert(0, ("base", Path(manifest["base"]["path"])))
    if not out:
        raise SystemExit(f"error: no checkpoints under {run} (expected RUN_DIR/<variant>/model/config.json)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="moe_check")
    ap.add_argument("run_dir", type=Path, nargs="?")
    ap.add_argument("--variant", action="append", default=[], help="only these variants (repeatable)")
    ap.add_argument("--base", action="store_true", help="also the base model the run recorded")
    ap.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: the child process
    args = ap.parse_args(argv)
    if args.one:
        print("MOE_CHECK " + json.dumps(one(args.one)), flush=True)
        return 0
    if args.run_dir is None or not args.run_dir.is_dir():
        raise SystemExit(f"error: {args.run_dir} is not a run directory (hint: runs/<org>--<name>@<sha12>)")
    failures = 0
    for name, path in targets(args.run_dir, args.variant, args.base):
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True,
                                  timeout=args.timeout)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MOE_CHECK ")]
            rec = json.loads(lines[-1][len("MOE_CHECK "):]) if lines else {
                "path": str(path), "ok": False, "kernel": None,
                "error": f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:1500]}
        except subprocess.TimeoutExpired:
            rec = {"path": str(path), "ok": False, "kernel": None, "error": f"timed out after {args.timeout} s"}
        line = json.dumps({"variant": name, **rec})
        print(line, flush=True)
        if args.out:
            with args.out.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        failures += not rec["ok"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
