"""Measuring one model of a run (base or variant): the worker calls and what they write into its record.

Per model, workers run as subprocesses: `validate_worker` (load, greedy chat generations, batch-1 and batched
speed) and `lmeval_worker` (lm-eval tasks, per-document results kept) in the serve interpreter (on the hf
backend a first measurement runs both in one validate worker, one after the other); for the base,
`fidelity_worker` (its next-token distributions against each variant's on held-out text) in the quantize
interpreter, whose compressed-tensors wrote the checkpoints. Each step saves the record, so a crash resumes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Callable, Protocol

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
from bot.stages.validate.plan import BUNDLED_TASKS_DIR, Plan
from bot.modelconfig import resolve_max_model_len

CPU_BATCH_SIZE = 8
SAMPLES_FILE = "eval-samples.json"
HELDOUT_TEXT = BUNDLED_TASKS_DIR.parent / "heldout" / "heldout-v1.txt"
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
                 save: Callable[[], None], on_event: EventFn, trust_remote_code: bool = False,
                 sharing: Sharing | None = None) -> None:
        self.rundir, self.settings, self.plan, self.name = rundir, settings, plan, name
        self.folder = rundir.base_dir if name == BASE else rundir.variant_dir(name)
        self.model_path, self.save, self.on_event, self.trust = model_path, save, on_event, trust_remote_code
        self.sharing = sharing
        self._tp_choice: TPChoice | None = None

    @property
    def utilization(self) -> float:
        """The share of the GPU the engines get: the plan's (bot publish may have planned it), else the setting."""
        return float(self.plan.speed.get("gpu_memory_utilization", self.settings.validate.speed.gpu_memory_utilization))

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
                [int(g["memory_bytes"]) for g in self.plan.env.gpus], self.utilization,
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

    def call(self, module: str, kind: str, job: dict[str, Any], rec: ValidateRecord, timing: str,
             env: dict[str, str] | None = None) -> dict[str, Any]:
        """A worker in the serve interpreter for another stage's measurement (the serving search), `env` added to its
        environment; as `_call`."""
        return self._call(module, kind, job, rec, timing, env=env)

    def _call(self, module: str, kind: str, job: dict[str, Any], rec: ValidateRecord, timing: str,
              python: str | None = None, env: dict[str, str] | None = None,
              on_line: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Run one worker (in the serve interpreter unless `python` says, with `env` added to its environment); on
        success its wall time goes into `rec.timings[timing]`. Raises WorkerFailed with the log's tail."""
        job_path, result_path, log_path = self._paths(kind)
        result_path.unlink(missing_ok=True)
        job["result_path"] = str(result_path)
        hint = self._hint(log_path)
        timeout = self.settings.validate.worker_timeout_s
        try:
            run: WorkerRun | None = run_worker(python or self.settings.serve_python, module, job, job_path, log_path,
                                               timeout_s=timeout, env=env, on_line=on_line)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(f"{module} timed out after {timeout} s", hint) from None
        except OSError as exc:
            raise WorkerFailed(f"{module} could not start: {exc}", hint) from None
        result = _read_json(result_path)
        if result.get("status") == "done":
            rec.timings[timing] = round(run.seconds, 2)
            return result
        raise self._failed(module, result.get("error") or f"{exit_reason(run.returncode)} and wrote no result", log_path)

    def _hint(self, log_path: Path) -> str:
        return f"see {log_path}; fix the cause and rerun `bot validate {self.rundir.root}` to resume"

    def _failed(self, module: str, what: str, log_path: Path) -> WorkerFailed:
        """What a worker run that gave no usable result raises: the reason, the log's useful tail, the hint."""
        tail = _useful_tail(WorkerRun(0, log_path, 0.0).log_tail(200))
        return WorkerFailed(f"{module}: {what}\n--- log tail ({log_path}) ---\n{tail}", self._hint(log_path))

    def _runtime_job(self) -> dict[str, Any]:
        on = f", tp={self.tensor_parallel().size}" if self.tensor_parallel().size > 1 else ""
        self.on_event("phase", {"model": self.name, "phase": f"load, generate, speed ({self.plan.backend}{on})"})
        return {"backend": self.plan.backend, "model_path": str(self.model_path), "device": self.plan.device,
                "label": self.plan.label, "prompts": self.plan.prompts, "max_new_tokens": self.plan.max_new_tokens,
                "speed": self.plan.speed, "dtype": self.plan.dtype, "tensor_parallel_size": self.tensor_parallel().size,
                "trust_remote_code": self.trust, "seed": 0, "cpu_threads": self.plan.cpu_threads}

    def runtime(self, rec: ValidateRecord) -> None:
        job = self._runtime_job()
        with _QuietSpeed(self.sharing) as quiet:
            res = self._call("validate_worker", "validate", job, rec, "runtime_worker", on_line=quiet.on_line)
        self._apply_runtime(rec, res)

    def _apply_runtime(self, rec: ValidateRecord, res: dict[str, Any]) -> None:
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

    def _accuracy_job(self, rec: ValidateRecord, limit: int | None,
                      rounds: int) -> tuple[dict[str, Any], AccuracyRecord]:
        v = self.settings.validate
        max_len = rec.load.max_model_len if rec.load else None
        chat = has_chat_template(self.model_path)
        samples = self.folder / SAMPLES_FILE
        job = {"backend": self.plan.backend, "model_path": str(self.model_path), "tasks": self.plan.tasks,
               "limit": limit, "num_fewshot": self.plan.num_fewshot, "batch_size": self._batch_size(),
               "device": self.plan.device, "dtype": self.plan.dtype,
               "tensor_parallel_size": self.tensor_parallel().size, "gpu_memory_utilization": self.utilization,
               "max_model_len": max_len,
               "enforce_eager": v.speed.enforce_eager, "apply_chat_template": chat,
               "fewshot_as_multiturn": chat, "samples_path": str(samples),  # the worker applies it per task
               "include_paths": self.plan.include_paths, "trust_remote_code": self.trust, "seed": 1234,
               "cpu_threads": self.plan.cpu_threads}
        acc = AccuracyRecord(limit=limit, num_fewshot=self.plan.num_fewshot, backend=self.plan.backend,
                             dtype=self.plan.dtype, rounds=rounds)
        return job, acc

    def _accuracy_phase(self, limit: int | None, rounds: int) -> None:
        what = f"lm-eval {','.join(self.plan.tasks)}" + (f" (round {rounds}, limit {limit})" if rounds > 1 else "")
        self.on_event("phase", {"model": self.name, "phase": what})

    def accuracy(self, rec: ValidateRecord, limit: int | None = None, rounds: int = 1) -> None:
        """lm-eval on the plan's tasks at `limit` samples per task (default: the plan's); per-document results go
        next to the manifest (`eval-samples.json`), where the paired statistics read them."""
        limit = self.plan.limit if limit is None else limit
        job, acc = self._accuracy_job(rec, limit, rounds)
        self._accuracy_phase(limit, rounds)
        try:
            res = self._call("lmeval_worker", "lmeval", job, rec, "lmeval_worker")
        except WorkerFailed as exc:
            acc.error = str(exc).splitlines()[0][:500]
            rec.accuracy = acc
            raise
        self._apply_accuracy(rec, acc, job, res)

    def _apply_accuracy(self, rec: ValidateRecord, acc: AccuracyRecord, job: dict[str, Any],
                        res: dict[str, Any]) -> None:
        samples = Path(job["samples_path"])
        acc.tasks = [TaskScore.model_validate(t) for t in res["tasks"]]
        acc.command = res.get("command", "")
        acc.batch_size = res.get("batch_size", job["batch_size"])
        acc.apply_chat_template = bool(res.get("apply_chat_template"))
        acc.fewshot_as_multiturn = bool(res.get("fewshot_as_multiturn"))
        acc.samples_file = SAMPLES_FILE if samples.is_file() else None
        rec.versions.update(res.get("versions") or {})
        rec.accuracy = acc

    def fidelity(self, rec: ValidateRecord, variants: dict[str, Path], lane: str | None = None) -> dict[str, Any]:
        """The fidelity worker with this model (the base) against `variants`, in the quantize interpreter
        (transformers with the compressed-tensors that wrote the checkpoints). `lane`: named in the phase event
        when the worker runs beside another (the timeline draws it on a lane of its own)."""
        f = self.settings.validate.fidelity
        job = {"base_path": str(self.model_path), "device": self.plan.device, "dtype": "auto",
               "variants": [{"name": n, "model_path": str(p)} for n, p in variants.items()],
               "text_path": str(HELDOUT_TEXT), "tokens": f.tokens, "window": f.window, "trust_remote_code": self.trust,
               "cpu_threads": self.plan.cpu_threads}
        event = {"model": self.name, "phase": f"fidelity of {len(variants)} variant(s) on {f.tokens} held-out tokens",
                 "variants": list(variants)}
        self.on_event("phase", {**event, "lane": lane} if lane else event)
        return self._call("fidelity_worker", "fidelity", job, rec, "fidelity_worker",
                          python=self.settings.quantize_python)

    def run(self, rec: ValidateRecord, reuse_runtime: bool,
            after_runtime: Callable[[ValidateRecord], None] | None = None) -> None:
        """Fill `rec`; raises WorkerFailed (record left with what was measured). `after_runtime` is called once the
        load, generations and speed are in `rec` (measured or kept), before lm-eval."""
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
        if not reuse_runtime and self.plan.backend == "hf" and self.plan.tasks:
            self._runtime_then_accuracy(rec, after_runtime)
            return
        if not reuse_runtime:
            self.runtime(rec)
            self.save()
        if after_runtime is not None:
            after_runtime(rec)
        if rec.load is not None and rec.load.ok and self.plan.tasks:
            self.accuracy(rec)

    def _runtime_then_accuracy(self, rec: ValidateRecord, after_runtime: Callable[[ValidateRecord], None] | None,
                               ) -> None:
        """The hf backend: load, generations and speed, then lm-eval, in one validate worker (one interpreter start
        and one import of torch and transformers instead of two; lm-eval still loads the model itself, as its
        recorded command does). The worker writes the runtime result first and says so (`runtime-done`): it is
        recorded and saved then, and `after_runtime` called, while lm-eval runs, exactly as with two workers."""
        job = self._runtime_job()
        lm_job, acc = self._accuracy_job(rec, self.plan.limit, 1)
        lm_result = self._paths("lmeval")[1]
        lm_result.unlink(missing_ok=True)
        job["lmeval"] = {**lm_job, "result_path": str(lm_result)}
        applied = {"runtime": False}

        def runtime_done(res: dict[str, Any], lm_eval_next: bool) -> None:
            if res.get("status") != "done" or applied["runtime"]:
                return
            self._apply_runtime(rec, res)
            rec.timings["runtime_worker"] = round(float(res.get("wall_time_s") or 0.0), 2)
            applied["runtime"] = True
            self.save()
            if after_runtime is not None:
                after_runtime(rec)
            if lm_eval_next and rec.load is not None and rec.load.ok:
                self._accuracy_phase(self.plan.limit, 1)

        with _QuietSpeed(self.sharing) as quiet:
            def on_line(event: dict) -> None:
                quiet.on_line(event)
                if event.get("event") == "runtime-done":
                    runtime_done(_read_json(self._paths("validate")[1]), lm_eval_next=True)

            res = self._call("validate_worker", "validate", job, rec, "runtime_worker", on_line=on_line)
        runtime_done(res, lm_eval_next=False)  # when the event was lost: the result says the same
        # `_call` timed the whole process (lm-eval included): the runtime part's own time is the worker's
        rec.timings["runtime_worker"] = round(float(res.get("wall_time_s") or 0.0), 2)
        if rec.load is None or not rec.load.ok:
            return
        lm = _read_json(lm_result)
        if lm.get("status") == "done":
            rec.timings["lmeval_worker"] = round(float(lm.get("wall_time_s") or 0.0), 2)
            self._apply_accuracy(rec, acc, job["lmeval"], lm)
            return
        error = self._failed("lmeval_worker", lm.get("error") or "the validate worker ended without an lm-eval result",
                             self._paths("validate")[2])
        acc.error = str(error).splitlines()[0][:500]
        rec.accuracy = acc
        raise error


class Sharing(Protocol):
    """The quantize workers sharing the device with validation (bot.stages.overlap): what runs, and a pause."""

    def running(self) -> list[str]: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class _QuietSpeed:
    """While the validate worker measures speed (its `speed` start/end events), the workers sharing the device are
    paused: a speed figure is never taken with quantization running next to it. Resumed however the worker ends."""

    def __init__(self, sharing: Sharing | None) -> None:
        self.sharing, self.paused = sharing, False

    def __enter__(self) -> "_QuietSpeed":
        return self

    def on_line(self, event: dict) -> None:
        if self.sharing is None or event.get("event") != "speed":
            return
        if event.get("phase") == "start" and not self.paused:
            self.sharing.pause()
            self.paused = True
        elif event.get("phase") == "end" and self.paused:
            self.sharing.resume()
            self.paused = False

    def __exit__(self, *exc: object) -> None:
        if self.paused and self.sharing is not None:
            self.sharing.resume()
            self.paused = False


def _useful_tail(text: str, lines: int = 20) -> str:
    """The log's last lines without progress bars (tqdm redraws) and blank lines."""
    keep = [ln for ln in text.splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    return "\n".join(keep[-lines:])


def has_chat_template(model_path: Path) -> bool:
    """The tokenizer ships a chat template (in tokenizer_config.json or as chat_template.jinja)."""
    if (model_path / "chat_template.jinja").is_file() or (model_path / "chat_template.json").is_file():
        return True
    return bool(_read_json(model_path / "tokenizer_config.json").get("chat_template"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def start_record(rec: ValidateRecord, plan: Plan, sharing: Sharing | None = None) -> None:
    rec.status, rec.started_at, rec.finished_at = Status.running, now_iso(), None
    rec.error = rec.hint = None
    rec.backend = plan.backend
    rec.concurrent_with = sharing.running() if sharing is not None else []


def finish_record(rec: ValidateRecord, error: WorkerFailed | None, sharing: Sharing | None = None) -> None:
    if sharing is not None:
        rec.concurrent_with = list(dict.fromkeys([*rec.concurrent_with, *sharing.running()]))
    rec.finished_at = now_iso()
    if error is None:
        rec.status, rec.validated_at = Status.done, rec.finished_at
    else:
        rec.status, rec.error, rec.hint = Status.failed, str(error), error.hint
