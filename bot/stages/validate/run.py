"""The validate stage: turn the base and each quantized variant of a run into measured facts in its manifest.

Per model, two workers run in the serve interpreter: `validate_worker` (load, greedy chat generations, batch-1
and batched speed) and `lmeval_worker` (lm-eval tasks). The base is measured once per run and cached in
`base/manifest.json`; each variant then gets a Comparison with the base, a hardware compatibility verdict and
a gate decision. Manifests are written `running` before work and `done`/`failed` after, so an interrupted run
resumes: finished models are skipped, and a model whose load/speed part finished keeps it while lm-eval reruns.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from bot.clients.process import WorkerRun, exit_reason, run_worker
from bot.config import Settings
from bot.errors import BotError, ModelError, StageError
from bot.manifest import (
    AccuracyRecord, Generation, Hardware, LoadCheck, SpeedRecord, Status, TaskScore, ValidateRecord,
    VariantManifest, VariantValidateRecord, now_iso,
)
from bot.recipes import Recipe, load_recipes
from bot.rundir import RunDir
from bot.stages.validate.parallel import GIB, ModelShape, TPChoice, choose_tp, kv_dtype_bytes
from bot.stages.validate.engine_errors import explain_load_error
from bot.stages.validate.plan import Plan, is_current, plan_for, runtime_matches
from bot.stages.validate.compare import compare, decide_gate, gate_threshold, hardware_compat
from bot.workers.validate_common import resolve_max_model_len

CPU_BATCH_SIZE = 8
_PROGRESS = re.compile(r"\d+%\|.*\||it/s\]|s/it\]")
BASE = "base"
EventFn = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------- helpers


def weights_size(path: Path) -> int | None:
    files = list(path.glob("*.safetensors")) if path.is_dir() else []
    return sum(f.stat().st_size for f in files) or None


def recipe_for(manifest: VariantManifest, settings: Settings) -> Recipe | None:
    if manifest.quantize.recipe:
        try:
            return Recipe.model_validate(manifest.quantize.recipe)
        except ValidationError:
            pass
    try:
        return load_recipes(settings.recipes_file).get(manifest.variant)
    except BotError:
        return None


class WorkerFailed(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


# ---------------------------------------------------------------- one model


class ModelValidation:
    """Runs both workers for one model dir and fills its record, saving after each step through `save`."""

    def __init__(self, rundir: RunDir, settings: Settings, plan: Plan, name: str, model_path: Path,
                 save: Callable[[], None], on_event: EventFn, trust_remote_code: bool = False) -> None:
        self.rundir, self.settings, self.plan, self.name = rundir, settings, plan, name
        self.model_path, self.save, self.on_event, self.trust = model_path, save, on_event, trust_remote_code
        self._tp_choice: TPChoice | None = None

    def _paths(self, kind: str) -> tuple[Path, Path, Path]:
        jobs = self.rundir.root / "jobs"
        return (jobs / f"{kind}-{self.name}.json", jobs / f"{kind}-{self.name}.result.json",
                self.rundir.logs_dir / f"validate-{self.name}.log")

    def tensor_parallel(self) -> TPChoice:
        """The GPUs this model is split over (computed once per model). Raises WorkerFailed, with the hint,
        when it fits on none of the sizes the GPUs seen allow or the setting cannot work."""
        if self._tp_choice is not None:
            return self._tp_choice
        v = self.settings.validate
        if self.plan.backend != "vllm":
            extra = f" (validate.tensor_parallel_size={v.tensor_parallel_size} applies to vllm only)" \
                if v.tensor_parallel_size else ""
            self._tp_choice = TPChoice(1, f"tp=1: the {self.plan.backend} backend uses one device{extra}", "backend")
            return self._tp_choice
        cfg = _read_json(self.model_path / "config.json")
        try:
            self._tp_choice = choose_tp(
                weights_size(self.model_path), ModelShape.from_config(cfg),
                [int(g["memory_bytes"]) for g in self.plan.env.gpus], v.speed.gpu_memory_utilization,
                max_len=resolve_max_model_len(v.speed.max_model_len, cfg),
                kv_bytes_per_value=kv_dtype_bytes(v.speed.kv_cache_dtype),
                reserve_bytes=int(v.tensor_parallel_reserve_gib * GIB), requested=v.tensor_parallel_size)
        except ModelError as exc:
            raise WorkerFailed(exc.message, exc.hint or "") from None
        return self._tp_choice

    def _batch_size(self) -> int | str:
        """lm-eval's "auto" probes batch sizes until memory runs out: fine on a GPU, an OOM kill on a CPU."""
        size = self.settings.validate.batch_size
        return CPU_BATCH_SIZE if self.plan.device == "cpu" and size == "auto" else size

    def _call(self, module: str, kind: str, job: dict[str, Any], rec: ValidateRecord, timing: str) -> dict[str, Any]:
        """Run one worker; on success its wall time goes into `rec.timings[timing]`."""
        job_path, result_path, log_path = self._paths(kind)
        result_path.unlink(missing_ok=True)
        job["result_path"] = str(result_path)
        hint = f"see {log_path}; fix the cause and rerun `bot validate {self.rundir.root}` to resume"
        timeout = self.settings.validate.worker_timeout_s
        try:
            run: WorkerRun | None = run_worker(self.settings.serve_python, module, job, job_path, log_path,
                                               timeout_s=timeout)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(f"{module} timed out after {timeout} s", hint) from None
        except OSError as exc:
            raise WorkerFailed(f"{module} could not start: {exc}", hint) from None
        result = _read_json(result_path)
        if result.get("status") == "done":
            rec.timings[timing] = round(run.seconds, 2)
            return result
        tail = _useful_tail(run.log_tail(200)) if run else ""
        code = run.returncode if run else None
        what = result.get("error") or f"{exit_reason(code)} and wrote no result"
        raise WorkerFailed(f"{module}: {what}\n--- log tail ({log_path}) ---\n{tail}", hint)

    def runtime(self, rec: ValidateRecord) -> None:
        job = {"backend": self.plan.backend, "model_path": str(self.model_path), "device": self.plan.device,
               "label": self.plan.label, "prompts": self.plan.prompts, "max_new_tokens": self.plan.max_new_tokens,
               "speed": self.plan.speed, "dtype": "auto", "tensor_parallel_size": self.tensor_parallel().size,
               "trust_remote_code": self.trust, "seed": 0}
        on = f", tp={self.tensor_parallel().size}" if self.tensor_parallel().size > 1 else ""
        self.on_event("phase", {"model": self.name, "phase": f"load, generate, speed ({self.plan.backend}{on})"})
        res = self._call("validate_worker", "validate", job, rec, "runtime_worker")
        load = dict(res.get("load") or {})
        if load.get("ok") is False:
            load["error"] = explain_load_error(load.get("error"), self._paths("validate")[2])
        rec.load = LoadCheck.model_validate(load)
        rec.hardware = Hardware.model_validate(res["hardware"]) if res.get("hardware") else None
        rec.versions.update(res.get("versions") or {})
        rec.generations = [Generation.model_validate(g) for g in res.get("generations") or []]
        rec.speed = SpeedRecord.model_validate(res["speed"]) if res.get("speed") else None
        if rec.speed is not None:
            rec.speed.settings["requested"] = dict(self.plan.speed)
        if load.get("kernels"):
            rec.compat["kernels"] = load["kernels"]
        rec.compat["chat_template_applied"] = res.get("chat_template_applied")

    def accuracy(self, rec: ValidateRecord) -> None:
        v = self.settings.validate
        max_len = rec.load.max_model_len if rec.load else None
        job = {"backend": self.plan.backend, "model_path": str(self.model_path), "tasks": self.plan.tasks,
               "limit": self.plan.limit, "num_fewshot": self.plan.num_fewshot, "batch_size": self._batch_size(),
               "device": self.plan.device, "dtype": "auto", "tensor_parallel_size": self.tensor_parallel().size,
               "gpu_memory_utilization": v.speed.gpu_memory_utilization, "max_model_len": max_len,
               "enforce_eager": v.speed.enforce_eager,
               "include_paths": self.plan.include_paths, "trust_remote_code": self.trust, "seed": 1234}
        self.on_event("phase", {"model": self.name, "phase": f"lm-eval {','.join(self.plan.tasks)}"})
        acc = AccuracyRecord(limit=self.plan.limit, num_fewshot=self.plan.num_fewshot, backend=self.plan.backend)
        try:
            res = self._call("lmeval_worker", "lmeval", job, rec, "lmeval_worker")
        except WorkerFailed as exc:
            acc.error = str(exc).splitlines()[0][:500]
            rec.accuracy = acc
            raise
        acc.tasks = [TaskScore.model_validate(t) for t in res["tasks"]]
        acc.command = res.get("command", "")
        rec.versions.update(res.get("versions") or {})
        rec.accuracy = acc

    def run(self, rec: ValidateRecord, reuse_runtime: bool) -> None:
        """Fill `rec`; raises WorkerFailed (record left with what was measured)."""
        if not self.model_path.is_dir():
            raise WorkerFailed(f"model directory missing: {self.model_path}",
                               "rerun `bot quantize` for it (or restore the base snapshot), then `bot validate`")
        rec.accuracy = None  # always measured again (it never outlives a failed lm-eval run)
        tp = self.tensor_parallel()
        measured_tp = (rec.compat.get("tensor_parallel") or {}).get("size")
        if reuse_runtime and measured_tp is not None and measured_tp != tp.size:
            reuse_runtime = False  # speed measured on another number of GPUs: measure again
        if not reuse_runtime:
            rec.load, rec.hardware, rec.generations, rec.speed, rec.compat = None, None, [], None, {}
            rec.timings = {}
        rec.compat["tensor_parallel"] = tp.record()
        if not reuse_runtime:
            self.runtime(rec)
            self.save()
        if rec.load is not None and rec.load.ok and self.plan.tasks:
            self.accuracy(rec)


