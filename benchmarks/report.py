"""Summarise run directories (manifests only) into a JSON file and markdown tables.

    python benchmarks/report.py OUT_STEM RUN_DIR [RUN_DIR ...] [--title TITLE] [--command CMD]

Every number comes from the manifests the bot wrote during the run; nothing is computed here except ratios
that the validate stage also records. Missing measurements are written as "not measured".
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# Absolute directories of the GPU host (model and run folders) are not part of the evidence: written as $WORK.
_HOST_PATH = re.compile(r"/[\w.-]+(?:/[\w.-]+)*?/(models|runs)/")


_REPO_PATH = re.compile(r"/[\w.-]+(?:/[\w.-]+)*?/bot/data/")


def scrub(text: str) -> str:
    return _REPO_PATH.sub("$REPO/bot/data/", _HOST_PATH.sub(r"$WORK/\1/", text))

ORDER = ["base", "w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4"]


def _mb(n):
    return f"{n / 1e6:.1f}" if isinstance(n, (int, float)) else "not measured"


def _f(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "not measured"


def load_run(run: Path) -> dict:
    base = json.loads((run / "base" / "manifest.json").read_text())
    variants = {}
    for path in sorted(run.glob("*/manifest.json")):
        if path.parent.name != "base":
            variants[path.parent.name] = json.loads(path.read_text())
    return {"run_id": run.name, "base": base, "variants": variants}


def quantize_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid in ORDER[1:]:
        m = data["variants"].get(vid)
        if not m:
            continue
        q = m["quantize"]
        cal = q.get("calibration") or {}
        rows.append([vid, q["status"], _f(q.get("wall_time_s")), _f((q.get("timings") or {}).get("oneshot")),
                     _mb(q.get("peak_gpu_memory_bytes")), _mb(q.get("size_bytes")),
                     f"{cal.get('samples')} x {cal.get('seq_len')}" if cal else "none",
                     str(cal.get("batch_size", 1)) if cal else "-",
                     str((q.get("applied") or {}).get("group_size") or "channel")])
    return rows


def validate_rows(data: dict) -> list[list[str]]:
    rows = []
    base_v = data["base"].get("validate") or {}
    entries = [("base", base_v, None)] + [(v, (data["variants"].get(v) or {}).get("validate"), data["variants"].get(v))
                                           for v in ORDER[1:]]
    for vid, v, m in entries:
        if not v:
            continue
        speed = v.get("speed") or {}
        b1, bb = speed.get("batch1") or {}, speed.get("batched") or {}
        acc = {t["task"]: t["value"] for t in (v.get("accuracy") or {}).get("tasks", [])}
        comp = (v.get("comparison") or {}) if vid != "base" else {}
        gate = (v.get("gate") or {}) if vid != "base" else {}
        rows.append([
            vid, v.get("status", "?"), (v.get("load") or {}).get("kernel") or ("bf16" if vid == "base" else "not recorded"),
            _f((v.get("load") or {}).get("load_time_s")), _f(b1.get("decode_tokens_per_s")), _f(b1.get("ttft_ms")),
            _f(bb.get("output_tokens_per_s"), "{:.0f}"),
            _f(acc.get("bot_mc_facts"), "{:.3f}"), _f(acc.get("bot_wikitext_mini"), "{:.2f}"),
            _f(comp.get("mean_recovery")) if vid != "base" else "-",
            ("passed" if gate.get("passed") else "rejected: " + "; ".join(gate.get("reasons", []))) if gate else "-",
        ])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_stem", type=Path)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--title", default="bot run report")
    args = ap.parse_args()
    runs = [load_run(r) for r in args.runs]
    args.out_stem.with_suffix(".json").write_text(scrub(json.dumps(runs, indent=1)) + "\n")
    parts = [f"# {args.title}\n"]
    for data in runs:
        b = data["base"]["base"]
        parts.append(f"## {data['run_id']}: {b['model_id']} ({b['architecture']}, {b['num_params'] / 1e6:.0f}M parameters)\n")
        q = quantize_rows(data)
        if q:
            parts.append("### Quantize\n")
            parts.append(table(["recipe", "status", "wall time (s)", "oneshot (s)", "peak GPU memory (MB)",
                                "size on disk (MB)", "calibration", "calibration batch", "group"], q) + "\n")
        v = validate_rows(data)
        if v:
            parts.append("### Validate\n")
            parts.append(table(["model", "status", "vLLM kernel", "load (s)", "bs1 decode tok/s", "TTFT ms",
                                "batched out tok/s", "bot_mc_facts acc", "bot_wikitext_mini word ppl",
                                "mean recovery %", "gate"], v) + "\n")
    args.out_stem.with_suffix(".md").write_text(scrub("\n".join(parts)))


if __name__ == "__main__":
    main()
