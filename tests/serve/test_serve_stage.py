"""The serving search inside the validate stage, on this CPU machine: recorded as not run with the transformers
backend; with vLLM records, a rerun under the same settings keeps what was measured and the time budget stops
what no longer fits (no engine is started in either case, so no GPU is needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.clients.serve_env import ServeEnv
from bot.config import load_settings
from bot.manifest import Hardware, LoadCheck, ServeConfigResult, ServeSearchRecord, ValidateRecord
from bot.rundir import RunDir
from bot.stages.serve.formats import WeightFormat
from bot.stages.serve.run import search_key, search_model, search_run
from bot.stages.validate.measure import ModelValidation
from bot.stages.validate.plan import Plan

H100 = Hardware(device="cuda", name="NVIDIA H100 80GB HBM3", count=1, compute_capability="9.0")


def _plan(backend: str) -> Plan:
    return Plan(backend=backend, device="cuda" if backend == "vllm" else "cpu", label="GPU", tasks=[], limit=None,
                num_fewshot=None, include_paths=[], env=ServeEnv(python="python"), prompts=[], max_new_tokens=8,
                speed={"batch1_input_len": 128, "batch1_output_len": 256, "batched_input_len": 1024,
                       "batched_output_len": 256, "batched_num_prompts": 256, "enforce_eager": False,
                       "gpu_memory_utilization": 0.85, "max_model_len": 4096, "kv_cache_dtype": "auto"})


@dataclass
class Model:  # what the validate stage hands over per model (its `_Model`)
    name: str
    rec: ValidateRecord
    work: ModelValidation
    saved: list[ServeSearchRecord | None] = field(default_factory=list)

    def save(self) -> None:
        self.saved.append(self.rec.serve_search)


def _model(tmp_path: Path, backend: str, env: dict[str, str] | None = None) -> tuple[Model, object]:
    settings = load_settings(environ=env or {})
    rundir = RunDir(tmp_path / "runs" / "local--m@x")
    work = ModelValidation(rundir, settings, _plan(backend), "base", tmp_path / "model", lambda: None,
                           lambda _e, _d: None)
    rec = ValidateRecord(hardware=H100, load=LoadCheck(ok=True, backend=backend, memory_bytes=16_060_000_000),
                         versions={"vllm": "0.26.0"})
    return Model("base", rec, work), settings


def _measured(cid: str, runs: dict, seconds: float, long: bool = True) -> ServeConfigResult:
    return ServeConfigResult(id=cid, label=cid, why="measured earlier", runs=runs, seconds=seconds, long_context=long,
                             memory_bytes=16_060_000_000)


RUNS = {"batch1": [152.0, 152.2, 152.1], "batched": [5120.0, 5118.0, 5121.0], "long_batch1": [131.0, 131.1],
        "long_batched": [1500.0, 1501.0]}


def test_not_run_with_the_transformers_backend(tmp_path):
    m, settings = _model(tmp_path, "hf")
    search_run(m, [], settings, "bfloat16", lambda _e, _d: None)
    assert m.rec.serve_search.status == "not-run" and "hf backend" in m.rec.serve_search.reason
    assert m.saved and m.saved[-1].status == "not-run"


def test_a_rerun_keeps_what_was_measured(tmp_path):
    m, settings = _model(tmp_path, "vllm")
    key = search_key(settings, m.work, H100.name)
    assert key["speed"]["max_model_len"] == 16384 + 256 + 8  # raised to the long-context point for every engine
    m.rec.serve_search = ServeSearchRecord(settings=key, configs=[
        _measured("default", RUNS, 200), _measured("default#2", RUNS, 190),
        _measured("kv-cache-dtype=fp8", dict(RUNS, long_batched=[2300.0, 2302.0]), 210)])
    record = search_model(m, WeightFormat("bf16"), settings, None, True, lambda _e, _d: None)
    assert [c.id for c in record.configs] == ["default", "default#2", "kv-cache-dtype=fp8"]  # nothing started again
    assert record.status == "done" and record.spent_s == 600 and record.choices["long_batched"].config_id == \
        "kv-cache-dtype=fp8"
    assert record.choices["batch1"].base_note == "this is the base"
    assert record.roofline is not None and record.roofline.bytes_per_token == 16_060_000_000
    assert {d.label for d in record.skipped} == {"linear kernels"}  # not quantized: no kernel choice


def test_the_budget_stops_what_no_longer_fits(tmp_path):
    m, settings = _model(tmp_path, "vllm", {"BOT_VALIDATE__SERVE_SEARCH__BUDGET_S": "900"})
    key = search_key(settings, m.work, H100.name)
    m.rec.serve_search = ServeSearchRecord(settings=key, configs=[_measured("default", RUNS, 880)])
    record = search_model(m, WeightFormat("bf16"), settings, None, True, lambda _e, _d: None)
    assert [c.id for c in record.configs] == ["default"]
    budget = [s for s in record.skipped if s.kind == "budget"]
    assert [s.id for s in budget] == ["default#2", "kv-cache-dtype=fp8"]
    assert "estimated 880 s, 20 s left" in budget[0].reason  # estimated from this model's own measured engine
    assert record.status == "partial" and m.saved[-1] is record


def test_other_settings_start_over(tmp_path):
    m, settings = _model(tmp_path, "vllm", {"BOT_VALIDATE__SERVE_SEARCH__BUDGET_S": "60"})
    m.rec.serve_search = ServeSearchRecord(settings={"speed": "older"}, configs=[_measured("default", RUNS, 100)])
    record = search_model(m, WeightFormat("bf16"), settings, None, True, lambda _e, _d: None)
    # the stored row is not kept; the defaults are always admitted first, and their worker fails to start here
    assert [c.id for c in record.configs] == ["default"] and record.configs[0].status == "failed"
    assert record.configs[0].seconds is not None and record.status == "failed"
    assert {s.id: s.reason for s in record.skipped}["default#2"] == "the defaults did not run: no baseline to " \
                                                                    "compare with"
