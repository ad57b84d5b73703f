"""The weight format of a checkpoint as vLLM's compressed-tensors loader sees it: read from the checkpoint's own
`quantization_config` (recorded by the quantize stage), the typed recipe only where a checkpoint recorded none.

Families (vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py `_get_scheme_from_parts`):
`wna16` integer weights, 16-bit activations (W4A16 GPTQ/AWQ/AutoRound); `int8_w8a8` int8 weights and activations;
`fp8_w8a8` FP8 weights and activations; `fp8_w8a16` FP8 weights only; `nvfp4` FP4 weights and activations;
`nvfp4_a16` FP4 weights only; `bf16` not quantized (the base); `unknown` anything else (no kernel search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.recipes import Recipe


@dataclass(frozen=True)
class WeightFormat:
    family: str
    bits: int | None = None
    group_size: int | None = None  # -1: one scale per output channel
    zero_points: bool = False  # asymmetric weights (AWQ)
    act_order: bool = False  # GPTQ activation reordering stored as g_idx (actorder "group")
    per_tensor: bool = False  # FP8: per-tensor weight and activation scales
    act_dtype: str = "bfloat16"  # the activations' 16-bit type (the model's dtype)
    source: str = ""  # where it was read

    def describe(self) -> str:
        if self.family == "bf16":
            return f"not quantized ({self.act_dtype})"
        if self.family == "unknown":
            return f"unrecognised ({self.source})"
        group = "per channel" if self.group_size == -1 else f"groups of {self.group_size}"
        extra = ", zero points" if self.zero_points else ""
        extra += ", act-order (g_idx)" if self.act_order else ""
        return f"{self.family}: {self.bits}-bit weights, {group}{extra}, {self.act_dtype} activations ({self.source})"


def _act_dtype(dtype: str | None) -> str:
    return "float16" if dtype in ("float16", "fp16", "half") else "bfloat16"


def _group(weights: dict[str, Any]) -> int:
    size = weights.get("group_size")
    return int(size) if isinstance(size, int) and size > 0 else -1


def _one_group(w: dict[str, Any], a: dict[str, Any] | None, fmt: str, dtype: str) -> WeightFormat:
    src = f"quantization_config, format {fmt or 'unset'}"
    wtype, bits = w.get("type"), w.get("num_bits")
    common = dict(bits=bits, group_size=_group(w), zero_points=w.get("symmetric") is False, act_dtype=dtype,
                  source=src)
    if wtype == "float" and bits == 4 and "nvfp4" in (fmt or ""):
        return WeightFormat("nvfp4" if a else "nvfp4_a16", **common)
    if wtype == "int" and a is None and fmt == "pack-quantized":
        return WeightFormat("wna16", act_order=w.get("actorder") == "group", **common)
    if wtype == "int" and bits == 8 and a is not None and a.get("type") == "int" and a.get("num_bits") == 8:
        return WeightFormat("int8_w8a8", **common)
    if wtype == "float" and bits == 8:
        if a is None:
            return WeightFormat("fp8_w8a16", **common)
        if a.get("type") == "float" and a.get("num_bits") == 8:
            per_tensor = w.get("strategy") == "tensor" and a.get("strategy") == "tensor"
            return WeightFormat("fp8_w8a8", per_tensor=per_tensor, **common)
    return WeightFormat("unknown", source=src, act_dtype=dtype)


def read_format(quantization_config: dict[str, Any] | None, recipe: Recipe | None, dtype: str | None) -> WeightFormat:
    """The format of one checkpoint. An empty config and no recipe: not quantized (the base). Several config groups
    must agree, or the format is `unknown` (no kernel search, only the KV-cache dtypes)."""
    act = _act_dtype(dtype)
    qc = quantization_config or {}
    groups = list((qc.get("config_groups") or {}).values())
    if groups:
        found = {_one_group(g.get("weights") or {}, g.get("input_activations"), g.get("format") or qc.get("format"),
                            act) for g in groups}
        return found.pop() if len(found) == 1 else WeightFormat("unknown", source="mixed config groups", act_dtype=act)
    if recipe is None:
        return WeightFormat("bf16", source="no quantization_config", act_dtype=act)
    return _from_recipe(recipe, act)


def _from_recipe(recipe: Recipe, act: str) -> WeightFormat:
    """A variant whose checkpoint recorded no quantization_config: its typed recipe (the modifiers' preset schemes)."""
    scheme = next((m.scheme for m in recipe.modifiers if getattr(m, "scheme", None)), recipe.scheme)
    src = f"recipe {recipe.id} ({scheme})"
    group = recipe.group_size or -1
    if scheme.startswith("W4A16") or scheme.startswith("W8A16"):
        return WeightFormat("wna16", bits=int(scheme[1]), group_size=group, zero_points="ASYM" in scheme,
                            act_dtype=act, source=src)
    if scheme == "W8A8":
        return WeightFormat("int8_w8a8", bits=8, group_size=-1, act_dtype=act, source=src)
    if scheme.startswith("FP8"):
        return WeightFormat("fp8_w8a8", bits=8, group_size=-1, act_dtype=act, source=src)
    if scheme == "NVFP4":
        return WeightFormat("nvfp4", bits=4, group_size=16, act_dtype=act, source=src)
    return WeightFormat("unknown", source=src, act_dtype=act)
