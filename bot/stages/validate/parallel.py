"""Tensor-parallel size for vLLM: the smallest of 1, 2, 4, 8 GPUs that the model splits over and fits on (pure).

Per GPU, vLLM needs its share of the weights, the KV cache of at least one full-length sequence (it refuses to
start otherwise) and room for activations, CUDA graphs and NCCL buffers (`reserve`), all inside
`gpu_memory_utilization` of that GPU. Embeddings and the LM head are sharded too, so weights/tp is the share.
Heads follow vLLM's rule: attention heads % tp == 0, and KV heads % tp == 0 or tp % KV heads == 0 (replicas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from bot.errors import ModelError

GIB = 2**30
TP_SIZES = (1, 2, 4, 8)
DEFAULT_RESERVE_GIB = 2.0  # activations, CUDA graphs, NCCL buffers per GPU (validate.tensor_parallel_reserve_gib)


def _first(cfg: dict[str, Any], *keys: str) -> int | None:
    return next((cfg[k] for k in keys if isinstance(cfg.get(k), int) and cfg[k] > 0), None)


@dataclass(frozen=True)
class ModelShape:
    heads: int | None = None
    kv_heads: int | None = None
    layers: int | None = None
    head_dim: int | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From config.json; the text config of a multimodal wrapper first."""
        cfg = config.get("text_config") or config
        heads = _first(cfg, "num_attention_heads", "n_head", "num_heads")
        kv = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num") or heads
        hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
        head_dim = _first(cfg, "head_dim") or (hidden // heads if hidden and heads else None)
        return cls(heads, kv, _first(cfg, "num_hidden_layers", "n_layer", "num_layers"), head_dim)

    def splits(self, tp: int) -> bool:
        if self.heads and self.heads % tp:
            return False
        return not self.kv_heads or self.kv_heads % tp == 0 or tp % self.kv_heads == 0

    def kv_bytes(self, tokens: int | None, tp: int, dtype_bytes: int = 2) -> int:
        """KV cache of one sequence of `tokens` on one GPU (K and V, every layer); 0 when the shape is unknown."""
        if not (tokens and self.kv_heads and self.layers and self.head_dim):
            return 0
        return 2 * self.layers * max(self.kv_heads // tp, 1) * self.head_dim * dtype_bytes * tokens

    def describe(self) -> str:
        return f"{self.heads} attention heads / {self.kv_heads} KV heads" if self.heads else "unknown heads"


def kv_dtype_bytes(kv_cache_dtype: str | None) -> int:
    return 1 if str(kv_cache_dtype or "").startswith("fp8") else 2


@dataclass(frozen=True)
class TPChoice:
    size: int
    reason: str
    source: str  # "auto" (chosen here), "setting" (validate.tensor_parallel_size) or "backend" (not vLLM)

    def record(self) -> dict[str, Any]:
        return {"size": self.size, "source": self.source, "reason": self.reason}


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def choose_tp(weights_bytes: int | None, shape: ModelShape, gpus: Sequence[int], utilization: float, *,
              max_len: int | None = None, kv_bytes_per_value: int = 2,
              reserve_bytes: int = int(DEFAULT_RESERVE_GIB * GIB),
              requested: int | None = None) -> TPChoice:
    """`gpus`: memory of each GPU vLLM sees (bytes, in device order; tp=k uses the first k). Raises ModelError
    (one line with a hint) when no size fits, or when `requested` exceeds the GPUs or does not split the heads."""

    def need(tp: int) -> int:
        return math.ceil((weights_bytes or 0) / tp) + shape.kv_bytes(max_len, tp, kv_bytes_per_value) + reserve_bytes

    def usable(tp: int) -> float:
        return min(gpus[:tp]) * utilization

    def fit_text(tp: int) -> str:
        return (f"{_gib(weights_bytes or 0)} GiB of weights over {tp} x {_gib(min(gpus[:tp]))} GiB at {utilization:g}"
                f" ({_gib(need(tp))} GiB per GPU with KV cache and reserve, {_gib(usable(tp))} GiB usable)")

    if requested is not None:
        if requested > len(gpus):
            raise ModelError(f"validate.tensor_parallel_size={requested} but the serve environment sees {len(gpus)} "
                             f"GPU(s)", hint="lower validate.tensor_parallel_size, or unset it to choose automatically")
        if not shape.splits(requested):
            ok = [t for t in TP_SIZES if t <= len(gpus) and shape.splits(t)]
            raise ModelError(f"validate.tensor_parallel_size={requested} does not split {shape.describe()}",
                             hint=f"use one of {ok} (vLLM needs heads % tp == 0 and KV heads % tp == 0 or "
                                  f"tp % KV heads == 0), or unset it")
        if not weights_bytes:
            return TPChoice(requested, f"tp={requested}: validate.tensor_parallel_size", "setting")
        warn = "" if need(requested) <= usable(requested) else "; does not fit by the estimate, kept as set"
        return TPChoice(requested, f"tp={requested} (validate.tensor_parallel_size): {fit_text(requested)}{warn}",
                        "setting")
    if not gpus:
        return TPChoice(1, "tp=1: no GPU seen", "auto")
    if not weights_bytes:
        return TPChoice(1, "tp=1: weights size unknown (no safetensors)", "auto")

    def skipped(below: int) -> str:
        bad = [str(t) for t in TP_SIZES if t < below and not shape.splits(t)]
        return f"; tp={','.join(bad)} skipped ({shape.describe()})" if bad else ""

    for tp in TP_SIZES:
        if tp <= len(gpus) and shape.splits(tp) and need(tp) <= usable(tp):
            return TPChoice(tp, f"tp={tp}: {fit_text(tp)}{skipped(tp)}", "auto")
    note = skipped(len(gpus) + 1)
    largest = max(t for t in TP_SIZES if t <= len(gpus) and shape.splits(t))
    would = next((t for t in TP_SIZES if shape.splits(t) and need(t) <= min(gpus) * utilization), None)
    kv = f", the KV cache of one {max_len}-token sequence" if shape.kv_bytes(max_len, 1) else ""
    todo = f"run on a host with {would} such GPUs (tp={would})" if would else "use larger GPUs (8 are not enough)"
    raise ModelError(f"{_gib(weights_bytes)} GiB of weights do not fit the GPUs seen ({len(gpus)} x "
                     f"{_gib(min(gpus))} GiB at gpu_memory_utilization {utilization:g}): at tp={largest} each GPU "
                     f"needs {_gib(need(largest))} GiB (its share of the weights{kv}, {_gib(reserve_bytes)} GiB "
                     f"reserve) but {_gib(usable(largest))} GiB are usable{note}",
                     hint=f"{todo}, validate a smaller variant, or lower validate.speed.max_model_len or "
                          f"validate.tensor_parallel_reserve_gib")
