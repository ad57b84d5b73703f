"""The quantize stage: resolve each recipe against the base, run the quantize worker for the pending variants (the
base is loaded once per worker; `quantize_workers` > 1 runs several workers at once on the same device, each with
its share of the variants; `quantize_gpus` pins `quantize_workers` workers to each listed GPU), and record each
variant's manifest as soon as its worker reports it finished (the others of that worker still running), so that a
variant is complete, and can be validated, without waiting for its siblings. Complete variants are skipped on
rerun; a failed one gets a failed manifest with the error, and
never a `model/` directory."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bot.clients.process import ProcessGroups, WorkerRun, exit_reason, require_modules, run_worker
from bot.config import PROJECT_ROOT, Settings
from bot.errors import StageError
from bot.manifest import BaseManifest, CalibrationInfo, Hardware, QuantizeRecord, Status, VariantManifest, now_iso
from bot.recipes import Recipe
from bot.recipes.resolve import ResolvedRecipe, resolve
from bot.rundir import RunDir
from bot.stages.schedule import spread

BUNDLED_CALIBRATION = PROJECT_ROOT / "bot" / "data" / "calibration.jsonl"
QUANTIZE_MODULES = ("torch", "transformers", "llmcompressor", "compressed_tensors")


@dataclass(frozen=True)
class QuantizeOutcome:
    variant: str
    status: Status
    skipped: bool
    error: str | None = None


def is_complete(rundir: RunDir, manifest: VariantManifest | None) -> bool:
    return (manifest is not None and manifest.quantize.status == Status.done
            and (rundir.model_dir(manifest.variant) / "config.json").is_file())


def calibration_job(settings: Settings) -> dict:
    cal = settings.calibration
    if cal.file is not None:
        path = Path(cal.file).expanduser().resolve()
        if not path.is_file():
            raise StageError("quantize", f"calibration file not found: {cal.file}", hint="pass an existing JSONL file")
        return {"file": str(path), "seed": cal.seed, "batch_size": cal.batch_size}
    return {"dataset": cal.dataset, "split": cal.split, "seed": cal.seed, "batch_size": cal.batch_size}


def applied_recipe(resolved: ResolvedRecipe) -> Recipe:
    """The recipe as this model gets it: the resolved group size (after a fallback), ignore list and calibration
    size, and a summary that says the same (its "group(s) of N" follows the group size). What the manifest stores
    and the card prints."""
    recipe = resolved.recipe
    update: dict = {"group_size": resolved.group_size, "ignore": list(resolved.ignore)}
    if recipe.calibration is not None and resolved.samples and resolved.seq_len:
        update["calibration"] = recipe.calibration.model_copy(
            update={"samples": resolved.samples, "seq_len": resolved.seq_len})
    if recipe.group_size and resolved.group_size and resolved.group_size != recipe.group_size:
        update["summary"] = re.sub(rf"\b(groups? of ){recipe.group_size}\b", rf"\g<1>{resolved.group_size}",
                                   recipe.summary)
    return recipe.model_copy(update=update)


def _record_from_result(resolved: ResolvedRecipe, result: dict) -> QuantizeRecord:
    applied = resolved.manifest_view()
    applied.update({k: v for k, v in (result.get("applied") or {}).items() if v is not None})
    return QuantizeRecord(
        status=Status.done, finished_at=now_iso(), recipe_id=resolved.recipe.id,
        recipe=applied_recipe(resolved), llmcompressor_recipe=resolved.llmcompressor_yaml,
        applied=applied, calibration=CalibrationInfo(**result["calibration"]) if result.get("calibration") else None,
        versions=result.get("versions", {}), hardware=Hardware(**result["hardware"]) if result.get("hardware") else None,
        wall_time_s=result.get("wall_time_s"), peak_gpu_memory_bytes=result.get("peak_gpu_memory_bytes"),
        peak_rss_bytes=result.get("peak_rss_bytes"), size_bytes=result.get("size_bytes"),
        files=result.get("files", []), quantization_config=result.get("quantization_config", {}),
        timings=result.get("timings") or {},
    )


def quantize_run(
    rundir: RunDir,
    base: BaseManifest,
    recipes: list[Recipe],
    settings: Settings,
    *,
    force: bool = False,
    on_event: Callable[[dict], None] | None = None,
    workers: int | None = None,
    cheap_first: bool = False,
    on_variant_done: Callable[[str], None] | None = None,
    groups: ProcessGroups | None = None,
) -> list[QuantizeOutcome]:
    """Quantize `recipes` that are not complete yet. `workers`: worker processes at once (default: the
    `quantize_workers` setting, 1 for "auto"; still capped by host memory); `cheap_first`: each worker takes its
    cheap variants first; `on_variant_done(variant)`: told as each variant's manifest is final (done or failed);
    `groups`: where the workers' process groups are registered while they run (bot.stages.overlap pauses them)."""
    config = json.loads((Path(base.base.path) / "config.json").read_text(encoding="utf-8"))
    outcomes: dict[str, QuantizeOutcome] = {}
    pending: list[tuple[ResolvedRecipe, VariantManifest]] = []
    if on_event is not None:
        on_event({"event": "begin", "variants": [r.id for r in recipes]})
    for recipe in recipes:
        manifest = rundir.read_variant(recipe.id)
        if not force and is_complete(rundir, manifest):
            outcomes[recipe.id] = QuantizeOutcome(recipe.id, Status.done, skipped=True)
            if on_event is not None:
                on_event({"event": "skip", "variant": recipe.id, "reason": "already complete"})
            continue
        manifest = VariantManifest(run_id=rundir.run_id, variant=recipe.id)  # a rerun starts the variant afresh
        try:
            resolved = resolve(recipe, config, samples=settings.calibration.samples, seq_len=settings.calibration.seq_len)
        except ValueError as exc:
            manifest.quantize = QuantizeRecord(status=Status.failed, recipe_id=recipe.id, error=str(exc),
                                               finished_at=now_iso(), hint="override group_size for this recipe")
            rundir.write_variant(manifest)
            outcomes[recipe.id] = QuantizeOutcome(recipe.id, Status.failed, False, str(exc))
            if on_event is not None:
                on_event({"event": "failed", "variant": recipe.id, "error": str(exc)})
            continue
        pending.append((resolved, manifest))
    if pending:
        asked = workers or workers_per_device(settings)
        _run_pending(rundir, base, pending, settings, outcomes, on_event,
                     _Run(asked, cheap_first, on_variant_done, groups))
    return [outcomes[r.id] for r in recipes]


