"""Gated bases through `bot watch`, the real huggingface_hub client over HTTP against bot.localhub: a gated repo
this token can read is planned like any other; one it cannot read is skipped with the reason and the licence link,
recorded once per revision, and its access is not asked again next cycle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import typer
from test_watch_e2e_localhub import seed_base
from typer.testing import CliRunner

import bot.cli.watch as watch_cli
from bot.config import Settings
from bot.ledger import Ledger
from localhub_support import LocalHub

TOKEN, USER = "hf_" + "readertoken0000000000000000", "reader"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """test root"""

    watch_cli.register(app)
    return app


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("BOT_") or key in ("HF_TOKEN", "GITHUB_TOKEN"):
            monkeypatch.delenv(key, raising=False)
    with LocalHub(tmp_path / "hub", tokens={TOKEN: USER}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.output


def write_watchlist(models: list[str]) -> None:
    Path("watchlist.yaml").write_text("defaults:\n  namespace: bot-test\n  runs_dir: runs\nwatch:\n"
                                      f"  - author: org\n    models: [{', '.join(models)}]\n")


def test_readable_gated_base_is_planned_and_unreadable_one_skipped_with_its_licence_link(
        app: typer.Typer, hub: LocalHub) -> None:
    open_sha = seed_base(hub, "org/Open-1B", 10, gated="auto", gated_users=[USER])
    shut_sha = seed_base(hub, "org/Shut-1B", 11, gated="manual", gated_users=["someone-else"])
    write_watchlist(["Open-1B", "Shut-1B"])
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert f"would-queue: org/Open-1B@{open_sha[:12]}" in out
    assert "org/Shut-1B" in out and "gated (manual) and this token cannot read it" in out
    assert "https://huggingface.co/org/Shut-1B" in out
    assert "1 to publish, 1 skipped" in out
    assert hub.log.count("HEAD", "org/Open-1B/resolve") == 1
    assert hub.log.count("HEAD", "org/Shut-1B/resolve") == 1  # one request, no retry loop on the 403
    assert hub.log.count("GET", "/resolve/") == 0  # nothing downloaded
    assert not Path("runs/ledger.sqlite").exists()

    # a recorded cycle: the unreadable revision is skipped once, for good; the next cycle does not ask again
    code, out = run(app, "watch")
    assert code == 0, out
    with Ledger.for_settings(Settings(runs_dir=Path("runs"))) as led:
        row = led.get_model("org/Shut-1B", shut_sha)
        assert row.state == "skipped" and not row.retry and "huggingface.co/org/Shut-1B" in row.reason
        assert led.get_model("org/Open-1B", open_sha).state == "queued"
        first_seen = row.updated_at
    hub.log.clear()
    code, out = run(app, "watch")
    assert code == 0, out
    assert "gated (manual) and this token cannot read it" in out  # still reported ...
    assert hub.log.count("HEAD", "org/Shut-1B/resolve") == 0  # ... from the ledger, without asking the Hub
    with Ledger.for_settings(Settings(runs_dir=Path("runs"))) as led:
        row = led.get_model("org/Shut-1B", shut_sha)
        assert row.updated_at == first_seen  # recorded once

    # a new revision is a new question
    new_sha = hub.add_revision("org/Shut-1B", {"extra.txt": "x"})
    hub.log.clear()
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert hub.log.count("HEAD", "org/Shut-1B/resolve") == 1 and new_sha != shut_sha


def test_watchlist_example_gated_entries_against_the_stand_in(app: typer.Typer, hub: LocalHub) -> None:
    shutil.copy(ROOT / "watchlist.yaml", "watchlist.yaml")
    text = Path("watchlist.yaml").read_text().replace("namespace: bot-quantized", "namespace: bot-test")
    Path("watchlist.yaml").write_text(text + "\n")
    shas = {}
    for i, (repo, lic) in enumerate([("meta-llama/Llama-3.1-8B-Instruct", "llama3.1"),
                                     ("meta-llama/Llama-3.2-3B-Instruct", "llama3.2"),
                                     ("google/gemma-3-1b-it", "gemma")]):
        shas[repo] = seed_base(hub, repo, 10 + i, card={"license": lic}, gated="manual",
                               gated_users=[USER] if "3.2" not in repo else [])
        hub.storage.update_meta(repo, downloads=500)
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert f"would-queue: meta-llama/Llama-3.1-8B-Instruct@{shas['meta-llama/Llama-3.1-8B-Instruct'][:12]}" in out
    assert f"would-queue: google/gemma-3-1b-it@{shas['google/gemma-3-1b-it'][:12]}" in out
    assert "would-queue: meta-llama/Llama-3.2-3B-Instruct" not in out
    assert "https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct" in out
