"""The validate stage: turn the base and each quantized variant of a run into measured facts in its manifest.

Order of one call: the base (load, generations, speed, lm-eval with per-document results; once per run, cached
in `base/manifest.json`), then each variant the same way, then the fidelity of all variants against the base in
one worker (the base loaded once; on a CPU whose thread count leaves room for two workers it starts when the last
variant's speed is taken and runs beside that variant's lm-eval, fid.Beside), then the verdict on each variant
(paired comparison and gate). A variant the gate cannot decide (its CI straddles the threshold) gets more samples: the base and that variant are evaluated
again at twice the limit, up to `gate.max_rounds` rounds or the whole task, and judged again. Last, when
`validate.serve_search.enabled`, the search for the fastest way to serve each model (bot/stages/serve).

Manifests are written `running` before work and `done`/`failed` after, so an interrupted run resumes: finished
models are skipped, a model whose load/speed part finished keeps it while lm-eval reruns, and every variant is
judged again (deterministically) on each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bot.config import Settings, cpu_cores
from bot.errors import ModelError, StageError
from bot.manifest import (
    BaseManifest, GateState, Status, ValidateRecord, VariantManifest, VariantValidateRecord,
)
from bot.modelconfig import reloads_only_in_bf16
from bot.rundir import RunDir
from bot.stages.validate import fidelity as fid
from bot.stages.validate.compare import hardware_compat
from bot.stages.validate.judge import can_grow, judge
from bot.stages.validate.measure import (
    BASE, ModelValidation, Sharing, WorkerFailed, finish_record, start_record, recipe_for, weights_size,
)
from bot.stages.validate.plan import Plan, is_current, plan_for, runtime_matches

EventFn = Callable[[str, dict[str, Any]], None]


@dataclass
class _Model:
    """One model of the run in this call: its record, how to save it and how to measure it again."""

    name: str
    rec: Any  # ValidateRecord (base) or VariantValidateRecord
    work: ModelValidation
    manifest: BaseManifest | VariantManifest
    measured: bool  # measured in this call (not skipped as current)

    def save(self) -> None:
        self.work.save()


def _skip_current(name: str, prev: ValidateRecord | None, plan: Plan, force: bool, emit: EventFn) -> bool:
    if force or not is_current(prev, plan):
        return False
    emit("skip", {"model": name, "reason": f"validated {prev.validated_at} ({plan.backend})"})
    return True


def _fresh_or_resumed(kind: type, prev: ValidateRecord | None, plan: Plan, force: bool) -> tuple[Any, bool]:
    """A new record (forced, or none yet), or a copy of the last one to resume; whether its load/speed measurement
    can be kept (same runtime settings) so that only lm-eval runs again."""
    rec = kind() if force or prev is None else prev.model_copy(deep=True)
    return rec, not force and runtime_matches(prev, plan)


def _measure(work: ModelValidation, rec: ValidateRecord, reuse: bool,
             after_runtime: Callable[[ValidateRecord], None] | None = None) -> WorkerFailed | None:
    """Mark `rec` running, run the workers, and return what failed (None when all ran). An interrupt leaves the
    record failed with a resume hint, saved, and goes on up."""
    start_record(rec, work.plan, work.sharing)
    work.save()
    work.on_event("model-start", {"model": work.name})
    try:
        work.run(rec, reuse, after_runtime)
    except WorkerFailed as exc:
        return exc
    except KeyboardInterrupt:
        finish_record(rec, WorkerFailed("interrupted", f"rerun `bot validate {work.rundir.root}` to resume"),
                      work.sharing)
        work.save()
        raise
    return None


def _validate_base(rundir: RunDir, settings: Settings, plan: Plan, force: bool, emit: EventFn,
                   sharing: Sharing | None = None) -> _Model:
    manifest = rundir.read_base()
    assert manifest is not None
    prev = manifest.validate_
    holder: dict[str, ValidateRecord] = {}

    def save() -> None:
        manifest.validate_ = holder["rec"]
        rundir.write_base(manifest)

    work = ModelValidation(rundir, settings, plan, BASE, Path(manifest.base.path), save, emit,
                           manifest.base.trust_remote_code, sharing)
    if _skip_current(BASE, prev, plan, force, emit):
        holder["rec"] = prev
        return _Model(BASE, prev, work, manifest, measured=False)
    rec, reuse = _fresh_or_resumed(ValidateRecord, prev, plan, force)
    holder["rec"] = rec
    error = _measure(work, rec, reuse)
    if error is None and rec.load is not None and not rec.load.ok:
        error = WorkerFailed(f"the base model does not load in {plan.backend}: {rec.load.error}",
                             f"see {rundir.logs_dir / 'validate-base.log'}")
    finish_record(rec, error, sharing)
    save()
    emit("model-end", {"model": BASE, "status": rec.status.value, "state": rec.status.value})
    if error is not None:
        raise StageError("validate", f"base model: {str(error).splitlines()[0]}", hint=error.hint)
    return _Model(BASE, rec, work, manifest, measured=True)


def _validate_variant(rundir: RunDir, settings: Settings, plan: Plan, variant: str, trust: bool, force: bool,
                      emit: EventFn, sharing: Sharing | None = None,
                      after_runtime: Callable[[str, Any, Path], None] | None = None) -> _Model | None:
    """Measure one variant (no verdict yet); None when it cannot be validated (not quantized). `after_runtime`
    (name, record, model dir) is called between its speed measurement and its lm-eval."""
    manifest = rundir.read_variant(variant)
    assert manifest is not None
    if manifest.quantize.status != Status.done:
        why = f"quantize is {manifest.quantize.status.value}"
        if manifest.quantize.error:
            why += f": {manifest.quantize.error.splitlines()[0]}"
        manifest.validate_ = VariantValidateRecord(status=Status.skipped, error=why,
                                                   hint=f"run `bot quantize` for {variant} first")
        rundir.write_variant(manifest)
        emit("skip", {"model": variant, "reason": why})
        return None

    def save() -> None:
        rundir.write_variant(manifest)

    work = ModelValidation(rundir, settings, plan, variant, rundir.model_dir(variant), save, emit, trust, sharing)
    prev = manifest.validate_
    if _skip_current(variant, prev, plan, force, emit):
        return _Model(variant, prev, work, manifest, measured=False)
    rec, reuse = _fresh_or_resumed(VariantValidateRecord, prev, plan, force)
    rec.comparison = rec.gate = None
    manifest.validate_ = rec
    hook = (lambda r: after_runtime(variant, r, work.model_path)) if after_runtime is not None else None
    error = _measure(work, rec, reuse, hook)
    recipe = recipe_for(manifest, settings)
    rec.hardware_verdict = hardware_compat(recipe, rec.hardware, rec.load.kernel if rec.load else None)
    finish_record(rec, error, sharing)
    save()
    return _Model(variant, rec, work, manifest, measured=True)


def _fidelity(base: _Model, variants: list[_Model], settings: Settings, force: bool,
              beside: fid.Beside | None = None) -> None:
    """Fidelity of the measured variants against the base: joined from `beside` when it ran next to the last
    lm-eval, else measured now in one worker (the base loaded once)."""
    if beside is not None and beside.started:
        if beside.running:  # the last lm-eval ended first: what the call now waits for, in the status line
            base.work.on_event("phase", {"model": BASE, "phase": f"fidelity of {len(beside.targets)} variant(s), "
                                                                 "started beside the last lm-eval"})
        names = beside.join()
    else:
        targets = _fidelity_targets(variants, settings, force, fid.text_fingerprint())
        fid.measure_fidelity(base.work, base.rec, targets, settings)
        names = list(targets)
    for name in names:
        next(m for m in variants if m.name == name).save()


def _fidelity_targets(variants: list[_Model], settings: Settings, force: bool,
                      fingerprint: str) -> dict[str, tuple[Any, Path]]:
    """The measured variants whose fidelity is wanted: name -> (record, model dir)."""
    return {m.name: (m.rec, m.work.model_path) for m in variants
            if m.rec.status == Status.done and fid.wanted(m.rec, settings, force, fingerprint)}


def _fidelity_beside(base: _Model, settings: Settings, plan: Plan, force: bool, measured: list[_Model]):
    """A hook that starts the fidelity worker (fid.Beside) for the variants measured so far and the one whose speed
    was just taken, to run beside that one's lm-eval: on a CPU whose workers' thread count leaves room for two at
    once (Settings.cpu_worker_threads). None otherwise (a GPU, a count set above half the cores, fidelity off):
    the fidelity worker runs after the last lm-eval."""
    room = plan.cpu_threads is not None and 2 * plan.cpu_threads <= cpu_cores()
    if plan.device != "cpu" or not room or not settings.validate.fidelity.enabled:
        return None, None
    beside = fid.Beside(base.work, base.rec, settings)
    fingerprint = fid.text_fingerprint()

    def start(name: str, rec: Any, model_path: Path) -> None:
        targets = _fidelity_targets(measured, settings, force, fingerprint)
        if fid.wanted(rec, settings, force, fingerprint):
            targets[name] = (rec, model_path)
        if targets:
            beside.start(targets)

    return beside, start


def _verdict(m: _Model, base: _Model, rundir: RunDir, settings: Settings) -> None:
    manifest = m.manifest
    assert isinstance(manifest, VariantManifest)
    judge(m.rec, m.name, recipe_for(manifest, settings), base.rec, rundir.base_dir,
          weights_size(Path(base.work.model_path)), rundir.variant_dir(m.name), weights_size(m.work.model_path),
          settings)
    m.save()


def _bf16_only(rundir: RunDir) -> bool:
    """Whether the run holds a checkpoint that reloads only in bfloat16 (then every model of it runs in bf16 on a
    CPU: one dtype for all the paired numbers)."""
    return any(reloads_only_in_bf16(rundir.model_dir(v)) for v in rundir.variants())


def _more_rounds(base: _Model, variants: list[_Model], rundir: RunDir, settings: Settings, emit: EventFn) -> None:
    """Evaluate undecided variants (and the base) on more documents until each is decided or cannot grow."""
    while True:
        pending = [m for m in variants if m.rec.gate is not None and m.rec.gate.outcome == GateState.inconclusive
                   and can_grow(m.rec, base.rec, settings)]
        if not pending:
            return
        target = max(m.rec.accuracy.limit for m in pending) * 2
        rounds = max(m.rec.accuracy.rounds for m in pending) + 1
        emit("round", {"round": rounds, "limit": target, "models": [m.name for m in pending]})
        bacc = base.rec.accuracy
        if bacc is not None and bacc.limit is not None and bacc.limit < target:
            try:
                base.work.accuracy(base.rec, target, rounds=rounds)
            except WorkerFailed as exc:
                raise StageError("validate", f"base model, round {rounds}: {str(exc).splitlines()[0]}",
                                 hint=exc.hint) from None
            finally:
                base.save()
        for m in pending:
            previous = m.rec.accuracy
            try:
                m.work.accuracy(m.rec, target, rounds=rounds)
            except WorkerFailed as exc:
                m.rec.accuracy = previous  # keep the last complete evaluation; the verdict says what failed
                m.rec.accuracy.error = f"round {rounds} failed: {str(exc).splitlines()[0][:300]}"
            _verdict(m, base, rundir, settings)


def validate_run(rundir: RunDir, settings: Settings, variants: list[str] | None = None, force: bool = False, *,
                 on_event: EventFn | None = None, gpu_memory_utilization: float | None = None,
                 sharing: Sharing | None = None) -> list[VariantValidateRecord]:
    """Validate the base (once per run) and the selected variants (default: all); returns the variants' records.
    `gpu_memory_utilization` and `sharing` come from `bot publish` when it overlaps the stages (bot.stages.overlap):
    the engines' planned share of the GPU, and the quantize workers running next to this call.

    Raises ModelError for a run dir without a base manifest or an unknown variant, EnvironmentMissingError when
    the serve interpreter cannot run the chosen backend, StageError when the base itself fails (nothing can be
    compared then). A failing variant is recorded (status failed, error with the log tail, hint) and the others
    go on. The caller holds the run's lock (`bot validate` does), as for `quantize_run`."""
    emit = on_event or (lambda _event, _data: None)
    base_manifest = rundir.read_base()
    if base_manifest is None:
        raise ModelError(f"{rundir.root} has no base/manifest.json: not a run directory",
                         hint="pass a run directory made by `bot quantize` (runs/<org>--<name>@<sha>)")
    available = rundir.variants()
    selected = list(dict.fromkeys(variants)) if variants else available
    missing = [v for v in selected if v not in available]
    if missing:
        raise ModelError(f"no variant {', '.join(repr(m) for m in missing)} in {rundir.root}",
                         hint=f"variants there: {', '.join(available) or 'none (run `bot quantize` first)'}")
    plan = plan_for(settings, gpu_memory_utilization, _bf16_only(rundir))
    emit("plan", {"backend": plan.backend, "device": plan.device, "tasks": plan.tasks, "limit": plan.limit,
                  "models": [BASE, *selected]})
    base = _validate_base(rundir, settings, plan, force, emit, sharing)
    trust = base_manifest.base.trust_remote_code
    measured: list[_Model] = []
    beside, start_beside = _fidelity_beside(base, settings, plan, force, measured)
    for i, v in enumerate(selected):
        hook = start_beside if i == len(selected) - 1 else None  # the last variant's lm-eval runs beside it
        if m := _validate_variant(rundir, settings, plan, v, trust, force, emit, sharing, hook):
            measured.append(m)
    _fidelity(base, measured, settings, force, beside)
    done = [m for m in measured if m.rec.status == Status.done]
    for m in done:
        _verdict(m, base, rundir, settings)
    _more_rounds(base, done, rundir, settings, emit)
    if settings.validate.serve_search.enabled:
        from bot.stages.serve.run import search_run  # the serving search reads this stage's measured records

        search_run(base, [(m, m.manifest) for m in done], settings, base_manifest.base.dtype, emit)
    for m in measured:
        emit("model-end", {"model": m.name, "status": m.rec.status.value, "state": m.manifest.state()})
    for variant in available:
        if variant not in selected:
            _recompare(rundir, settings, variant, base, emit)
    return [rundir.read_variant(v).validate_ for v in selected]


