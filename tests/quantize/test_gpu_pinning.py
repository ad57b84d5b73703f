"""`quantize_gpus`: one quantize worker per GPU (docs/eight-gpus.md). The plan of the design's command for the six
recipes of an 8B, and a real `bot quantize` on this CPU with two pinned workers: each worker process starts with its
own CUDA_VISIBLE_DEVICES (recorded by the interpreter it is started with), its job file says so, and variants on
different GPUs are not listed as sharing the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.manifest import VariantManifest
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.recipes.resolve import resolve
from bot.stages.quantize import plan_workers, sharing, worker_pins, workers_per_device, workers_requested
from bot.workers.build_model import SHAPES

ROOT = Path(__file__).resolve().parents[2]
_shape = {k: v for k, v in SHAPES["llama-3.1-8b"].items() if k not in ("arch", "rope_theta")}
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **_shape}
DESIGN_ENV = {"BOT_QUANTIZE_GPUS": "0,1,2,3,4,5"}  # docs/eight-gpus.md, "One recipe per GPU"


def _plan(environ: dict[str, str]) -> dict[str, str | None]:
    """Recipe -> CUDA_VISIBLE_DEVICES as `bot quantize` would start its workers for the six recipes of an 8B (the
    stage's own planning: the workers per GPU, the spread by cost, the pins)."""
    settings = load_settings(environ=environ)
    book = load_recipes(None)
    pending = [(resolve(book.get(r), LLAMA_8B), VariantManifest(run_id="r", variant=r)) for r in BUILTIN_ORDER]
    groups = plan_workers(pending, workers_requested(workers_per_device(settings), settings))
    pins = worker_pins(len(groups), list(settings.quantize_gpus))
    return {r.recipe.id: pins[i] for i, g in enumerate(groups) for r, _ in g}


def test_the_design_puts_each_recipe_on_its_own_gpu():
    plan = _plan(DESIGN_ENV)
    assert sorted(plan) == sorted(BUILTIN_ORDER)
    assert sorted(plan.values()) == ["0", "1", "2", "3", "4", "5"]  # six workers, one GPU each
    assert plan["w4a16-autoround"] == "0"  # the longest first


def test_the_design_table():
    """The recipe -> GPU table of docs/eight-gpus.md (the planner's spread: longest first, by recipe_cost)."""
    assert _plan(DESIGN_ENV) == {"w4a16-autoround": "0", "w4a16-awq": "1", "w4a16-gptq": "2", "w8a8-int8": "3",
                                 "nvfp4": "4", "fp8-dynamic": "5"}


def test_two_workers_per_gpu():
    plan = _plan({"BOT_QUANTIZE_GPUS": "0,1,2", "BOT_QUANTIZE_WORKERS": "2"})
    by_gpu: dict[str, set[str]] = {}
    for recipe, gpu in plan.items():
        by_gpu.setdefault(gpu, set()).add(recipe)
    assert sorted(by_gpu) == ["0", "1", "2"] and all(len(r) == 2 for r in by_gpu.values())
    # the three costliest by recipe_cost (AutoRound, AWQ, GPTQ) take a GPU each, the others pair with them
    assert [plan[r] for r in ("w4a16-autoround", "w4a16-awq", "w4a16-gptq")] == ["0", "1", "2"]


def test_without_gpus_nothing_is_pinned():
    assert load_settings(environ={}).quantize_gpus == []
    assert set(_plan({}).values()) == {None}
    assert worker_pins(3, []) == [None, None, None]
    assert sharing(0, [None, None, None], "cuda") == [1, 2]  # unpinned workers share the device, as before


def test_sharing_follows_the_pins():
    pins = worker_pins(4, [0, 1])
    assert pins == ["0", "1", "0", "1"]
    assert sharing(0, pins, "cuda") == [2] and sharing(1, pins, "auto") == [3]
    assert sharing(0, pins, "cpu") == [1, 2, 3]  # on a CPU every worker shares it


@pytest.mark.parametrize("value", ["0,0", "a", "-1", "1.5"])
def test_bad_gpu_lists_are_one_line_errors(value):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"BOT_QUANTIZE_GPUS": value})
    assert "BOT_QUANTIZE_GPUS" in str(info.value) and "\n" not in str(info.value)


def test_bot_quantize_starts_each_worker_on_its_gpu(tiny_llama, calibration_file, tmp_path):
    """The design's command form on this CPU with two GPUs listed: `BOT_QUANTIZE_GPUS=0,1 bot quantize ...`."""
    seen = tmp_path / "started.txt"
    wrapper = tmp_path / "py-quantize"  # the quantize interpreter, as the GPU sessions wrap it, noting each start
    wrapper.write_text(f'#!/bin/sh\nprintf "%s %s\\n" "${{CUDA_VISIBLE_DEVICES-unset}}" "$*" >> {seen}\n'
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "CUDA_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", BOT_QUANTIZE_PYTHON=str(wrapper),
               **{"BOT_QUANTIZE_GPUS": "0,1"})
    p = subprocess.run(
        [sys.executable, "-m", "bot", "quantize", str(tiny_llama), "-r", "w4a16-gptq", "-r", "fp8-dynamic",
         "--calibration", str(calibration_file), "--samples", "4", "--seq-len", "32", "--runs-dir",
         str(tmp_path / "runs"), "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    jobs = {}
    for path in sorted((run / "jobs").glob("quantize-*.json")):
        job = json.loads(path.read_text())
        jobs[str(path)] = (job["visible_devices"], [v["recipe_id"] for v in job["variants"]])
    assert sorted(jobs.values()) == [("0", ["w4a16-gptq"]), ("1", ["fp8-dynamic"])]  # the longer one on the first
    started = {line.split(" ", 1)[1].rsplit(" ", 1)[1]: line.split(" ", 1)[0]
               for line in seen.read_text().splitlines() if "bot.workers.quantize_worker" in line}
    assert started == {path: gpu for path, (gpu, _recipes) in jobs.items()}  # each worker saw its own GPU only
    for variant in ("w4a16-gptq", "fp8-dynamic"):
        manifest = json.loads((run / variant / "manifest.json").read_text())
        assert manifest["quantize"]["status"] == "done"
        # on this CPU both workers share the one device, so each still lists the other
        assert manifest["quantize"]["concurrent_with"] == [v for v in ("w4a16-gptq", "fp8-dynamic") if v != variant]
