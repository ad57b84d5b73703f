"""What a variant card says about accuracy and how sure it is: the task table (with the paired CIs and flips the
validate stage recorded), the "How sure are we" line, and next-token fidelity against the base.

Every number here was decided by the validate stage (`Comparison`, `TaskComparison`, `FidelityRecord`,
`GateDecision`); nothing is recomputed. Records of older runs lack the paired facts: what they hold is shown,
the rest is left out (the table then has no CI and flips columns), never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.manifest import Comparison, FidelityRecord, GateDecision, TaskComparison, TaskScore, ValidateRecord
from bot.stages.card.data import RunData, accuracy_reason, first_line
from bot.stages.card.format import (
    NOT_MEASURED, Scrubber, brief, code, confidence_level, count, md_cell, metric_name, nats, not_measured, one_line,
    pct, pct_range, ratio, score,
)
from bot.stages.card.view_parts import AccuracyRow, KeyValue


@dataclass(frozen=True)
class AccuracyView:
    rows: list[AccuracyRow]
    paired: bool  # the validate stage recorded per-task paired comparisons: CI and flips columns are shown
    summary: str
    notes: list[str]
    confidence: str  # the "How sure are we" line ("" when nothing was measured)
    fidelity: list[KeyValue]
    fidelity_missing: str  # why there is no fidelity table ("" when there is one)


def _scores(rec: ValidateRecord | None) -> dict[str, TaskScore]:
    if rec is None or rec.accuracy is None or rec.accuracy.error:
        return {}
    return {t.task: t for t in rec.accuracy.tasks}


def used_tasks(comp: Comparison) -> list[TaskComparison]:
    return [t for t in comp.tasks if t.used]


def documents(comp: Comparison) -> int:
    """Documents the mean's CI was paired over (those of the tasks counted in the mean)."""
    return sum(t.docs for t in used_tasks(comp))


def recovery_with_ci(comp: Comparison) -> str:
    """"99.10% (95% CI 97.80–100.40%)", or the mean alone in records without a CI."""
    assert comp.mean_recovery is not None
    if comp.mean_recovery_ci:
        return f"{pct(comp.mean_recovery)} ({confidence_level(comp.confidence)}CI {pct_range(comp.mean_recovery_ci)})"
    return pct(comp.mean_recovery)


def gate_rule(gate: GateDecision, min_recovery: float | None) -> str:
    """The rule as the validate stage applied it; older records carry only the threshold."""
    if gate.rule:
        return gate.rule
    threshold = gate.threshold if gate.threshold is not None else min_recovery
    return f"mean recovery at least {pct(threshold)}" if threshold is not None else "no rule recorded"


def gate_sentence(gate: GateDecision | None, min_recovery: float | None) -> str:
    if gate is None:
        return "Gate: not evaluated."
    rounds = f", after {gate.rounds} evaluation rounds" if gate.rounds > 1 else ""
    return f"Gate: {gate.outcome.value} ({one_line(gate_rule(gate, min_recovery), 160)}{rounds})."


def confidence_line(run: RunData, variant: str) -> str:
    """Mean recovery with its CI and what it was paired over, next-token fidelity, and the gate's decision."""
    vv = run.variants[variant].validate_
    if vv is None:
        return ""
    comp, fid = vv.comparison, vv.fidelity
    parts: list[str] = []
    if comp is not None and comp.mean_recovery is not None:
        text = f"Mean recovery {pct(comp.mean_recovery)}"
        extra = []
        if comp.mean_recovery_ci:
            extra.append(f"{confidence_level(comp.confidence)}CI {pct_range(comp.mean_recovery_ci)}")
        if documents(comp):
            extra.append(f"paired over {count(documents(comp))} documents")
        parts.append(text + (f" ({', '.join(extra)})" if extra else " (no confidence interval recorded)"))
    elif vv.gate is not None:  # judged without a recovery: say why there is none
        parts.append(f"Mean recovery {not_measured(brief(accuracy_reason(vv) or 'no comparison recorded'))}")
    if fid is not None and not fid.error and fid.tokens:
        measures = []
        if fid.kl_mean is not None:
            measures.append(f"next-token KL {nats(fid.kl_mean)}")
        if fid.top1_agreement is not None:
            measures.append(f"top-1 agreement {pct(fid.top1_agreement * 100)}")
        if measures:
            parts.append(f"{', '.join(measures)} on {count(fid.tokens)} held-out tokens")
    if not parts and vv.gate is None:
        return ""
    head = "; ".join(parts) + ". " if parts else ""
    return head + gate_sentence(vv.gate, run.recipes[variant].min_recovery)


def _task_note(tc: TaskComparison) -> str:
    if tc.at_chance:
        chance = f" ({pct(tc.chance * 100)})" if tc.chance is not None else ""
        return f"base at chance{chance}: not counted"
    if not tc.used:
        return f"not counted: {tc.note}" if tc.note else "not counted"
    return ""


def _flips(tc: TaskComparison | None) -> str:
    if tc is None:
        return "not recorded"
    if tc.right_to_wrong is None or tc.wrong_to_right is None:
        return "— (not scored right/wrong)"
    return f"{tc.right_to_wrong} / {tc.wrong_to_right}"