# Relative cost of a recipe, for spreading variants over parallel workers (longest first, onto the least loaded).
# Data-free recipes are seconds; AWQ's grid search and AutoRound's tuning loop are the long ones.
_COST = {"AutoRoundModifier": 8.0, "AWQModifier": 4.0, "GPTQModifier": 3.0, "SmoothQuantModifier": 1.0}


def recipe_cost(resolved: ResolvedRecipe) -> float:
    costs = [1.0 if resolved.samples else 0.1]
    for mod in resolved.recipe.modifiers:
        cost = _COST.get(mod.type, 0.0)
        if mod.type == "AutoRoundModifier":  # its tuning loop scales with the iterations (200 by default)
            cost = max(1.0, cost * float(getattr(mod, "iters", None) or 200) / 200)
        costs.append(cost)
    return max(costs)


def workers_per_device(settings: Settings) -> int:
    """The `quantize_workers` setting as this stage applies it: "auto" is 1 here (`bot publish` with overlap
    chooses from the GPU's memory, bot.stages.overlap, and passes its own number)."""
    return settings.quantize_workers if isinstance(settings.quantize_workers, int) else 1


def workers_requested(per_device: int, settings: Settings) -> int:
    """Worker processes asked for: `per_device` on each GPU of `quantize_gpus` (on the one device when unset)."""
    return per_device * max(1, len(settings.quantize_gpus))


def plan_workers(pending: list[tuple[ResolvedRecipe, VariantManifest]], workers: int, *, cheap_first: bool = False
                 ) -> list[list[tuple[ResolvedRecipe, VariantManifest]]]:
    """Split the pending variants into at most `workers` groups of similar total cost (greedy, longest first);
    each group runs in its own worker process, which loads the base once for its variants, in the recipe order
    (or cheapest first with `cheap_first`)."""
    groups = spread([recipe_cost(r) for r, _ in pending], workers, cheap_first=cheap_first)
    return [[pending[i] for i in g] for g in groups]


