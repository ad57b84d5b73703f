"""Settings, merged once, in this order (a later layer wins, key by key):

1. built-in defaults (the fields below);
2. `watchlist.yaml` `defaults:` (every command given `--watchlist`, and `bot watch`);
3. the profile: what is specific to this one run, more specific than the watchlist's defaults: the watch entry
   that covers the model (its namespace, repo_name, private, max_params_b, trust_remote_code, licenses_denied;
   `bot watch` per model, `bot publish MODEL --watchlist W`), or the bundled demo's CPU-sized settings
   (`bot publish` with no MODEL, `bot.stages.demo.demo_profile`); never both;
4. the environment (`BOT_<FIELD>`, nested with `__`, e.g. `BOT_VALIDATE__LIMIT=100`; `HF_ENDPOINT`);
5. command-line flags.

So an operator's environment and flags always win over the watchlist and the demo (`BOT_VALIDATE__LIMIT=100 bot
publish` evaluates 100 samples; `bot publish M --namespace X --watchlist W` publishes under X). `load_settings()`
(or `SettingsLayers.merge()`, the same call) is the only place that merges; everything else receives a frozen
`Settings` and never patches it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

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


class ServeSearchSettings(_Strict):
    """The search for the fastest way to serve each model in vLLM (bot/stages/serve): one engine per
    configuration that applies to the model's format on the GPU at hand, batch 1 and batched, each against the
    default and the BF16 base measured the same way. Off by default: it starts several engines per model (50-100 s
    each at 8B), so `bot validate` only runs it when asked (`BOT_VALIDATE__SERVE_SEARCH__ENABLED=true`, the GPU
    script); with the transformers backend (CPU) it is recorded as not run."""

    enabled: bool = False
    budget_s: int = Field(default=900, ge=60, description="per model: configurations whose estimated cost no longer "
                          "fits are skipped, and recorded as skipped by the budget")
    engine_start_s: float = Field(default=100.0, gt=0, description="estimated engine start-up (load, compile, "
                                  "CUDA graphs) until one was measured on this model")
    bench_s: float = Field(default=60.0, gt=0, description="estimated batch-1 + batched benchmarks per engine")
    long_bench_s: float = Field(default=90.0, ge=0, description="estimated long-context benchmarks per engine")
    runs: int = Field(default=5, ge=2, le=50, description="batch-1 runs per configuration (the interval's sample)")
    batched_runs: int = Field(default=3, ge=2, le=20, description="batched runs per configuration")
    default_engines: int = Field(default=2, ge=1, le=3, description="engines started with the defaults: their "
                                 "spread is the engine-to-engine noise every interval is widened by")
    kernels: bool = True  # search the linear kernels that apply to the format
    kv_cache_dtypes: list[Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]] = Field(
        default_factory=lambda: ["auto", "fp8"], description="compared at the long-context point; auto: the model's")
    long_context_tokens: int = Field(default=16384, ge=256, description="input length of the long-context point "
                                     "where the KV-cache dtypes are compared (capped by the model's context)")
    long_context_prompts: int = Field(default=16, ge=1, description="prompts in the long-context batched run")
    long_context_output_len: int = Field(default=256, ge=2)


WHOLE_TASK = "all"  # the one explicit value of `validate.limit` for "every document of the task"
LIMIT_VALUES = f"a positive integer or '{WHOLE_TASK}'"  # what every `limit` accepts (settings and `--limit`)


def parse_limit(value: Any) -> int | Literal["all"]:
    """A limit: an integer >= 1 (or its text) or 'all'. Anything else (0, negatives, 1.5, 'ten', true) is a
    ValueError saying what is allowed. The one rule for `validate.limit`, BOT_VALIDATE__LIMIT and every `--limit`."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == WHOLE_TASK:
            return WHOLE_TASK
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"must be {LIMIT_VALUES} (got {value!r})")


class FidelitySettings(_Strict):
    """Distribution fidelity of each variant against its base on the bundled held-out text."""

    enabled: bool = True
    tokens: int = Field(default=4096, ge=64, description="scored positions per model (the budget)")
    window: int = Field(default=512, ge=16, description="tokens per forward pass")


