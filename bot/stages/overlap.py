"""`bot publish` with quantize and validate at once: each variant is validated as soon as it is quantized, while the
next ones quantize, and the base is measured while the first ones do.

The quantize stage runs in a thread (its workers in their own processes, each taking its cheap variants first);
the validation lane runs here, in the calling thread, one model at a time, asking `bot.stages.schedule.next_step`
what to do from what the run directory says. Validation is the ordinary stage (`validate_base`, `validate_run` for
one variant), given the planned share of the GPU (bot.stages.memplan) and the quantize workers next to it: they are
paused while a speed figure is taken, and named in the record (`concurrent_with`). The pipeline's validate call
that follows finds every model measured and only judges again; what the lane could not do (a base that failed, a
load upset by the memory the workers moved, a serve environment that cannot run) it does serially, with the GPU
to itself, as a serial run would. Nothing here writes a manifest: each stage writes its own, and resumes from it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from bot.clients.process import ProcessGroups, query_gpus
from bot.config import Settings
from bot.errors import BotError
from bot.manifest import BaseManifest, Status
from bot.modelconfig import read_config, resolve_max_model_len
from bot.recipes import Recipe
from bot.recipes.resolve import resolve
from bot.rundir import RunDir
from bot.stages.memplan import MAX_AUTO_WORKERS, MemoryPlan, plan_memory, recipe_needs, validate_gpu_bytes
from bot.stages.quantize import available_memory, is_complete, quantize_run, workers_that_fit
from bot.stages.schedule import next_step, variant_states
from bot.stages.timeline.record import TimelineRecorder
from bot.stages.validate.measure import weights_size
from bot.stages.validate.parallel import GIB, ModelShape, kv_dtype_bytes
from bot.stages.validate.run import validate_base, validate_run

WAIT_S = 5.0  # the lane looks at the run directory at least this often while it waits for a quantize to finish


def overlap_wanted(settings: Settings) -> bool:
    """`pipeline.overlap`: on, off, or auto: on when quantize runs on a GPU (nvidia-smi sees one, device not cpu)."""
    mode = settings.pipeline.overlap
    if mode != "auto":
        return mode == "on"
    return settings.device != "cpu" and bool(query_gpus())


def plan_run(rundir: RunDir, base: BaseManifest, recipes: list[Recipe], settings: Settings,
             overlap: bool) -> MemoryPlan:
    """The memory plan of this attempt, from the GPU's free memory now and what is left to quantize."""
    readings = query_gpus() if settings.device != "cpu" else None
    gpu = readings[0] if readings else None  # the device the workers and a tp=1 engine use
    config = read_config(base.base.path)
    base_bytes = weights_size(Path(base.base.path)) or base.base.size_bytes or 0
    pending = []
    for recipe in recipes:
        if is_complete(rundir, rundir.read_variant(recipe.id)):
            continue
        try:
            pending.append(resolve(recipe, config, samples=settings.calibration.samples,
                                   seq_len=settings.calibration.seq_len))
        except ValueError:
            continue  # the quantize stage records why
    needs, costs = recipe_needs(pending, base_bytes, settings.calibration.batch_size)
    speed = settings.validate.speed
    kv = ModelShape.from_config(config).kv_bytes(resolve_max_model_len(speed.max_model_len, config), 1,
                                                 kv_dtype_bytes(speed.kv_cache_dtype))
    host, _ = workers_that_fit(MAX_AUTO_WORKERS if settings.quantize_workers == "auto" else settings.quantize_workers,
                               base.base.size_bytes, available_memory())
    previous = None  # the share the base was measured at, by an earlier attempt
    rec = base.validate_
    if rec is not None and rec.status == Status.done and rec.speed is not None and rec.backend == "vllm":
        previous = (rec.speed.settings.get("requested") or {}).get("gpu_memory_utilization")
    return plan_memory(total_bytes=gpu.total_bytes if gpu else None, free_bytes=gpu.free_bytes if gpu else None,
                       needs=needs, costs=costs,
                       validate_bytes=validate_gpu_bytes(base_bytes, kv, int(settings.validate.tensor_parallel_reserve_gib
                                                                             * GIB)),
                       overlap=overlap, requested_workers=settings.quantize_workers, host_workers=host,
                       utilization=speed.gpu_memory_utilization, previous_utilization=previous)


