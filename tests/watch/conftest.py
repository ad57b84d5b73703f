"""Fixtures of the watcher tests (tests/watch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from watchfakes import FakeDispatcher, FakeHub  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.ledger import Ledger  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(runs_dir=tmp_path / "runs", namespace="bot-test")


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    with Ledger.for_settings(settings) as led:
        yield led


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
def write_yaml(tmp_path: Path):
    def write(text: str, name: str = "watchlist.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
