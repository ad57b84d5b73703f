"""Paired statistics of a variant against its base on the same lm-eval documents (pure, standard library only).

Input: the per-document files the lm-eval worker writes (`bot/workers/lmeval_worker.py`), one for the base and
one for the variant: {"requested": [...], "tasks": {LEAF: {"metric", "kind", "higher_is_better", "output_type",
"docs": [{"doc_id", "value", "choices"?, "ll"?, "words"?, "bytes"?}]}}, "groups": {GROUP: {"metric",
"subtasks", "weight_by_size"}}}.

Per requested task (a group such as mmlu counts as one, aggregated from its subtasks the way lm-eval does: the
mean of the subtasks' scores, weighted by their document counts when `weight_by_size`):
- base and variant documents are paired on doc_id (only documents both have);
- recovery = variant / base * 100 (higher is better) or base / variant * 100 (perplexity, word perplexity =
  exp(-sum ll / sum words) over the documents); a non-finite variant score recovers 0 (as in compare.py);
- a percentile paired bootstrap: each resample draws document indices with replacement, the same indices for
  base and variant, independently per task (per subtask inside a group); seeded `random.Random`;
- right->wrong / wrong->right flips for 0/1 metrics;
- the chance level (multiple choice: mean of 1/choices; generative: 0; perplexity: none) and `at_chance` when the
  Wilson lower bound of the base's accuracy (at `confidence`) is at or below it: such a task is flagged, not used.
The mean recovery over the used tasks gets its interval from the same resamples (each resample averages the
tasks' resampled recoveries). Recoveries and intervals are rounded to 2 decimals.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from statistics import NormalDist, fmean
from typing import Any

from bot.config import GateSettings
from bot.manifest import TaskComparison

METHOD = "paired percentile bootstrap"
PERPLEXITY_UNITS = {"word_perplexity": "words", "byte_perplexity": "bytes", "bits_per_byte": "bytes"}


# ---------------------------------------------------------------- one stratum (a leaf task, paired)


@dataclass
class _Stratum:
    """One leaf task's paired documents: per document (base, variant) values, or (ll, units) pairs."""

    kind: str  # "mean" | "perplexity"
    metric: str
    base: list[Any]
    variant: list[Any]
    codes: list[int] | None = None  # 0/1 on both sides: 2 * base + variant per document (the fast resample)

    def __post_init__(self) -> None:
        if self.kind == "mean" and _binary(self.base) and _binary(self.variant):
            self.codes = [int(2 * b + v) for b, v in zip(self.base, self.variant)]

    def value(self, side: list[Any]) -> float:
        if self.kind == "mean":
            return sum(side) / len(side) if side else math.nan
        return _perplexity(self.metric, sum(r[0] for r in side), sum(r[1] for r in side))

    def resample(self, rng: random.Random) -> tuple[float, float]:
        """(base, variant) on one draw of len(docs) documents with replacement, the same ones for both."""
        n = len(self.base)
        if self.codes is not None:  # the same draws as the index path (choices calls random() n times either way)
            drawn = rng.choices(self.codes, k=n)
            both, base_only, variant_only = drawn.count(3), drawn.count(2), drawn.count(1)
            return (both + base_only) / n, (both + variant_only) / n
        idx = rng.choices(range(n), k=n)
        return (self.value(list(map(self.base.__getitem__, idx))),
                self.value(list(map(self.variant.__getitem__, idx))))


def _perplexity(metric: str, ll: float, units: float) -> float:
    if units <= 0:
        return math.nan
    if metric == "bits_per_byte":
        return -ll / units / math.log(2)
    try:
        return math.exp(-ll / units)
    except OverflowError:
        return math.inf


def _doc_value(kind: str, metric: str, doc: dict[str, Any]) -> Any:
    if kind == "mean":
        return float(doc["value"])
    units = doc.get(PERPLEXITY_UNITS.get(metric, "words"))
    if units is None:
        raise ValueError(f"perplexity document {doc.get('doc_id')!r} has no {PERPLEXITY_UNITS.get(metric)!r} count")
    return float(doc["ll"]), float(units)


def _binary(values: list[Any]) -> bool:
    return all(v == 0.0 or v == 1.0 for v in values)


# ---------------------------------------------------------------- one requested task (a unit)


@dataclass
class _Unit:
    name: str
    metric: str
    higher_is_better: bool
    weight_by_size: bool = True
    strata: list[_Stratum] = field(default_factory=list)
    comparison: TaskComparison | None = None

    def combine(self, values: list[float]) -> float:
        """The task's score from its subtasks' scores, as lm-eval aggregates a group."""
        if len(values) == 1:
            return values[0]
        if self.weight_by_size:
            sizes = [len(s.base) for s in self.strata]
            return sum(v * n for v, n in zip(values, sizes)) / sum(sizes)
        return fmean(values)

    def point(self) -> tuple[float, float]:
        return (self.combine([s.value(s.base) for s in self.strata]),
                self.combine([s.value(s.variant) for s in self.strata]))

    def resample(self, rng: random.Random) -> float | None:
        pairs = [s.resample(rng) for s in self.strata]
        return self.recovery(self.combine([p[0] for p in pairs]), self.combine([p[1] for p in pairs]))

    def recovery(self, base: float, variant: float) -> float | None:
        return recovery(base, variant, self.higher_is_better)


