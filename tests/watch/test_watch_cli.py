"""`bot watch` and `bot status` through typer (each module's register(app) on a fresh app)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner
from watchfakes import FakeHub

import bot.cli.status as status_cli
import bot.cli.watch as watch_cli
from bot.cli._errors import run_app
from bot.config import Settings
from bot.ledger import Ledger
from bot.manifest import BaseManifest, BaseModelRecord, GateDecision, QuantizeRecord, Status, VariantManifest, \
    VariantValidateRecord
from bot.rundir import RunDir


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """test root"""

    watch_cli.register(app)
    status_cli.register(app)
    return app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in ("BOT_NAMESPACE", "BOT_RUNS_DIR", "HF_TOKEN", "BOT_WATCHLIST"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "watchlist.yaml").write_text(
        "defaults:\n  namespace: bot-test\n  runs_dir: runs\nwatch:\n  - author: org\n    exclude: ['*-GGUF']\n")
    monkeypatch.setattr(watch_cli, "hub_client", lambda settings: hub)
    return tmp_path


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_watch_dry_run_prints_the_plan(app: typer.Typer, project: Path, hub: FakeHub) -> None:
    hub.add("org/Model-7B", sha="1" * 40)
    hub.add("org/Model-7B-GGUF")
    hub.add("org/Gated-1B", gated="manual")
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert "org/Model-7B" in out and "new" in out and "111111111111" in out
    assert "gated (manual)" in out and "include/exclude" in out
    assert "1 to publish, 2 skipped" in out
    assert "would-queue: org/Model-7B@111111111111" in out
    assert not (project / "runs" / "ledger.sqlite").exists()


def test_watch_records_then_status_shows_ledger_and_run_dirs(app: typer.Typer, project: Path, hub: FakeHub) -> None:
    sha = "2" * 40
    hub.add("org/Model-7B", sha=sha)
    code, out = run(app, "watch")
    assert code == 0, out
    settings = Settings(runs_dir=project / "runs")
    with Ledger.for_settings(settings) as led:
        assert led.get_model("org/Model-7B", sha).state == "queued"
        led.set_variant("org/Model-7B", sha, "nvfp4", "failed", "no NVFP4 kernel")
    run_dir = RunDir.for_model(settings.runs_dir, "org/Model-7B", sha)
    run_dir.write_base(BaseManifest(run_id=run_dir.run_id, base=BaseModelRecord(model_id="org/Model-7B", revision=sha)))
    run_dir.write_variant(VariantManifest(run_id=run_dir.run_id, variant="w4a16-gptq",
                                          quantize=QuantizeRecord(status=Status.done)))
    run_dir.write_variant(VariantManifest(
        run_id=run_dir.run_id, variant="w8a8-int8", quantize=QuantizeRecord(status=Status.done),
        validate=VariantValidateRecord(status=Status.done, gate=GateDecision(passed=False, reasons=["low"]))))
    code, out = run(app, "status", "--model", "org/Model-7B")
    assert code == 0, out
    rows = {line.split("│")[3].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert "queued" in rows["-"]
    assert "quantized" in rows["w4a16-gptq"]
    assert "rejected" in rows["w8a8-int8"]
    assert "failed" in rows["nvfp4"] and "no NVFP4 kernel" in rows["nvfp4"]
    code, out = run(app, "status", "--model", "other/none")
    assert code == 0 and "nothing recorded yet" in out


def test_watch_errors_are_one_line(app: typer.Typer, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "bad.yaml").write_text("watch:\n  - author: org\n    recipes: [w4a16-gtpq]\n")
    code = run_app(app, ["watch", "--watchlist", "bad.yaml", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: bad.yaml:3: watch[0].recipes[0]: unknown recipe 'w4a16-gtpq'")
    assert "did you mean 'w4a16-gptq'" in err and err.count("\n") == 1
    assert run_app(app, ["watch", "--dispatch", "--run"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_watch_dispatch_without_token(app: typer.Typer, project: Path, hub: FakeHub,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add("org/Model-7B")
    monkeypatch.setenv("GITHUB_REPOSITORY", "octo/bot")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert run_app(app, ["watch", "--dispatch"]) == 7
    assert "GITHUB_TOKEN is not set" in capsys.readouterr().err
    assert not (project / "runs").exists()  # checked before any work
