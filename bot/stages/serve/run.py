"""The serving search of a run's models, called by the validate stage after the verdicts when
`validate.serve_search.enabled`: the base first (the BF16 reference, measured the same way), then each variant that
loaded. Per model: read its format (checkpoint's quantization_config, else the typed recipe), plan the
configurations that apply on this GPU (bot/stages/serve/plan.py), run each in its own engine through the serve
interpreter's `serve_search_worker` while the time budget allows, then decide the choices and the bandwidth limit
(bot/stages/serve/choose.py) into `ValidateRecord.serve_search`. Saved after every configuration: a rerun with the
same settings keeps what was measured and runs only the rest.
"""

from __future__ import annotations

import time
from statistics import fmean
from typing import Any, Callable, Protocol

from bot.config import Settings
from bot.manifest import (
    WORKLOADS, ServeConfig, ServeConfigResult, ServeSearchRecord, SkippedConfig, ValidateRecord, VariantManifest,
    now_iso,
)
from bot.stages.serve.bandwidth import bandwidth_of
from bot.stages.serve.choose import choose, fill_stats, roofline
from bot.stages.serve.formats import WeightFormat, read_format
from bot.stages.serve.plan import DEFAULT, cut_to_budget, estimate_s, parse_cc, plan_search
from bot.stages.validate.measure import ModelValidation, WorkerFailed, recipe_for

EventFn = Callable[[str, dict[str, Any]], None]
METHOD = ("the method of vLLM's offline benchmarks, not their code: `vllm bench latency` at batch 1 (TTFT from a "
          "max_tokens=1 request, decode rate from the full one) and `vllm bench throughput` with random-token prompts; "
          "LLM.generate on token-id prompts with ignore_eos, greedy sampling (the benchmarks sample at temperature 1) "
          "and prefix caching off, wall clock around generate, after a warm-up, one engine per configuration")
_SPEED_KEYS = ("batch1_input_len", "batch1_output_len", "batched_input_len", "batched_output_len",
               "batched_num_prompts", "enforce_eager", "gpu_memory_utilization", "max_model_len")


class SearchedModel(Protocol):  # the validate stage's per-model handle (bot/stages/validate/run.py `_Model`)
    name: str
    rec: ValidateRecord
    work: ModelValidation

    def save(self) -> None: ...


def search_key(settings: Settings, work: ModelValidation, gpu: str | None) -> dict[str, Any]:
    """What makes two searches comparable (and a stored one resumable): lengths, runs, budget-free settings, GPU."""
    s = settings.validate.serve_search
    speed = {k: work.plan.speed.get(k) for k in _SPEED_KEYS}
    if any(k != "auto" for k in s.kv_cache_dtypes):
        speed["max_model_len"] = max(int(speed["max_model_len"] or 0), s.long_context_tokens + s.long_context_output_len
                                     + 8)
    return {"speed": speed, "runs": s.runs, "batched_runs": s.batched_runs, "default_engines": s.default_engines,
            "kernels": s.kernels, "kv_cache_dtypes": list(s.kv_cache_dtypes), "long_context_tokens":
            s.long_context_tokens, "long_context_prompts": s.long_context_prompts, "long_context_output_len":
            s.long_context_output_len, "tensor_parallel_size": work.tensor_parallel().size, "gpu": gpu}


def _job(work: ModelValidation, config: ServeConfig, key: dict[str, Any], settings: Settings) -> dict[str, Any]:
    s = settings.validate.serve_search
    long = {"input_len": s.long_context_tokens, "output_len": s.long_context_output_len,
            "num_prompts": s.long_context_prompts, "runs": s.batched_runs} if config.long_context else None
    return {"model_path": str(work.model_path), "config": {"id": config.id, "env": config.env, "engine": config.engine},
            "speed": dict(work.plan.speed, **key["speed"], kv_cache_dtype="auto"),
            "search": {"runs": s.runs, "batched_runs": s.batched_runs, "long": long},
            "tensor_parallel_size": key["tensor_parallel_size"], "trust_remote_code": work.trust, "dtype": "auto",
            "seed": 0, "label": work.plan.label}


def _measure(work: ModelValidation, rec: ValidateRecord, config: ServeConfig, key: dict[str, Any],
             settings: Settings, index: int) -> ServeConfigResult:
    out = ServeConfigResult(**config.model_dump())
    started = time.monotonic()
    try:
        res = work.call("serve_search_worker", f"serve-{index}", _job(work, config, key, settings), rec,
                        f"serve_search_{index}", env=config.env or None)
    except WorkerFailed as exc:
        out.status, out.error = "failed", str(exc).splitlines()[0][:500]
        out.seconds = round(time.monotonic() - started, 1)  # a failed engine spent the budget too
        return out
    load = res.get("load") or {}
    out.seconds = res.get("wall_time_s")
    out.kernel, out.memory_bytes = load.get("kernel"), load.get("memory_bytes")
    out.load_time_s = load.get("load_time_s")
    if not load.get("ok"):
        out.status, out.error = "failed", str(load.get("error") or "did not load").splitlines()[0][:500]
        return out
    out.lengths = dict(res.get("lengths") or {})
    out.runs = {w: [float(v) for v in vals] for w, vals in (res.get("runs") or {}).items() if w in WORKLOADS}
    return out


