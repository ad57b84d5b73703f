"""Fixtures of the card tests (tests/card): synthetic run directories written with bot.manifest models."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cardfakes import make_run  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.rundir import RunDir  # noqa: E402


@pytest.fixture
def gpu_run(tmp_path: Path) -> tuple[RunDir, Settings]:
    return make_run(tmp_path)


@pytest.fixture
def cpu_run(tmp_path: Path) -> tuple[RunDir, Settings]:
    return make_run(tmp_path, device="cpu")


@pytest.fixture
def legacy_run(tmp_path: Path) -> tuple[RunDir, Settings]:
    """The same run as an older bot recorded it (no CIs, fidelity, gate state or typed hardware verdict)."""
    return make_run(tmp_path, legacy=True)
