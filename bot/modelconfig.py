"""What a model's config.json declares, read the same way by the stages and the workers (standard library only,
so the heavy interpreters import it too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def model_max_len(config: dict[str, Any]) -> int | None:
    """The longest context a config.json declares (text config first for multimodal wrappers)."""
    for cfg in (config.get("text_config") or {}, config):
        for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            value = cfg.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def read_config(model_path: str | Path) -> dict[str, Any]:
    path = Path(model_path) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def reloads_only_in_bf16(model_path: str | Path) -> bool:
    """A checkpoint transformers reloads only in bfloat16 (NVFP4, packed), read from its config.json: the validate
    stage's compute dtype and the fidelity worker's both depend on it."""
    return "nvfp4" in json.dumps(read_config(model_path).get("quantization_config") or {}).lower()


def resolve_max_model_len(requested: int | None, config: dict[str, Any]) -> int | None:
    """The setting, capped at what the model declares (vLLM refuses a longer one)."""
    declared = model_max_len(config)
    if requested is None:
        return declared
    return min(requested, declared) if declared else requested
