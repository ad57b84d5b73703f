"""`bot watch` and `bot status` through typer (each module's register(app) on a fresh app), with the real Hub
client over HTTP against bot.localhub (HF_ENDPOINT), or against a port nobody listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import typer
from test_watch_e2e_localhub import seed_base
from typer.testing import CliRunner

import bot.cli.status as status_cli
import bot.cli.watch as watch_cli
from bot.cli._errors import run_app
from bot.config import Settings
from localhub_support import LocalHub  # bot.localhub with the tests' seeding and request log
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
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_hub: LocalHub) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("BOT_") or key in ("HF_TOKEN", "GITHUB_TOKEN"):
            monkeypatch.delenv(key, raising=False)
    (tmp_path / "watchlist.yaml").write_text(
        "defaults:\n  namespace: bot-test\n  runs_dir: runs\nwatch:\n  - author: org\n    exclude: ['*-GGUF']\n")
    return tmp_path


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_watch_dry_run_prints_the_plan(app: typer.Typer, project: Path, local_hub: LocalHub) -> None:
    sha = seed_base(local_hub, "org/Model-7B", 10)
    seed_base(local_hub, "org/Model-7B-GGUF", 9)
    seed_base(local_hub, "org/Gated-1B", 8, gated="manual")
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert "org/Model-7B" in out and "new" in out and sha[:12] in out
    assert "gated (manual)" in out and "include/exclude" in out
    assert "1 to publish, 2 skipped" in out
    assert f"would-queue: org/Model-7B@{sha[:12]}" in out
    assert not (project / "runs" / "ledger.sqlite").exists()


def test_watch_records_then_status_shows_ledger_and_run_dirs(app: typer.Typer, project: Path,
                                                             local_hub: LocalHub) -> None:
    sha = seed_base(local_hub, "org/Model-7B", 10)
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
    rows = {line.split("|")[3].strip(): line for line in out.splitlines() if line.count("|") >= 6}
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


def test_watch_dispatch_without_token(app: typer.Typer, project: Path, local_hub: LocalHub,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seed_base(local_hub, "org/Model-7B", 10)
    monkeypatch.setenv("GITHUB_REPOSITORY", "octo/bot")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert run_app(app, ["watch", "--dispatch"]) == 7
    assert "GITHUB_TOKEN is not set" in capsys.readouterr().err
    assert not (project / "runs").exists()  # checked before any work


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


def test_unreachable_hub_stops_the_cycle_at_the_first_failure_with_exit_6(project: Path) -> None:
    """Seven watched models and two authors, the Hub down: one request's bounded retries, one error line, exit 6.
    A real `bot watch` process: its stderr is what a cron job's log shows."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    models = ", ".join(f"org/M{i}" for i in range(7))
    (project / "watchlist.yaml").write_text(
        f"defaults:\n  runs_dir: runs\n  hub_retries: 3\nwatch:\n  - models: [{models}]\n"
        "  - author: org\n  - author: other\n")
    env = {**os.environ, "HF_ENDPOINT": endpoint, "BOT_HUB_RETRY_BASE_S": "0.01", "COLUMNS": "200"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bot", "watch", "--dry-run"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode == 6, proc.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot reach {endpoint}: read model info of org/M0 "
                                                     "failed after 3 attempts"), proc.stderr
    assert "the watch cycle stopped" in errors[0] and "(hint: check the network and HF_ENDPOINT" in errors[0]
    assert len(lines) == 3, proc.stderr  # the one request's 2 retry notices, then the error line
    assert "org/M1" not in proc.stderr and proc.stdout == ""
    assert not (project / "runs").exists()  # nothing recorded
    assert elapsed < 60  # a sanity guard only (it was minutes of retries, one model after another)


def test_a_model_specific_failure_skips_that_model_with_its_reason(app: typer.Typer, project: Path,
                                                                   local_hub: LocalHub) -> None:
    sha = seed_base(local_hub, "org/Good-1B", 10)
    seed_base(local_hub, "org/Broken-1B", 9)
    local_hub.faults.fail(500, path=r"^/api/models/org/Broken-1B", times=None, message="broken repo")
    (project / "watchlist.yaml").write_text(
        "defaults:\n  runs_dir: runs\n  hub_retries: 2\n  hub_retry_base_s: 0.01\n"
        "watch:\n  - models: [org/Missing-1B, org/Broken-1B, org/Good-1B]\n")
    code, out = run(app, "watch", "--dry-run")
    assert code == 0, out
    assert "1 to publish, 2 skipped" in out and f"would-queue: org/Good-1B@{sha[:12]}" in out
    assert "repository not found" in out and "HTTP 500" in out


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5"])
def test_watch_limit_takes_a_positive_integer_or_all(app: typer.Typer, project: Path, local_hub: LocalHub,
                                                     capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert run_app(app, ["watch", "--dry-run", "--limit", value]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --limit must be a positive integer or 'all' (got {value!r}) "
                   "(hint: e.g. --limit 100, or --limit all)\n")
    seed_base(local_hub, "org/A-1B", 10)
    seed_base(local_hub, "org/B-1B", 9)
    code, out = run(app, "watch", "--dry-run", "--limit", "all")
    assert code == 0 and out.count("would-queue:") == 2, out
    code, out = run(app, "watch", "--dry-run", "--limit", "1")
    assert code == 0 and out.count("would-queue:") == 1, out
