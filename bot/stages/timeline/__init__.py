"""The run's timeline: what ran when in each `bot publish` attempt (record.py), and its chart (chart.py)."""

from bot.stages.timeline.record import Attempt, GpuSample, Span, Timeline, TimelineRecorder, read_timeline

__all__ = ["Attempt", "GpuSample", "Span", "Timeline", "TimelineRecorder", "read_timeline"]
