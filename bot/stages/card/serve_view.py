"""The card's "Serve it fastest" part, from the validate stage's serving search (`ValidateRecord.serve_search`):
for latency and for throughput (and the long-context point), the measured best `vllm serve` command, its numbers
with their intervals, against the defaults and against the BF16 base measured the same way, the GPU, and the
batch-1 bandwidth limit. Nothing is decided here: which configuration is best, and whether it is better at all, is
the stage's choice (bot/stages/serve/choose.py). Hidden (None) when no search ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.manifest import RunStats, ServeChoice, ServeConfigResult, ServeSearchRecord
from bot.stages.card.format import Scrubber, code, count, gb, md_cell, one_line, ratio, tok_s

_WORKLOADS = {
    "batch1": ("Latency (batch 1, {batch1_input_len} in / {batch1_output_len} out)", "Batch-1 decode"),
    "batched": ("Throughput ({batched_num_prompts} × {batched_input_len} in / {batched_output_len} out)",
                "Batched output"),
    "long_batch1": ("Long context, batch 1 ({long_input_len} in / {long_output_len} out)", "Long batch 1"),
    "long_batched": ("Long context, batched ({long_num_prompts} × {long_input_len} in / {long_output_len} out)",
                     "Long batched"),
}


@dataclass(frozen=True)
class ServeRow:
    workload: str
    fastest: str  # which configuration (or the defaults, and why)
    tokens: str  # tokens/s with its interval
    vs_default: str
    vs_base: str


@dataclass(frozen=True)
class ConfigRow:
    config: str
    command: str
    kernel: str
    cells: list[str]  # one per workload column


@dataclass(frozen=True)
class ServeFastestView:
    heading: str
    rows: list[ServeRow]
    commands: str  # the chosen commands, one per line, as a bash block
    bandwidth: str
    columns: list[str]  # workload headers of the configurations table
    configs: list[ConfigRow]
    skipped: list[str]
    notes: list[str]


def command(repo_id: str, trust_remote_code: bool, config: ServeConfigResult) -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(config.env.items()))
    trust = " --trust-remote-code" if trust_remote_code else ""
    flags = " ".join(config.flags)
    return " ".join(p for p in (env, f"vllm serve {repo_id}{trust}", flags) if p)


def _band(s: RunStats | None) -> str:
    if s is None:
        return "—"
    inner = f" ({tok_s(s.low)}–{tok_s(s.high)})" if s.low is not None and s.high is not None else " (one run)"
    return f"{tok_s(s.mean)}{inner}"


def _label(lengths: dict[str, int], workload: str) -> str:
    try:
        return _WORKLOADS[workload][0].format(**{k: f"{v:,}" for k, v in lengths.items()})
    except KeyError:
        return _WORKLOADS[workload][1]


def _row(rec: ServeSearchRecord, choice: ServeChoice, lengths: dict[str, int], scrub: Scrubber) -> ServeRow:
    chosen = rec.config(choice.config_id)
    stats = chosen.stats.get(choice.workload) if chosen else None
    if choice.separated and chosen is not None:
        fastest = code(chosen.label) + (" (KV cache in FP8: accuracy was not measured with it)"
                                        if chosen.changes_numerics else "")
        vs_default = ratio(choice.gain) if choice.gain is not None else "—"
    else:
        fastest = "the defaults: no other configuration was faster beyond the uncertainty"
        vs_default = "—"
    vs_base = ratio(choice.vs_base) if choice.vs_base is not None else md_cell(
        f"not compared ({scrub(choice.base_note or 'no base measurement')})")
    return ServeRow(_label(lengths, choice.workload), md_cell(fastest), _band(stats), vs_default, vs_base)


def _bandwidth(rec: ServeSearchRecord, best: ServeConfigResult | None) -> str:
    r = rec.roofline
    default = rec.config("default")
    if r is None or default is None or "batch1" not in default.stats:
        why = "the GPU's memory bandwidth is not in the bot's table" if rec.gpu and default else "nothing to bound"
        return f"Batch-1 bandwidth limit: not computed ({why})."
    share = (lambda s: f"{s.mean:.1f} tokens/s ({100 * s.mean / r.limit_tokens_per_s:.0f}% of it)")
    text = (f"**Batch-1 bandwidth limit:** each token reads the {gb(r.bytes_per_token)} of weights once "
            f"({r.bytes_source}); at {r.bandwidth_bytes_per_s / 1e12:g} TB/s ({r.bandwidth_source}) that allows at "
            "most "
            f"{r.limit_tokens_per_s:.1f} tokens/s. The defaults reach {share(default.stats['batch1'])}")
    if best is not None and best.id != "default" and "batch1" in best.stats:
        text += f"; the fastest configuration, {share(best.stats['batch1'])}"
    return text + "."


def serve_fastest_view(rec: ServeSearchRecord | None, repo_id: str, trust: bool,
                       scrub: Scrubber) -> ServeFastestView | None:
    if rec is None or rec.status == "not-run" or rec.config("default") is None:
        return None
    default = rec.config("default")
    assert default is not None
    lengths = default.lengths
    measured = [c for c in rec.configs if c.status == "measured" and c.id != "default" and not c.id.startswith(
        "default#")]
    gpu = f"{rec.gpu_count}× {rec.gpu}" if rec.gpu else "an unrecorded GPU"
    heading = (f"Measured on **{gpu}** (compute capability {rec.compute_capability or 'not recorded'}) with **vLLM "
               f"{rec.vllm or 'unknown'}**: the best of {1 + len(measured)} configurations that apply to this "
               f"format on this GPU, each in its own engine; every number is the mean of repeated runs with its 95% "
               f"interval. Format read from the checkpoint: {scrub(rec.format)}.")
    rows, commands = [], []
    for w in ("batch1", "batched", "long_batch1", "long_batched"):
        choice = rec.choices.get(w)
        if choice is None:
            continue
        rows.append(_row(rec, choice, lengths, scrub))
        chosen = rec.config(choice.config_id) if choice.separated else default
        line = command(repo_id, trust, chosen) if chosen else ""
        label = _WORKLOADS[w][1].lower()
        commands.append(f"# {label}: {'fastest measured' if choice.separated else 'the defaults are as fast'}\n{line}")
    lat = rec.choices.get("batch1")
    best = rec.config(lat.config_id) if lat is not None and lat.separated else None
    columns = [_WORKLOADS[w][1] for w in ("batch1", "batched", "long_batch1", "long_batched")]
    configs = [ConfigRow(md_cell(c.label), code(command(repo_id, trust, c)),
                         md_cell(scrub(c.kernel or "not reported")) if c.status == "measured"
                         else md_cell(f"failed: {scrub(one_line(c.error or 'no error recorded', 160))}"),
                         [_band(c.stats.get(w)) for w in ("batch1", "batched", "long_batch1", "long_batched")])
               for c in rec.configs]
    skipped = [f"{code(s.label)}: {md_cell(scrub(s.reason))}" for s in rec.skipped]
    notes = ["Intervals: the 95% Student-t interval of each configuration's runs, widened on each side by the "
             "difference between the defaults' engines (engine-to-engine noise); a configuration is named fastest "
             "only when its whole interval lies above the defaults'. \"vs BF16 base\" divides by the base's own "
             "defaults, measured the same way on the same GPU. The row \"vLLM defaults\" pools the runs of all its "
             "engines.",
             f"Method: {rec.method}. Searched in {count(round(rec.spent_s))} s of a "
             f"{count(round(rec.budget_s or 0))} s budget."]
    speed = rec.settings.get("speed") if isinstance(rec.settings.get("speed"), dict) else {}
    if speed:
        notes.append("Every engine of the search, the defaults included, ran with the validation's speed settings: "
                     f"`gpu_memory_utilization` {speed.get('gpu_memory_utilization')}, `max_model_len` "
                     f"{speed.get('max_model_len')} (raised to hold the long-context point), `enforce_eager` "
                     f"{str(speed.get('enforce_eager')).lower()}; add them to a command to serve exactly what was "
                     "measured.")
    if rec.status == "partial":
        notes.append("Some configurations did not fit the time budget (listed below): this is the best of those "
                     "measured, not of every configuration.")
    return ServeFastestView(heading, rows, "\n\n".join(commands), _bandwidth(rec, best), columns, configs, skipped,
                            notes)