def recovery(base: float, variant: float, higher_is_better: bool) -> float | None:
    """Percent of the base's score kept by the variant (unrounded); None when it cannot be computed."""
    if not math.isfinite(base):
        return None
    if not math.isfinite(variant):
        return 0.0
    if higher_is_better:
        return variant / base * 100.0 if base > 0 else None
    return base / variant * 100.0 if variant > 0 and base > 0 else None


def wilson_lower(successes: float, n: int, z: float) -> float:
    """Lower end of the Wilson score interval of a proportion."""
    if n <= 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# ---------------------------------------------------------------- building the units


def _requested(samples: dict[str, Any]) -> list[str]:
    if samples.get("requested"):
        return list(samples["requested"])
    inside = {t for g in (samples.get("groups") or {}).values() for t in g.get("subtasks", [])}
    return [*(samples.get("groups") or {}), *(t for t in samples.get("tasks") or {} if t not in inside)]


def _leaves(samples: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, list[str]]:
    group = (samples.get("groups") or {}).get(name)
    if group is not None:
        return group, list(group.get("subtasks") or [])
    return None, [name] if name in (samples.get("tasks") or {}) else []


def _docs_by_id(task: str, entry: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for doc in entry.get("docs") or []:
        if doc["doc_id"] in out:
            raise ValueError(f"task {task!r} lists doc_id {doc['doc_id']!r} twice in its per-document results")
        out[doc["doc_id"]] = doc
    return out


def _build_unit(name: str, base: dict[str, Any], variant: dict[str, Any]) -> _Unit:
    """The paired strata of one requested task, or a unit whose `comparison` already says why it is not used."""
    group, leaves = _leaves(base, name)
    _, vleaves = _leaves(variant, name)
    first = (base.get("tasks") or {}).get(leaves[0]) if leaves else None
    metric = str((group or first or {}).get("metric") or "")
    hib = (first or {}).get("higher_is_better")
    hib = bool(hib) if hib is not None else metric not in PERPLEXITY_UNITS
    unit = _Unit(name, metric, hib, bool((group or {}).get("weight_by_size", True)))

    def unused(note: str, docs: int = 0) -> _Unit:
        unit.comparison = TaskComparison(task=name, metric=metric, docs=docs, used=False, note=note)
        return unit

    if not leaves:
        return unused("the base has no per-document results for this task")
    if not vleaves:
        return unused("the variant has no per-document results for this task")
    base_docs = variant_docs = paired = 0
    choices: list[float] = []
    output_types: set[str] = set()
    for leaf in leaves:
        b, v = base["tasks"].get(leaf), (variant.get("tasks") or {}).get(leaf)
        if b is None or v is None:
            return unused(f"subtask {leaf!r} has no per-document results in the {'base' if b is None else 'variant'}")
        if b.get("metric") != v.get("metric") or b.get("kind") != v.get("kind"):
            return unused(f"{leaf}: base scored {b.get('metric')!r}, variant {v.get('metric')!r}: not comparable")
        kind = str(b.get("kind"))
        if kind not in ("mean", "perplexity"):
            return unused(f"{leaf}: metric {b.get('metric')!r} has no per-document score to pair ({kind})")
        bd, vd = _docs_by_id(leaf, b), _docs_by_id(leaf, v)
        base_docs, variant_docs = base_docs + len(bd), variant_docs + len(vd)
        ids = sorted((i for i in bd if i in vd), key=lambda i: (str(type(i)), i))
        if not ids:
            continue  # this subtask contributes nothing (a group may still have others)
        paired += len(ids)
        unit.strata.append(_Stratum(kind, str(b["metric"]), [_doc_value(kind, b["metric"], bd[i]) for i in ids],
                                    [_doc_value(kind, v["metric"], vd[i]) for i in ids]))
        output_types.add(str(b.get("output_type") or ""))
        choices += [1.0 / bd[i]["choices"] for i in ids if bd[i].get("choices")]
    if not paired:
        return unused(f"no document scored by both base ({base_docs} documents) and variant ({variant_docs})")
    comp = TaskComparison(task=name, metric=metric, docs=paired)
    if paired < max(base_docs, variant_docs):
        comp.note = f"paired on the {paired} documents both scored (base {base_docs}, variant {variant_docs})"
    if unit.strata[0].kind == "mean":
        if choices and len(choices) == paired:
            comp.chance = fmean(choices)
        elif output_types == {"generate_until"}:
            comp.chance = 0.0
    unit.comparison = comp
    return unit


# ---------------------------------------------------------------- the comparison


@dataclass
class PairedResult:
    """What `Comparison` takes from the paired statistics (see `comparison_fields`)."""

    tasks: list[TaskComparison]
    recovery: dict[str, float]  # used tasks only: task -> recovery %
    mean_recovery: float | None
    mean_recovery_ci: list[float] | None
    tasks_compared: list[str]
    confidence: float
    bootstrap: dict[str, Any]

    def comparison_fields(self) -> dict[str, Any]:
        return {"recovery": dict(self.recovery), "mean_recovery": self.mean_recovery,
                "mean_recovery_ci": self.mean_recovery_ci, "confidence": self.confidence,
                "bootstrap": dict(self.bootstrap), "tasks": list(self.tasks),
                "tasks_compared": list(self.tasks_compared)}


def _point(unit: _Unit, z: float) -> None:
    comp = unit.comparison
    assert comp is not None
    b, v = unit.point()
    comp.base, comp.variant = b, v
    rec = unit.recovery(b, v)
    comp.recovery = round(rec, 2) if rec is not None else None
    if rec is None:
        comp.used = False
        comp.note = _join(comp.note, "base score not finite" if not math.isfinite(b) else
                          f"base score {b:.4g} leaves no ratio to take")
    base_vals = [x for s in unit.strata for x in s.base]
    var_vals = [x for s in unit.strata for x in s.variant]
    if unit.strata[0].kind == "mean" and _binary(base_vals) and all(x in (0.0, 1.0) or not math.isfinite(x)
                                                                     for x in var_vals):
        comp.right_to_wrong = sum(1 for x, y in zip(base_vals, var_vals) if x == 1.0 and y != 1.0)
        comp.wrong_to_right = sum(1 for x, y in zip(base_vals, var_vals) if x == 0.0 and y == 1.0)
        if comp.chance is not None and math.isfinite(b):
            low = wilson_lower(sum(base_vals), len(base_vals), z)
            if low <= comp.chance:
                comp.at_chance, comp.used = True, False
                comp.note = _join(comp.note, f"base {b:.1%} cannot be told apart from chance {comp.chance:.1%} "
                                             f"(Wilson lower bound {low:.1%} on {len(base_vals)} documents): "
                                             "not used for recovery")


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def compare_tasks(base_samples: dict[str, Any], variant_samples: dict[str, Any], gate: GateSettings,
                  tasks: list[str] | None = None) -> PairedResult:
    """Paired recovery per requested task (or `tasks`), and the mean over the tasks used, with bootstrap CIs."""
    names = list(tasks) if tasks is not None else _requested(base_samples)
    conf = float(gate.confidence)
    z = NormalDist().inv_cdf((1 + conf) / 2)
    units = [_build_unit(n, base_samples, variant_samples) for n in names]
    live = [u for u in units if u.strata]
    for u in live:
        _point(u, z)
    rng = random.Random(gate.bootstrap_seed)
    rec_samples: dict[str, list[float]] = {u.name: [] for u in live}
    mean_samples: list[float] = []
    used = [u for u in live if u.comparison is not None and u.comparison.used]
    for _ in range(int(gate.bootstrap_resamples)):
        this: dict[str, float | None] = {}
        for u in live:  # fixed order: the same seed gives the same draws
            r = u.resample(rng)
            this[u.name] = r
            if r is not None:
                rec_samples[u.name].append(r)
        picked = [this[u.name] for u in used]
        if picked and all(r is not None for r in picked):
            mean_samples.append(fmean(picked))  # type: ignore[arg-type]
    alpha = (1 - conf) / 2
    resamples = int(gate.bootstrap_resamples)
    for u in live:
        comp = u.comparison
        assert comp is not None
        got = sorted(rec_samples[u.name])
        if comp.recovery is None:
            continue
        if len(got) < resamples:  # a resample whose base scored 0: no ratio; too many of them, no interval
            enough = len(got) >= resamples * (1 - alpha)
            comp.note = _join(comp.note, f"{resamples - len(got)} of {resamples} resamples left no ratio"
                                         + ("" if enough else ": no interval"))
            if not enough:
                continue
        comp.ci = [round(percentile(got, alpha), 2), round(percentile(got, 1 - alpha), 2)]
    comps = [u.comparison for u in units if u.comparison is not None]
    recov = {u.name: u.comparison.recovery for u in used if u.comparison and u.comparison.recovery is not None}
    mean = round(fmean(recov.values()), 2) if recov else None
    mean_ci = None
    if mean is not None and len(mean_samples) >= resamples * (1 - alpha):
        ordered = sorted(mean_samples)
        mean_ci = [round(percentile(ordered, alpha), 2), round(percentile(ordered, 1 - alpha), 2)]
    return PairedResult(tasks=comps, recovery=recov, mean_recovery=mean, mean_recovery_ci=mean_ci,
                        tasks_compared=list(recov), confidence=conf,
                        bootstrap={"method": METHOD, "resamples": resamples, "seed": int(gate.bootstrap_seed)})