def accuracy_view(run: RunData, variant: str, scrub: Scrubber) -> AccuracyView:
    vv = run.variants[variant].validate_
    bv = run.base.validate_
    ours, theirs = _scores(vv), _scores(bv)
    comp = vv.comparison if vv else None
    paired = {t.task: t for t in comp.tasks} if comp else {}
    details: dict[str, None] = {}  # full reasons, shown once under the table when a cell has only the brief one

    def missing(reason: str | None, who: str) -> str:
        full = scrub(reason or "missing")
        if brief(full) != full:
            details[f"{who}: {full}"] = None
        return not_measured(brief(full))

    rows = []
    for task in dict.fromkeys([*ours, *theirs]):
        v, b = ours.get(task), theirs.get(task)
        tc = paired.get(task)
        metric = v.metric if v is not None else b.metric if b is not None else ""
        base_cell = score(b.value, b.metric) if b else missing(accuracy_reason(bv, task), "Base")
        var_cell = score(v.value, v.metric) if v else missing(accuracy_reason(vv, task), "This variant")
        rec = tc.recovery if tc is not None and tc.recovery is not None else (comp.recovery.get(task) if comp else None)
        if rec is not None:
            note = _task_note(tc) if tc is not None else ""
            rec_cell = pct(rec) + (f" ({note})" if note else "")
        elif v is None:
            rec_cell = missing(accuracy_reason(vv, task), "This variant")
        elif b is None:
            rec_cell = not_measured("base: " + brief(scrub(accuracy_reason(bv, task) or "missing")))
        else:
            rec_cell = not_measured("no comparison recorded" if comp is None else "not computable from these scores")
        ci = pct_range(tc.ci) if tc is not None and tc.ci else "not recorded"
        err = " / ".join(NOT_MEASURED if t is None else score(t.stderr, t.metric) if t.stderr is not None
                         else "not reported" for t in (b, v))
        rows.append(AccuracyRow(code(task), md_cell(metric_name(metric)), md_cell(base_cell), md_cell(var_cell),
                                md_cell(rec_cell), md_cell(ci), md_cell(_flips(tc)), err))
    recipe = run.recipes[variant]
    threshold = vv.gate.threshold if vv and vv.gate and vv.gate.threshold is not None else recipe.min_recovery
    gate = f" The quality gate for this recipe asks for at least {pct(threshold)}." if threshold is not None else ""
    if vv is not None and vv.gate is not None and vv.gate.rule:
        gate = f" The quality gate: {one_line(vv.gate.rule, 200)}."
    if comp is not None and comp.mean_recovery is not None:
        n = len(comp.tasks_compared) or len(comp.recovery) or len(rows)
        summary = f"Mean recovery over {n} task{'s' if n != 1 else ''}: **{recovery_with_ci(comp)}**.{gate}"
    else:
        reason = accuracy_reason(vv) or (f"base: {accuracy_reason(bv)}" if accuracy_reason(bv) else None)
        summary = f"Mean recovery: {not_measured(scrub(reason or 'comparison not recorded'))}.{gate}"
        details.pop(f"This variant: {scrub(accuracy_reason(vv) or '')}", None)
    notes = [f"Not measured — {d}." for d in details]
    notes.append("Scores are percentages (accuracy or exact match); stderr is lm-eval's standard error (base / "
                 "variant). Recovery is the variant's score divided by the base's (the inverse for lower-is-better "
                 "metrics such as perplexity).")
    if paired:
        level = confidence_level(comp.confidence if comp else None)
        notes.append(f"The {level}CI comes from a paired bootstrap over the documents both models answered; flips "
                     "count the documents the base got right and this variant wrong, and the reverse.")
    chance = [t.task for t in paired.values() if t.at_chance]
    if chance:
        notes.append(f"At chance: the base's score on {', '.join(code(t) for t in chance)} cannot be told apart from "
                     "guessing, so the recovery there says nothing; it is left out of the mean.")
    limit = vv.accuracy.limit if vv and vv.accuracy else None
    if limit is not None:
        notes.append(f"Each task ran on its first {limit} samples (lm-eval `--limit {limit}`): the scores compare "
                     "this variant with its base; they are not comparable with full-benchmark leaderboard numbers.")
    fidelity, fidelity_missing = fidelity_rows(vv.fidelity if vv else None, scrub)
    return AccuracyView(rows, bool(paired), summary, notes, confidence_line(run, variant), fidelity, fidelity_missing)


def fidelity_rows(fid: FidelityRecord | None, scrub: Scrubber) -> tuple[list[KeyValue], str]:
    """The next-token comparison with the base on held-out text, or why there is none."""
    if fid is None:
        return [], "not measured (this run's validation did not record it)"
    if fid.error:
        return [], not_measured(scrub(first_line(fid.error)))
    if not fid.tokens:
        return [], "not measured (no token scored)"
    rows = []
    if fid.kl_mean is not None:
        rows.append(KeyValue("Mean KL divergence (base ‖ variant) per token", nats(fid.kl_mean)))
    if fid.kl_p99 is not None:
        rows.append(KeyValue("KL divergence, 99th percentile of tokens", nats(fid.kl_p99)))
    if fid.top1_agreement is not None:
        rows.append(KeyValue("Top-1 agreement (same most likely next token)", pct(fid.top1_agreement * 100)))
    if fid.ppl_ratio is not None:
        rows.append(KeyValue("Perplexity, variant / base", ratio(fid.ppl_ratio)))
    text = code(scrub(fid.text)) if fid.text else "not recorded"
    if fid.text_fingerprint:
        text += f" ({code(fid.text_fingerprint)})"
    rows.append(KeyValue("Held-out text", md_cell(text)))
    rows.append(KeyValue("Tokens scored", count(fid.tokens)))
    if fid.vocab != "full" and fid.truncation_bound is not None:
        rows.append(KeyValue("Vocabulary", f"top-{fid.topk} per position (adds at most {nats(fid.truncation_bound)} "
                                           "to the mean KL)"))
    return rows, ""

