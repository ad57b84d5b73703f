"""The serving search's numbers and its one decision (pure): intervals from repeated runs, the fastest configuration
per workload, chosen only when the uncertainty separates it from the defaults, and the batch-1 bandwidth limit.

Interval of a configuration on a workload: the 95% Student-t interval of the mean of its runs (all in one engine),
widened on each side by the engine-to-engine spread, |mean of the defaults' first engine - mean of their second|,
because runs inside one engine do not see how much a new engine of the same configuration differs. The defaults'
runs from all their engines are pooled. A configuration is chosen only when its whole interval lies above the
defaults'; otherwise the choice is the defaults: "as fast, within the uncertainty". A single run has no interval
and is never chosen.
"""

from __future__ import annotations

import math
from statistics import fmean, stdev
from typing import Iterable

from bot.manifest import Roofline, RunStats, ServeChoice, ServeConfigResult, ServeSearchRecord
from bot.stages.serve.plan import DEFAULT

# two-sided 95% quantiles of Student's t by degrees of freedom (1..30); the normal 1.960 beyond
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_WORKLOAD_WORDS = {"batch1": "batch-1 decode", "batched": "batched output", "long_batch1": "long-context batch-1 "
                   "decode", "long_batched": "long-context batched output"}


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.960


def run_stats(values: Iterable[float], spread: float = 0.0) -> RunStats:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no runs")
    mean = fmean(vals)
    if len(vals) < 2:
        return RunStats(values=vals, mean=round(mean, 3), spread=round(spread, 3))
    half = t95(len(vals) - 1) * stdev(vals) / math.sqrt(len(vals)) + spread
    return RunStats(values=vals, mean=round(mean, 3), low=round(mean - half, 3), high=round(mean + half, 3),
                    spread=round(spread, 3))


def is_default(config: ServeConfigResult) -> bool:
    return config.id == DEFAULT or config.id.startswith(DEFAULT + "#")


def engine_spread(defaults: list[ServeConfigResult], workload: str, raw: dict[str, dict[str, list[float]]]) -> float:
    """|difference| between the means of the first two default engines on this workload (0 with one engine)."""
    means = [fmean(raw[c.id][workload]) for c in defaults if raw.get(c.id, {}).get(workload)]
    return abs(means[0] - means[1]) if len(means) >= 2 else 0.0


def fill_stats(record: ServeSearchRecord, raw: dict[str, dict[str, list[float]]]) -> None:
    """Every measured configuration's `stats` from its per-run values (`raw[config id][workload]`); the defaults'
    engines share one pooled interval, on the first default row."""
    measured = [c for c in record.configs if c.status == "measured"]
    defaults = [c for c in measured if is_default(c)]
    workloads = {w for runs in raw.values() for w in runs}
    for w in workloads:
        spread = engine_spread(defaults, w, raw)
        pooled = [v for c in defaults for v in raw.get(c.id, {}).get(w, [])]
        for c in measured:
            values = raw.get(c.id, {}).get(w)
            if not values:
                continue
            c.stats[w] = run_stats(values, spread)
        if pooled and defaults:
            defaults[0].stats[w] = run_stats(pooled, spread)


def choose(record: ServeSearchRecord, workload: str, base: ServeSearchRecord | None,
           base_note: str | None) -> ServeChoice | None:
    """The fastest measured configuration on `workload` when its interval lies wholly above the defaults'; else the
    defaults. None when the defaults were not measured on it. `base`: the BF16 base's search, for the ratios."""
    words = _WORKLOAD_WORDS.get(workload, workload)
    default = next((c for c in record.configs if c.id == DEFAULT and workload in c.stats), None)
    if default is None:
        return None
    d = default.stats[workload]
    rivals = [c for c in record.configs if c.status == "measured" and not is_default(c) and workload in c.stats]
    best = max(rivals, key=lambda c: c.stats[workload].mean, default=None)
    base_mean = None
    if base is not None and base_note is None:
        b = base.config(DEFAULT)
        base_mean = b.stats[workload].mean if b is not None and workload in b.stats else None
    ratio = (lambda x: round(x / base_mean, 3) if base_mean else None)
    common = dict(workload=workload, best_of=1 + len(rivals), default_vs_base=ratio(d.mean),
                  base_note=base_note if base_note else (None if base_mean else "the base's defaults were not "
                                                                                 "measured on this workload"))
    if best is None:
        return ServeChoice(config_id=DEFAULT, separated=False, vs_base=ratio(d.mean),
                           reason=f"only the defaults were measured on {words}", **common)
    s = best.stats[workload]
    if s.low is not None and d.high is not None and s.low > d.high:
        return ServeChoice(config_id=best.id, separated=True, gain=round(s.mean / d.mean, 3), vs_base=ratio(s.mean),
                           reason=f"{best.label}: {words} {s.mean:.1f} tokens/s, interval {s.low:.1f}-{s.high:.1f}, "
                                  f"lies above the defaults' {d.low:.1f}-{d.high:.1f}", **common)
    fastest = f"{best.label} {s.mean:.1f} tokens/s" + (f" ({s.low:.1f}-{s.high:.1f})" if s.low is not None else "")
    dband = f"{d.mean:.1f}" + (f" ({d.low:.1f}-{d.high:.1f})" if d.low is not None else "")
    return ServeChoice(config_id=DEFAULT, separated=False, vs_base=ratio(d.mean), reason=(
        f"the defaults are as fast within the uncertainty: the fastest other, {fastest}, does not separate from the "
        f"defaults' {dband}"), **common)


def roofline(gpu: str, bandwidth: tuple[float, str] | None, weights_bytes: int | None) -> Roofline | None:
    """Batch-1 decode reads every weight once per token: the limit is bandwidth / weight bytes (the KV cache of a
    few hundred tokens adds well under 1% at these lengths and is left out)."""
    if bandwidth is None or not weights_bytes:
        return None
    bw, source = bandwidth
    return Roofline(gpu=gpu, bandwidth_bytes_per_s=bw, bandwidth_source=source, bytes_per_token=int(weights_bytes),
                    bytes_source="weights in GPU memory, as vLLM reported them",
                    limit_tokens_per_s=round(bw / weights_bytes, 1))
