"""The run's timeline: what `bot publish` ran when, per attempt, on one time axis (`timeline.json` in the run
directory, a typed record like the manifests), and the recorder that writes it from the stages' events.

Each attempt (one `bot publish` call; a resumed run adds one) holds spans on lanes: `quantize-N` (worker N: its
load of the base, then each variant it quantized, and the pauses while a speed figure was taken next to it) and
`validate` (each model's phases: load/generate/speed, lm-eval, fidelity, later rounds), in seconds since the
attempt started; and, where nvidia-smi answers, samples of each GPU's memory and utilization. Without nvidia-smi
there are no samples (`gpu_sampling` None): absent, never zeros. The record is rewritten as spans end and samples
come, so a crashed attempt keeps what it did; its open spans stay open (`end_s` None).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from bot.clients.process import GpuReading, query_gpus
from bot.manifest import now_iso
from bot.rundir import RunDir, read_model, write_model
from bot.secrets import redact

VALIDATE_LANE = "validate"
FIDELITY_LANE = "fidelity"  # the fidelity worker when it runs beside lm-eval (CPU: bot.stages.validate.fidelity.Beside)


class _Rec(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Span(_Rec):
    lane: str  # "quantize-0", "quantize-1", ..., "validate"
    stage: str  # "quantize", "validate" or "pause"
    model: str  # the variant, or "base"
    what: str  # "load base", "quantize", "load, generate, speed (hf)", "lm-eval ...", "paused: speed measured"
    start_s: float
    end_s: float | None = None  # None: still open (the attempt ended before it did)
    status: str | None = None  # quantize: done / failed; "interrupted" when the attempt ended first


class GpuSample(_Rec):
    t_s: float
    index: int
    used_bytes: int
    total_bytes: int
    utilization_pct: float | None = None  # None: nvidia-smi reported no utilization for this GPU


class Attempt(_Rec):
    started_at: str
    finished_at: str | None = None
    mode: str  # "overlap" (quantize and validate at once) or "serial"
    memory_plan: dict[str, Any] = Field(default_factory=dict)  # bot.stages.memplan.MemoryPlan.record()
    gpu_sampling: str | None = None  # "nvidia-smi every 5 s"; None: not sampled (no nvidia-smi answered)
    spans: list[Span] = Field(default_factory=list)
    samples: list[GpuSample] = Field(default_factory=list)
    outcome: str | None = None  # "finished", "failed: ...", "interrupted"; None while it runs (or it crashed)


class Timeline(_Rec):
    run_id: str
    attempts: list[Attempt] = Field(default_factory=list)


def read_timeline(rundir: RunDir) -> Timeline | None:
    return read_model(rundir.timeline_path, Timeline)


class TimelineRecorder:
    """Records one attempt: `on_quantize`/`on_validate` wrap the stages' event callbacks, `paused` marks the quantize
    lanes paused, `close(lane)` ends a lane's open span; a sampler thread reads the GPUs every `interval_s`.
    On exit the attempt is finished (outcome from the exception, if any), written, and drawn (timeline.png)."""

    def __init__(self, rundir: RunDir, mode: str, memory_plan: dict[str, Any] | None = None, *,
                 interval_s: float = 5.0, probe: Callable[[], list[GpuReading] | None] = query_gpus,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rundir, self.interval_s, self.probe, self.clock = rundir, interval_s, probe, clock
        self.attempt = Attempt(started_at=now_iso(), mode=mode, memory_plan=memory_plan or {})
        self.lock = threading.RLock()
        self._open: dict[str, Span] = {}
        self._paused: list[Span] = []
        self._t0 = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timeline: Timeline | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "TimelineRecorder":
        self._t0 = self.clock()
        try:
            self._timeline = read_timeline(self.rundir)
        except ValueError:  # an unreadable record of an older bot: this attempt starts a new one
            self._timeline = None
        self._timeline = self._timeline or Timeline(run_id=self.rundir.run_id)
        self._timeline.attempts.append(self.attempt)
        if self._sample():
            self.attempt.gpu_sampling = f"nvidia-smi every {self.interval_s:g} s"
            self._thread = threading.Thread(target=self._sampler, name="bot-timeline-gpu", daemon=True)
            self._thread.start()
        self.write()
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 15)
        with self.lock:
            ended = "interrupted" if kind is KeyboardInterrupt else None if kind is None else "failed"
            for lane in list(self._open):
                self._end(lane, ended)
            if self._paused:
                self.paused(False)
            self.attempt.finished_at = now_iso()
            self.attempt.outcome = ended or "finished"
            if ended == "failed":
                first = redact((str(exc).splitlines() or [""])[0])[:200]
                self.attempt.outcome = f"failed: {type(exc).__name__}" + (f": {first}" if first else "")
            self.write()
        self.draw()

    def now(self) -> float:
        return round(self.clock() - self._t0, 2)

    def write(self) -> None:
        with self.lock:
            if self._timeline is not None:
                write_model(self.rundir.timeline_path, self._timeline)

    def draw(self) -> bool:
        """timeline.png next to the record; False (nothing drawn, an earlier attempt's chart kept) when
        matplotlib is missing or this attempt ran nothing (a rerun that found everything complete)."""
        try:
            from bot.stages.timeline.chart import draw_timeline
        except ImportError:
            return False
        with self.lock:
            attempt = self.attempt.model_copy(deep=True)
        return draw_timeline(attempt, self.rundir.run_id, self.rundir.timeline_chart_path)

    # ------------------------------------------------------------ spans

    def _begin(self, lane: str, stage: str, model: str, what: str) -> None:
        self._end(lane, None)
        span = Span(lane=lane, stage=stage, model=model, what=what, start_s=self.now())
        self._open[lane] = span
        self.attempt.spans.append(span)

    def _end(self, lane: str, status: str | None) -> None:
        span = self._open.pop(lane, None)
        if span is not None:
            span.end_s, span.status = self.now(), status or span.status

    def close(self, lane: str = VALIDATE_LANE, status: str | None = None) -> None:
        with self.lock:
            self._end(lane, status)
            self.write()

    def paused(self, on: bool) -> None:
        """The quantize workers were paused (True) or resumed (False): a pause span on each busy quantize lane."""
        with self.lock:
            if on:
                self._paused = [Span(lane=s.lane, stage="pause", model=s.model, what="paused: speed measured",
                                     start_s=self.now()) for s in self._open.values() if s.stage == "quantize"]
                self.attempt.spans.extend(self._paused)
            else:
                for span in self._paused:
                    span.end_s = self.now()
                self._paused = []
            self.write()

    def on_quantize(self, then: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        def handle(ev: dict) -> None:
            kind, lane = ev.get("event"), f"quantize-{ev.get('worker', 0)}"
            with self.lock:
                if kind == "load":
                    self._begin(lane, "quantize", "base", "load base")
                elif kind == "loaded":
                    self._end(lane, "done")
                elif kind == "start" and ev.get("variant"):
                    self._begin(lane, "quantize", str(ev["variant"]), "quantize")
                elif kind == "end":
                    self._end(lane, str(ev.get("status") or "done"))
                if kind in ("loaded", "start", "end"):
                    self.write()
            if then is not None:
                then(ev)
        return handle

    def on_validate(self, then: Callable[[str, dict], None] | None = None) -> Callable[[str, dict], None]:
        def handle(event: str, data: dict) -> None:
            with self.lock:
                if event == "phase":
                    model = str(data.get("model", ""))
                    variants = data.get("variants") or []
                    model = str(variants[0]) if len(variants) == 1 else model  # fidelity of one variant: its span
                    lane = str(data.get("lane") or VALIDATE_LANE)  # the fidelity worker beside lm-eval: its own
                    self._begin(lane, "validate", model, str(data.get("phase", "")))
                    self.write()
                elif event == "lane-end":
                    self._end(str(data.get("lane")), str(data.get("status") or "done"))
                    self.write()
                elif event in ("model-start", "model-end", "round", "skip"):
                    if VALIDATE_LANE in self._open:
                        self._end(VALIDATE_LANE, None)
                        self.write()
            if then is not None:
                then(event, data)
        return handle

    # ------------------------------------------------------------ GPU samples

    def _sample(self) -> bool:
        readings = self.probe()
        if not readings:
            return False
        with self.lock:
            t = self.now()
            self.attempt.samples.extend(GpuSample(t_s=t, index=r.index, used_bytes=r.used_bytes,
                                                  total_bytes=r.total_bytes, utilization_pct=r.utilization_pct)
                                        for r in readings)
        return True

    def _sampler(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._sample():
                self.write()
