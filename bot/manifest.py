"""Typed records that stages write into the run directory. The contract between stages.

A variant's `manifest.json` holds one section per stage (quantize, validate, card, publish); the base
model's `base/manifest.json` holds where it came from and its own validation. Cards render from these alone.
Every model tolerates unknown keys on read (`extra="ignore"`) so older bots can read newer runs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.manifest_serve import (  # noqa: F401 - re-exported: the serving search's records are manifest records
    WORKLOADS, Roofline, RunStats, ServeChoice, ServeConfig, ServeConfigResult, ServeSearchRecord, SkippedConfig,
)
from bot.recipes import Recipe


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class _Rec(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Status(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    rejected = "rejected"
    skipped = "skipped"


class Hardware(_Rec):
    device: str = "cpu"  # "cpu" or "cuda"
    name: str = ""  # GPU or CPU model name
    count: int = 1
    driver: str | None = None
    compute_capability: str | None = None  # "9.0"
    memory_bytes: int | None = None


class StageRecord(_Rec):
    status: Status = Status.pending
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    hint: str | None = None


# ---------------------------------------------------------------- base


class BaseModelRecord(StageRecord):
    """Where the base model came from (the 'download' stage)."""

    source: str = "hub"  # "hub" or "local"
    model_id: str = ""  # "org/name" (Hub) or "local/<dir name>"
    revision: str = ""  # full commit sha (Hub) or content hash (local)
    path: str = ""  # local directory with the snapshot
    architecture: str = ""
    model_type: str = ""
    num_params: int | None = None
    dtype: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    license_files: list[str] = Field(default_factory=list)
    attribution: list[str] = Field(default_factory=list)  # what the base's licence files say to display
    language: list[str] | None = None
    gated: bool = False
    trust_remote_code: bool = False
    size_bytes: int | None = None
    has_chat_template: bool = False


# ---------------------------------------------------------------- quantize


class CalibrationInfo(_Rec):
    source: str  # Hub dataset id or "file:<name>"
    split: str | None = None
    samples: int
    seq_len: int
    seed: int
    fingerprint: str  # sha256 of the selected texts
    chat_template_applied: bool
    tokens: int | None = None  # tokenized; with batch_size > 1, cutting batches to their shortest row may drop some
    # samples per calibration forward pass (llm-compressor's `batch_size`); above 1, each batch is cut to its
    # shortest row, and the rows go in length order instead of shuffled
    batch_size: int = 1
    packed: bool = False  # rows are whole conversations joined and cut to exactly seq_len tokens


class QuantizeRecord(StageRecord):
    recipe_id: str = ""
    # the recipe as applied to this model: overrides, then the per-architecture resolution (group size after a
    # fallback, ignore list, calibration samples/length), its summary saying the same (bot.stages.quantize)
    recipe: Recipe | None = None
    llmcompressor_recipe: str = ""  # the modifiers as llm-compressor YAML, exactly what was applied
    applied: dict[str, Any] = Field(default_factory=dict)  # group size, ignore, mappings, with reasons
    calibration: CalibrationInfo | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    hardware: Hardware | None = None
    wall_time_s: float | None = None
    peak_gpu_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    size_bytes: int | None = None
    files: list[str] = Field(default_factory=list)
    quantization_config: dict[str, Any] = Field(default_factory=dict)
    # seconds per phase inside the worker (copy, calibration_data, to_gpu, oneshot, save) and the worker's one load
    # of the base (`worker_load_base`, shared by every variant of that worker run): where the wall time went
    timings: dict[str, float] = Field(default_factory=dict)
    # variants quantized at the same time on the same device by parallel workers (their timings share it)
    concurrent_with: list[str] = Field(default_factory=list)

    @field_validator("recipe", mode="before")
    @classmethod
    def _legacy_recipe(cls, value: Any) -> Any:
        """Older runs stored a dict ({} when none): read it as a Recipe, or None when it is not a whole one."""
        if isinstance(value, dict):
            try:
                return Recipe.model_validate(value) if value else None
            except ValidationError:
                return None
        return value


# ---------------------------------------------------------------- validate


class LoadCheck(_Rec):
    ok: bool
    backend: str  # "vllm" or "hf"
    load_time_s: float | None = None
    memory_bytes: int | None = None  # GPU memory taken by weights (vLLM) or RSS growth (CPU)
    max_model_len: int | None = None
    kernel: str | None = None  # what vLLM chose (e.g. MacheteLinearKernel, Marlin weight-only for NVFP4)
    error: str | None = None


class Generation(_Rec):
    prompt: str
    output: str
    ok: bool
    problems: list[str] = Field(default_factory=list)


class Batch1Speed(_Rec):
    input_len: int
    output_len: int
    runs: int
    decode_tokens_per_s: float
    ttft_ms: float
    tpot_ms: float


class BatchedSpeed(_Rec):
    num_prompts: int
    input_len: int
    output_len: int
    output_tokens_per_s: float
    requests_per_s: float
    total_tokens_per_s: float | None = None


class SpeedRecord(_Rec):
    label: str  # "GPU" or "CPU": CPU numbers are never compared with GPU ones
    settings: dict[str, Any] = Field(default_factory=dict)
    batch1: Batch1Speed | None = None
    batched: BatchedSpeed | None = None
    error: str | None = None


class TaskScore(_Rec):
    # NaN/inf (a broken model's perplexity) are written as JSON constants so they read back as floats
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")

    task: str
    metric: str
    value: float
    stderr: float | None = None
    samples: int | None = None  # documents evaluated
    documents: int | None = None  # documents in the task (more than `samples` under a limit)
    higher_is_better: bool | None = None  # None: inferred from the metric name (perplexities are lower-is-better)


class AccuracyRecord(_Rec):
    tasks: list[TaskScore] = Field(default_factory=list)
    limit: int | None = None  # samples per task asked for (None: the whole task)
    num_fewshot: int | None = None
    backend: str = ""
    dtype: str = ""  # what the model computed in (bot.stages.validate.plan.compute_dtype; "auto": its own)
    command: str = ""  # the `lm_eval` command line that reproduces the run
    error: str | None = None
    batch_size: int | str | None = None
    apply_chat_template: bool = False  # the model's chat template (generative tasks, fewshot as multiturn)
    fewshot_as_multiturn: bool = False
    # per-document results (file next to the manifest, relative to the model's folder in the run): what the
    # paired statistics read; the same documents for the base and each variant
    samples_file: str | None = None
    rounds: int = 1  # evaluation rounds: an inconclusive gate asks for more samples (the limit doubled)


class ValidateRecord(StageRecord):
    """Measurements for one model (base or variant) in one run."""

    backend: str = ""
    hardware: Hardware | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    load: LoadCheck | None = None
    generations: list[Generation] = Field(default_factory=list)
    speed: SpeedRecord | None = None
    accuracy: AccuracyRecord | None = None
    compat: dict[str, Any] = Field(default_factory=dict)  # compute capability vs recipe's minimum, what vLLM did
    # wall seconds of each worker process (runtime_worker: start-up, load, generations, speed; lmeval_worker)
    timings: dict[str, float] = Field(default_factory=dict)
    validated_at: str | None = None
    serve_search: ServeSearchRecord | None = None  # the fastest measured way to serve it (bot/stages/serve)
    # variants quantized on the same device while this model was measured (`bot publish` overlapping the
    # stages); their workers were paused while speed was measured
    concurrent_with: list[str] = Field(default_factory=list)


class FidelityRecord(_Rec):
    """Next-token distributions of the variant against its base on held-out text (not the calibration text)."""

    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")

    kl_mean: float | None = None  # mean KL(base || variant) per token, nats
    kl_p99: float | None = None  # its 99th percentile over tokens
    kl_max: float | None = None
    top1_agreement: float | None = None  # share of tokens where both pick the same most likely next token
    ppl_base: float | None = None
    ppl_variant: float | None = None
    ppl_ratio: float | None = None  # variant / base perplexity on the held-out text
    tokens: int = 0  # scored positions
    tokens_requested: int | None = None  # the budget asked for (fewer are scored only when the text runs out)
    windows: int = 0
    window: int | None = None  # tokens per forward pass
    nonfinite: int = 0  # positions whose logits were not finite (NaN/inf): rejected
    text: str = ""  # name of the held-out text
    text_fingerprint: str = ""  # sha256 of its bytes
    vocab: str = "full"  # "full": exact over the whole vocabulary; "top-k": truncated (see truncation_bound)
    topk: int | None = None
    truncation_bound: float | None = None  # largest error the truncation can add to kl_mean, nats
    backend: str = ""  # "hf" (transformers) or "vllm"
    device: str = ""
    dtype: str = ""
    seconds: float | None = None
    error: str | None = None


class TaskComparison(_Rec):
    """One task, base and variant paired on the same documents."""

    task: str
    metric: str
    base: float | None = None
    variant: float | None = None
    recovery: float | None = None  # percent
    ci: list[float] | None = None  # [low, high] percent, paired bootstrap
    docs: int = 0  # documents scored by both
    right_to_wrong: int | None = None  # flips (tasks scored right/wrong per document)
    wrong_to_right: int | None = None
    chance: float | None = None  # the task's chance level (multiple choice: mean 1/choices)
    at_chance: bool = False  # the base cannot be told apart from chance: not used for recovery
    used: bool = True  # counted in the mean recovery
    note: str | None = None


class Comparison(_Rec):
    recovery: dict[str, float] = Field(default_factory=dict)  # task -> variant/base * 100
    mean_recovery: float | None = None
    mean_recovery_ci: list[float] | None = None  # [low, high] percent: paired bootstrap over the tasks used
    confidence: float | None = None  # of the intervals (0.95)
    bootstrap: dict[str, Any] = Field(default_factory=dict)  # resamples, seed, method
    tasks: list[TaskComparison] = Field(default_factory=list)
    tasks_compared: list[str] = Field(default_factory=list)  # used for the mean (not at chance, paired)
    speed_comparable: bool = False  # base and variant measured under the same conditions
    speed_incomparable_reason: str | None = None
    speedup_batch1: float | None = None
    speedup_batched: float | None = None
    size_ratio: float | None = None
    base_validated_at: str | None = None  # the base measurement these ratios were taken against


class GateState(str, Enum):
    passed = "passed"
    rejected = "rejected"
    inconclusive = "inconclusive"  # the CI straddles the threshold and no more samples could be evaluated


class GateDecision(_Rec):
    passed: bool
    state: GateState | None = None  # None in records of older bots: read `passed`
    reasons: list[str] = Field(default_factory=list)
    forced: bool = False
    threshold: float | None = None
    rule: str = ""  # the rule as applied, in words (card, status, CLI)
    rounds: int = 1  # evaluation rounds taken to decide
    limit: int | None = None  # samples per task at the last round (None: whole task)

    @property
    def outcome(self) -> GateState:
        return self.state or (GateState.passed if self.passed else GateState.rejected)


class HardwareVerdict(_Rec):
    """Whether the GPU the variant ran on has native kernels for its format (decided once, in validate)."""

    status: str = "not-checked"  # native | fallback | unsupported | unknown | not-checked (CPU)
    detail: str = ""
    kernel: str | None = None  # what the engine reported choosing
    compute_capability: str | None = None
    native_min_capability: str | None = None
    fallback_min_capability: str | None = None
    expected_kernel: str | None = None


class VariantValidateRecord(ValidateRecord):
    fidelity: FidelityRecord | None = None
    hardware_verdict: HardwareVerdict | None = None
    comparison: Comparison | None = None
    gate: GateDecision | None = None


# ---------------------------------------------------------------- card and publish


class CardRecord(StageRecord):
    readme_sha256: str | None = None
    chart: str | None = None
    template_dir: str | None = None
    repo_id: str | None = None  # the repo the card was rendered for (its snippets name it)
    files: list[str] = Field(default_factory=list)  # what was written into card_dir, relative paths
    problems: list[str] = Field(default_factory=list)  # checkpoint checks that failed (chat template, files)
    notes: list[str] = Field(default_factory=list)  # checks passed with a remark, things skipped and why


class PublishRecord(StageRecord):
    target: str = ""  # "hub" or "local"
    repo_id: str = ""
    commit: str | None = None
    url: str | None = None
    base_revision: str | None = None
    files: list[str] = Field(default_factory=list)
    changed: bool | None = None  # False: the repo already held identical content, no commit made
    collection: str | None = None
    forced: bool = False  # published with --force despite the checks listed in `forced_over`
    forced_over: list[str] = Field(default_factory=list)


class BaseManifest(_Rec):
    run_id: str
    base: BaseModelRecord
    validate_: ValidateRecord | None = Field(default=None, alias="validate")
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RepoTarget(_Rec):
    """Where this variant is published, decided once per publish run before any card is rendered or anything is
    uploaded (bot.stages.publish.plan_targets, from Settings.repo_name/namespace and the recipe's suffix): card,
    publish and collection read it, so the first publish is already complete (sibling links included)."""

    repo_id: str
    publish: bool = False  # this run publishes it (quantized and validated, through the gate or forced)
    forced: bool = False  # published with --force although the gate did not pass


class VariantManifest(_Rec):
    run_id: str
    variant: str  # recipe id
    quantize: QuantizeRecord = Field(default_factory=QuantizeRecord)
    target: RepoTarget | None = None
    validate_: VariantValidateRecord | None = Field(default=None, alias="validate")
    card: CardRecord | None = None
    publish: PublishRecord | None = None
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def state(self) -> str:
        """One word for `bot status`: the furthest stage reached, or why it stopped."""
        if self.publish and self.publish.status == Status.done:
            return "published"
        for name, rec in (("publish", self.publish), ("validate", self.validate_), ("quantize", self.quantize)):
            if rec is not None and rec.status == Status.failed:
                return "failed"
        if self.validate_ and self.validate_.gate and not self.validate_.gate.passed:
            return self.validate_.gate.outcome.value  # rejected, or inconclusive (undecided: not published)
        if self.validate_ and self.validate_.status == Status.done:
            return "validated"
        if self.quantize.status == Status.done:
            return "quantized"
        if self.quantize.status == Status.running:
            return "quantizing"
        return "queued"
