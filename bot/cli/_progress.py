"""Progress of long work (quantize, validate, the whole publish), fed by the stages' events.

On a terminal: a live bar that is removed when its work ends (never a bar left at a stale count), with the
permanent lines (a recipe started, finished, skipped) printed above it. Anywhere else: plain lines only; the
routine updates (the decoder layer being calibrated) at most every `interval_s`, and a heartbeat line when nothing
was said for `interval_s`, so a log never has a silent minute."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot.cli._output import console, duration, fields, say

INTERVAL_S = 30.0


class Activity:
    """One piece of long work: `status` updates (throttled off a terminal), `line` for what must stay."""

    def __init__(self, label: str, total: int | None = None, *, target: Console | None = None,
                 interval_s: float = INTERVAL_S, describe: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.monotonic, live: bool = True) -> None:
        self.label, self.target, self.interval_s, self.clock = label, target or console, interval_s, clock
        self.live = live  # False: lines only, also on a terminal (another activity holds the one live bar)
        self.describe = describe
        self.total, self.completed, self.text = total, 0, label
        self.lock = threading.RLock()
        self._started = self._last = clock()
        self._progress: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Activity":
        self._started = self._last = self.clock()
        if self.target.is_terminal and self.live:
            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                      console=self.target, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        else:
            self._thread = threading.Thread(target=self._heartbeat, name=f"{self.label}-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._progress is not None:
            self._progress.stop()  # transient: the bar goes, the lines printed above it stay
            self._progress = None

    def _heartbeat(self) -> None:
        tick = min(1.0, self.interval_s / 4)
        while not self._stop.wait(tick):
            with self.lock:
                if self.clock() - self._last >= self.interval_s:
                    self._emit(self.current())

    def current(self) -> str:
        """The status line: what runs now, and how far the whole activity is."""
        text = self.describe() if self.describe else self.text
        count = f" [{self.completed}/{self.total}]" if self.total else ""
        return f"{self.label}{count}: {text} ({duration(self.clock() - self._started)} in all)"

    def _emit(self, message: str) -> None:
        self._last = self.clock()
        say(message, self.target)

    def line(self, message: str) -> None:
        """A permanent line (printed at once, in both modes)."""
        with self.lock:
            self._emit(message)

    def status(self, text: str, *, announce: bool = False) -> None:
        """The current state: the bar's label on a terminal; otherwise a line when `announce` or when the last
        line is `interval_s` old."""
        with self.lock:
            self.text = text
            if self._progress is not None:
                self._progress.update(self._task, description=f"{self.label}: {text}")
            elif announce or self.clock() - self._last >= self.interval_s:
                self._emit(self.current())

    def advance(self) -> None:
        with self.lock:
            self.completed += 1
            if self._progress is not None:
                self._progress.advance(self._task)

    def set_total(self, total: int) -> None:
        with self.lock:
            self.total = total
            if self._progress is not None:
                self._progress.update(self._task, total=total)


class QuantizeDisplay:
    """Quantize events -> progress. Each recipe's expected time is its cost (the stage's `plan` event, the same
    figure that spreads recipes over workers) times the seconds per cost unit measured on this run's finished
    recipes; inside a calibrated recipe the layers done so far give the time left."""

    def __init__(self, total: int | None = None, *, target: Console | None = None, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.activity = Activity("quantize", total, target=target, interval_s=interval_s, describe=self.describe,
                                 clock=clock)
        self.costs: dict[str, float] = {}
        self.measured: list[tuple[float, float]] = []  # (seconds, cost) of the recipes finished in this run
        self.running: dict[str, dict[str, Any]] = {}
        self.loading = 0

    def __enter__(self) -> "QuantizeDisplay":
        self.activity.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.activity.__exit__(*exc)

    def expected(self, variant: str) -> float | None:
        seconds = sum(s for s, _ in self.measured)
        cost = sum(c for _, c in self.measured)
        if variant not in self.costs or cost <= 0:
            return None
        return self.costs[variant] * seconds / cost

    def left(self, variant: str) -> float | None:
        """Time left in this pass over the layers (a recipe such as SmoothQuant + GPTQ makes two passes: the
        layers of the pass running give the rate); before any layer, the recipe's expected time."""
        run = self.running[variant]
        now = self.clock()
        index, total = run.get("layer"), run.get("layers")
        if index and total and index > 1:
            return (now - run["pass_started"]) / (index - 1) * (total - index + 1)
        return max(0.0, run["expected"] - (now - run["started"])) if run["expected"] is not None else None

    @staticmethod
    def _eta(left: float) -> str:
        return f"ETA {time.strftime('%H:%M:%S', time.localtime(time.time() + left))}"

    def _one(self, variant: str) -> str:
        run = self.running[variant]
        passes = f" (pass {run['pass']})" if run.get("pass", 1) > 1 else ""
        layer = f" layer {run['layer']}/{run['layers']}{passes}" if run.get("layer") else ""
        left = self.left(variant)
        tail = f", ~{duration(left)} left, {self._eta(left)}" if left is not None else ""
        return f"{variant}{layer}, {duration(self.clock() - run['started'])} in{tail}"

    def describe(self) -> str:
        if self.running:
            return "; ".join(self._one(v) for v in self.running)
        return "loading the base model" if self.loading else "starting the worker"

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("event") == "over":  # quantize is over while validation goes on (an overlapped publish)
            self.activity.__exit__(None, None, None)  # outside the lock: the heartbeat it joins may wait for it
            return
        with self.activity.lock:  # the heartbeat thread reads `running` too
            self._on(ev)

    def _on(self, ev: dict[str, Any]) -> None:
        kind, variant = ev.get("event"), ev.get("variant")
        act = self.activity
        if kind == "begin":
            act.set_total(len(ev.get("variants") or []))
        elif kind == "plan":
            self.costs.update(ev.get("costs") or {})
        elif kind == "skip":
            act.advance()
            act.line(f"{variant}: {ev.get('reason') or 'skipped'}")
        elif kind == "failed":
            act.advance()
            act.line(f"{variant}: failed: {ev.get('error', '')}")
        elif kind == "load":
            self.loading += 1
            act.status(self.describe())
        elif kind == "loaded":
            self.loading = max(0, self.loading - 1)
            act.line(f"base model loaded in {duration(ev.get('seconds'))}")
        elif kind == "start":
            expected = self.expected(variant)
            self.running[variant] = {"started": self.clock(), "expected": expected}
            guess = (f"expected ~{duration(expected)}, {self._eta(expected)}" if expected is not None
                     else "no estimate until a recipe has finished")
            act.line(f"{variant}: started ({guess})")
            act.status(self.describe())
        elif kind == "layer" and variant in self.running:
            run = self.running[variant]
            index = int(ev.get("index", 0))
            first = "layer" not in run
            if first or index <= run["layer"]:  # the first layer event, or a new pass over the layers
                run.update(pass_started=self.clock(), **{"pass": run.get("pass", 0) + 1})
            run.update(layer=index, layers=int(ev.get("total", 0)))
            act.status(self.describe(), announce=first)
        elif kind == "end":
            run = self.running.pop(variant, None)
            seconds = self.clock() - run["started"] if run else ev.get("seconds")
            status = ev.get("status", "done")
            if run and status == "done" and variant in self.costs:
                self.measured.append((seconds, self.costs[variant]))
            expected = run.get("expected") if run else None
            act.advance()
            act.line(f"{variant}: {status} in {duration(seconds)}"
                     + (f" (expected ~{duration(expected)})" if expected is not None else ""))
            act.status(self.describe())
        elif kind == "note":
            act.line(str(ev.get("message", "")))