class ValidateSettings(_Strict):
    backend: Literal["auto", "vllm", "hf"] = "auto"
    tasks: list[str] = Field(default_factory=lambda: ["arc_challenge", "hellaswag", "winogrande", "gsm8k", "mmlu"])
    limit: int | Literal["all"] = Field(default=250, description=f"samples per task, {LIMIT_VALUES} (the whole "
                                        "task)")
    fidelity: FidelitySettings = FidelitySettings()
    include_path: Path | None = None
    num_fewshot: int | None = None
    batch_size: int | str = "auto"
    speed: SpeedSettings = SpeedSettings()
    serve_search: ServeSearchSettings = ServeSearchSettings()
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

    @field_validator("limit", mode="before")
    @classmethod
    def _check_limit(cls, v: Any) -> int | str:
        try:
            return parse_limit(v)
        except ValueError:
            raise PydanticCustomError("limit", f"must be {LIMIT_VALUES}") from None


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


class PipelineSettings(_Strict):
    """How `bot publish` runs its stages (bot.stages.pipeline, bot.stages.overlap)."""

    overlap: Literal["auto", "on", "off"] = Field(
        default="auto", description="validate each variant as soon as it is quantized, while the next ones quantize; "
                                    "auto: only when quantize runs on a GPU (a CPU run stays serial)")
    sample_interval_s: float = Field(default=5.0, ge=0.2, description="GPU memory and utilization sampled this "
                                     "often for the run's timeline (nvidia-smi; none without it)")

    @field_validator("overlap", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        """YAML (the watchlist, BOT_PIPELINE__OVERLAP=on) reads on/off as booleans."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def _count_or_auto(v: Any, most: int, code: str) -> int | str:
    """A setting that is a count from 1 to `most` or "auto" (from YAML, the environment or a flag)."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    text = v.strip() if isinstance(v, str) else v
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if isinstance(text, int) and not isinstance(text, bool) and 1 <= text <= most:
        return text
    raise PydanticCustomError(code, f"must be an integer from 1 to {most} or 'auto'")


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Settings(_Strict):
    runs_dir: Path = Path("runs")
    quantize_python: str = Field(default_factory=lambda: sys.executable)
    serve_python: str = Field(default_factory=lambda: sys.executable)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    recipes: list[str] | None = None
    recipes_file: Path | None = None
    quantize_workers: int | Literal["auto"] = Field(
        default="auto", description="quantize worker processes at once on one device (each loads the base; the "
                                    "variants are spread over them by cost); auto: 1 on a CPU, on a GPU as many as "
                                    "its free memory holds (bot.stages.memplan)")
    quantize_gpus: list[int] = Field(default_factory=list, description="GPU indices to pin quantize workers to: "
                                     "quantize_workers per GPU, each started with CUDA_VISIBLE_DEVICES set to its "
                                     "one GPU (BOT_QUANTIZE_GPUS=0,1,2); empty: every worker sees every GPU")
    cpu_threads: int | Literal["auto"] = Field(
        default="auto", description="torch threads of each worker that computes on a CPU (quantize, validate, "
                                    "lm-eval, fidelity); auto: half the cores, at least 1 (cpu_worker_threads)")
    calibration: CalibrationSettings = CalibrationSettings()
    validate_: ValidateSettings = Field(default=ValidateSettings(), alias="validate")
    gate: GateSettings = GateSettings()
    pipeline: PipelineSettings = PipelineSettings()
    hub_target: Literal["auto", "hub", "local"] = "auto"
    hub_endpoint: str | None = None
    local_hub_dir: Path | None = None
    namespace: str = "bot-local"
    repo_name: str = "{namespace}/{base_name}{suffix}"
    private: bool = False
    gated: bool | Literal["inherit"] = Field(default="inherit", description="gate our repos on the Hub (access "
                                             "requests approved automatically); inherit: when the base is gated")
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

    @field_validator("quantize_gpus", mode="before")
    @classmethod
    def _gpu_list(cls, v: Any) -> Any:
        """`0,1,2` (the environment's and a YAML scalar's form) or one index, as a list; each index >= 0, once."""
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        elif isinstance(v, str):
            v = [part.strip() for part in v.split(",") if part.strip()]
        if isinstance(v, list):
            if any(isinstance(i, bool) or not str(i).isdigit() for i in v):
                raise PydanticCustomError("gpus", "must be GPU indices (integers >= 0), e.g. 0,1,2")
            if len({int(i) for i in v}) != len(v):
                raise PydanticCustomError("gpus", "lists a GPU twice (more workers per GPU: quantize_workers)")
        return v

    @field_validator("quantize_workers", mode="before")
    @classmethod
    def _check_workers(cls, v: Any) -> int | str:
        return _count_or_auto(v, 16, "workers")

    @field_validator("cpu_threads", mode="before")
    @classmethod
    def _check_cpu_threads(cls, v: Any) -> int | str:
        return _count_or_auto(v, 512, "threads")

    def cpu_worker_threads(self) -> int:
        """Threads per CPU worker, decided here once for every job of a call. auto: half the cores (at least one),
        so that two workers side by side (quantize beside validation, fidelity beside lm-eval) each have their own.
        Small models on a CPU are bound by per-operation overhead, and passively waiting OpenMP threads pay a
        wake-up per operation: on two cores one thread beat two for decode, GPTQ and W8A8, AWQ kept its pace, and
        lm-eval was about 10% slower (README, "What made it fit")."""
        if self.cpu_threads != "auto":
            return int(self.cpu_threads)
        return max(1, cpu_cores() // 2)

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

    def repo_gated(self, base_gated: bool) -> bool:
        """Whether our repo of a base is gated: the `gated` setting, or (inherit) the base's own gate."""
        return bool(base_gated) if self.gated == "inherit" else bool(self.gated)

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


def _holds(layer: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = layer
    for part in loc:
        if isinstance(part, int):  # an item of a list the layer gave: the layer holds the list
            return True
        key = "validate" if part == "validate_" else part
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _env_name(loc: tuple[Any, ...]) -> str:
    keys = [p for p in loc if not isinstance(p, int)]  # a list item is set through its list's variable
    return _ENV_PREFIX + "__".join(("validate" if p == "validate_" else str(p)).upper() for p in keys)


def load_settings(
    watchlist_defaults: Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "settings",
    profile: Mapping[str, Any] | None = None,
    profile_name: str = "profile",
) -> Settings:
    """Merge the layers once: defaults < `watchlist_defaults` < `profile` (a watch entry or the demo) < environment
    < `cli`. Values of None mean "not given" and never override. A bad value is one ConfigError naming the layer
    it came from (the environment variable, `source` for the watchlist, `profile_name`, the command line)."""
    env = _env_layer(dict(os.environ if environ is None else environ))
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (source, watchlist_defaults or {}), (profile_name, profile or {}), ("environment", env),
        ("command line", cli or {})]
    merged: dict[str, Any] = {}
    for _name, layer in layers:
        merged = _deep_merge(merged, dict(layer))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        where = next((name for name, layer in reversed(layers) if _holds(layer, loc)), source)
        shown = ".".join("validate" if p == "validate_" else str(p) for p in loc)
        got = err.get("input")
        detail = f"{shown}: {err['msg']}" + ("" if isinstance(got, (dict, list)) else f" (got {got!r})")
        if where == "environment":
            where, detail = _env_name(loc), f"{err['msg']} (got {got!r})"
        raise ConfigError(detail, path=where, hint="fix or remove that setting") from None


@dataclass(frozen=True)
class SettingsLayers:
    """The inputs of one merge, kept so that a more specific profile (a watch entry per model) can be merged with
    the same watchlist, environment and command line: each `Settings` is still made by one `load_settings` call."""

    watchlist_defaults: Mapping[str, Any] = field(default_factory=dict)
    cli: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None  # None: os.environ when merged
    source: str = "settings"
    profile: Mapping[str, Any] = field(default_factory=dict)
    profile_name: str = "profile"

    def merge(self) -> Settings:
        return load_settings(self.watchlist_defaults, self.cli, self.environ, self.source, self.profile,
                             self.profile_name)

    def with_profile(self, profile: Mapping[str, Any], name: str) -> "SettingsLayers":
        return SettingsLayers(self.watchlist_defaults, self.cli, self.environ, self.source, dict(profile), name)