def worker_pins(workers: int, gpus: list[int]) -> list[str | None]:
    """Each worker's CUDA_VISIBLE_DEVICES (pure): the listed GPUs in turn (worker i on gpus[i % len]), so that the
    first, longest groups of `plan_workers` land on different GPUs; None for every worker when no GPU is listed
    (each sees every GPU, the default)."""
    return [str(gpus[i % len(gpus)]) if gpus else None for i in range(workers)]


def sharing(index: int, pins: list[str | None], device: str) -> list[int]:
    """The other workers that share worker `index`'s device (pure): all of them on a CPU or when unpinned, else
    those pinned to the same GPU."""
    mine = pins[index]
    return [i for i, pin in enumerate(pins)
            if i != index and (device == "cpu" or mine is None or pin is None or pin == mine)]


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def workers_that_fit(requested: int, model_bytes: int | None, available: int | None) -> tuple[int, str | None]:
    """Each worker holds the base and one working copy in host memory (2x its size, plus a quarter for
    calibration and compression buffers): more workers than fit would be killed by the kernel mid-recipe."""
    if requested <= 1 or not model_bytes or not available:
        return max(1, requested), None
    need = int(model_bytes * 2.25)
    fit = max(1, min(requested, int(available * 0.9) // need))
    if fit == requested:
        return fit, None
    return fit, (f"{requested} quantize workers asked for, {fit} used: each needs about {need / 1e9:.1f} GB of host "
                 f"memory and {available / 1e9:.1f} GB is available")


@dataclass(frozen=True)
class _Run:
    workers: int
    cheap_first: bool = False
    on_variant_done: Callable[[str], None] | None = None
    groups: ProcessGroups | None = None


def _run_pending(rundir: RunDir, base: BaseManifest, pending: list[tuple[ResolvedRecipe, VariantManifest]],
                 settings: Settings, outcomes: dict[str, QuantizeOutcome], on_event, how: _Run) -> None:
    require_modules("quantize", settings.quantize_python, QUANTIZE_MODULES)
    requested = workers_requested(how.workers, settings)
    workers, note = workers_that_fit(min(requested, len(pending)), base.base.size_bytes, available_memory())
    if note and on_event is not None:
        on_event({"event": "note", "message": note})
    groups = plan_workers(pending, workers, cheap_first=how.cheap_first)
    pins = worker_pins(len(groups), list(settings.quantize_gpus))
    if on_event is not None:  # each recipe's relative cost: the display's time estimates
        on_event({"event": "plan", "workers": len(groups), "costs": {r.recipe.id: recipe_cost(r) for r, _ in pending},
                  "gpus": {r.recipe.id: pins[i] for i, g in enumerate(groups) for r, _ in g if pins[i] is not None}})
    lock = threading.Lock()
    collect = _Collector(rundir, groups, outcomes, how.on_variant_done, pins, settings.device)

    def start(index: int, group: list[tuple[ResolvedRecipe, VariantManifest]]) -> None:
        suffix = f"-{index}" if len(groups) > 1 else ""
        job = _job(rundir, base, group, settings)
        if pins[index] is not None:
            job["visible_devices"] = pins[index]  # recorded in the job file; the worker reads its environment

        def events(event: dict) -> None:
            if on_event is not None:
                with lock:  # progress lines from several workers reach one display
                    on_event({**event, "worker": index})
            if event.get("event") == "end" and event.get("variant"):
                collect.one(event["variant"], None)  # its result file is written: final now

        run = run_worker(settings.quantize_python, "quantize_worker", job, rundir.root / "jobs" / f"quantize{suffix}.json",
                         rundir.logs_dir / f"quantize{suffix}.log", on_line=events, groups=how.groups,
                         env={"CUDA_VISIBLE_DEVICES": pins[index]} if pins[index] is not None else None)
        for resolved, _ in group:  # what the worker did not report: failed, with its exit and log
            collect.one(resolved.recipe.id, run)

    if len(groups) == 1:
        start(0, groups[0])
    else:
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="quantize") as pool:
            for future in [pool.submit(start, i, g) for i, g in enumerate(groups)]:
                future.result()


def _job(rundir: RunDir, base: BaseManifest, group: list[tuple[ResolvedRecipe, VariantManifest]],
         settings: Settings) -> dict:
    needs_data = any(r.samples for r, _ in group)
    job = {
        "model_path": base.base.path, "architecture": base.base.architecture, "device": settings.device,
        "cpu_threads": settings.cpu_worker_threads(),  # applied by the worker only when it computes on a CPU
        "trust_remote_code": base.base.trust_remote_code and settings.allows_remote_code(base.base.model_id),
        "calibration": calibration_job(settings) if needs_data else None,
        "license_files": base.base.license_files, "variants": [],
    }
    for resolved, manifest in group:
        vid = resolved.recipe.id
        rundir.discard_partial(vid)
        manifest.quantize = QuantizeRecord(status=Status.running, started_at=now_iso(), recipe_id=vid,
                                           recipe=applied_recipe(resolved),
                                           llmcompressor_recipe=resolved.llmcompressor_yaml,
                                           applied=resolved.manifest_view())
        rundir.write_variant(manifest)
        job["variants"].append({
            "recipe_id": vid, "llmcompressor_yaml": resolved.llmcompressor_yaml, "samples": resolved.samples,
            "seq_len": resolved.seq_len, "pack": bool(resolved.recipe.calibration and resolved.recipe.calibration.pack),
            "out_dir": str(rundir.partial_model_dir(vid)),
            "result_path": str(rundir.variant_dir(vid) / "quantize-result.json"),
        })
        Path(job["variants"][-1]["result_path"]).unlink(missing_ok=True)
    return job


class _Collector:
    """Makes each variant's manifest final once: when its worker reports it finished, or when the worker exits."""

    def __init__(self, rundir: RunDir, groups: list[list[tuple[ResolvedRecipe, VariantManifest]]],
                 outcomes: dict[str, QuantizeOutcome], on_done: Callable[[str], None] | None,
                 pins: list[str | None], device: str) -> None:
        self.rundir, self.outcomes, self.on_done = rundir, outcomes, on_done
        self.pins, self.device = pins, device
        self.items = {r.recipe.id: (r, m) for g in groups for r, m in g}
        self.group_of = {r.recipe.id: i for i, g in enumerate(groups) for r, _ in g}
        self.lock = threading.Lock()

    def one(self, vid: str, run: WorkerRun | None) -> None:
        """Record `vid` from its result file; with `run` (the worker has exited) a missing result is a failure."""
        with self.lock:
            if vid in self.outcomes or vid not in self.items:
                return
            resolved, manifest = self.items[vid]
            result_path = self.rundir.variant_dir(vid) / "quantize-result.json"
            result = json.loads(result_path.read_text()) if result_path.is_file() else None
            if result is None and run is None:
                return
            self._record(vid, resolved, manifest, result, run)
        if self.on_done is not None:
            self.on_done(vid)

    def _record(self, vid: str, resolved: ResolvedRecipe, manifest: VariantManifest, result: dict | None,
                run: WorkerRun | None) -> None:
        rundir = self.rundir
        shared = set(sharing(self.group_of[vid], self.pins, self.device))
        others = [o for o, i in self.group_of.items() if i in shared]  # on the same device at the same time
        if result and result.get("status") == "done":
            rundir.promote_partial(vid)
            started = manifest.quantize.started_at
            manifest.quantize = _record_from_result(resolved, result)
            manifest.quantize.started_at = started or now_iso()
            manifest.quantize.concurrent_with = others
            self.outcomes[vid] = QuantizeOutcome(vid, Status.done, False)
        else:
            rundir.discard_partial(vid)
            code = run.returncode if run is not None else None
            error = (result or {}).get("error") or f"quantize worker {exit_reason(code)} before this variant finished"
            manifest.quantize.status = Status.failed
            manifest.quantize.error = error
            manifest.quantize.finished_at = now_iso()
            log = rundir.logs_dir / ("quantize.log" if len(set(self.group_of.values())) == 1
                                     else f"quantize-{self.group_of[vid]}.log")
            manifest.quantize.hint = f"see {log.relative_to(rundir.root)} in the run directory; rerun to retry"
            if result:
                manifest.quantize.versions = result.get("versions", {})
            self.outcomes[vid] = QuantizeOutcome(vid, Status.failed, False, error)
        rundir.write_variant(manifest)
