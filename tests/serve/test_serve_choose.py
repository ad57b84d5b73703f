"""The serving search's one decision: intervals from repeated runs, widened by the engine-to-engine spread, and a
configuration chosen over the defaults only when its interval lies wholly above theirs; the bandwidth limit; the
worker's pure parts."""

from __future__ import annotations

from statistics import fmean, stdev

import pytest

from bot.manifest import ServeConfigResult, ServeSearchRecord
from bot.stages.serve.bandwidth import bandwidth_of
from bot.stages.serve.choose import choose, fill_stats, roofline, run_stats, t95
from bot.stages.serve.run import decide
from bot.workers import serve_search_worker as sw
from bot.workers import vllm_backend as vb


def record(runs: dict[str, dict[str, list[float]]], gpu: str = "NVIDIA H200", memory: int = 5_590_000_000,
           settings: dict | None = None) -> ServeSearchRecord:
    rec = ServeSearchRecord(gpu=gpu, compute_capability="9.0", settings=settings or {"gpu": gpu})
    for cid, r in runs.items():
        rec.configs.append(ServeConfigResult(id=cid, label=cid, why="test", runs=r, memory_bytes=memory,
                                             changes_numerics=cid.startswith("kv")))
    return rec


def test_t_interval_of_the_mean():
    values = [100.0, 102.0, 101.0, 99.0, 103.0]
    s = run_stats(values)
    half = t95(4) * stdev(values) / len(values) ** 0.5
    assert s.mean == fmean(values) and s.low == round(s.mean - half, 3) and s.high == round(s.mean + half, 3)
    widened = run_stats(values, spread=2.5)
    assert widened.low == round(s.mean - half - 2.5, 3) and widened.spread == 2.5
    one = run_stats([100.0])
    assert one.low is None and one.high is None  # one run: no interval, never chosen
    assert t95(1) == 12.706 and t95(100) == 1.96
    with pytest.raises(ValueError):
        run_stats([])


def test_a_separated_configuration_is_chosen_with_its_gain():
    rec = record({"default": {"batch1": [262.0, 262.3, 261.9]}, "default#2": {"batch1": [261.5, 261.8, 261.6]},
                  "marlin": {"batch1": [301.5, 301.9, 301.7]}, "triton": {"batch1": [200.0, 201.0, 199.0]}})
    fill_stats(rec, {c.id: c.runs for c in rec.configs})
    d = rec.config("default").stats["batch1"]
    assert d.values == [262.0, 262.3, 261.9, 261.5, 261.8, 261.6]  # the defaults' engines pooled
    assert d.spread == pytest.approx(abs(fmean([262.0, 262.3, 261.9]) - fmean([261.5, 261.8, 261.6])), abs=1e-3)
    assert rec.config("marlin").stats["batch1"].spread == d.spread  # every interval widened by it
    base = record({"default": {"batch1": [201.0, 201.4, 201.2]}})
    fill_stats(base, {c.id: c.runs for c in base.configs})
    c = choose(rec, "batch1", base, None)
    assert (c.config_id, c.separated, c.best_of) == ("marlin", True, 3)
    assert c.gain == round(301.7 / d.mean, 3) and c.vs_base == round(301.7 / 201.2, 3)
    assert c.default_vs_base == round(d.mean / 201.2, 3) and "lies above the defaults'" in c.reason


def test_an_overlapping_faster_mean_is_not_chosen():
    rec = record({"default": {"batched": [5660.0, 5700.0, 5640.0]}, "default#2": {"batched": [5600.0, 5690.0, 5650.0]},
                  "torch": {"batched": [5720.0, 5650.0, 5760.0]}})
    fill_stats(rec, {c.id: c.runs for c in rec.configs})
    assert rec.config("torch").stats["batched"].mean > rec.config("default").stats["batched"].mean
    c = choose(rec, "batched", None, "the base was not searched")
    assert (c.config_id, c.separated, c.gain) == ("default", False, None)
    assert "as fast within the uncertainty" in c.reason and c.vs_base is None
    assert c.base_note == "the base was not searched"


def test_the_engine_spread_can_decide():
    """Tight runs inside each engine, but two default engines 5 tokens/s apart: 3 tokens/s more is not enough."""
    tight = {"default": {"batch1": [250.0, 250.1, 250.0]}, "default#2": {"batch1": [255.0, 255.1, 255.0]},
             "marlin": {"batch1": [258.0, 258.1, 258.0]}}
    rec = record(tight)
    fill_stats(rec, {c.id: c.runs for c in rec.configs})
    assert choose(rec, "batch1", None, "x").separated is False
    rec = record({k: v for k, v in tight.items() if k != "default#2"})  # one default engine: no spread to widen by
    fill_stats(rec, {c.id: c.runs for c in rec.configs})
    assert choose(rec, "batch1", None, "x").config_id == "marlin"


