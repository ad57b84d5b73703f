"""A local Hub on port 0 over a temp dir, real huggingface_hub over real HTTP (helpers in hubfakes.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hubfakes import OTHER_TOKEN, TOKEN  # noqa: E402

from bot.clients.hub import HubClient, RetryPolicy  # noqa: E402
from localhub_support import LocalHub  # noqa: E402


@pytest.fixture(autouse=True)
def _hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", tokens={TOKEN: "tester", OTHER_TOKEN: "other"}) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    """Delays the retry policy asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def policy(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, sleep=sleeps.append)


@pytest.fixture
def client(hub: LocalHub, policy: RetryPolicy, tmp_path: Path) -> HubClient:
    return HubClient(hub.url, TOKEN, policy, cache_dir=tmp_path / "hf-cache")
