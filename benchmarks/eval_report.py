"""Evaluation evidence from run directories (manifests only): fidelity, paired recovery with CIs and flips, the
gate's decisions, and whether two runs of the same inputs decided the same.

    python benchmarks/eval_report.py OUT_STEM RUN_DIR [RUN_DIR ...] [--title T] [--env ENV_TXT] [--notes-file MD]

Every number is read from what the bot recorded in the run (`validate.fidelity`, `validate.comparison`,
`validate.gate`, `validate.timings`); nothing is measured or recomputed here. The first two runs given are
compared for identical decisions and numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import ORDER, load_run, scrub

NM = "not measured"


def _f(x, fmt="{:.4f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else NM


def _ci(ci):
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]" if isinstance(ci, list) and len(ci) == 2 else NM


def variants(data: dict) -> list[tuple[str, dict]]:
    return [(v, data["variants"][v].get("validate") or {}) for v in ORDER[1:] if v in data["variants"]] + \
        [(v, m.get("validate") or {}) for v, m in data["variants"].items() if v not in ORDER]


def fidelity_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid, v in variants(data):
        f = v.get("fidelity") or {}
        if f.get("error"):
            rows.append([vid, f"error: {scrub(f['error'])[:120]}", "", "", "", "", ""])
            continue
        rows.append([vid, _f(f.get("kl_mean")), _f(f.get("kl_p99")), _f(f.get("top1_agreement"), "{:.2%}"),
                     _f(f.get("ppl_ratio"), "{:.3f}"), str(f.get("tokens", NM)), str(f.get("nonfinite", NM))])
    return rows


def recovery_rows(data: dict) -> list[list[str]]:
    rows = []
    for vid, v in variants(data):
        c = v.get("comparison") or {}
        g = v.get("gate") or {}
        tasks = "; ".join(
            f"{t['task']} {_f(t.get('recovery'), '{:.1f}')}% {_ci(t.get('ci'))}"
            + (f" (-{t['right_to_wrong']}/+{t['wrong_to_right']})" if t.get("right_to_wrong") is not None else "")
            + (" at chance, unused" if t.get("at_chance") else "")
            for t in c.get("tasks") or [])
        rows.append([vid, _f(c.get("mean_recovery"), "{:.2f}"), _ci(c.get("mean_recovery_ci")), tasks or NM,
                     str(g.get("state") or ("passed" if g.get("passed") else "rejected")),
                     scrub("; ".join(g.get("reasons") or []))[:200] or "-", str(g.get("rounds", 1))])
    return rows


def timing_rows(data: dict) -> list[list[str]]:
    rows = []
    base = (data["base"].get("validate") or {}).get("timings") or {}
    rows.append(["base", _f(base.get("runtime_worker"), "{:.1f}"), _f(base.get("lmeval_worker"), "{:.1f}"),
                 _f(base.get("fidelity_worker"), "{:.1f}")])
    for vid, v in variants(data):
        t = v.get("timings") or {}
        f = v.get("fidelity") or {}
        rows.append([vid, _f(t.get("runtime_worker"), "{:.1f}"), _f(t.get("lmeval_worker"), "{:.1f}"),
                     _f(f.get("seconds"), "{:.1f}")])
    return rows


def decisions(data: dict) -> dict[str, dict]:
    out = {}
    for vid, v in variants(data):
        c, g, f = v.get("comparison") or {}, v.get("gate") or {}, v.get("fidelity") or {}
        out[vid] = {"state": g.get("state"), "mean_recovery": c.get("mean_recovery"),
                    "mean_recovery_ci": c.get("mean_recovery_ci"), "kl_mean": f.get("kl_mean"),
                    "top1_agreement": f.get("top1_agreement")}
    return out


def agreement(a: dict, b: dict) -> list[list[str]]:
    rows = []
    for vid in [v for v in a if v in b]:
        x, y = a[vid], b[vid]
        if x["state"] is None or y["state"] is None:
            rows.append([vid, f"{x['state'] or '-'} / {y['state'] or '-'}", "not measured in both", "", "", ""])
            continue
        inside = (isinstance(y["mean_recovery"], (int, float)) and isinstance(x["mean_recovery_ci"], list)
                  and x["mean_recovery_ci"][0] <= y["mean_recovery"] <= x["mean_recovery_ci"][1])
        rows.append([vid, f"{x['state']} / {y['state']}", "yes" if x["state"] == y["state"] else "**no**",
                     f"{_f(x['mean_recovery'], '{:.2f}')} / {_f(y['mean_recovery'], '{:.2f}')}",
                     "identical" if x["mean_recovery"] == y["mean_recovery"] else ("inside R1's CI" if inside else
                                                                                "**outside R1's CI**"),
                     f"{_f(x['kl_mean'])} / {_f(y['kl_mean'])}"])
    return rows


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--title", default="Evaluation evidence")
    ap.add_argument("--env", type=Path)
    ap.add_argument("--notes-file", type=Path)
    args = ap.parse_args()
    runs = [load_run(r) for r in args.runs]
    md = [f"# {args.title}", ""]
    if args.env and args.env.is_file():
        md += ["Environment:", "", "```", args.env.read_text().strip(), "```", ""]
    if args.notes_file and args.notes_file.is_file():
        md += [args.notes_file.read_text().strip(), ""]
    for data in runs:
        md += [f"## {data['run_id']}", "", "### Fidelity on the held-out text (base || variant)", "",
               table(["variant", "KL mean (nats)", "KL p99", "top-1 agree", "ppl ratio", "tokens", "non-finite"],
                     fidelity_rows(data)), "",
               "### Recovery, paired over the same documents (95% CI; flips -right->wrong/+wrong->right)", "",
               table(["variant", "mean recovery %", "CI", "per task", "gate", "reason", "rounds"],
                     recovery_rows(data)), "",
               "### Worker wall time (s)", "",
               table(["model", "load+generate+speed", "lm-eval", "fidelity"], timing_rows(data)), ""]
    if len(runs) >= 2:
        md += [f"## Same inputs twice: {runs[0]['run_id']} vs {runs[1]['run_id']}", "",
               table(["variant", "gate", "same", "mean recovery", "numbers", "KL mean"],
                     agreement(decisions(runs[0]), decisions(runs[1]))), ""]
    Path(args.out + ".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    Path(args.out + ".json").write_text(json.dumps(
        {"runs": [{"run_id": d["run_id"], "decisions": decisions(d), "fidelity": fidelity_rows(d),
                   "recovery": recovery_rows(d), "timings": timing_rows(d)} for d in runs]}, indent=1),
        encoding="utf-8")
    print(f"wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