def test_only_measured_workloads_are_chosen():
    rec = record({"default": {"batch1": [1.0, 1.1]}})
    rec.configs.append(ServeConfigResult(id="broken", label="broken", why="t", status="failed", error="OOM"))
    fill_stats(rec, {c.id: c.runs for c in rec.configs if c.status == "measured"})
    assert choose(rec, "batched", None, "x") is None
    alone = choose(rec, "batch1", None, "x")
    assert alone.config_id == "default" and alone.best_of == 1 and "only the defaults" in alone.reason


def test_decide_records_choices_bandwidth_limit_and_status():
    rec = record({"default": {"batch1": [262.0, 262.3, 261.9], "batched": [5667.0, 5670.0, 5664.0]},
                  "marlin": {"batch1": [301.5, 301.9, 301.7], "batched": [3801.0, 3799.0, 3803.0]}})
    decide(rec, None, False, None)
    assert rec.status == "done" and set(rec.choices) == {"batch1", "batched"}
    assert rec.choices["batch1"].config_id == "marlin" and rec.choices["batched"].config_id == "default"
    assert rec.choices["batch1"].base_note == "the base was not searched"
    r = rec.roofline
    assert r.bandwidth_bytes_per_s == 4.8e12 and "H200" in r.bandwidth_source
    assert r.limit_tokens_per_s == round(4.8e12 / 5_590_000_000, 1) and r.bytes_per_token == 5_590_000_000
    split = record({"default": {"batch1": [1.0, 1.2]}})
    split.gpu_count = 2  # tensor parallel over two GPUs: each reads its half of the weights
    decide(split, None, False, None)
    assert split.roofline.bandwidth_bytes_per_s == 9.6e12 and split.roofline.bandwidth_source.startswith("2 x ")
    unknown = record({"default": {"batch1": [1.0, 1.2]}}, gpu="Mystery GPU")
    decide(unknown, None, False, None)
    assert unknown.roofline is None  # never a guessed bandwidth
    other = record({"default": {"batch1": [1.0, 1.2]}}, settings={"gpu": "NVIDIA H100 80GB HBM3"})
    decide(rec, other, False, None)
    assert rec.choices["batch1"].base_note == "the base was searched under other settings or on another GPU"
    failed = record({})
    failed.configs.append(ServeConfigResult(id="default", label="d", why="t", status="failed", error="no GPU memory"))
    decide(failed, None, False, None)
    assert (failed.status, failed.reason) == ("failed", "no GPU memory")
    assert roofline("x", None, 5) is None and roofline("x", bandwidth_of("NVIDIA L4"), None) is None


def test_worker_lengths_and_rates():
    job = {"speed": {"batch1_input_len": 128, "batch1_output_len": 256, "batched_input_len": 1024,
                     "batched_output_len": 256, "batched_num_prompts": 256},
           "search": {"runs": 5, "batched_runs": 3,
                      "long": {"input_len": 16384, "output_len": 256, "num_prompts": 16, "runs": 3}}}
    lg = sw.lengths(job, 16648)
    assert (lg["long_input_len"], lg["long_output_len"], lg["batch1_runs"], lg["batched_runs"]) == (16384, 256, 5, 3)
    short = sw.lengths(job, 2048)  # a model with a short context: the long point shrinks to fit
    assert short["long_input_len"] + short["long_output_len"] + 8 <= 2048
    assert "long_input_len" not in sw.lengths(dict(job, search={"runs": 2, "batched_runs": 2, "long": None}), 4096)
    assert sw.decode_rate(0.02, 1.04, 256) == pytest.approx(255 / 1.02)
    kw = vb.engine_kwargs({"model_path": "/m", "speed": {"kv_cache_dtype": "auto"},
                           "engine_extra": {"linear_backend": "marlin", "kv_cache_dtype": "fp8"}}, 4096)
    assert kw["linear_backend"] == "marlin" and kw["kv_cache_dtype"] == "fp8"  # the configuration wins


def test_engine_arguments_exist_in_vllm():
    """`linear_backend` and `kv_cache_dtype` are EngineArgs fields of vLLM 0.26 (checked where vLLM exists)."""
    pytest.importorskip("vllm")
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    assert {"linear_backend", "kv_cache_dtype"} <= {f.name for f in dataclasses.fields(EngineArgs)}
