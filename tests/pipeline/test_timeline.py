"""The run's timeline (bot.stages.timeline) from the stages' events, the GPU readings it samples (nvidia-smi's
output as it prints it), and the pause of the quantize workers (real processes, stopped and continued)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.clients.process import ProcessGroups, parse_gpu_query
from bot.rundir import RunDir
from bot.stages.timeline import TimelineRecorder, read_timeline

# `nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,utilization.gpu --format=csv,noheader,nounits`
H200_IDLE = "0, NVIDIA H200, 143771, 1, 143253, 0\n"
TWO_BUSY = "0, NVIDIA H200, 143771, 61440, 81814, 97\n1, NVIDIA H200, 143771, 0, 143254, [N/A]\n"


def test_gpu_readings_parse_as_nvidia_smi_prints_them():
    (idle,) = parse_gpu_query(H200_IDLE)
    assert (idle.index, idle.name, idle.utilization_pct) == (0, "NVIDIA H200", 0.0)
    assert idle.total_bytes == 143771 * 2**20 and idle.free_bytes == 143253 * 2**20 and idle.used_bytes == 2**20
    busy, other = parse_gpu_query(TWO_BUSY + "garbage line\n")
    assert busy.utilization_pct == 97.0 and other.utilization_pct is None  # [N/A]: no figure, not zero
    assert parse_gpu_query("") == []


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _events(rec: TimelineRecorder, clock: _Clock) -> None:
    q, v = rec.on_quantize(), rec.on_validate()
    v("phase", {"model": "base", "phase": "load, generate, speed (hf)"})
    clock.t = 2
    q({"event": "load", "worker": 0})
    clock.t = 3
    q({"event": "loaded", "worker": 0})
    q({"event": "start", "variant": "fp8-dynamic", "worker": 0})
    clock.t = 4
    rec.paused(True)
    clock.t = 5
    rec.paused(False)
    q({"event": "end", "variant": "fp8-dynamic", "status": "done", "worker": 0})
    q({"event": "start", "variant": "w4a16-gptq", "worker": 0})
    clock.t = 6
    v("phase", {"model": "base", "phase": "lm-eval bot_wikitext_mini"})
    v("model-end", {"model": "base"})
    clock.t = 7
    v("phase", {"model": "fp8-dynamic", "phase": "load, generate, speed (hf)"})
    clock.t = 8
    v("phase", {"model": "base", "phase": "fidelity of 1 variant(s)", "variants": ["fp8-dynamic"]})
    rec.close()
    clock.t = 9


def test_spans_from_events_on_one_axis_and_no_samples_without_nvidia_smi(tmp_path: Path):
    rundir = RunDir(tmp_path / "run")
    clock = _Clock()
    with TimelineRecorder(rundir, "overlap", {"overlap": True}, probe=lambda: None, clock=clock) as rec:
        _events(rec, clock)
    (attempt,) = read_timeline(rundir).attempts
    assert attempt.mode == "overlap" and attempt.outcome == "finished" and attempt.memory_plan == {"overlap": True}
    assert attempt.gpu_sampling is None and attempt.samples == []  # absent, not zeros
    spans = [(s.lane, s.stage, s.model, s.what, s.start_s, s.end_s, s.status) for s in attempt.spans]
    assert spans == [
        ("validate", "validate", "base", "load, generate, speed (hf)", 0, 6, None),
        ("quantize-0", "quantize", "base", "load base", 2, 3, "done"),
        ("quantize-0", "quantize", "fp8-dynamic", "quantize", 3, 5, "done"),
        ("quantize-0", "pause", "fp8-dynamic", "paused: speed measured", 4, 5, None),
        ("quantize-0", "quantize", "w4a16-gptq", "quantize", 5, 9, None),
        ("validate", "validate", "base", "lm-eval bot_wikitext_mini", 6, 6, None),
        ("validate", "validate", "fp8-dynamic", "load, generate, speed (hf)", 7, 8, None),
        ("validate", "validate", "fp8-dynamic", "fidelity of 1 variant(s)", 8, 8, None),  # the variant's span
    ]
    assert rundir.timeline_chart_path.stat().st_size > 10_000


def test_samples_when_nvidia_smi_answers_and_a_crash_leaves_spans_open(tmp_path: Path):
    rundir = RunDir(tmp_path / "run")
    readings = parse_gpu_query(TWO_BUSY)
    with pytest.raises(KeyboardInterrupt):
        with TimelineRecorder(rundir, "serial", interval_s=0.2, probe=lambda: readings) as rec:
            rec.on_quantize()({"event": "start", "variant": "nvfp4", "worker": 0})
            deadline = time.monotonic() + 30
            while len(rec.attempt.samples) < 6 and time.monotonic() < deadline:  # the sampler thread runs
                time.sleep(0.05)
            raise KeyboardInterrupt
    (attempt,) = read_timeline(rundir).attempts
    assert attempt.gpu_sampling == "nvidia-smi every 0.2 s" and attempt.outcome == "interrupted"
    assert len(attempt.samples) >= 6 and {s.index for s in attempt.samples} == {0, 1}
    assert {s.utilization_pct for s in attempt.samples} == {97.0, None}
    (span,) = attempt.spans
    assert span.status == "interrupted" and span.end_s is not None
    # a second attempt (the rerun) is added, the first kept
    with TimelineRecorder(rundir, "serial", probe=lambda: None):
        pass
    assert [a.outcome for a in read_timeline(rundir).attempts] == ["interrupted", "finished"]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, want: set[str], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(pid)) not in want and time.monotonic() < deadline:
        time.sleep(0.02)
    return state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_paused_workers_are_stopped_until_every_pause_is_resumed():
    loop = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]
    first = subprocess.Popen(loop, start_new_session=True)
    changes: list[bool] = []
    groups = ProcessGroups(max_pause_s=0.5, on_change=changes.append)
    later = None
    try:
        groups.add(first.pid)
        groups.pause()
        groups.pause()  # nested: one resume is not enough
        assert _wait_state(first.pid, {"T"}) == "T"
        later = subprocess.Popen(loop, start_new_session=True)
        groups.add(later.pid)  # started while paused: stopped at once
        assert _wait_state(later.pid, {"T"}) == "T"
        groups.resume()
        time.sleep(0.1)
        assert _state(first.pid) == "T"
        groups.resume()
        assert _wait_state(first.pid, {"S", "R"}) in {"S", "R"} and _wait_state(later.pid, {"S", "R"}) in {"S", "R"}
        groups.pause()  # a pause nobody ends is resumed after max_pause_s
        assert _wait_state(first.pid, {"T"}) == "T"
        assert _wait_state(first.pid, {"S", "R"}, timeout=10) in {"S", "R"}
        assert changes == [True, False, True, False]
        groups.pause()
        groups.terminate()  # ends paused groups too
        assert first.wait(timeout=10) == -15 and later.wait(timeout=10) == -15
    finally:
        for proc in (first, later):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
