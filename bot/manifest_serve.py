"""Typed records of the serving search (bot/stages/serve): part of the manifest contract, kept in their own module
so that bot/manifest.py stays readable. `bot.manifest` re-exports every name here; read them from there.

One `ServeSearchRecord` per model (the base's in `base/manifest.json`, each variant's in its own) under its
validate record. It holds every configuration measured (its environment and flags, what vLLM reported choosing, the
per-run numbers and their interval), what was left out and why (does not apply, or over the time budget), the
bandwidth limit at batch 1, and the choice per workload: a configuration is chosen only when its interval lies
wholly above the default's, decided once in the stage (bot/stages/serve/choose.py); the card reads it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WORKLOADS = ("batch1", "batched", "long_batch1", "long_batched")
Workload = Literal["batch1", "batched", "long_batch1", "long_batched"]


class _Rec(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunStats(_Rec):
    """One workload on one configuration: tokens/s per run, their mean and the interval the choice uses."""

    values: list[float]  # per run: batch-1 decode tokens/s, or batched output tokens/s
    mean: float
    low: float | None = None  # the 95% Student-t interval of the mean, widened by `spread` on each side
    high: float | None = None  # (None with a single run: nothing to separate)
    spread: float = 0.0  # engine-to-engine difference measured on the default (tokens/s)


class ServeConfig(_Rec):
    """One configuration: how the engine is started. `flags` are `vllm serve` flags, `engine` the same as
    keyword arguments of `vllm.LLM`, `env` environment variables set before the engine starts."""

    id: str  # "default", "default#2", "linear-backend=marlin", "kv-cache-dtype=fp8", ...
    label: str
    why: str  # why it applies to this format on this GPU
    env: dict[str, str] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)
    engine: dict[str, Any] = Field(default_factory=dict)
    expected_kernel: str | None = None  # what vLLM 0.26's selection gives for it (the plan's reading of the source)
    long_context: bool = False  # also measured at the long-context point
    kv_cache_dtype: str = "auto"
    changes_numerics: bool = False  # not what accuracy was measured with (an FP8 KV cache)
    estimate_s: float | None = None  # the plan's cost estimate when it was admitted


class ServeConfigResult(ServeConfig):
    status: Literal["measured", "failed"] = "measured"
    error: str | None = None
    kernel: str | None = None  # what vLLM reported: '<scheme> -> <kernel class> (xN)'
    memory_bytes: int | None = None  # weights in GPU memory
    load_time_s: float | None = None
    seconds: float | None = None  # wall time of its worker (engine start + benchmarks)
    lengths: dict[str, int] = Field(default_factory=dict)  # the lengths it ran (fitted to the context)
    runs: dict[str, list[float]] = Field(default_factory=dict)  # workload -> tokens/s per run, this engine only
    stats: dict[str, RunStats] = Field(default_factory=dict)  # workload -> interval (the first default row: pooled)


class SkippedConfig(_Rec):
    id: str
    label: str
    reason: str
    kind: Literal["not-applicable", "budget"] = "not-applicable"


class ServeChoice(_Rec):
    """The fastest measured configuration for one workload, or the default when none separates from it."""

    workload: Workload
    config_id: str  # the chosen configuration ("default" when no other separates)
    best_of: int  # configurations measured on this workload (the default's engines count once)
    separated: bool  # the chosen one's interval lies wholly above the default's
    reason: str  # the rule as applied, with the numbers
    gain: float | None = None  # chosen mean / default mean (only when separated)
    vs_base: float | None = None  # chosen mean / the BF16 base's default mean, measured the same way
    default_vs_base: float | None = None  # default mean / the base's default mean
    base_note: str | None = None  # why no ratio to the base


class Roofline(_Rec):
    """Batch-1 decode reads every weight once per token: memory bandwidth / bytes read is its upper bound."""

    gpu: str
    bandwidth_bytes_per_s: float
    bandwidth_source: str
    bytes_per_token: int
    bytes_source: str  # "weights in GPU memory, as vLLM reported them"
    limit_tokens_per_s: float


class ServeSearchRecord(_Rec):
    status: Literal["done", "partial", "not-run", "failed"] = "done"
    reason: str | None = None  # not-run / failed: why
    method: str = ""  # how it was measured, in words (vLLM's benchmark method reproduced)
    vllm: str | None = None  # version
    gpu: str | None = None  # name
    gpu_count: int = 1  # GPUs each engine ran on (its tensor-parallel size): the bandwidth limit counts them all
    compute_capability: str | None = None
    format: str = ""  # the weight format the plan read from the checkpoint
    settings: dict[str, Any] = Field(default_factory=dict)  # lengths, runs, budget: what makes it comparable
    budget_s: float | None = None
    spent_s: float = 0.0
    configs: list[ServeConfigResult] = Field(default_factory=list)
    skipped: list[SkippedConfig] = Field(default_factory=list)
    choices: dict[str, ServeChoice] = Field(default_factory=dict)  # workload -> choice
    roofline: Roofline | None = None
    searched_at: str | None = None

    def config(self, config_id: str) -> ServeConfigResult | None:
        return next((c for c in self.configs if c.id == config_id), None)
