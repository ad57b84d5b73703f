"""What the card stage reads: the run's manifests, loaded once, and the facts derived from them.

`RunData.load(rundir, settings)` reads `base/manifest.json` and every variant manifest. `RecipeFacts` reads the
resolved recipe that the quantize stage stored in the variant manifest (falling back to the built-in recipe of
the same id only when that section is empty). The `*_reason` functions say why a number is missing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import StageError, UnknownRecipeError
from bot.manifest import BaseManifest, Status, ValidateRecord, VariantManifest
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.rundir import RunDir
from bot.secrets import redact
from bot.stages.card.format import Scrubber
from bot.stages.publish import repo_id_for
from bot.stages.validate.compare import SPEED_LENGTH_KEYS

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class RecipeFacts:
    id: str
    name: str
    suffix: str
    scheme: str
    algorithm: str
    summary: str
    format: str
    modifiers: tuple[str, ...]
    native_min: str | None
    fallback_min: str | None
    fallback: str | None
    kernel: str
    min_recovery: float | None
    calibrated: bool
    raw: dict[str, Any]

    @classmethod
    def of(cls, vm: VariantManifest) -> "RecipeFacts":
        raw = dict(vm.quantize.recipe)
        if not raw:
            try:
                raw = load_recipes().get(vm.variant).model_dump(mode="json")
            except UnknownRecipeError:
                raw = {"id": vm.variant}
        hw = raw.get("hardware") or {}
        gate = raw.get("gate") or {}
        return cls(
            id=str(raw.get("id") or vm.variant),
            name=str(raw.get("name") or vm.variant),
            suffix=str(raw.get("suffix") or f"-{vm.variant}"),
            scheme=str(raw.get("scheme") or ""),
            algorithm=str(raw.get("algorithm") or ""),
            summary=" ".join(str(raw.get("summary") or "").split()),
            format=str(raw.get("format") or ""),
            modifiers=tuple(str(m.get("type")) for m in raw.get("modifiers") or [] if isinstance(m, dict)),
            native_min=hw.get("native_min_capability"),
            fallback_min=hw.get("fallback_min_capability"),
            fallback=hw.get("fallback"),
            kernel=str(hw.get("kernel") or ""),
            min_recovery=gate.get("min_mean_recovery"),
            calibrated=raw.get("calibration") is not None,
            raw=raw,
        )


def base_name(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RunData:
    rundir: RunDir
    settings: Settings
    base: BaseManifest
    variants: dict[str, VariantManifest]  # every variant of the run, in recipe order
    recipes: dict[str, RecipeFacts]

    @classmethod
    def load(cls, rundir: RunDir, settings: Settings) -> "RunData":
        base = rundir.read_base()
        if base is None:
            raise StageError("card", f"{rundir.root} has no base/manifest.json",
                             hint="run `bot quantize` first, or pass a run directory")
        order = {rid: i for i, rid in enumerate(BUILTIN_ORDER)}
        ids = sorted(rundir.variants(), key=lambda v: (order.get(v, len(order)), v))
        variants: dict[str, VariantManifest] = {}
        for vid in ids:
            vm = rundir.read_variant(vid)
            if vm is not None:
                variants[vid] = vm
        return cls(rundir, settings, base, variants, {vid: RecipeFacts.of(vm) for vid, vm in variants.items()})

    @property
    def hub_url(self) -> str:
        endpoint = self.settings.hub_endpoint
        return (endpoint or HUB_URL).rstrip("/")

    def repo_id(self, variant: str) -> str:
        vm = self.variants[variant]
        if vm.publish is not None and vm.publish.repo_id:
            return vm.publish.repo_id
        # The publish stage's formula, so the card names the repo it will be uploaded to.
        return repo_id_for(self.settings, self.base.base.model_id, variant, self.recipes[variant].suffix)

    def base_url(self) -> str | None:
        b = self.base.base
        return f"{self.hub_url}/{b.model_id}" if b.source == "hub" else None

    def scrubber(self) -> Scrubber:
        """Local paths -> what they stand for: each checkpoint -> its repo id, the base snapshot -> the base id,
        the run directory -> runs/<run id>, the home directory -> ~."""
        rundir, b = self.rundir, self.base.base
        pairs: list[tuple[Path | str | None, str]] = []
        for vid in self.variants:
            pairs += [(rundir.model_dir(vid), self.repo_id(vid)), (rundir.partial_model_dir(vid), self.repo_id(vid))]
        pairs += [(b.path, b.model_id), (rundir.base_dir / "model", b.model_id), (rundir.root, f"runs/{rundir.run_id}"),
                  (self.settings.runs_dir.resolve(), "runs"), (Path.home(), "~"), (sys.prefix, "<python>")]
        return Scrubber.build(pairs)

    def scrubbed(self, scrub: Scrubber) -> "RunData":
        """The same run with every string of every manifest scrubbed (model outputs only have tokens masked)."""
        def clean(x: Any) -> Any:
            if isinstance(x, str):
                return scrub(x)
            if isinstance(x, dict):
                return {k: (_redact_generations(v) if k == "generations" else clean(v)) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        base = BaseManifest.model_validate(clean(self.base.model_dump(mode="json", by_alias=True)))
        variants = {vid: VariantManifest.model_validate(clean(vm.model_dump(mode="json", by_alias=True)))
                    for vid, vm in self.variants.items()}
        return replace(self, base=base, variants=variants,
                       recipes={vid: RecipeFacts.of(vm) for vid, vm in variants.items()})

    def will_publish(self, variant: str) -> bool:
        """Whether a link to the sibling's repo is expected to resolve."""
        vm = self.variants[variant]
        if vm.publish is not None and vm.publish.status == Status.done:
            return True
        gate = vm.validate_.gate if vm.validate_ else None
        return gate is not None and (gate.passed or gate.forced)


