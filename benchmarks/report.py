"""Summarise run directories (manifests only) into a JSON file and markdown tables.

    python benchmarks/report.py OUT_STEM RUN_DIR [RUN_DIR ...] [--title TITLE] [--section quantize|validate|all]
                                [--env ENV_TXT] [--notes-file NOTES_MD]

Every number comes from the manifests the bot wrote during the run; nothing is computed here except the ratios
that the validate stage also records (read from its `comparison`). Missing measurements are written as
"not measured". `--section quantize` writes the quantize table and the vLLM load check; `validate` the load,
speed and accuracy tables; `all` (the default) both.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# Absolute directories of the GPU host (model and run folders) are not part of the evidence: written as $WORK.
_HOST_PATH = re.compile(r"/[\w.-]+(?:/[\w.-]+)*?/(models|runs)/")
_REPO_PATH = re.compile(r"/[\w.-]+(?:/[\w.-]+)*?/bot/data/")
NM = "not measured"


def scrub(text: str) -> str:
    return _REPO_PATH.sub("$REPO/bot/data/", _HOST_PATH.sub(r"$WORK/\1/", text))


ORDER = ["base", "w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4"]


def _mb(n):
    return f"{n / 1e6:.1f}" if isinstance(n, (int, float)) else NM


def _gb(n):
    return f"{n / 1e9:.2f}" if isinstance(n, (int, float)) else NM


def _f(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else NM


def load_run(run: Path) -> dict:
    base = json.loads((run / "base" / "manifest.json").read_text())
    variants = {}
    for path in sorted(run.glob("*/manifest.json")):
        if path.parent.name != "base":
            variants[path.parent.name] = json.loads(path.read_text())
    return {"run_id": run.name, "base": base, "variants": variants}


def _validated(data: dict) -> list[tuple[str, dict]]:
    """(model, validate record) for the base and each variant that has one, in recipe order."""
    out = [("base", data["base"].get("validate"))]
    out += [(v, (data["variants"].get(v) or {}).get("validate")) for v in ORDER[1:]]
    return [(vid, v) for vid, v in out if v]


def quantize_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid in ORDER[1:]:
        m = data["variants"].get(vid)
        if not m:
            continue
        q = m["quantize"]
        cal = q.get("calibration") or {}
        status = q["status"] if q["status"] != "failed" else f"failed ({(q.get('error') or '').splitlines()[0][:80]})"
        rows.append([vid, status, _f(q.get("wall_time_s")), _f((q.get("timings") or {}).get("oneshot")),
                     _mb(q.get("peak_gpu_memory_bytes")), _gb(q.get("peak_rss_bytes")), _mb(q.get("size_bytes")),
                     f"{cal.get('samples')} x {cal.get('seq_len')}" if cal else "none",
                     str(cal.get("batch_size", 1)) if cal else "-",
                     str((q.get("applied") or {}).get("group_size") or "channel"),
                     ", ".join(q.get("concurrent_with") or []) or "-"])
    return rows


def load_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid, v in _validated(data):
        load = v.get("load") or {}
        gens = v.get("generations") or []
        ok = sum(1 for g in gens if g.get("ok"))
        problems = sorted({p for g in gens for p in g.get("problems", [])})
        compat = v.get("compat") or {}
        rows.append([vid, v.get("status", "?"), "yes" if load.get("ok") else f"no: {load.get('error') or NM}",
                     load.get("kernel") or ("bf16" if vid == "base" else "not recorded"),
                     _f(load.get("load_time_s")), _gb(load.get("memory_bytes")),
                     f"{ok}/{len(gens)}" + (f" ({', '.join(problems)})" if problems else "") if gens else NM,
                     f"{compat['status']} (sm {compat.get('compute_capability') or '-'})" if compat.get("status") else "-"])
    return rows


def speed_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid, v in _validated(data):
        speed = v.get("speed") or {}
        b1, bb = speed.get("batch1") or {}, speed.get("batched") or {}
        comp = (v.get("comparison") or {}) if vid != "base" else {}
        rows.append([vid, speed.get("label", NM), _f(b1.get("decode_tokens_per_s")), _f(b1.get("ttft_ms")),
                     _f(b1.get("tpot_ms"), "{:.2f}"), _f(bb.get("output_tokens_per_s"), "{:.0f}"),
                     _f(bb.get("requests_per_s"), "{:.2f}"),
                     _f(comp.get("speedup_batch1"), "{:.2f}x") if vid != "base" else "-",
                     _f(comp.get("speedup_batched"), "{:.2f}x") if vid != "base" else "-"])
    return rows


def accuracy_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    metrics: dict[str, str] = {}  # task -> metric, in the order the tasks first appear
    for _, v in _validated(data):
        for t in (v.get("accuracy") or {}).get("tasks", []):
            metrics.setdefault(t["task"], t["metric"])
    if not metrics:
        return [], []
    header = ["model"] + [f"{t} ({m})" for t, m in metrics.items()] + ["mean recovery %", "gate"]
    rows = []
    for vid, v in _validated(data):
        scores = {t["task"]: t for t in (v.get("accuracy") or {}).get("tasks", [])}
        comp = (v.get("comparison") or {}) if vid != "base" else {}
        gate = (v.get("gate") or {}) if vid != "base" else {}
        cells = []
        for t in metrics:
            s = scores.get(t)
            cell = NM if not s else f"{s['value']:.4g}" + (f" ± {s['stderr']:.2g}" if s.get("stderr") else "")
            rec = (comp.get("recovery") or {}).get(t)
            cells.append(cell + (f" ({rec:.1f}%)" if isinstance(rec, (int, float)) else ""))
        verdict = "-" if not gate else ("passed" if gate.get("passed") else "rejected: " + "; ".join(gate["reasons"]))
        rows.append([vid] + cells + [_f(comp.get("mean_recovery")) if vid != "base" else "-", verdict])
    return header, rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _settings(data: dict) -> str:
    for _, v in _validated(data):
        s = (v.get("speed") or {}).get("settings")
        if s:
            return ", ".join(f"{k}={s[k]}" for k in sorted(s) if k != "requested")  # `requested`: the same, as asked
    return NM


def render_run(data: dict, section: str) -> list[str]:
    b = data["base"]["base"]
    parts = [f"## {data['run_id']}: {b['model_id']} ({b['architecture']}, {b['num_params'] / 1e6:.0f}M parameters)\n"]
    q = quantize_rows(data)
    if q and section in ("quantize", "all"):
        parts.append("### Quantize\n")
        parts.append(table(["recipe", "status", "wall time (s)", "oneshot (s)", "peak GPU memory (MB)",
                            "peak host RSS (GB)", "size on disk (MB)", "calibration", "calibration batch", "group",
                            "alongside (same run)"], q) + "\n")
    ld = load_rows(data)
    if ld:
        parts.append("### Load in the serving engine\n")
        parts.append(table(["model", "validate status", "loads", "linear kernel", "load (s)", "weights memory (GB)",
                            "generations ok", "hardware path"], ld) + "\n")
    if section in ("validate", "all"):
        sp = [r for r in speed_rows(data) if any(c != NM for c in r[2:7])]
        if sp:
            parts.append("### Speed\n")
            parts.append(f"Settings: {_settings(data)}.\n")
            parts.append(table(["model", "label", "bs1 decode tok/s", "TTFT ms", "TPOT ms", "batched out tok/s",
                                "batched req/s", "bs1 vs base", "batched vs base"], sp) + "\n")
        header, acc = accuracy_rows(data)
        if acc:
            parts.append("### Accuracy\n")
            parts.append(table(header, acc) + "\n")
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_stem", type=Path)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--title", default="bot run report")
    ap.add_argument("--section", choices=["quantize", "validate", "all"], default="all")
    ap.add_argument("--env", type=Path, help="the session's environment listing (GPU, driver, versions)")
    ap.add_argument("--notes-file", type=Path, help="markdown written under the title (what ran, how to read it)")
    args = ap.parse_args()
    runs = [load_run(r) for r in args.runs]
    env = args.env.read_text() if args.env else None
    args.out_stem.with_suffix(".json").write_text(scrub(json.dumps({"env": env, "runs": runs}, indent=1)) + "\n")
    parts = [f"# {args.title}\n"]
    if args.notes_file:
        parts.append(args.notes_file.read_text().strip() + "\n")
    for data in runs:
        parts += render_run(data, args.section)
    if env:
        parts.append("## Environment\n\n```\n" + env.strip() + "\n```\n")
    args.out_stem.with_suffix(".md").write_text(scrub("\n".join(parts)))


if __name__ == "__main__":
    main()