def validate_base(rundir: RunDir, settings: Settings, *, on_event: EventFn | None = None,
                  gpu_memory_utilization: float | None = None, sharing: Sharing | None = None) -> ValidateRecord:
    """The base alone (skipped when current), so that `bot publish` can measure it while the first variants are
    still quantizing; StageError when it fails, as in `validate_run`."""
    emit = on_event or (lambda _event, _data: None)
    if rundir.read_base() is None:
        raise ModelError(f"{rundir.root} has no base/manifest.json: not a run directory",
                         hint="pass a run directory made by `bot quantize` (runs/<org>--<name>@<sha>)")
    plan = plan_for(settings, gpu_memory_utilization, _bf16_only(rundir))
    emit("plan", {"backend": plan.backend, "device": plan.device, "tasks": plan.tasks, "limit": plan.limit,
                  "models": [BASE]})
    return _validate_base(rundir, settings, plan, False, emit, sharing).rec


def _recompare(rundir: RunDir, settings: Settings, variant: str, base: _Model, emit: EventFn) -> None:
    """A variant left out of this call keeps its measurements, but its ratios and gate were taken against an
    earlier base measurement when the base was just measured again (`--force -v X`): taken again against the
    base the run now holds, so that a card never pairs the new base with ratios from the old one."""
    manifest = rundir.read_variant(variant)
    rec = manifest.validate_ if manifest is not None else None
    if rec is None or rec.status != Status.done or rec.comparison is None:
        return
    if rec.comparison.base_validated_at == base.rec.validated_at:
        return
    m = _Model(variant, rec, ModelValidation(rundir, settings, base.work.plan, variant, rundir.model_dir(variant),
                                             lambda: rundir.write_variant(manifest), emit), manifest, measured=False)
    _verdict(m, base, rundir, settings)
    emit("recompared", {"model": variant, "base_validated_at": base.rec.validated_at})