class ValidateDisplay:
    """Validate events (bot.stages.validate.run) -> progress: one line per phase and per model."""

    def __init__(self, *, target: Console | None = None, interval_s: float = INTERVAL_S, live: bool = True) -> None:
        self.activity = Activity("validate", None, target=target, interval_s=interval_s, live=live)
        self.activity.text = "checking the serve environment"
        self.started: dict[str, float] = {}
        self._plan_line = ""
        self._models: set[str] = set()
        self._counted: set[str] = set()  # each model advances the bar once (an overlapped publish repeats the base)

    def __enter__(self) -> "ValidateDisplay":
        self.activity.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.activity.__exit__(*exc)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        act, model = self.activity, data.get("model", "")
        if event == "plan":
            self._models.update(data.get("models") or [])
            act.set_total(len(self._models))
            tasks = ", ".join(data.get("tasks") or []) or "none (accuracy not measured)"
            limit = data.get("limit")
            line = (f"validate: backend {data.get('backend')} on {data.get('device')}; tasks {tasks}, "
                    + (f"limit {limit}" if limit is not None else "each task whole"))
            if line != self._plan_line:  # an overlapped publish calls validate once per model: said once
                act.line(line)
                self._plan_line = line
        elif event == "model-start":
            self.started[model] = time.monotonic()
        elif event == "phase" and data.get("lane"):  # a worker beside the current phase (fidelity beside lm-eval)
            act.line(f"{model}: {data.get('phase')}, beside the phase above")
        elif event == "phase":
            self.started.setdefault(model, time.monotonic())
            act.status(f"{model}: {data.get('phase')}", announce=True)
        elif event == "lane-end":
            act.line(f"{data.get('lane')}: {data.get('status')}")
        elif event == "skip":
            self._advance(model)
            act.line(f"{model}: skipped ({data.get('reason')})")
        elif event == "model-end":
            self._advance(model)
            took = self.started.pop(model, None)
            act.line(f"{model}: {data.get('state')}" + (f" in {duration(time.monotonic() - took)}" if took else ""))
        elif event == "round":
            act.line(f"validate round {data.get('round')}: {', '.join(data.get('models') or [])} undecided by the "
                     f"gate, measured again with limit {data.get('limit')}")
        elif event == "recompared":
            act.line(f"{model}: ratios and gate taken again against the base measured {data.get('base_validated_at')}")
        else:
            act.line(f"{event}: {fields(data)}")

    def _advance(self, model: str) -> None:
        if model not in self._counted:
            self._counted.add(model)
            self.activity.advance()


