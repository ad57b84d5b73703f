"""The environment every worker interpreter starts with (bot.clients.process.worker_env)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.clients.process import worker_env


def test_openmp_threads_wait_passively_unless_the_user_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = worker_env()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_WAIT_POLICY'])"],
                           env=env, capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    assert worker_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
