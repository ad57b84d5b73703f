"""Fixtures of the watcher tests (tests/watch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from watchfakes import FakeDispatcher, FakeHub  # noqa: E402

from bot.config import Settings, SettingsLayers  # noqa: E402
from bot.ledger import Ledger  # noqa: E402


@pytest.fixture
def layers(tmp_path: Path) -> SettingsLayers:
    """The settings' merge inputs of the watcher: these as the watchlist's defaults, no environment, no flags."""
    return SettingsLayers(watchlist_defaults={"runs_dir": tmp_path / "runs", "namespace": "bot-test"}, environ={})


@pytest.fixture
def settings(layers: SettingsLayers) -> Settings:
    return layers.merge()


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