def _estimator(record: ServeSearchRecord, settings: Settings) -> Callable[[ServeConfig], float]:
    s = settings.validate.serve_search

    def estimate(config: ServeConfig) -> float:
        alike = [c.seconds for c in record.configs if c.seconds and c.long_context == config.long_context]
        return round(fmean(alike), 1) if alike else estimate_s(config, s)
    return estimate


def _base_note(record: ServeSearchRecord, base: ServeSearchRecord | None, is_base: bool) -> str | None:
    if is_base:
        return "this is the base"
    if base is None or base.config(DEFAULT) is None:
        return "the base was not searched"
    if base.settings != record.settings:
        return "the base was searched under other settings or on another GPU"
    return None


def decide(record: ServeSearchRecord, base: ServeSearchRecord | None, is_base: bool, memory_bytes: int | None) -> None:
    """Stats, choices, bandwidth limit and status from what is measured (called after every configuration)."""
    fill_stats(record, {c.id: c.runs for c in record.configs if c.status == "measured"})
    note = _base_note(record, base, is_base)
    record.choices = {w: c for w in WORKLOADS if (c := choose(record, w, None if note else base, note)) is not None}
    default = record.config(DEFAULT)
    weights = (default.memory_bytes if default else None) or memory_bytes
    bw = bandwidth_of(record.gpu)
    if bw is not None and record.gpu_count > 1:
        bw = (bw[0] * record.gpu_count, f"{record.gpu_count} x {bw[1]}")
    record.roofline = roofline(record.gpu or "", bw, weights)
    if default is None or default.status != "measured":
        record.status, record.reason = "failed", (default.error if default else "the defaults were not measured")
    elif any(s.kind == "budget" for s in record.skipped):
        record.status, record.reason = "partial", "some configurations did not fit the time budget"
    else:
        record.status, record.reason = "done", None


def search_model(m: SearchedModel, fmt: WeightFormat, settings: Settings, base: ServeSearchRecord | None,
                 is_base: bool, emit: EventFn) -> ServeSearchRecord:
    s, rec, work = settings.validate.serve_search, m.rec, m.work
    hw = rec.hardware
    gpu = hw.name if hw is not None and hw.device == "cuda" else None
    key = search_key(settings, work, gpu)
    prev = rec.serve_search
    kept = [c for c in (prev.configs if prev and prev.settings == key else []) if c.status == "measured"]
    plan = plan_search(fmt, parse_cc(hw.compute_capability if hw else None), dict(work.plan.env.modules), s)
    record = ServeSearchRecord(method=METHOD, vllm=rec.versions.get("vllm"), gpu=gpu,
                               gpu_count=key["tensor_parallel_size"],  # the GPUs each engine runs on
                               compute_capability=hw.compute_capability if hw else None, format=fmt.describe(),
                               settings=key, budget_s=s.budget_s, configs=kept, skipped=list(plan.dropped),
                               spent_s=round(sum(c.seconds or 0 for c in kept), 1), searched_at=now_iso())
    memory = rec.load.memory_bytes if rec.load else None
    done = {c.id for c in kept}
    for index, config in enumerate(plan.configs):
        if config.id in done:
            continue
        baseline = record.config(DEFAULT)
        if config.id != DEFAULT and (baseline is None or baseline.status != "measured"):
            record.skipped.append(SkippedConfig(id=config.id, label=config.label, reason="the defaults did not run: "
                                                "no baseline to compare with"))
            continue
        admitted, over = cut_to_budget([config], s.budget_s, record.spent_s, _estimator(record, settings),
                                       first_always=config.id == DEFAULT)
        record.skipped += over
        if not admitted:
            continue
        emit("phase", {"model": m.name, "phase": f"serve search: {config.label} ({index + 1}/{len(plan.configs)})"})
        result = _measure(work, rec, admitted[0], key, settings, index)
        record.configs.append(result)
        record.spent_s = round(record.spent_s + (result.seconds or 0), 1)
        decide(record, base, is_base, memory)
        rec.serve_search = record
        m.save()
    decide(record, base, is_base, memory)
    rec.serve_search = record
    m.save()
    return record


def not_run(m: SearchedModel, reason: str) -> None:
    m.rec.serve_search = ServeSearchRecord(status="not-run", reason=reason, method=METHOD, searched_at=now_iso())
    m.save()


def search_run(base: SearchedModel, variants: list[tuple[SearchedModel, VariantManifest]], settings: Settings,
               base_dtype: str | None, emit: EventFn) -> None:
    """The base, then every variant that loaded. With another backend than vLLM the search is recorded as not run."""
    models = [base] + [m for m, _ in variants]
    if base.work.plan.backend != "vllm":
        for m in models:
            not_run(m, f"the serving search measures vLLM engines; this validation ran the {base.work.plan.backend} "
                       "backend")
        return
    ok = [m for m in models if m.rec.load is not None and m.rec.load.ok]
    if base not in ok:
        return
    base_fmt = read_format(None, None, base_dtype)
    base_search = search_model(base, base_fmt, settings, None, True, emit)
    for m, manifest in variants:
        if m not in ok:
            continue
        fmt = read_format(manifest.quantize.quantization_config, recipe_for(manifest, settings), base_dtype)
        search_model(m, fmt, settings, base_search, False, emit)
