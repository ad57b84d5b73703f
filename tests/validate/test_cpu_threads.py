"""Threads per CPU worker: one value per call (the `cpu_threads` setting; none: torch's default), carried by every
job, applied by the worker only on a CPU, and recorded where a number depends on it (the speed settings, the
lm-eval command, the quantize record)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli._common import settings_from_cli
from bot.config import Settings
from bot.errors import ConfigError
from bot.manifest import LoadCheck, SpeedRecord, ValidateRecord
from bot.stages.demo import demo_profile
from bot.stages.validate.plan import plan_for, runtime_matches
from bot.workers import lmeval_worker as lw
from bot.workers.hf_backend import _until_eos

ROOT = Path(__file__).resolve().parents[2]


def test_torch_keeps_its_default_unless_a_count_is_set_and_the_quick_demo_sets_one() -> None:
    assert Settings().cpu_threads is None and Settings(cpu_threads=3).cpu_threads == 3
    assert demo_profile()["cpu_threads"] == 1 and "cpu_threads" not in demo_profile(full=True)


@pytest.mark.parametrize("bad", [0, -2, 513, "many"])
def test_a_bad_thread_count_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="cpu_threads"):
        Settings(cpu_threads=bad)


def test_the_plan_carries_the_count_and_a_speed_taken_with_another_is_taken_again(tmp_path: Path) -> None:
    settings = Settings(runs_dir=tmp_path, device="cpu", cpu_threads=2, validate={"backend": "hf"})
    plan = plan_for(settings)
    assert plan.cpu_threads == 2 and plan.speed["threads"] == 2
    assert plan_for(Settings(runs_dir=tmp_path, device="cpu", validate={"backend": "hf"})).cpu_threads is None
    rec = ValidateRecord(backend="hf", load=LoadCheck(ok=True, backend="hf"), generations=[],
                         speed=SpeedRecord(label=plan.label, settings={"requested": dict(plan.speed)}))
    other = plan_for(Settings(runs_dir=tmp_path, device="cpu", cpu_threads=1, validate={"backend": "hf"}))
    assert runtime_matches(rec, dataclasses.replace(plan, prompts=[]))
    assert not runtime_matches(rec, dataclasses.replace(other, prompts=[]))


def test_the_worker_applies_the_count_on_a_cpu_only() -> None:
    code = ("import torch; from bot.workers.validate_common import use_cpu_threads as u; "
            "print(u({'cpu_threads': 1}, 'cpu'), torch.get_num_threads(), u({'cpu_threads': 1}, 'cuda'), u({}, 'cpu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "None", "1"]  # without a count the worker reports what it runs with


def test_the_lm_eval_command_names_the_count_on_a_cpu() -> None:
    job = {"backend": "hf", "model_path": "m", "tasks": ["t"], "device": "cpu", "cpu_threads": 1, "batch_size": 8}
    assert lw.command_line(job).startswith("OMP_NUM_THREADS=1 lm_eval --model hf ")
    assert lw.command_line({**job, "cpu_threads": None}).startswith("lm_eval ")
    assert lw.command_line({**job, "device": "cuda"}).startswith("lm_eval ")


def test_a_batched_row_ends_at_its_first_eos_as_alone() -> None:
    assert _until_eos([5, 6, 2, 0, 0], {2}) == [5, 6, 2]
    assert _until_eos([5, 6, 7], {2}) == [5, 6, 7]
    assert _until_eos([2, 2], {2, 0}) == [2]


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_CPU_THREADS", "4")
    assert settings_from_cli(None).cpu_threads == 4
    monkeypatch.setenv("BOT_CPU_THREADS", "lots")
    with pytest.raises(ConfigError, match="BOT_CPU_THREADS"):
        settings_from_cli(None)
