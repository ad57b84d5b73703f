"""What the card stage reads: the run's manifests, loaded once, and the facts derived from them.

`RunData.load(rundir, settings)` reads `base/manifest.json` and every variant manifest. `RecipeFacts` reads the
applied recipe that the quantize stage stored in the variant manifest (falling back to the recipe book's of the
same id only when none was stored). Repo ids and which variants are published come from each manifest's
`target` (planned by the publish run before any card is rendered). The `*_reason` functions say why a number is
missing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import ConfigError, StageError, UnknownRecipeError
from bot.manifest import BaseManifest, RepoTarget, Status, ValidateRecord, VariantManifest
from bot.recipes import BUILTIN_ORDER, Recipe, load_recipes
from bot.rundir import RunDir
from bot.secrets import redact
from bot.stages.card.format import Scrubber
from bot.stages.publish import target_for

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class RecipeFacts:
    """The recipe as applied to this variant (`quantize.recipe`, a typed Recipe), flattened for the card."""

    id: str
    name: str
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
    recipe: Recipe | None  # None: neither the manifest nor the recipe book has it

    @classmethod
    def of(cls, vm: VariantManifest, settings: Settings | None = None) -> "RecipeFacts":
        recipe = vm.quantize.recipe
        if recipe is None:  # a variant that failed before its recipe was recorded: the book's of the same id
            try:
                recipe = load_recipes(settings.recipes_file if settings else None).get(vm.variant)
            except (UnknownRecipeError, ConfigError):
                recipe = None
        if recipe is None:
            return cls(vm.variant, vm.variant, "", "", "", "", (), None, None, None, "", None, False, None)
        hw = recipe.hardware
        return cls(
            id=recipe.id, name=recipe.name, scheme=recipe.scheme, algorithm=recipe.algorithm,
            summary=" ".join(recipe.summary.split()), format=recipe.format,
            modifiers=tuple(m.type for m in recipe.modifiers), native_min=hw.native_min_capability,
            fallback_min=hw.fallback_min_capability, fallback=hw.fallback, kernel=hw.kernel,
            min_recovery=recipe.gate.min_mean_recovery, calibrated=recipe.calibration is not None, recipe=recipe,
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
        return cls(rundir, settings, base, variants,
                   {vid: RecipeFacts.of(vm, settings) for vid, vm in variants.items()})

    @property
    def hub_url(self) -> str:
        endpoint = self.settings.hub_endpoint
        return (endpoint or HUB_URL).rstrip("/")

    def target(self, variant: str) -> RepoTarget:
        """The planned target; a run never planned (`bot card` before any publish) gets the publish stage's
        decision for these settings, not stored."""
        vm = self.variants[variant]
        if vm.target is not None:
            return vm.target
        if vm.publish is not None and vm.publish.repo_id:  # published by an older bot, before targets were planned
            return RepoTarget(repo_id=vm.publish.repo_id, publish=vm.publish.status == Status.done)
        gate = vm.validate_.gate if vm.validate_ else None
        return target_for(vm, self.base.base.model_id, self.settings, force=bool(gate and gate.forced))

    def repo_id(self, variant: str) -> str:
        return self.target(variant).repo_id

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
                       recipes={vid: RecipeFacts.of(vm, self.settings) for vid, vm in variants.items()})

    def will_publish(self, variant: str) -> bool:
        """Whether this run publishes the variant (so a link to its repo resolves): the planned target says."""
        return self.target(variant).publish

    def forced(self, variant: str) -> bool:
        """Published with --force although the gate did not pass."""
        target = self.target(variant)
        gate = self.variants[variant].validate_.gate if self.variants[variant].validate_ else None
        return target.forced or bool(gate and gate.forced)


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


def quantize_reason(vm: VariantManifest) -> str | None:
    q = vm.quantize
    if q.status == Status.done:
        return None
    if q.status == Status.failed:
        return f"quantization failed: {first_line(q.error) or 'no error recorded'}"
    return "not quantized yet"