def _useful_tail(text: str, lines: int = 20) -> str:
    """The log's last lines without progress bars (tqdm redraws) and blank lines."""
    keep = [ln for ln in text.splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    return "\n".join(keep[-lines:])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _start(rec: ValidateRecord, plan: Plan) -> None:
    rec.status, rec.started_at, rec.finished_at = Status.running, now_iso(), None
    rec.error = rec.hint = None
    rec.backend = plan.backend


def _finish(rec: ValidateRecord, error: WorkerFailed | None) -> None:
    rec.finished_at = now_iso()
    if error is None:
        rec.status, rec.validated_at = Status.done, rec.finished_at
    else:
        rec.status, rec.error, rec.hint = Status.failed, str(error), error.hint


# ---------------------------------------------------------------- the run


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


def _measure(work: ModelValidation, rec: ValidateRecord, reuse: bool) -> WorkerFailed | None:
    """Mark `rec` running, run the workers, and return what failed (None when all ran). An interrupt leaves the
    record failed with a resume hint, saved, and goes on up."""
    _start(rec, work.plan)
    work.save()
    work.on_event("model-start", {"model": work.name})
    try:
        work.run(rec, reuse)
    except WorkerFailed as exc:
        return exc
    except KeyboardInterrupt:
        _finish(rec, WorkerFailed("interrupted", f"rerun `bot validate {work.rundir.root}` to resume"))
        work.save()
        raise
    return None


def _validate_base(rundir: RunDir, settings: Settings, plan: Plan, force: bool, emit: EventFn) -> ValidateRecord:
    manifest = rundir.read_base()
    assert manifest is not None
    prev = manifest.validate_
    if _skip_current(BASE, prev, plan, force, emit):
        return prev
    rec, reuse = _fresh_or_resumed(ValidateRecord, prev, plan, force)

    def save() -> None:
        manifest.validate_ = rec
        rundir.write_base(manifest)

    error = _measure(ModelValidation(rundir, settings, plan, BASE, Path(manifest.base.path), save, emit,
                                     manifest.base.trust_remote_code), rec, reuse)
    if error is None and rec.load is not None and not rec.load.ok:
        error = WorkerFailed(f"the base model does not load in {plan.backend}: {rec.load.error}",
                             f"see {rundir.logs_dir / 'validate-base.log'}")
    _finish(rec, error)
    save()
    emit("model-end", {"model": BASE, "status": rec.status.value, "state": rec.status.value})
    if error is not None:
        raise StageError("validate", f"base model: {str(error).splitlines()[0]}", hint=error.hint)
    return rec


def _judge(rec: VariantValidateRecord, variant: str, recipe: Recipe | None, base: ValidateRecord, base_path: Path,
           model_dir: Path, settings: Settings) -> None:
    """The variant's ratios against `base` and the gate's decision on them."""
    rec.comparison = compare(base, rec, weights_size(base_path), weights_size(model_dir))
    rec.gate = decide_gate(rec, rec.comparison, gate_threshold(variant, recipe, settings.gate), settings.gate)


def _validate_variant(rundir: RunDir, settings: Settings, plan: Plan, variant: str, base: ValidateRecord,
                      base_path: Path, trust: bool, force: bool, emit: EventFn) -> VariantValidateRecord:
    manifest = rundir.read_variant(variant)
    assert manifest is not None
    if manifest.quantize.status != Status.done:
        why = f"quantize is {manifest.quantize.status.value}"
        if manifest.quantize.error:
            why += f": {manifest.quantize.error.splitlines()[0]}"
        rec = VariantValidateRecord(status=Status.skipped, error=why, hint=f"run `bot quantize` for {variant} first")
        manifest.validate_ = rec
        rundir.write_variant(manifest)
        emit("skip", {"model": variant, "reason": why})
        return rec
    prev = manifest.validate_
    if _skip_current(variant, prev, plan, force, emit):
        return prev
    rec, reuse = _fresh_or_resumed(VariantValidateRecord, prev, plan, force)
    rec.comparison = rec.gate = None

    def save() -> None:
        manifest.validate_ = rec
        rundir.write_variant(manifest)

    model_dir = rundir.model_dir(variant)
    error = _measure(ModelValidation(rundir, settings, plan, variant, model_dir, save, emit, trust), rec, reuse)
    recipe = recipe_for(manifest, settings)
    rec.compat.update(hardware_compat(recipe, rec.hardware, rec.load.kernel if rec.load else None))
    if error is None:
        _judge(rec, variant, recipe, base, base_path, model_dir, settings)
    _finish(rec, error)
    save()
    emit("model-end", {"model": variant, "status": rec.status.value, "state": manifest.state()})
    return rec


def validate_run(rundir: RunDir, settings: Settings, variants: list[str] | None = None, force: bool = False, *,
                 on_event: EventFn | None = None) -> list[VariantValidateRecord]:
    """Validate the base (once per run) and the selected variants (default: all); returns the variants' records.

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
    plan = plan_for(settings)
    emit("plan", {"backend": plan.backend, "device": plan.device, "tasks": plan.tasks, "limit": plan.limit,
                  "models": [BASE, *selected]})
    base = _validate_base(rundir, settings, plan, force, emit)
    base_path = Path(base_manifest.base.path)
    trust = base_manifest.base.trust_remote_code
    records = [_validate_variant(rundir, settings, plan, v, base, base_path, trust, force, emit) for v in selected]
    for variant in available:
        if variant not in selected:
            _recompare(rundir, settings, variant, base, base_path, emit)
    return records


def _recompare(rundir: RunDir, settings: Settings, variant: str, base: ValidateRecord, base_path: Path,
               emit: EventFn) -> None:
    """A variant left out of this call keeps its measurements, but its ratios and gate were taken against an
    earlier base measurement when the base was just measured again (`--force -v X`): taken again against the
    base the run now holds, so that a card never pairs the new base with ratios from the old one."""
    manifest = rundir.read_variant(variant)
    rec = manifest.validate_ if manifest is not None else None
    if rec is None or rec.status != Status.done or rec.comparison is None:
        return
    if rec.comparison.base_validated_at == base.validated_at:
        return
    _judge(rec, variant, recipe_for(manifest, settings), base, base_path, rundir.model_dir(variant), settings)
    rundir.write_variant(manifest)
    emit("recompared", {"model": variant, "base_validated_at": base.validated_at})
