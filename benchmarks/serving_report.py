"""The serving search of one run directory as a markdown report (benchmarks/serving-<date>.md), from the manifests the
bot wrote (`validate.serve_search` of the base and of each variant); nothing is computed here.

    python benchmarks/serving_report.py RUN_DIR --out serving-DATE.md [--env ENV_TXT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.manifest import RunStats, ServeSearchRecord  # noqa: E402
from bot.rundir import RunDir  # noqa: E402

WORKLOADS = ("batch1", "batched", "long_batch1", "long_batched")
NM = "not measured"


def band(s: RunStats | None) -> str:
    if s is None:
        return "-"
    return f"{s.mean:.1f}" + (f" [{s.low:.1f}, {s.high:.1f}]" if s.low is not None else " (1 run)")


def command(c) -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(c.env.items()))
    return " ".join(p for p in (env, "vllm serve MODEL", " ".join(c.flags)) if p)


def model_section(name: str, rec: ServeSearchRecord | None) -> list[str]:
    out = [f"## {name}", ""]
    if rec is None:
        return out + [f"Serving search: {NM}.", ""]
    if rec.status == "not-run":
        return out + [f"Serving search not run: {rec.reason}.", ""]
    out += [f"GPU: {rec.gpu_count} x {rec.gpu} (compute capability {rec.compute_capability}), vLLM {rec.vllm}; format "
            f"{rec.format}; status {rec.status}{': ' + rec.reason if rec.reason else ''}; {rec.spent_s:.0f} s of "
            f"{rec.budget_s or 0:.0f} s.", "",
            "| configuration | command | kernel vLLM reported | " + " | ".join(WORKLOADS) + " | engine s |",
            "|---|---|---|" + "---|" * len(WORKLOADS) + "---|"]
    for c in rec.configs:
        kernel = c.kernel or (f"failed: {c.error}" if c.status == "failed" else "not reported")
        cells = " | ".join(band(c.stats.get(w)) for w in WORKLOADS)
        out.append(f"| {c.label} | `{command(c)}` | {kernel} | {cells} | {c.seconds or '-'} |")
    out += ["", "Choices (tokens/s, 95% t-interval widened by the defaults' engine spread):", ""]
    for w, ch in rec.choices.items():
        ratios = f"gain {ch.gain}x; " if ch.gain else ""
        ratios += f"vs base {ch.vs_base}x" if ch.vs_base else f"vs base: {ch.base_note}"
        out.append(f"- {w}: **{ch.config_id}** (best of {ch.best_of}; {ratios}): {ch.reason}")
    if rec.roofline:
        r = rec.roofline
        out.append(f"- batch-1 bandwidth limit: {r.bytes_per_token / 1e9:.2f} GB per token at "
                   f"{r.bandwidth_bytes_per_s / 1e12:g} TB/s ({r.bandwidth_source}) = {r.limit_tokens_per_s} tokens/s")
    if rec.skipped:
        out += ["", "Not measured:", ""] + [f"- {s.label} ({s.kind}): {s.reason}" for s in rec.skipped]
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--env", type=Path)
    args = ap.parse_args(argv)
    rundir = RunDir(args.run)
    base = rundir.read_base()
    if base is None:
        print(f"{args.run}: no base/manifest.json (pass a run directory)", file=sys.stderr)
        return 2
    lines = [f"# Serving search: {base.base.model_id}", "",
             "Every number from the run's manifests (`validate.serve_search`), written by `bot validate` with "
             "`validate.serve_search.enabled`; see bot/stages/serve for the plan, method and choice rule.", ""]
    if args.env and args.env.is_file():
        lines += ["```", args.env.read_text(encoding="utf-8").strip(), "```", ""]
    lines += model_section("base", base.validate_.serve_search if base.validate_ else None)
    for v in rundir.variants():
        vm = rundir.read_variant(v)
        lines += model_section(v, vm.validate_.serve_search if vm and vm.validate_ else None)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
