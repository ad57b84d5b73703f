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


# ---------------------------------------------------------------- derivatives follow the base's terms

LLAMA_31_CLAUSE = """b. Redistribution and Use.
i. If you distribute or make available the Llama Materials (or any derivative works thereof), or a product or
service (including another AI model) that contains any of them, you shall (A) provide a copy of this Agreement
with any such Llama Materials; and (B) prominently display \u201cBuilt with Llama\u201d on a related website, user
interface, blogpost, about page, or product documentation."""


def test_attribution_is_read_from_the_licence_text_itself(tmp_path: Path) -> None:
    from bot.stages.model import attribution_phrases

    (tmp_path / "LICENSE").write_text(LLAMA_31_CLAUSE)
    (tmp_path / "NOTICE").write_text('Acme 2 is licensed under the Acme Licence. You must prominently\n'
                                     'display "Powered by  Acme 2" where it is used.\n')
    (tmp_path / "USE_POLICY.md").write_text("# Acceptable use\nDo not display harmful content.\n")
    (tmp_path / "APACHE").write_text("Apache License 2.0: no attribution phrase to display here.\n")
    assert attribution_phrases(tmp_path, ["LICENSE", "NOTICE", "USE_POLICY.md"]) == [
        "Built with Llama", "Powered by Acme 2"]
    assert attribution_phrases(tmp_path, ["APACHE", "USE_POLICY.md"]) == []


@pytest.mark.parametrize(("setting", "base_gated", "expected"), [
    ("inherit", True, True), ("inherit", False, False), ("true", False, True), ("false", True, False)])
def test_gated_setting(setting: str, base_gated: bool, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import SettingsLayers

    monkeypatch.setenv("BOT_GATED", setting)
    settings = SettingsLayers(environ=dict(os.environ)).merge()
    assert settings.repo_gated(base_gated) is expected


def test_our_repo_is_gated_on_creation_and_the_card_says_so(hub: LocalHub, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    from bot.clients.hub import HubClient, RetryPolicy
    from bot.manifest import BaseModelRecord
    from bot.stages.card.view_parts import license_lines

    client = HubClient(hub.url, TOKEN, RetryPolicy(attempts=1), cache_dir=tmp_path / "cache")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    client.publish_folder("reader/Open-1B-W4A16", tmp_path / "out", "upload", gated=True)
    client.publish_folder("reader/Free-1B-W4A16", tmp_path / "out", "upload")
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert api.model_info("reader/Open-1B-W4A16").gated == "auto"
    assert api.model_info("reader/Free-1B-W4A16").gated is False
    assert hub.log.count("PUT", r"/api/models/reader/Open-1B-W4A16/settings") == 1

    base = BaseModelRecord(model_id="org/Open-1B", license="llama3.1", gated=True, attribution=["Built with Llama"],
                           license_files=["LICENSE"])
    lines = license_lines(base, "https://huggingface.co/org/Open-1B", gated=True)
    assert any("**Built with Llama**" in line for line in lines)
    assert any("This repository is gated" in line for line in lines)
    assert not any("This repository is gated" in line
                   for line in license_lines(base, None, gated=False))
