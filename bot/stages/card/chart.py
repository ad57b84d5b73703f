"""The card's chart: size on disk vs mean recovery, one point per variant plus the base.

Marker size and colour show the speedup over the base (batched throughput when measured, else batch-1 decode).
A variant whose recovery or speedup was not measured is drawn hollow and annotated "not measured"; one without a
recovery sits on a dashed line under the others. Rendered with the Agg canvas directly (no pyplot state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from bot.stages.card.data import RunData

CHART_NAME = "quantization_tradeoffs.png"


@dataclass(frozen=True)
class Point:
    label: str
    size_gb: float
    recovery: float | None
    speedup: float | None
    current: bool
    base: bool = False


def chart_points(run: RunData, current: str) -> tuple[list[Point], str]:
    """The points to draw and what the speedup means ("batched" or "batch-1")."""
    comps = {vid: vm.validate_.comparison for vid, vm in run.variants.items() if vm.validate_ and vm.validate_.comparison}
    batched = any(c.speedup_batched is not None for c in comps.values())
    kind = "batched throughput" if batched else "batch-1 decode"
    labels = {vm.validate_.speed.label for vm in run.variants.values()
              if vm.validate_ and vm.validate_.speed and vm.validate_.speed.label}
    if labels and labels != {"GPU"}:
        kind += ", measured on " + "/".join(sorted(labels))  # CPU speed is never presented as GPU speed
    points: list[Point] = []
    base_size = run.base.base.size_bytes
    if base_size is not None:
        dtype = run.base.base.dtype
        points.append(Point(f"base ({dtype})" if dtype else "base", base_size / 1e9, 100.0, 1.0, False, base=True))
    for vid, vm in run.variants.items():
        if vm.quantize.size_bytes is None:
            continue
        c = comps.get(vid)
        speed = (c.speedup_batched if batched else c.speedup_batch1) if c else None
        points.append(Point(run.recipes[vid].name, vm.quantize.size_bytes / 1e9, c.mean_recovery if c else None,
                            speed, vid == current))
    return points, kind


def draw_chart(run: RunData, current: str, path: Path) -> bool:
    """Write the PNG; False (and nothing written) when no variant has a size to place."""
    points, kind = chart_points(run, current)
    if not any(not p.base for p in points):
        return False
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    measured = [p.recovery for p in points if p.recovery is not None]
    low = min(measured) if measured else 95.0
    span = max(100.0, max(measured) if measured else 100.0) - low
    floor = low - max(1.0, span * 0.25)  # where points without a recovery sit
    speeds = [p.speedup for p in points if p.speedup is not None]
    norm = Normalize(vmin=min([*speeds, 1.0]) * 0.95, vmax=max([*speeds, 1.0]) * 1.05)
    cmap = colormaps["viridis"]
    for p in points:
        y = p.recovery if p.recovery is not None else floor
        size = 60 + 160 * (p.speedup if p.speedup is not None else 1.0)
        missing = p.recovery is None or p.speedup is None
        if p.recovery is None or p.speedup is None:
            ax.scatter([p.size_gb], [y], s=size, facecolors="none", edgecolors="0.35", linewidths=1.6, zorder=3)
        else:
            ax.scatter([p.size_gb], [y], s=size, color=cmap(norm(p.speedup)), edgecolors="black",
                       linewidths=1.8 if p.current else 0.6, marker="D" if p.base else "o", zorder=3)
        label = p.label + (" (this model)" if p.current else "")
        if missing:
            what = "recovery" if p.recovery is None else "speed"
            label += f"\n{what} not measured"
        ax.annotate(label, (p.size_gb, y), textcoords="offset points", xytext=(8, 6), fontsize=8.5,
                    fontweight="bold" if p.current else "normal", color="0.3" if missing else "black")
    if any(p.recovery is None for p in points):
        ax.axhline(floor, color="0.6", linestyle="--", linewidth=0.8, zorder=1)
        ax.annotate("recovery not measured", (1.0, floor), xycoords=("axes fraction", "data"), xytext=(-4, -11),
                    textcoords="offset points", ha="right", fontsize=8, color="0.45", style="italic")
    sm = ax.scatter([], [], c=[], cmap=cmap, norm=norm)
    fig.colorbar(sm, ax=ax, label=f"speedup vs base ({kind}, ×)")
    ax.set_xlabel("size on disk (GB)")
    ax.set_ylabel("mean accuracy recovery (% of base)")
    ax.set_title(f"{run.base.base.model_id}: size vs accuracy vs speed", fontsize=11)
    ax.grid(True, alpha=0.3)
    xs = [p.size_gb for p in points]
    ax.set_xlim(0, max(xs) * 1.25)
    ax.set_ylim(floor - max(0.5, span * 0.1), max(100.0, max(measured) if measured else 100.0) + max(0.5, span * 0.15))
    if any(p.recovery is None for p in points):  # no recovery ticks down where the unmeasured points sit
        ax.set_yticks([t for t in ax.get_yticks() if t >= (floor + low) / 2 and t <= ax.get_ylim()[1]])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return True
