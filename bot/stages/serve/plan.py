"""The serving search plan of one model (pure): which vLLM configurations apply to its format on this GPU, why,
what each is estimated to cost, and which fit the time budget.

    plan_search(fmt, cc, modules, settings)  -> SearchPlan (configurations in order, and those that do not apply)
    cut_to_budget(configs, budget_s, spent_s) -> (admitted, skipped by the budget)

Order: the defaults first (`default_engines` engines: their spread is the engine-to-engine noise), then each KV-cache
dtype other than auto (on the default kernel, also at the long-context point, with the defaults), then every other
linear kernel vLLM 0.26 could run this format with, in vLLM's own priority order, each forced with
`--linear-backend` (or, where no backend name selects it, `VLLM_DISABLED_KERNELS` naming the kernels ahead of it).
A kernel is left out, with the reason, when vLLM would not run it here (capability, package, layout), when it is the
one vLLM picks anyway (the defaults measure it), when it computes with other activations than the default
(weight-only against W8A8, or the reverse: another model than the one validated), or when vLLM marks it as testing
only. Nothing here assumes which one is fastest: that is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from bot.config import ServeSearchSettings
from bot.manifest import ServeConfig, SkippedConfig
from bot.stages.serve.formats import WeightFormat
from bot.stages.serve.kernels import BY_FAMILY, KV_SOURCE, Kernel, family_on, why_not

DEFAULT = "default"


@dataclass(frozen=True)
class SearchPlan:
    configs: list[ServeConfig]  # in the order they are measured
    dropped: list[SkippedConfig] = field(default_factory=list)
    default_kernel: str | None = None  # what vLLM 0.26's priority order gives for this format here
    family: str = ""


def parse_cc(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except (ValueError, AttributeError):
        return None


def estimate_s(config: ServeConfig, s: ServeSearchSettings, engine_s: float | None = None,
               bench_s: float | None = None, long_s: float | None = None) -> float:
    """Engine start-up plus benchmarks: the settings' estimates, or what this model's earlier engines took."""
    cost = (engine_s if engine_s is not None else s.engine_start_s) + (bench_s if bench_s is not None else s.bench_s)
    if config.long_context:
        cost += long_s if long_s is not None else s.long_bench_s
    return round(cost, 1)


def _default_configs(s: ServeSearchSettings, kernel: str | None) -> list[ServeConfig]:
    long = any(k != "auto" for k in s.kv_cache_dtypes)
    why = "vLLM's defaults: what `vllm serve` does without flags (the baseline every other row is compared with)"
    out = [ServeConfig(id=DEFAULT, label="vLLM defaults", why=why, expected_kernel=kernel, long_context=long)]
    for i in range(2, s.default_engines + 1):
        out.append(ServeConfig(id=f"{DEFAULT}#{i}", label=f"vLLM defaults (engine {i})", expected_kernel=kernel,
                               long_context=long, why="the defaults again in a new engine: the spread between the "
                                                      "two is the engine-to-engine noise"))
    return out


def _kv_configs(s: ServeSearchSettings, kernel: str | None) -> list[ServeConfig]:
    out = []
    for dtype in dict.fromkeys(s.kv_cache_dtypes):
        if dtype == "auto":
            continue
        out.append(ServeConfig(
            id=f"kv-cache-dtype={dtype}", label=f"KV cache in {dtype}", flags=["--kv-cache-dtype", dtype],
            engine={"kv_cache_dtype": dtype}, kv_cache_dtype=dtype, expected_kernel=kernel, long_context=True,
            changes_numerics=True,
            why=f"stores keys and values in {dtype} (half the bytes of 16-bit): more sequences fit and long contexts "
                f"read less; FlashAttention 3 on compute capability 9.x, another attention backend elsewhere "
                f"({KV_SOURCE}). Accuracy was measured with the model's own KV dtype"))
    return out


def _forcing(kernel: Kernel, ahead: list[Kernel]) -> tuple[list[str], dict[str, str], dict[str, str]] | None:
    """(serve flags, LLM keyword arguments, environment) that make vLLM pick `kernel`; None when nothing does."""
    if kernel.backend is not None:
        return ["--linear-backend", kernel.backend], {"linear_backend": kernel.backend}, {}
    if ahead:
        return [], {}, {"VLLM_DISABLED_KERNELS": ",".join(k.name for k in ahead)}
    return None


def _kernel_configs(fmt: WeightFormat, cc: tuple[int, int], modules: dict[str, bool], kernels: Iterable[Kernel],
                    dropped: list[SkippedConfig]) -> tuple[str | None, list[ServeConfig]]:
    usable: list[Kernel] = []
    for k in kernels:
        reason = k.testing_only or why_not(k, fmt, cc, modules)
        if reason:
            dropped.append(SkippedConfig(id=f"kernel={k.name}", label=k.name, reason=reason))
        else:
            usable.append(k)
    if not usable:
        return None, []
    default, out = usable[0], []
    for k in usable[1:]:
        if k.weight_only != default.weight_only:
            acts = "16-bit" if k.weight_only else "quantized"
            dropped.append(SkippedConfig(id=f"kernel={k.name}", label=k.name, reason=(
                f"computes with {acts} activations, unlike the default {default.name}: another model than the one "
                "validated")))
            continue
        ahead = usable[:usable.index(k)]
        forcing = _forcing(k, ahead)
        if forcing is None:
            dropped.append(SkippedConfig(id=f"kernel={k.name}", label=k.name, reason="nothing selects it"))
            continue
        flags, engine, env = forcing
        cid = f"linear-backend={k.backend}" if k.backend else f"kernel={k.name}"
        out.append(ServeConfig(id=cid, label=k.name, flags=flags, engine=engine, env=env, expected_kernel=k.name,
                               why=f"vLLM 0.26 can run this format with {k.name} here ({k.source}); it picks "
                                   f"{default.name} first"))
    return default.name, out


def plan_search(fmt: WeightFormat, cc: tuple[int, int] | None, modules: dict[str, bool],
                s: ServeSearchSettings) -> SearchPlan:
    """Every configuration that applies to `fmt` on a GPU of compute capability `cc`, with `modules` (optional
    packages the serve interpreter has), in the order they are measured; the rest with their reasons."""
    dropped: list[SkippedConfig] = []
    family = family_on(fmt, cc) if cc is not None else fmt.family
    kernels = BY_FAMILY.get(family, ())
    default_kernel: str | None = None
    others: list[ServeConfig] = []
    if cc is None:
        dropped.append(SkippedConfig(id="kernels", label="linear kernels", reason="no CUDA compute capability known"))
    elif not kernels:
        why = "not quantized: vLLM's 16-bit GEMM has no kernel choice" if family == "bf16" else \
            f"no kernel list for the {family} format"
        dropped.append(SkippedConfig(id="kernels", label="linear kernels", reason=why))
    else:
        default_kernel, others = _kernel_configs(fmt, cc, modules, kernels, dropped)
        if not s.kernels:
            dropped += [SkippedConfig(id=c.id, label=c.label, reason="kernel search turned off "
                                      "(validate.serve_search.kernels)") for c in others]
            others = []
    return SearchPlan(_default_configs(s, default_kernel) + _kv_configs(s, default_kernel) + others, dropped,
                      default_kernel, family)


def cut_to_budget(configs: list[ServeConfig], budget_s: float, spent_s: float,
                  estimate: Callable[[ServeConfig], float], *, first_always: bool = True,
                  ) -> tuple[list[ServeConfig], list[SkippedConfig]]:
    """Admit configurations in order while their estimated cost fits what is left of the budget; a later, cheaper
    one may still fit after a dearer one did not. With `first_always`, the first one (the defaults: the baseline
    every other is compared with) is admitted whatever it costs."""
    admitted, skipped = [], []
    left = budget_s - spent_s
    for i, config in enumerate(configs):
        cost = estimate(config)
        if (i == 0 and first_always) or cost <= left:
            admitted.append(config.model_copy(update={"estimate_s": cost}))
            left -= cost
        else:
            skipped.append(SkippedConfig(id=config.id, label=config.label, kind="budget", reason=(
                f"over the time budget: estimated {cost:.0f} s, {max(left, 0):.0f} s left of "
                f"validate.serve_search.budget_s={budget_s:.0f}")))
    return admitted, skipped
