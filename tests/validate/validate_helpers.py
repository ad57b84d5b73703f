"""Helpers for the `bot validate` tests: run the real CLI with settings from the environment (small generations
and speed lengths, so a run takes seconds per model on two CPU cores), build and copy runs, break a variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.rundir import RunDir

# Settings through the environment layer (BOT_VALIDATE__...), exactly as a user would set them.
FAST_ENV = {
    "BOT_VALIDATE__MAX_NEW_TOKENS": "16",
    "BOT_VALIDATE__PROMPTS": '["What is the capital of France?", "Name three colours."]',
    "BOT_VALIDATE__SPEED__BATCH1_RUNS": "2",
    "BOT_VALIDATE__SPEED__BATCH1_INPUT_LEN": "16",
    "BOT_VALIDATE__SPEED__BATCH1_OUTPUT_LEN": "4",
    "BOT_VALIDATE__SPEED__BATCHED_INPUT_LEN": "16",
    "BOT_VALIDATE__SPEED__BATCHED_OUTPUT_LEN": "4",
    "BOT_VALIDATE__SPEED__BATCHED_NUM_PROMPTS": "2",
}


def run_cli(args: list[str], env: dict[str, str] | None = None) -> int:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**FAST_ENV, **(env or {})}.items():
            mp.setenv(key, value)
        for key in ("BOT_SERVE_PYTHON", "BOT_DEVICE", "BOT_VALIDATE__BACKEND", "BOT_VALIDATE__TASKS"):
            mp.delenv(key, raising=False)
        return main(args)


def copy_run(rundir: RunDir, dest_parent: Path) -> RunDir:
    dest = dest_parent / rundir.root.name
    shutil.copytree(rundir.root, dest)
    return RunDir(dest)


def quantize(model: Path, runs: Path, recipes: list[str], calibration: Path) -> RunDir:
    args = ["quantize", str(model), "--runs-dir", str(runs), "--device", "cpu", "--calibration", str(calibration),
            "--samples", "16", "--seq-len", "128"]
    for r in recipes:
        args += ["-r", r]
    assert main(args) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return RunDir(run)


def corrupt_scales(rundir: RunDir, source: str, name: str, value: float = float("nan")) -> None:
    """A deliberately broken variant: a copy of `source` whose `*weight_scale` tensors all hold `value`."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(rundir.variant_dir(source), rundir.variant_dir(name))
    data: dict[str, Any] = json.loads((rundir.variant_dir(name) / "manifest.json").read_text())
    data["variant"] = name
    data.pop("validate", None)
    (rundir.variant_dir(name) / "manifest.json").write_text(json.dumps(data))
    for path in rundir.model_dir(name).glob("*.safetensors"):
        tensors = load_file(path)
        hit = [k for k in tensors if k.endswith("weight_scale")]
        assert hit, f"no weight_scale tensors in {path}"
        for key in hit:
            tensors[key].fill_(value)
        save_file(tensors, path, metadata={"format": "pt"})
