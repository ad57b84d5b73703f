"""How the manifest's facts read in words and short cells: one place for the CLI tables, `bot status`, the
publish note and the reports, so that a recovery never appears without its interval or a gate state without
its rule. Pure: reads typed records, decides nothing."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.manifest import Comparison, FidelityRecord, GateDecision, GateState


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


# ---------------------------------------------------------------- cells of the status page (and any table)


def first_line(text: str | None) -> str:
    """Errors may carry a log tail; a cell shows their first line."""
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def speedup_text(comp: Comparison | None, part: str) -> str:
    """'1.59×' for `part` "batch1" or "batched", only where base and variant were measured alike."""
    if comp is None or not comp.speed_comparable:
        return "-"
    value = comp.speedup_batch1 if part == "batch1" else comp.speedup_batched
    return "-" if value is None else f"{value:.2f}×"


def speed_note(comp: Comparison | None) -> str:
    """Why no speedup is shown ('' when one is, or nothing was compared)."""
    if comp is None or comp.speed_comparable:
        return ""
    return comp.speed_incomparable_reason or "speed not comparable with the base"


def size_text(num_bytes: int | None, size_ratio: float | None = None) -> str:
    """'5.70 GB' (decimal, as disk sizes are quoted), with the share of the base when recorded."""
    if num_bytes is None:
        return "-"
    share = f" ({size_ratio:.2f}× base)" if size_ratio is not None else ""
    return f"{num_bytes / 1e9:.2f} GB{share}"


def when_text(iso: str | None) -> str:
    """'2026-11-03 10:40 UTC' from an ISO timestamp (as written, when it does not parse)."""
    if not iso:
        return "-"
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc)
    return at.strftime("%Y-%m-%d %H:%M") + (" UTC" if at.tzinfo is not None else "")


def gate_reason(gate: GateDecision | None) -> str:
    """Every reason of a gate that did not pass, or of a forced pass ('' otherwise)."""
    if gate is None or (gate.outcome == GateState.passed and not gate.forced):
        return ""
    return "; ".join(gate.reasons)


def stage_failure(stage: str, error: str | None) -> str:
    """'quantize: RuntimeError: ...' (first line of the error)."""
    return f"{stage}: {first_line(error) or 'no error recorded'}"


def attempts_text(attempts: int) -> str:
    return "-" if attempts <= 0 else f"{attempts} attempt{'s' if attempts != 1 else ''}"


def failures_text(failed: int, total: int) -> str:
    """'none', or '2 of 5 variants'."""
    return "none" if failed == 0 else f"{failed} of {total} variant{'s' if total != 1 else ''}"


def collection_text(slug: str) -> str:
    """A Hub collection slug ('ns/llama-8b-quantized-65f0c1d2e3a4b5c6d7e8f901') as its readable part."""
    name = slug.rsplit("/", 1)[-1]
    head, _, tail = name.rpartition("-")
    return head if head and len(tail) >= 16 and all(c in "0123456789abcdef" for c in tail) else name