def _redact_generations(gens: Any) -> Any:
    if not isinstance(gens, list):
        return gens
    return [{k: redact(v) if isinstance(v, str) else v for k, v in g.items()} if isinstance(g, dict) else g for g in gens]


# ---------------------------------------------------------------- why a number is missing


def first_line(text: str | None) -> str:
    """Errors may carry a log tail; a card shows their first line."""
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def state_reason(rec: ValidateRecord | None) -> str | None:
    """Why this model's validation gave no (complete) result, or None when it ran to the end."""
    if rec is None:
        return "not validated"
    if rec.load is not None and not rec.load.ok:
        return f"did not load: {first_line(rec.load.error) or 'no error recorded'}"
    if rec.status == Status.failed:
        return f"validation failed: {first_line(rec.error) or 'no error recorded'}"
    if rec.status in (Status.pending, Status.running):
        return "validation did not finish"
    if rec.status == Status.skipped:
        return f"validation skipped: {first_line(rec.error or rec.hint) or 'no reason recorded'}"
    return None


def speed_reason(rec: ValidateRecord | None, part: str) -> str | None:
    """Why a speed figure is missing (`part`: "batch1", "batched" or "memory"); None when it was measured.
    What was measured counts even when a later step of the validation failed."""
    if part == "memory":
        if rec is not None and rec.load is not None and rec.load.ok and rec.load.memory_bytes is not None:
            return None
        return state_reason(rec) or "memory not recorded"
    if rec is not None and rec.speed is not None and not rec.speed.error and getattr(rec.speed, part) is not None:
        return None
    reason = state_reason(rec)
    if reason or rec is None:
        return reason
    if rec.speed is None:
        gpu = rec.hardware is not None and rec.hardware.device == "cuda"
        return "speed not measured" if gpu else "no GPU in this run"
    if rec.speed.error:
        return f"speed run failed: {first_line(rec.speed.error)}"
    return "batch-1 run not recorded" if part == "batch1" else "batched run not recorded"


def accuracy_reason(rec: ValidateRecord | None, task: str | None = None) -> str | None:
    """Why accuracy (or one task's score) is missing; None when it was measured."""
    acc = rec.accuracy if rec is not None else None
    if acc is not None and not acc.error and acc.tasks:
        if task is None or any(t.task == task for t in acc.tasks):
            return None
        return "task not run"
    if acc is not None and acc.error:
        return f"lm-eval failed: {first_line(acc.error)}"
    return state_reason(rec) or "lm-eval not run"


def speed_comparable(base: ValidateRecord | None, variant: ValidateRecord | None) -> str | None:
    """Why base and variant speeds cannot be compared (the validate stage's rule: same label, same hardware,
    same benchmark lengths), or None when they can."""
    if base is None or variant is None or base.speed is None or variant.speed is None:
        return None
    if base.speed.label != variant.speed.label:
        return f"base on {base.speed.label}, variant on {variant.speed.label}"
    bh, vh = base.hardware, variant.hardware
    if bh is not None and vh is not None and (bh.device, bh.name, bh.count) != (vh.device, vh.name, vh.count):
        return f"base measured on {bh.count}× {bh.name}, variant on {vh.count}× {vh.name}"
    if any(base.speed.settings.get(k) != variant.speed.settings.get(k) for k in SPEED_LENGTH_KEYS):
        return "different benchmark lengths"
    return None


def quantize_reason(vm: VariantManifest) -> str | None:
    q = vm.quantize
    if q.status == Status.done:
        return None
    if q.status == Status.failed:
        return f"quantization failed: {first_line(q.error) or 'no error recorded'}"
    return "not quantized yet"
