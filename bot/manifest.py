"""Typed records that stages write into the run directory. The contract between stages.

A variant's `manifest.json` holds one section per stage (quantize, validate, card, publish); the base
model's `base/manifest.json` holds where it came from and its own validation. Cards render from these alone.
Every model tolerates unknown keys on read (`extra="ignore"`) so older bots can read newer runs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class QuantizeRecord(StageRecord):
    recipe_id: str = ""
    recipe: dict[str, Any] = Field(default_factory=dict)  # resolved recipe (after overrides)
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
    samples: int | None = None
    higher_is_better: bool | None = None  # None: inferred from the metric name (perplexities are lower-is-better)


class AccuracyRecord(_Rec):
    tasks: list[TaskScore] = Field(default_factory=list)
    limit: int | None = None
    num_fewshot: int | None = None
    backend: str = ""
    command: str = ""
    error: str | None = None


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


class Comparison(_Rec):
    recovery: dict[str, float] = Field(default_factory=dict)  # task -> variant/base * 100
    mean_recovery: float | None = None
    speedup_batch1: float | None = None
    speedup_batched: float | None = None
    size_ratio: float | None = None
    base_validated_at: str | None = None  # the base measurement these ratios were taken against


class GateDecision(_Rec):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    forced: bool = False
    threshold: float | None = None


class VariantValidateRecord(ValidateRecord):
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


class VariantManifest(_Rec):
    run_id: str
    variant: str  # recipe id
    quantize: QuantizeRecord = Field(default_factory=QuantizeRecord)
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
            return "rejected"
        if self.validate_ and self.validate_.status == Status.done:
            return "validated"
        if self.quantize.status == Status.done:
            return "quantized"
        if self.quantize.status == Status.running:
            return "quantizing"
        return "queued"
