"""Threads per CPU worker: one value per call (Settings.cpu_worker_threads; auto: half the cores), carried by every
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
from bot.stages.validate.plan import plan_for, runtime_matches
from bot.workers import lmeval_worker as lw
from bot.workers.hf_backend import _until_eos

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (16, 8)])
def test_auto_is_half_the_cores_at_least_one(monkeypatch: pytest.MonkeyPatch, cores: int, threads: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cores)))
    assert Settings().cpu_worker_threads() == threads
    assert Settings(cpu_threads=3).cpu_worker_threads() == 3 and Settings(cpu_threads="4").cpu_worker_threads() == 4


@pytest.mark.parametrize("bad", [0, "0", -2, 513, "many", True])
def test_a_bad_thread_count_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="integer from 1 to 512 or 'auto'"):
        Settings(cpu_threads=bad)


def test_the_plan_carries_the_count_and_a_speed_taken_with_another_is_taken_again(tmp_path: Path) -> None:
    settings = Settings(runs_dir=tmp_path, device="cpu", cpu_threads=2, validate={"backend": "hf"})
    plan = plan_for(settings)
    assert plan.cpu_threads == 2 and plan.speed["threads"] == 2
    assert plan_for(Settings(runs_dir=tmp_path, device="cpu", validate={"backend": "hf"})).cpu_threads == (
        Settings().cpu_worker_threads())
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
    assert settings_from_cli(None).cpu_worker_threads() == 4
    monkeypatch.setenv("BOT_CPU_THREADS", "lots")
    with pytest.raises(ConfigError, match="BOT_CPU_THREADS: must be an integer from 1 to 512"):
        settings_from_cli(None)