class PipelineDisplay:
    """`bot publish`: the pipeline's stage events as lines, and a quantize or validate display while that stage
    runs (closed when the next stage starts, so no bar outlives its stage); both while they overlap."""

    def __init__(self, *, target: Console | None = None) -> None:
        self.target = target
        self._quantize: QuantizeDisplay | None = None
        self._validate: ValidateDisplay | None = None

    def __enter__(self) -> "PipelineDisplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        for current in (self._quantize, self._validate):
            if current is not None:
                current.__exit__(None, None, None)
        self._quantize = self._validate = None

    def on_stage(self, event: str, data: dict[str, Any]) -> None:
        if event == "stage":
            self._close()
            stage = data.get("stage")
            say(f"stage: {stage}", self.target)
            if stage in ("quantize", "quantize+validate"):
                self._quantize = QuantizeDisplay(target=self.target).__enter__()
            if stage in ("validate", "quantize+validate"):  # at once: the quantize bar is the one live display
                self._validate = ValidateDisplay(target=self.target, live=stage == "validate").__enter__()
        elif event == "plan":
            say(f"plan: {data.get('plan')}", self.target)
            for note in data.get("notes") or []:
                say(f"plan: {note}", self.target)
        elif event == "note":
            say(str(data.get("text", "")), self.target)
        elif event == "resolved":
            say(f"{data.get('model')}@{str(data.get('revision', ''))[:12]} -> {data.get('run_dir')}", self.target)
        elif event == "card-failed":
            say(f"{data.get('variant')}: card failed: {data.get('error')}", self.target)
        else:
            say(f"{event}: {fields(data)}", self.target)

    def on_quantize(self, ev: dict[str, Any]) -> None:
        if self._quantize is not None:
            self._quantize(ev)

    def on_validate(self, event: str, data: dict[str, Any]) -> None:
        if self._validate is not None:
            self._validate(event, data)
