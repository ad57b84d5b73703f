"""Settings, merged once in one order: defaults < watchlist.yaml `defaults:` < environment (BOT_*) < CLI.

`load_settings()` is the only place that merges; everything else receives a frozen `Settings`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "templates"  # packaged (a link to the top-level templates/)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationSettings(_Strict):
    """Where calibration text comes from. `file` (local JSONL) wins over `dataset` (a Hub dataset id)."""

    dataset: str = "HuggingFaceH4/ultrachat_200k"
    split: str = "train_sft"
    file: Path | None = None
    samples: int | None = Field(default=None, ge=1, description="None: the recipe's own default")
    seq_len: int | None = Field(default=None, ge=16, description="None: the recipe's own default")
    seed: int = 42
    batch_size: int = Field(default=1, ge=1, le=512, description="samples per calibration forward pass: faster on a "
                            "GPU; above 1 each batch is cut to its shortest row")


class SpeedSettings(_Strict):
    batch1_input_len: int = 128
    batch1_output_len: int = 256
    batch1_runs: int = 3
    batched_input_len: int = 1024
    batched_output_len: int = 256
    batched_num_prompts: int = 256
    enforce_eager: bool = False
    max_model_len: int | None = 4096
    gpu_memory_utilization: float = 0.85
    kv_cache_dtype: str = "auto"


WHOLE_TASK = "all"  # the one explicit value of `validate.limit` for "every document of the task"


class FidelitySettings(_Strict):
    """Distribution fidelity of each variant against its base on the bundled held-out text."""

    enabled: bool = True
    tokens: int = Field(default=4096, ge=64, description="scored positions per model (the budget)")
    window: int = Field(default=512, ge=16, description="tokens per forward pass")


class ValidateSettings(_Strict):
    backend: Literal["auto", "vllm", "hf"] = "auto"
    tasks: list[str] = Field(default_factory=lambda: ["arc_challenge", "hellaswag", "winogrande", "gsm8k", "mmlu"])
    limit: int | Literal["all"] = Field(default=250, ge=1, description=f"samples per task ({WHOLE_TASK!r}: the "
                                        "whole task)")
    fidelity: FidelitySettings = FidelitySettings()
    include_path: Path | None = None
    num_fewshot: int | None = None
    batch_size: int | str = "auto"
    speed: SpeedSettings = SpeedSettings()
    tensor_parallel_size: int | None = Field(default=None, ge=1, description="None: chosen from model size and GPUs")
    tensor_parallel_reserve_gib: float = Field(
        default=2.0, ge=0, description="per GPU, besides the weights' share and one full sequence's KV cache: "
                                       "activations, CUDA graphs, NCCL buffers (bot/stages/parallel.py)")
    prompts: list[str] = Field(
        default_factory=lambda: [
            "Explain in two sentences why the sky is blue.",
            "Write a Python function that returns the n-th Fibonacci number.",
            "What is the capital of France, and what is it known for?",
        ]
    )
    max_new_tokens: int = 64
    worker_timeout_s: int = Field(default=4 * 3600, ge=60, description="per worker run (load+speed, or lm-eval)")


class GateSettings(_Strict):
    """How the gate decides. Per-recipe minimum mean recovery (%): a recipe missing here uses its file's gate."""

    min_recovery: dict[str, float] = Field(default_factory=dict)
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="of the paired bootstrap intervals")
    bootstrap_resamples: int = Field(default=2000, ge=100)
    bootstrap_seed: int = 0
    max_rounds: int = Field(default=3, ge=1, le=8, description="evaluation rounds for an undecided variant, "
                            "the first included; each doubles the samples per task, up to the whole task")
    require_load: bool = True
    require_generation: bool = True


class Settings(_Strict):
    runs_dir: Path = Path("runs")
    quantize_python: str = Field(default_factory=lambda: sys.executable)
    serve_python: str = Field(default_factory=lambda: sys.executable)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    recipes: list[str] | None = None
    recipes_file: Path | None = None
    quantize_workers: int = Field(default=1, ge=1, le=16, description="quantize worker processes at once on one "
                                  "device (each loads the base; the variants are spread over them by cost)")
    calibration: CalibrationSettings = CalibrationSettings()
    validate_: ValidateSettings = Field(default=ValidateSettings(), alias="validate")
    gate: GateSettings = GateSettings()
    hub_target: Literal["auto", "hub", "local"] = "auto"
    hub_endpoint: str | None = None
    local_hub_dir: Path | None = None
    namespace: str = "bot-local"
    repo_name: str = "{namespace}/{base_name}{suffix}"
    private: bool = False
    templates_dir: Path = DEFAULT_TEMPLATES
    trust_remote_code: list[str] = Field(default_factory=list, description="models/authors allowed remote code")
    max_params_b: float | None = Field(default=None, gt=0, description="largest model (billions) the runner takes")
    license_deny: list[str] = Field(default_factory=list)
    lock_ttl_s: int = Field(default=6 * 3600, ge=1, description="a lock not renewed for this long is taken over")
    hub_retries: int = Field(default=5, ge=1, description="tries per Hub request (429, 5xx, dropped), the first included")
    hub_retry_base_s: float = Field(default=1.0, ge=0, description="first backoff delay; doubles per try, + jitter")
    hub_retry_max_s: float = Field(default=30.0, ge=0, description="longest backoff delay")
    hub_retry_after_max_s: float = Field(default=300.0, ge=0, description="longest Retry-After (429) honoured")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("repo_name")
    @classmethod
    def _check_repo_name(cls, v: str) -> str:
        try:
            v.format(namespace="n", base_name="b", suffix="-S", recipe="r")
        except (KeyError, IndexError) as exc:
            raise ValueError(f"repo_name may use {{namespace}}, {{base_name}}, {{suffix}}, {{recipe}} only ({exc})") from exc
        return v

    @property
    def validate(self) -> ValidateSettings:  # noqa: D401 - the settings section, not BaseModel.validate
        return self.validate_

    @property
    def resolved_hub_target(self) -> Literal["hub", "local"]:
        if self.hub_target != "auto":
            return self.hub_target
        return "hub" if os.environ.get("HF_TOKEN") else "local"

    def local_hub_root(self) -> Path:
        return self.local_hub_dir or (self.runs_dir / "_local_hub")

    def allows_remote_code(self, model_id: str) -> bool:
        author = model_id.split("/", 1)[0]
        return model_id in self.trust_remote_code or author in self.trust_remote_code


# Environment variables read by `load_settings` (BOT_<FIELD>; nested with a double underscore).
_ENV_PREFIX = "BOT_"
_ENV_ALIASES = {"HF_ENDPOINT": "hub_endpoint"}


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, value in environ.items():
        if key in _ENV_ALIASES:
            layer[_ENV_ALIASES[key]] = value
            continue
        if not key.startswith(_ENV_PREFIX) or key == "BOT_DEBUG":
            continue
        path = key[len(_ENV_PREFIX):].lower().split("__")
        if path[0] not in Settings.model_fields and path[0] != "validate":
            continue
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(value)
    return layer


def _parse_env_value(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    watchlist_defaults: dict[str, Any] | None = None,
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    source: str = "settings",
) -> Settings:
    """Merge the layers once. CLI values of None mean "not given" and never override."""
    merged: dict[str, Any] = {}
    for layer in (watchlist_defaults or {}, _env_layer(dict(os.environ if environ is None else environ)), cli or {}):
        merged = _deep_merge(merged, layer)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{loc}: {err['msg']}", path=source, hint="fix or remove that setting") from None
