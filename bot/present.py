"""How the manifest's facts read in words and short cells: one place for the CLI tables, `bot status`, the
publish note and the reports, so that a recovery never appears without its interval or a gate state without
its rule. Pure: reads typed records, decides nothing."""

from __future__ import annotations

from bot.manifest import Comparison, FidelityRecord, GateDecision


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def recovery_text(comp: Comparison | None) -> str:
    """'99.1% [97.8, 100.4]' (the paired CI), or the point estimate alone where an older run has no CI."""
    if comp is None or comp.mean_recovery is None:
        return "-"
    if comp.mean_recovery_ci is None:
        return pct(comp.mean_recovery)
    lo, hi = comp.mean_recovery_ci
    return f"{comp.mean_recovery:.1f}% [{lo:.1f}, {hi:.1f}]"


def fidelity_text(fid: FidelityRecord | None) -> str:
    if fid is None:
        return "-"
    if fid.error:
        return "not measured"
    if fid.nonfinite:
        return f"non-finite logits ({fid.nonfinite})"
    if fid.kl_mean is None:
        return "-"
    agree = f", top-1 {fid.top1_agreement:.1%}" if fid.top1_agreement is not None else ""
    return f"KL {fid.kl_mean:.3g}{agree}"


def gate_text(gate: GateDecision | None) -> str:
    """'passed', 'rejected: <first reason>', 'inconclusive after 3 round(s): <reason>'."""
    if gate is None:
        return "-"
    state = gate.outcome.value + (" (forced)" if gate.forced else "")
    if not gate.reasons:
        return state
    rounds = f" after {gate.rounds} round(s)" if gate.rounds > 1 else ""
    return f"{state}{rounds}: {gate.reasons[0]}"