class _Sharing:
    """The quantize workers next to the validation lane: which variants they quantize (from the quantize events),
    and their process groups, paused while a speed figure is taken (bot.stages.validate.measure.Sharing)."""

    def __init__(self, groups: ProcessGroups) -> None:
        self.groups = groups
        self._now: set[str] = set()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def track(self, then: Callable[[dict], None] | None) -> Callable[[dict], None]:
        def handle(ev: dict) -> None:
            variant = ev.get("variant")
            with self._lock:
                if ev.get("event") == "start" and variant:
                    self._now.add(variant)
                    self._seen.add(variant)
                elif ev.get("event") == "end" and variant:
                    self._now.discard(variant)
            if then is not None:
                then(ev)
        return handle

    def running(self) -> list[str]:
        """The variants quantizing now, or since the last call."""
        with self._lock:
            out = sorted(self._now | self._seen)
            self._seen = set(self._now)
        return out

    def pause(self) -> None:
        self.groups.pause()

    def resume(self) -> None:
        self.groups.resume()


def run_overlapped(rundir: RunDir, base: BaseManifest, recipes: list[Recipe], settings: Settings, plan: MemoryPlan,
                   timeline: TimelineRecorder, *, quantize_events: Callable[[dict], None] | None = None,
                   validate_events: Callable[[str, dict], None] | None = None, on_note: Callable[[str], None],
                   after_each: Callable[[], None] | None = None) -> None:
    """Quantize `recipes` and validate the base and each variant as it is ready. Returns when quantize is over
    and the lane has nothing left; an interrupt ends the quantize workers and goes on up. `after_each` runs in
    this thread after each validation (the ledger); `on_note` gets what the lane gave up and why."""
    groups = ProcessGroups(on_change=timeline.paused)
    sharing = _Sharing(groups)
    wake = threading.Event()
    over = threading.Event()
    failure: list[BaseException] = []

    def quantize() -> None:
        try:
            quantize_run(rundir, base, recipes, settings, on_event=timeline.on_quantize(sharing.track(quantize_events)),
                         workers=max(1, plan.quantize_workers), cheap_first=True,
                         on_variant_done=lambda _variant: wake.set(), groups=groups)
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            failure.append(exc)
        finally:
            over.set()
            wake.set()
            if quantize_events is not None:
                quantize_events({"event": "over"})

    thread = threading.Thread(target=quantize, name="bot-quantize", daemon=True)
    thread.start()
    try:
        _lane(rundir, settings, [r.id for r in recipes], plan, sharing, wake, over, timeline, validate_events,
              on_note, after_each)
        while thread.is_alive():
            thread.join(0.5)
    except BaseException:
        groups.terminate()
        thread.join()
        raise
    if failure:
        raise failure[0]


def _lane(rundir: RunDir, settings: Settings, ids: list[str], plan: MemoryPlan, sharing: _Sharing,
          wake: threading.Event, over: threading.Event, timeline: TimelineRecorder,
          validate_events: Callable[[str, dict], None] | None, on_note: Callable[[str], None],
          after_each: Callable[[], None] | None) -> None:
    events = timeline.on_validate(validate_events)
    share = plan.gpu_memory_utilization
    base_state, base_tries, validated = "pending", 0, set()
    while True:
        wake.clear()
        step = next_step(ids, variant_states(rundir, ids), base_state, validated, over.is_set())
        if step.kind == "done":
            return
        if step.kind == "wait":
            wake.wait(WAIT_S)
            continue
        try:
            if step.kind == "base":
                base_tries += 1
                validate_base(rundir, settings, on_event=events, gpu_memory_utilization=share, sharing=sharing)
                base_state = "done"
            else:
                validated.add(step.variant)
                validate_run(rundir, settings, [step.variant], on_event=events, gpu_memory_utilization=share,
                             sharing=sharing)
        except BotError as exc:  # the base failed, or validation cannot run: left to the serial call after quantize
            if step.kind != "base" or base_tries >= 2:
                on_note(f"validation waits for quantize to finish: {exc.one_line()}")
                base_state = "failed"
        finally:
            timeline.close()
        if after_each is not None:
            after_each()
