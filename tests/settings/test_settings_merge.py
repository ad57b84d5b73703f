"""The one merge of the settings (bot.config): defaults < watchlist `defaults:` < profile (the demo, or a watch
entry) < environment < command line; and `limit`, one rule for every flag, variable and file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.cli._common import settings_from_cli
from bot.errors import StageError
from bot.stages.demo import DEMO_PROFILE, bundled_model, demo_profile


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("BOT_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def demo(watchlist: Path | None = None, full: bool = False, **cli):
    """The settings `bot publish` (no MODEL) merges: the demo profile between the watchlist and the environment."""
    return settings_from_cli(watchlist, profile=(DEMO_PROFILE, demo_profile(full)), **cli)


def test_the_demo_profile_is_below_env_and_flags_and_above_the_watchlist(clean_env: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wl = clean_env / "watchlist.yaml"
    wl.write_text("defaults:\n  validate: {limit: 250}\n  calibration: {samples: 512, seed: 7}\nwatch:\n  - author: a\n")
    s = demo(wl)
    assert (s.validate.limit, s.calibration.samples, s.calibration.seq_len) == ("all", 16, 256)
    assert s.calibration.seed == 7
    assert s.recipes == ["fp8-dynamic"] and s.validate.fidelity.tokens == 2048  # the quick demo
    assert s.gate.max_rounds == 1 and s.gate.min_recovery == {"fp8-dynamic": 85.0}
    assert s.pipeline.overlap == "on"  # the base is measured while FP8 quantizes
    full = demo(wl, full=True)
    assert (full.recipes, full.calibration.samples, full.validate.fidelity.tokens) == (None, 32, 4096)  # all six
    assert (full.validate.limit, full.gate.max_rounds, full.gate.min_recovery) == (40, 3, {})  # their own bars
    assert full.pipeline.overlap == "auto"
    monkeypatch.setenv("BOT_VALIDATE__LIMIT", "100")
    monkeypatch.setenv("BOT_CALIBRATION__SAMPLES", "64")
    s = demo(wl)
    assert (s.validate.limit, s.calibration.samples) == (100, 64)  # the demo ignored these before
    assert demo(wl, validate__limit="all", calibration__samples=16).validate.limit == "all"
    assert demo(wl, calibration__samples=8).calibration.samples == 8


def test_full_is_for_the_bundled_demo_only(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "acme/M", "--full"]) == 2
    assert "--full applies to the bundled demo only" in _one_error(capsys)


def test_the_watch_entry_is_below_env_and_flags(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wl = clean_env / "watchlist.yaml"
    wl.write_text("defaults:\n  namespace: ours\nwatch:\n  - author: acme\n    namespace: entry-ns\n    private: true\n")
    assert settings_from_cli(wl, model="acme/M").namespace == "entry-ns"
    assert settings_from_cli(wl, model="other/M").namespace == "ours"
    # `bot publish acme/M --namespace X --watchlist W` publishes under X (it was the entry's namespace)
    assert settings_from_cli(wl, model="acme/M", namespace="cli-ns").namespace == "cli-ns"
    assert settings_from_cli(wl, model="acme/M", private=False).private is False
    monkeypatch.setenv("BOT_NAMESPACE", "env-ns")
    assert settings_from_cli(wl, model="acme/M").namespace == "env-ns"


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("value", ["0", "-5", "ten", "2.5", ""])
@pytest.mark.parametrize("command", [["publish", "acme/m"], ["validate", "no-such-run"]])
def test_limit_flags_take_a_positive_integer_or_all(clean_env: Path, capsys: pytest.CaptureFixture[str],
                                                    command: list[str], value: str) -> None:
    assert main([*command, "--limit", value]) == 2
    assert _one_error(capsys) == (f"error: --limit must be a positive integer or 'all' (got {value!r}) "
                                  "(hint: e.g. --limit 100, or --limit all)\n")


@pytest.mark.parametrize("value", ["all", "7"])
def test_validate_accepts_all_and_a_count(clean_env: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert main(["validate", "no-such-run", "--limit", value]) == 3  # past the settings: the run dir is checked
    assert "no-such-run is not a run directory" in _one_error(capsys)


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-1", "-1"), ("many", "'many'"), ("true", "True")])
def test_bad_limit_in_the_environment_names_the_variable(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], value: str,
                                                          shown: str) -> None:
    monkeypatch.setenv("BOT_VALIDATE__LIMIT", value)
    assert main(["validate", "no-such-run"]) == 2
    assert _one_error(capsys) == (f"error: BOT_VALIDATE__LIMIT: must be a positive integer or 'all' (got {shown}) "
                                  "(hint: fix or remove that setting)\n")


def test_the_demo_build_runs_through_the_process_client(clean_env: Path) -> None:
    """A builder that fails: the error names how it ended and the log has the process client's run marker."""
    fake = clean_env / "python-no-builder"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    "if sys.argv[1:3] == ['-m', 'bot.workers.build_model']:\n"
                    "    print('builder started', flush=True); sys.exit(3)\n"
                    f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n")
    fake.chmod(0o755)
    settings = demo(runs_dir=clean_env / "runs", quantize_python=str(fake))
    with pytest.raises(StageError, match=r"could not build SmolLM2-135M-Instruct \(the builder exited with code 3\)"):
        bundled_model(settings)
    log = (clean_env / "runs" / "_models" / "build.log").read_text()
    assert "=== build_model " in log and "builder started" in log
