"""The quantize stage: resolve each recipe against the base, run the quantize worker once for all pending
variants (the base is loaded once), and record each variant's manifest. Complete variants are skipped on rerun;
a failed one gets a failed manifest with the error, and never a `model/` directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bot.clients.process import require_modules, run_worker
from bot.config import PROJECT_ROOT, Settings
from bot.errors import StageError
from bot.manifest import BaseManifest, CalibrationInfo, Hardware, QuantizeRecord, Status, VariantManifest, now_iso
from bot.recipes import Recipe
from bot.recipes.resolve import ResolvedRecipe, resolve
from bot.rundir import RunDir

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
        return {"file": str(path), "seed": cal.seed}
    return {"dataset": cal.dataset, "split": cal.split, "seed": cal.seed}


def _record_from_result(resolved: ResolvedRecipe, result: dict) -> QuantizeRecord:
    applied = resolved.manifest_view()
    applied.update({k: v for k, v in (result.get("applied") or {}).items() if v is not None})
    return QuantizeRecord(
        status=Status.done, finished_at=now_iso(), recipe_id=resolved.recipe.id,
        recipe=resolved.recipe.model_dump(mode="json"), llmcompressor_recipe=resolved.llmcompressor_yaml,
        applied=applied, calibration=CalibrationInfo(**result["calibration"]) if result.get("calibration") else None,
        versions=result.get("versions", {}), hardware=Hardware(**result["hardware"]) if result.get("hardware") else None,
        wall_time_s=result.get("wall_time_s"), peak_gpu_memory_bytes=result.get("peak_gpu_memory_bytes"),
        peak_rss_bytes=result.get("peak_rss_bytes"), size_bytes=result.get("size_bytes"),
        files=result.get("files", []), quantization_config=result.get("quantization_config", {}),
    )


def quantize_run(
    rundir: RunDir,
    base: BaseManifest,
    recipes: list[Recipe],
    settings: Settings,
    *,
    force: bool = False,
    on_event: Callable[[dict], None] | None = None,
) -> list[QuantizeOutcome]:
    config = json.loads((Path(base.base.path) / "config.json").read_text(encoding="utf-8"))
    outcomes: dict[str, QuantizeOutcome] = {}
    pending: list[tuple[ResolvedRecipe, VariantManifest]] = []
    for recipe in recipes:
        manifest = rundir.read_variant(recipe.id)
        if not force and is_complete(rundir, manifest):
            outcomes[recipe.id] = QuantizeOutcome(recipe.id, Status.done, skipped=True)
            continue
        manifest = VariantManifest(run_id=rundir.run_id, variant=recipe.id)  # a rerun starts the variant afresh
        try:
            resolved = resolve(recipe, config, samples=settings.calibration.samples, seq_len=settings.calibration.seq_len)
        except ValueError as exc:
            manifest.quantize = QuantizeRecord(status=Status.failed, recipe_id=recipe.id, error=str(exc),
                                               finished_at=now_iso(), hint="override group_size for this recipe")
            rundir.write_variant(manifest)
            outcomes[recipe.id] = QuantizeOutcome(recipe.id, Status.failed, False, str(exc))
            continue
        pending.append((resolved, manifest))
    if pending:
        _run_pending(rundir, base, pending, settings, outcomes, on_event)
    return [outcomes[r.id] for r in recipes]


def _run_pending(rundir: RunDir, base: BaseManifest, pending: list[tuple[ResolvedRecipe, VariantManifest]],
                 settings: Settings, outcomes: dict[str, QuantizeOutcome], on_event) -> None:
    require_modules("quantize", settings.quantize_python, QUANTIZE_MODULES)
    needs_data = any(r.samples for r, _ in pending)
    job = {
        "model_path": base.base.path, "architecture": base.base.architecture, "device": settings.device,
        "trust_remote_code": base.base.trust_remote_code and settings.allows_remote_code(base.base.model_id),
        "calibration": calibration_job(settings) if needs_data else None,
        "license_files": base.base.license_files, "variants": [],
    }
    for resolved, manifest in pending:
        vid = resolved.recipe.id
        rundir.discard_partial(vid)
        manifest.quantize = QuantizeRecord(status=Status.running, started_at=now_iso(), recipe_id=vid,
                                           recipe=resolved.recipe.model_dump(mode="json"),
                                           llmcompressor_recipe=resolved.llmcompressor_yaml,
                                           applied=resolved.manifest_view())
        rundir.write_variant(manifest)
        job["variants"].append({
            "recipe_id": vid, "llmcompressor_yaml": resolved.llmcompressor_yaml, "samples": resolved.samples,
            "seq_len": resolved.seq_len, "out_dir": str(rundir.partial_model_dir(vid)),
            "result_path": str(rundir.variant_dir(vid) / "quantize-result.json"),
        })
        Path(job["variants"][-1]["result_path"]).unlink(missing_ok=True)
    run = run_worker(settings.quantize_python, "quantize_worker", job, rundir.root / "jobs" / "quantize.json",
                     rundir.logs_dir / "quantize.log", on_line=on_event)
    for resolved, manifest in pending:
        vid = resolved.recipe.id
        result_path = rundir.variant_dir(vid) / "quantize-result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        if result and result.get("status") == "done":
            rundir.promote_partial(vid)
            manifest.quantize = _record_from_result(resolved, result)
            manifest.quantize.started_at = manifest.quantize.started_at or now_iso()
            outcomes[vid] = QuantizeOutcome(vid, Status.done, False)
        else:
            rundir.discard_partial(vid)
            error = (result or {}).get("error") or f"quantize worker exited with {run.returncode}: {run.log_tail(5)}"
            manifest.quantize.status = Status.failed
            manifest.quantize.error = error
            manifest.quantize.finished_at = now_iso()
            manifest.quantize.hint = f"see {run.log_path.relative_to(rundir.root)} in the run directory; rerun to retry"
            if result:
                manifest.quantize.versions = result.get("versions", {})
            outcomes[vid] = QuantizeOutcome(vid, Status.failed, False, error)
        rundir.write_variant(manifest)
