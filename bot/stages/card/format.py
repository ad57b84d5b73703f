"""Number and text formatting for model cards: every number a card shows is formatted here, once.

Also the scrubber that keeps machine paths and tokens out of anything written to the card directory, and the
GPU generations table the hardware section is built from.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from bot.secrets import redact

NOT_MEASURED = "not measured"
_REASON_MAX = 110

# lm-eval metrics on a 0..1 scale, shown as percentages (the way model cards and leaderboards show them).
PERCENT_METRICS = frozenset({
    "acc", "acc_norm", "exact_match", "mc1", "mc2", "f1", "em", "pass@1", "prompt_level_strict_acc",
    "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc", "contains",
})


def metric_name(metric: str) -> str:
    """lm-eval metric keys carry a filter ("exact_match,strict-match"): the name is the part before the comma."""
    return metric.split(",", 1)[0]


def is_percent_metric(metric: str) -> bool:
    return metric_name(metric) in PERCENT_METRICS


def score(value: float, metric: str) -> str:
    return f"{value * 100:.2f}" if is_percent_metric(metric) else f"{value:.4f}"


def score_value(value: float, metric: str) -> float:
    """The number `score` shows, as a float (what model-index and .eval_results carry)."""
    return round(value * 100, 2) if is_percent_metric(metric) else round(value, 4)


def pct(value: float) -> str:
    return f"{value:.2f}%"


def pct_range(bounds: list[float] | tuple[float, ...]) -> str:
    """A confidence interval of percentages: [97.8, 100.4] -> "97.80–100.40%"."""
    low, high = bounds[0], bounds[-1]
    return f"{low:.2f}–{high:.2f}%"


def confidence_level(value: float | None) -> str:
    """0.95 -> "95%"; None (not recorded) -> "" so the text says just "CI"."""
    return f"{value * 100:g}% " if value is not None else ""


def nats(value: float) -> str:
    """A KL divergence in nats, to three significant figures (they span orders of magnitude)."""
    return f"{value:.3g} nats"


def count(value: int) -> str:
    return f"{value:,}"


def ratio(value: float) -> str:
    return f"{value:.2f}×"


def gb(num_bytes: float) -> str:
    """Decimal gigabytes, as disk and GPU memory sizes are usually quoted."""
    return f"{num_bytes / 1e9:.2f} GB"


def tok_s(value: float) -> str:
    return f"{value:.1f}"


def ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def seconds(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def day(iso: str | None) -> str | None:
    """The date part of an ISO timestamp."""
    return iso[:10] if iso else None


def one_line(text: str, limit: int = _REASON_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def not_measured(reason: str) -> str:
    return f"{NOT_MEASURED} ({one_line(reason)})"


def brief(reason: str, limit: int = 60) -> str:
    """A reason short enough for a table cell: "lm-eval failed: <long error>" -> "lm-eval failed"."""
    reason = " ".join(reason.split())
    if len(reason) <= limit:
        return reason
    head = reason.split(": ", 1)[0]
    return head if len(head) <= limit else one_line(reason, limit)


def md_cell(text: str) -> str:
    """A Markdown table cell: one line, pipes escaped, never empty."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text or "—"


def code(text: str) -> str:
    """Inline code that survives backticks inside the text."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def html_text(text: str) -> str:
    """Model output inside an HTML table: escaped, newlines as <br>, indentation kept, never a blank line
    (a blank line would end the HTML block in CommonMark)."""
    if not text.strip():
        return "<i>(empty output)</i>"
    lines = []
    for line in text.strip("\n").split("\n"):
        stripped = line.lstrip(" ")
        lines.append("&nbsp;" * (len(line) - len(stripped)) + html.escape(stripped))
    return "<br>".join(lines)


@dataclass(frozen=True)
class Scrubber:
    """Replaces local paths (run directory, snapshots, home) by what they stand for, and masks tokens."""

    replacements: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, pairs: list[tuple[Path | str | None, str]]) -> "Scrubber":
        seen: dict[str, str] = {}
        for path, label in pairs:
            if not path:
                continue
            text = str(path).rstrip("/")
            if len(text) < 2:
                continue
            seen.setdefault(text, label)
            try:
                seen.setdefault(str(Path(text).resolve()), label)
            except OSError:
                pass
        ordered = sorted(seen.items(), key=lambda kv: len(kv[0]), reverse=True)
        return cls(tuple(ordered))

    def __call__(self, text: str) -> str:
        for path, label in self.replacements:
            text = text.replace(path, label)
        text = _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
        return redact(text)

    def leaks(self, text: str) -> list[str]:
        """Run-specific paths still present in `text` (home and interpreter prefixes are too generic to check)."""
        return [path for path, label in self.replacements if label not in _GENERIC and path in text]


_GENERIC = ("~", "<python>")
# An absolute path of two or more components that is not part of a URL or of a relative path.
_ABS_PATH = re.compile(r"(?<![\w:/.~<>-])/(?:[\w.+@-]+/)+[\w.+@-]*")


# ---------------------------------------------------------------- GPU generations


@dataclass(frozen=True)
class Generation:
    name: str
    capability: str  # the lowest compute capability of the generation
    examples: str


GENERATIONS: tuple[Generation, ...] = (
    Generation("Turing", "7.5", "T4, RTX 20xx"),
    Generation("Ampere", "8.0", "A100, A10, A40, RTX 30xx (8.6)"),
    Generation("Ada Lovelace", "8.9", "L4, L40S, RTX 40xx"),
    Generation("Hopper", "9.0", "H100, H200, GH200"),
    Generation("Blackwell", "10.0", "B200, GB200"),
    Generation("Blackwell (workstation)", "12.0", "RTX PRO 6000, RTX 50xx"),
)


def cc(value: str | None) -> tuple[int, int] | None:
    """"9.0" -> (9, 0); None or junk -> None."""
    if not value:
        return None
    major, _, minor = str(value).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def generation_of(capability: str | None) -> Generation | None:
    """The generation a measured compute capability belongs to."""
    have = cc(capability)
    if have is None:
        return None
    found = None
    for gen in GENERATIONS:
        if have >= (cc(gen.capability) or (0, 0)):
            found = gen
    return found
