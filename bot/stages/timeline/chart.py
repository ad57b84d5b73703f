"""The timeline's chart (`timeline.png` in the run directory): one attempt of `bot publish` on one time axis.

Top: a row per lane (the validation lane first, then each quantize worker), a bar per span in its model's colour
(the same on every lane, so a variant's quantize bar and its validation bars match; the validation phases shaded
from load/speed to lm-eval to fidelity), white bars where the quantize workers were paused for a speed figure; a
span the attempt never closed runs to the attempt's end, hatched. Bottom, when nvidia-smi was sampled: each GPU's memory in use (GB) and its utilization (%); without samples
the panel says so instead of drawing zeros. Rendered with the Agg canvas directly, like the card's chart
(bot/stages/card/chart.py).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bot.stages.timeline.record import VALIDATE_LANE, Attempt

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#CCB974", "#64B5CD")
BASE_COLOUR = "#7F7F7F"
LOAD_COLOUR = "#D0D0D0"  # a quantize worker loading the base
PAUSE_COLOUR = "#FFFFFF"
PHASES = (("load", 1.0, None, "load, generate, speed"), ("lm-eval", 0.65, None, "lm-eval"),
          ("fidelity", 0.45, "..", "fidelity (and verdict)"))
CHAR_FRACTION = 0.0085  # of the axis' width taken by one character of a 7-point label (10-inch figure)


def _lanes(attempt: Attempt) -> list[str]:
    names = list(dict.fromkeys(s.lane for s in attempt.spans))
    quantize = sorted((n for n in names if n.startswith("quantize-")), key=lambda n: int(n.split("-")[1]))
    return ([VALIDATE_LANE] if VALIDATE_LANE in names else []) + quantize + [
        n for n in names if n != VALIDATE_LANE and n not in quantize]


def _end_of(attempt: Attempt) -> float:
    ends = [s.end_s for s in attempt.spans if s.end_s is not None] + [s.start_s for s in attempt.spans]
    ends += [x.t_s for x in attempt.samples]
    return max(ends, default=0.0)


def _colours(attempt: Attempt) -> dict[str, str]:
    """One colour per model, the same on every lane: a variant's quantize and validate bars match."""
    models = [m for m in dict.fromkeys(s.model for s in attempt.spans if s.stage != "pause") if m != "base"]
    return {"base": BASE_COLOUR, **{m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}}


def _phase(what: str) -> tuple[str, float, str | None, str]:
    return next((p for p in PHASES if what.startswith(p[0])), PHASES[0])


def _label(ax, x0: float, x1: float, y: float, end: float, scale: float, texts: list[str], dark: bool) -> None:
    """The first of `texts` that fits the bar, centred on it; none when none fits."""
    room = (x1 - x0) / end
    text = next((t for t in texts if len(t) * CHAR_FRACTION < room), None)
    if text:
        ax.text((x0 + x1) / 2 / scale, y, text, ha="center", va="center", fontsize=7, clip_on=True, zorder=4,
                color="white" if dark else "black")


def draw_timeline(attempt: Attempt, title: str, path: Path) -> bool:
    """Write the PNG; False (and nothing written) when the attempt has no span to draw."""
    lanes = _lanes(attempt)
    if not lanes:
        return False
    end = max(_end_of(attempt), 1.0)
    scale, unit = (60.0, "min") if end > 180 else (1.0, "s")
    colours = _colours(attempt)
    fig = Figure(figsize=(10, 3.4 + 0.45 * len(lanes)), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [max(2, len(lanes)), 2]})
    for row, lane in enumerate(lanes):
        y = len(lanes) - 1 - row
        for span in (s for s in attempt.spans if s.lane == lane):
            stop = span.end_s if span.end_s is not None else end
            x, w = span.start_s / scale, (stop - span.start_s) / scale
            if span.stage == "pause":
                top.barh(y, w, left=x, height=0.35, color=PAUSE_COLOUR, edgecolor="black", linewidth=0.6, zorder=3)
                continue
            open_hatch = "//" if span.end_s is None else None
            if span.what == "load base":
                top.barh(y, w, left=x, height=0.8, color=LOAD_COLOUR, edgecolor="black", linewidth=0.4,
                         hatch=open_hatch)
                continue
            colour = colours.get(span.model, BASE_COLOUR)
            if span.stage == "validate":
                name, alpha, hatch, _ = _phase(span.what)
                top.barh(y, w, left=x, height=0.8, color=colour, alpha=alpha, edgecolor="black", linewidth=0.4,
                         hatch=open_hatch or hatch)
                _label(top, span.start_s, stop, y, end, scale, [f"{span.model} {name}", span.model], alpha > 0.6)
            else:
                top.barh(y, w, left=x, height=0.8, color=colour, edgecolor="black", linewidth=0.4, hatch=open_hatch)
                _label(top, span.start_s, stop, y, end, scale, [span.model], True)
    top.set_yticks(range(len(lanes)))
    top.set_yticklabels(list(reversed(lanes)), fontsize=8)
    top.set_ylim(-0.6, len(lanes) - 0.4)
    top.grid(True, axis="x", alpha=0.3)
    handles = [Patch(facecolor=c, label=m) for m, c in colours.items() if any(s.model == m for s in attempt.spans)]
    handles += [Patch(facecolor="0.55", alpha=a, hatch=h, label=f"validate: {text}") for _, a, h, text in PHASES]
    handles += [Patch(facecolor=LOAD_COLOUR, edgecolor="black", label="quantize: load base"),
                Patch(facecolor=PAUSE_COLOUR, edgecolor="black", label="quantize paused (speed measured)")]
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    mode = "quantize and validate overlapped" if attempt.mode == "overlap" else "quantize, then validate"
    top.set_title(f"{title}: {mode} (attempt of {attempt.started_at})", fontsize=10)
    _gpu_panel(bottom, attempt, scale)
    bottom.set_xlabel(f"time since the attempt started ({unit})")
    bottom.set_xlim(0, end / scale * 1.01)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def _gpu_panel(ax, attempt: Attempt, scale: float) -> None:
    if not attempt.samples:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "GPU memory and utilization not sampled (no nvidia-smi answered)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="0.4", style="italic")
        return
    util_ax = ax.twinx()
    for index in sorted({s.index for s in attempt.samples}):
        mine = [s for s in attempt.samples if s.index == index]
        xs = [s.t_s / scale for s in mine]
        ax.plot(xs, [s.used_bytes / 1e9 for s in mine], color="#55A868", linewidth=1.4, label=f"GPU {index} memory")
        util = [(s.t_s / scale, s.utilization_pct) for s in mine if s.utilization_pct is not None]
        if util:
            util_ax.plot([u[0] for u in util], [u[1] for u in util], color="#C44E52", linewidth=0.9, alpha=0.8,
                         label=f"GPU {index} utilization")
    total = max(s.total_bytes for s in attempt.samples) / 1e9
    ax.axhline(total, color="#55A868", linestyle="--", linewidth=0.7)
    ax.set_ylim(0, total * 1.08)
    ax.set_ylabel("memory in use (GB)", fontsize=8)
    util_ax.set_ylim(0, 105)
    util_ax.set_ylabel("utilization (%)", fontsize=8)
    lines = ax.get_legend_handles_labels()
    more = util_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7, framealpha=0.9)
    ax.grid(True, alpha=0.3)
