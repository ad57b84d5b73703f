"""Report for the 8B-scale GPU session (quantize time, served speed vs BF16, where the time goes).

    python benchmarks/scale_report.py OUT_STEM --full RUN_DIR --trunc RUN_DIR [--env ENV.txt] [--card README.md]
                                      [--command CMD] [--note TEXT ...] [--notes-file F]

Reads only manifests the bot wrote on the GPU host. Two run directories:
- `--full`: the model with the real shape, quantized with reduced calibration (the checkpoints whose served speed
  is measured: speed depends on the checkpoint format and the tensor shapes, not on calibration or weight values),
  then validated in vLLM with CUDA graphs (base and each variant, same GPU, same run).
- `--trunc`: the same shape cut to a few decoder layers, quantized at the recipes' default calibration; its
  per-layer time (oneshot seconds / layers) extrapolates the default-calibration time for the full model.
Numbers that are extrapolated say so in their column name; everything else is a measurement from those manifests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import scrub  # noqa: E402

RECIPES = ["w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4"]
# The served-speed targets: (metric, minimum speedup) per recipe.
TARGETS = {"w4a16-gptq": ("batch1", 2.5), "w4a16-awq": ("batch1", 2.5), "w4a16-autoround": ("batch1", 2.5),
           "fp8-dynamic": ("batched", 1.5), "w8a8-int8": ("batched", 1.4)}
BUDGET_MIN = 60.0


def _load(run: Path) -> dict:
    base = json.loads((run / "base" / "manifest.json").read_text())
    variants = {p.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("*/manifest.json"))
                if p.parent.name != "base"}
    return {"base": base, "variants": variants}


def _layers(base: dict) -> int:
    cfg = Path(base["base"]["path"]) / "config.json"
    if cfg.is_file():  # on the GPU host
        return int(json.loads(cfg.read_text())["num_hidden_layers"])
    return int(base["base"].get("num_hidden_layers") or 0)


def _f(x, fmt="{:.1f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else "not measured"


def _gb(n):
    return f"{n / 1e9:.2f}" if isinstance(n, (int, float)) else "not measured"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def quantize_facts(full: dict, trunc: dict, layers_full: int, layers_trunc: int) -> list[dict]:
    facts = []
    for rid in RECIPES:
        fq = ((full["variants"].get(rid) or {}).get("quantize")) or {}
        tq = ((trunc["variants"].get(rid) or {}).get("quantize")) or {}
        ft, tt = fq.get("timings") or {}, tq.get("timings") or {}
        row = {"recipe": rid, "full_status": fq.get("status"), "full_wall_s": fq.get("wall_time_s"),
               "full_timings": ft, "full_calibration": fq.get("calibration"),
               "full_peak_gpu_bytes": fq.get("peak_gpu_memory_bytes"), "full_peak_rss_bytes": fq.get("peak_rss_bytes"),
               "full_size_bytes": fq.get("size_bytes"), "full_recipe_params": _params(fq),
               "trunc_status": tq.get("status"), "trunc_wall_s": tq.get("wall_time_s"), "trunc_timings": tt,
               "trunc_calibration": tq.get("calibration"), "trunc_peak_gpu_bytes": tq.get("peak_gpu_memory_bytes"),
               "full_error": fq.get("error"), "trunc_error": tq.get("error"),
               "full_concurrent_with": fq.get("concurrent_with") or [], "trunc_concurrent_with": tq.get("concurrent_with") or []}
        if isinstance(tt.get("oneshot"), (int, float)) and layers_trunc:
            # oneshot on the truncated model also covers what does not scale with depth (embeddings, the final
            # norm/lm_head stage): spread over the layers, it makes the extrapolation an upper bound
            per_layer = tt["oneshot"] / layers_trunc
            row["per_layer_s"] = round(per_layer, 2)
            row["extrapolated_oneshot_s"] = round(per_layer * layers_full, 1)
            if isinstance(ft.get("oneshot"), (int, float)) and row["full_calibration"] == row["trunc_calibration"]:
                # same settings on both shapes (data-free recipes): how good the per-layer extrapolation is
                row["extrapolation_check"] = {"measured_full_oneshot_s": ft["oneshot"],
                                              "extrapolated_oneshot_s": row["extrapolated_oneshot_s"]}
        facts.append(row)
    # Copy, move and save happen once per recipe on the full shape; a recipe that did not finish there borrows the
    # median of the others'.
    fixed_all = sorted(_fixed(r["full_timings"]) for r in facts if r["full_timings"])
    fallback = fixed_all[len(fixed_all) // 2] if fixed_all else None
    for row in facts:
        if row.get("extrapolated_oneshot_s") is None:
            continue
        own = row["full_timings"]
        fixed = _fixed(own) if own else fallback
        row["fixed_cost_source"] = "this recipe, full shape" if own else "median of the other recipes, full shape"
        if fixed is not None:
            row["extrapolated_wall_s"] = round(row["extrapolated_oneshot_s"] + fixed
                                              + row["trunc_timings"].get("calibration_data", 0.0), 1)
    return facts


def _fixed(timings: dict) -> float:
    return sum(timings.get(k, 0.0) for k in ("copy", "to_gpu", "save"))


def _params(q: dict) -> str:
    mods = (q.get("recipe") or {}).get("modifiers") or []
    out = []
    for m in mods:
        if m.get("type") == "AutoRoundModifier":
            out.append(f"iters {m.get('iters')}")
    cal = q.get("calibration") or {}
    if cal:
        out.append(f"{cal.get('samples')} x {cal.get('seq_len')} ({cal.get('tokens')} tokens)")
    return ", ".join(out) or "data-free"


def speed_facts(full: dict) -> list[dict]:
    rows = []
    entries = [("base", full["base"].get("validate") or {})] + [
        (rid, (full["variants"].get(rid) or {}).get("validate") or {}) for rid in RECIPES]
    for rid, v in entries:
        if not v:
            rows.append({"model": rid, "status": "not validated"})
            continue
        sp = v.get("speed") or {}
        comp = v.get("comparison") or {}
        target = TARGETS.get(rid)
        met = None
        if target:
            value = comp.get(f"speedup_{target[0]}")
            met = None if value is None else value >= target[1]
        rows.append({
            "model": rid, "status": v.get("status"), "kernel": (v.get("load") or {}).get("kernel") or ("bf16 (unquantized)" if rid == "base" else "not recorded"),
            "load_time_s": (v.get("load") or {}).get("load_time_s"),
            "weights_bytes": (v.get("load") or {}).get("memory_bytes"),
            "batch1": sp.get("batch1") or {}, "batched": sp.get("batched") or {}, "settings": sp.get("settings") or {},
            "speedup_batch1": comp.get("speedup_batch1"), "speedup_batched": comp.get("speedup_batched"),
            "target": {"metric": target[0], "min": target[1], "met": met} if target else None,
            "worker_s": (v.get("timings") or {}).get("runtime_worker"), "compat": v.get("compat") or {},
            "error": v.get("error"),
        })
    return rows


def budget(qf: list[dict], sf: list[dict]) -> dict:
    quant, source = {}, {}
    for r in qf:
        if r.get("extrapolation_check") and r.get("full_wall_s") is not None:  # same settings: the real thing
            quant[r["recipe"]], source[r["recipe"]] = r["full_wall_s"], "measured, full shape"
        elif r.get("extrapolated_wall_s") is not None:
            quant[r["recipe"]], source[r["recipe"]] = r["extrapolated_wall_s"], "extrapolated, default calibration"
        elif r.get("full_wall_s") is not None:
            quant[r["recipe"]] = r["full_wall_s"]
            source[r["recipe"]] = f"measured, full shape at reduced calibration ({_params_short(r)}): a lower bound"
        else:
            quant[r["recipe"]], source[r["recipe"]] = None, "not measured"
    validate = {r["model"]: r.get("worker_s") for r in sf}
    loads = {r["recipe"]: (r.get("full_timings") or {}).get("worker_load_base") for r in qf}
    quant["(worker loads the base)"] = max((v for v in loads.values() if isinstance(v, (int, float))), default=None)
    total_q = sum(v for v in quant.values() if isinstance(v, (int, float)))
    total_v = sum(v for v in validate.values() if isinstance(v, (int, float)))
    missing = [f"quantize {k}" for k, v in quant.items() if v is None] + \
              [f"validate {k}" for k, v in validate.items() if v is None]
    total_min = round((total_q + total_v) / 60, 1)
    met = None if missing and total_min <= BUDGET_MIN else total_min <= BUDGET_MIN
    return {"quantize_s": quant, "quantize_source": source, "validate_s": validate,
            "quantize_total_s": round(total_q, 1), "validate_total_s": round(total_v, 1), "total_min": total_min,
            "missing": missing, "budget_min": BUDGET_MIN, "met": met}


def _params_short(r: dict) -> str:
    c = r.get("full_calibration") or {}
    return f"{c.get('samples')} x {c.get('seq_len')}" if c else "data-free"


def render(data: dict, args) -> str:
    qf, sf, bud = data["quantize"], data["speed"], data["budget"]
    lf, lt = data["layers_full"], data["layers_trunc"]
    parts = [f"# {args.title}\n", *(f"{n}\n" for n in args.note)]
    if data.get("env"):
        parts.append("## Hardware and versions\n\n```\n" + data["env"].strip() + "\n```\n")
    if args.command:
        parts.append(f"Command: `{args.command}`\n")
    parts.append(f"## Quantize: full shape ({lf} layers, reduced calibration; the served checkpoints)\n")
    parts.append(table(
        ["recipe", "status", "calibration / iters", "wall (s)", "copy (s)", "oneshot (s)", "save (s)",
         "peak GPU (GB)", "peak host RSS (GB)", "size (GB)"],
        [[r["recipe"], _status(r, "full"), r["full_recipe_params"] if r["full_status"] == "done" else "-",
          _f(r["full_wall_s"]),
          _f(r["full_timings"].get("copy")), _f(r["full_timings"].get("oneshot")), _f(r["full_timings"].get("save")),
          _gb(r["full_peak_gpu_bytes"]), _gb(r["full_peak_rss_bytes"]), _gb(r["full_size_bytes"])] for r in qf]) + "\n")
    parts.append(f"## Quantize at the recipes' default calibration: {lt} of {lf} layers, extrapolated\n")
    parts.append(table(
        ["recipe", "status", "calibration", "wall (s)", "oneshot (s)", "per layer (s)",
         f"extrapolated oneshot, {lf} layers (s)", "extrapolated recipe wall (min)"],
        [[r["recipe"], _status(r, "trunc"), _cal(r["trunc_calibration"]) if r["trunc_status"] == "done" else "-",
          _f(r["trunc_wall_s"]),
          _f(r["trunc_timings"].get("oneshot")), _f(r.get("per_layer_s"), "{:.2f}"), _f(r.get("extrapolated_oneshot_s")),
          _f((r.get("extrapolated_wall_s") or 0) / 60 if r.get("extrapolated_wall_s") else None)] for r in qf]) + "\n")
    checks = [r for r in qf if r.get("extrapolation_check")]
    if checks:
        parts.append("Extrapolation check (same settings on both shapes): " + "; ".join(
            f"{r['recipe']}: measured {_f(r['extrapolation_check']['measured_full_oneshot_s'])} s on {lf} layers, "
            f"extrapolated {_f(r['extrapolation_check']['extrapolated_oneshot_s'])} s" for r in checks) + ".\n")
    parts.append(f"## Served speed in vLLM, full shape, same GPU and run\n")
    s0 = next((r["settings"] for r in sf if r.get("settings")), {})
    if s0:
        parts.append("Settings: " + ", ".join(f"{k} {v}" for k, v in s0.items() if k != "requested") + ".\n")
    parts.append(table(
        ["model", "status", "vLLM kernel", "load (s)", "weights (GB)", "bs1 decode tok/s", "TTFT (ms)", "TPOT (ms)",
         "batched out tok/s", "req/s", "speedup bs1", "speedup batched", "target"],
        [[r["model"], str(r.get("status")), r.get("kernel", "-"), _f(r.get("load_time_s")), _gb(r.get("weights_bytes")),
          _f((r.get("batch1") or {}).get("decode_tokens_per_s")), _f((r.get("batch1") or {}).get("ttft_ms")),
          _f((r.get("batch1") or {}).get("tpot_ms"), "{:.2f}"),
          _f((r.get("batched") or {}).get("output_tokens_per_s"), "{:.0f}"),
          _f((r.get("batched") or {}).get("requests_per_s"), "{:.2f}"),
          _f(r.get("speedup_batch1"), "{:.2f}x") if r["model"] != "base" else "-",
          _f(r.get("speedup_batched"), "{:.2f}x") if r["model"] != "base" else "-", _target(r)]
         for r in sf]) + "\n")
    parts.append("## Where the time goes (one H100, serial)\n")
    parts.append(table(["step", "seconds", "source"],
                       [[f"quantize {k}", _f(v), bud["quantize_source"].get(k, "measured")]
                        for k, v in bud["quantize_s"].items()]
                       + [[f"validate {k} (vLLM start-up, load, generations, speed)", _f(v), "measured"]
                          for k, v in bud["validate_s"].items()]) + "\n")
    verdict = {True: "met", False: "not met", None: "open"}[bud["met"]]
    gaps = f" Not measured, so not in the total: {', '.join(bud['missing'])}." if bud["missing"] else ""
    parts.append(f"Total of the rows above: {bud['total_min']} min against the {bud['budget_min']:.0f}-minute target "
                 f"({verdict}).{gaps}\n")
    return "\n".join(parts)


def _status(r, which):
    status = str(r[f"{which}_status"])
    if r.get(f"{which}_error"):
        status += f" ({r[f'{which}_error'].split(':')[0][:60]})"
    return status


def _cal(c):
    return f"{c.get('samples')} x {c.get('seq_len')} ({c.get('tokens')} tokens)" if c else "data-free"


def _target(r):
    t = r.get("target")
    if not t:
        return "-"
    state = {True: "met", False: "not met", None: "not measured"}[t["met"]]
    return f"{t['metric']} >= {t['min']}x: {state}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_stem", type=Path)
    ap.add_argument("--full", type=Path, required=True)
    ap.add_argument("--trunc", type=Path, required=True)
    ap.add_argument("--layers-full", type=int, default=None)
    ap.add_argument("--layers-trunc", type=int, default=None)
    ap.add_argument("--env", type=Path)
    ap.add_argument("--command", default="")
    ap.add_argument("--title", default="8B-scale GPU evidence")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--notes-file", type=Path, help="markdown paragraphs to put under the title, one per line")
    args = ap.parse_args()
    if args.notes_file:
        args.note += [ln for ln in args.notes_file.read_text().splitlines() if ln.strip()]
    full, trunc = _load(args.full), _load(args.trunc)
    lf = args.layers_full or _layers(full["base"])
    lt = args.layers_trunc or _layers(trunc["base"])
    qf, sf = quantize_facts(full, trunc, lf, lt), speed_facts(full)
    data = {"layers_full": lf, "layers_trunc": lt, "quantize": qf, "speed": sf, "budget": budget(qf, sf),
            "env": args.env.read_text() if args.env else None, "command": args.command,
            "base": full["base"]["base"], "trunc_base": trunc["base"]["base"]}
    args.out_stem.with_suffix(".json").write_text(scrub(json.dumps(data, indent=1, default=str)) + "\n")
    args.out_stem.with_suffix(".md").write_text(scrub(render(data, args)))


if __name__ == "__main__":
    main()
