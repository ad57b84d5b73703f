"""Resolve a recipe against one model's architecture: group size, ignore list, SmoothQuant mappings.

Pure Python over config.json, so it runs (and is tested) without llm-compressor. The result carries the exact
llm-compressor recipe YAML that the quantize worker hands to `oneshot`, and a record of every decision with
its reason, which goes into the manifest and the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from bot.recipes import Recipe

# SmoothQuant needs a layer that precedes the balanced ones and whose output scale can absorb the smoothing.
_PRE_NORM = [
    [["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"],
    [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"],
]
_ATTN_ONLY = [[["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"]]
# Post-norm blocks (Olmo 2/3) normalise after attention and MLP: no norm precedes q/k/v or gate/up.
# up_proj feeds down_proj through an elementwise product, so it can absorb the scale; v_proj -> o_proj
# cannot under grouped-query attention (the heads are shared), so it is not used.
_POST_NORM = [[["re:.*down_proj"], "re:.*up_proj"]]

SMOOTHQUANT_MAPPINGS: dict[str, tuple[list, str]] = {
    **{a: (_PRE_NORM, "pre-norm decoder: input_layernorm -> q/k/v, post_attention_layernorm -> gate/up") for a in (
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GraniteForCausalLM",
        "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM", "SmolLM3ForCausalLM")},
    **{a: (_ATTN_ONLY, "mixture of experts: attention only (experts are routed per token)") for a in (
        "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM")},
    **{a: (_POST_NORM, "post-norm decoder: up_proj -> down_proj only (no norm precedes q/k/v or gate/up)") for a in (
        "Olmo2ForCausalLM", "Olmo3ForCausalLM")},
}

# Presets whose group size can be changed (llm-compressor preset -> explicit weights spec).
_GROUP_PRESETS: dict[str, dict[str, Any]] = {
    "W4A16": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "dynamic": False},
    "W4A16_ASYM": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "dynamic": False},
}
_CANDIDATE_GROUPS = (128, 64, 32, 16)


@dataclass(frozen=True)
class ResolvedRecipe:
    recipe: Recipe
    architecture: str
    group_size: int | None
    ignore: list[str]
    smoothquant_mappings: list | None
    samples: int | None
    seq_len: int | None
    llmcompressor_yaml: str
    decisions: dict[str, Any] = field(default_factory=dict)

    def manifest_view(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "group_size": self.group_size,
            "ignore": self.ignore,
            "smoothquant_mappings": self.smoothquant_mappings,
            **self.decisions,
        }


def linear_in_features(config: dict[str, Any]) -> dict[str, int]:
    """In-features of the decoder's linear layers, from config.json alone."""
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    heads = int(text.get("num_attention_heads", 1))
    head_dim = int(text.get("head_dim") or hidden // heads)
    feats = {"q/k/v/gate/up_proj": hidden, "o_proj": heads * head_dim}
    if text.get("intermediate_size"):
        feats["down_proj"] = int(text["intermediate_size"])
    if text.get("moe_intermediate_size"):
        feats["experts.down_proj"] = int(text["moe_intermediate_size"])
    return feats


def _group_size(recipe: Recipe, config: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    wanted = recipe.group_size
    if wanted is None or recipe.scheme == "NVFP4":
        return wanted, {}
    feats = linear_in_features(config)
    if all(v % wanted == 0 for v in feats.values()):
        return wanted, {}
    for g in _CANDIDATE_GROUPS:
        if g < wanted and all(v % g == 0 for v in feats.values()):
            bad = {k: v for k, v in feats.items() if v % wanted}
            return g, {"group_size_fallback": {
                "requested": wanted, "applied": g,
                "reason": f"in-features not divisible by {wanted}: " + ", ".join(f"{k}={v}" for k, v in bad.items()),
            }}
    raise ValueError(f"no group size in {_CANDIDATE_GROUPS} divides every in-feature {feats}")


def _ignore(recipe: Recipe, config: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    ignore = list(recipe.ignore)
    why: dict[str, str] = {"lm_head": "output projection kept in full precision"}
    text = config.get("text_config") or config
    if any(text.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        for pat in ("re:.*mlp.gate$", "re:.*router$", "re:.*shared_expert_gate$"):
            ignore.append(pat)
            why[pat] = "mixture-of-experts router kept in full precision"
    if config.get("vision_config") is not None:
        for pat in ("re:.*vision_tower.*", "re:.*visual.*", "re:.*multi_modal_projector.*"):
            ignore.append(pat)
            why[pat] = "vision encoder kept in full precision"
    return list(dict.fromkeys(ignore)), why


def _scheme_args(scheme: str, group_size: int | None, default_group: int | None) -> dict[str, Any]:
    if group_size is None or group_size == default_group or scheme not in _GROUP_PRESETS:
        return {"scheme": scheme}
    weights = dict(_GROUP_PRESETS[scheme], group_size=group_size)
    return {"config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}


def resolve(recipe: Recipe, config: dict[str, Any], *, samples: int | None = None, seq_len: int | None = None) -> ResolvedRecipe:
    arch = (config.get("architectures") or ["?"])[0]
    group, decisions = _group_size(recipe, config)
    ignore, ignore_why = _ignore(recipe, config)
    decisions["ignore_reasons"] = ignore_why
    mappings = None
    modifiers: dict[str, Any] = {}
    default_group = 128 if recipe.scheme.startswith("W4A16") else None
    for spec in recipe.modifiers:
        args = spec.model_dump(exclude={"type"}, exclude_none=True)
        if spec.type == "SmoothQuantModifier":
            if arch in SMOOTHQUANT_MAPPINGS:
                mappings, reason = SMOOTHQUANT_MAPPINGS[arch]
                args["mappings"] = mappings
                decisions["smoothquant"] = {"applied": True, "reason": reason}
            else:
                decisions["smoothquant"] = {"applied": False, "reason": f"no known SmoothQuant mapping for {arch}: "
                                            "smoothing skipped, GPTQ alone quantizes the weights"}
                continue
            args["ignore"] = list(ignore)
        elif spec.type == "AWQModifier":
            decisions["awq_mappings"] = f"llm-compressor's AWQ mapping registry for {arch} (default mappings if absent)"
        else:
            scheme = args.pop("scheme", None)
            if scheme is not None:
                args.update(_scheme_args(scheme, group, default_group))
            args = {"targets": ["Linear"], "ignore": list(ignore), **args}
        modifiers[spec.type] = args
    cal = recipe.calibration
    samples = samples or (cal.samples if cal else None)
    seq_len = seq_len or (cal.seq_len if cal else None)
    text = yaml.safe_dump({"quant_stage": {"quant_modifiers": modifiers}}, sort_keys=False, default_flow_style=None)
    return ResolvedRecipe(recipe, arch, group, ignore, mappings, samples if cal else None,
                          seq_len if cal else None, text, decisions)
