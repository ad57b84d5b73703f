"""What `bot publish` starts next when quantize and validate overlap (pure, but for reading the run directory).

Quantize runs in worker processes, each with its share of the variants (`spread`: the costly ones spread first;
for an overlapped run each worker takes its cheap variants first, so that validation has work early). Validation
runs one model at a time in one lane: the base first (its measurement is what every variant is compared with),
then each variant as soon as its quantize manifest says done, in the run's recipe order. The run directory is the
only channel: `variant_states` reads it; `next_step` decides from what it read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from bot.manifest import Status
from bot.rundir import RunDir

BASE = "base"


def spread(costs: Sequence[float], workers: int, *, cheap_first: bool = False) -> list[list[int]]:
    """Indices of `costs` in at most `workers` groups of similar total (greedy: longest first onto the least
    loaded); every group non-empty, each in ascending index order, or cheapest first with `cheap_first`."""
    n = max(1, min(workers, len(costs)))
    groups: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        j = load.index(min(load))
        groups[j].append(i)
        load[j] += costs[i]
    key = (lambda k: (costs[k], k)) if cheap_first else (lambda k: k)
    return [sorted(g, key=key) for g in groups if g]


@dataclass(frozen=True)
class Step:
    """`kind`: "base" (validate the base), "variant" (validate `variant`), "wait" (for a quantize to finish) or
    "done" (the lane has nothing more to do; the pipeline's final validate call does the rest)."""

    kind: str
    variant: str | None = None


WAIT, DONE = Step("wait"), Step("done")


def next_step(order: Sequence[str], quantize: Mapping[str, str], base: str, validated: set[str],
              quantize_over: bool) -> Step:
    """The lane's next step.

    order: the run's variants (recipe order); quantize: each variant's quantize state ("done", "failed",
    "running", "pending"); base: the base's state in this lane ("pending", "done", "failed": then the lane
    stops, and everything is validated after quantize, serially); validated: variants the lane already took;
    quantize_over: the quantize stage has returned (no worker left running)."""
    if base == "failed":
        return DONE
    if base == "pending":
        return Step("base")
    for variant in order:
        if quantize.get(variant) == "done" and variant not in validated:
            return Step("variant", variant)
    return DONE if quantize_over else WAIT  # a "failed" manifest may be an earlier attempt's, about to be redone


def variant_states(rundir: RunDir, variants: Sequence[str]) -> dict[str, str]:
    """Each variant's quantize state as its manifest says: "done" only with the finished checkpoint in place."""
    out: dict[str, str] = {}
    for variant in variants:
        m = rundir.read_variant(variant)
        if m is None:
            out[variant] = "pending"
        elif m.quantize.status == Status.done:
            out[variant] = "done" if (rundir.model_dir(variant) / "config.json").is_file() else "running"
        else:
            out[variant] = m.quantize.status.value
    return out
