"""The six recipes as data: ids, suffixes, parameters, overrides and their errors, per-architecture resolution."""

from __future__ import annotations

import pytest
import yaml

from bot.errors import ConfigError, UnknownRecipeError
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.recipes.resolve import resolve

LLAMA = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32, "intermediate_size": 14336}


def test_six_builtin_recipes():
    book = load_recipes()
    assert book.ids() == list(BUILTIN_ORDER)
    suffixes = {r.id: r.suffix for r in book}
    assert suffixes == {
        "w4a16-gptq": "-W4A16-GPTQ", "w4a16-awq": "-W4A16-AWQ", "w4a16-autoround": "-W4A16-AutoRound",
        "w8a8-int8": "-W8A8-INT8", "fp8-dynamic": "-FP8-Dynamic", "nvfp4": "-NVFP4",
    }
    assert book.get("fp8-dynamic").calibration is None
    assert all(r.calibration is not None for r in book if r.id != "fp8-dynamic")
    assert all("lm_head" in r.ignore for r in book)
    ar = book.get("w4a16-autoround").modifiers[0]
    assert ar.type == "AutoRoundModifier" and ar.iters == 200
    w8 = book.get("w8a8-int8").modifiers
    assert [m.type for m in w8] == ["SmoothQuantModifier", "GPTQModifier"] and w8[0].smoothing_strength == 0.8


def test_llmcompressor_yaml_is_exact():
    r = resolve(load_recipes().get("w4a16-gptq"), LLAMA)
    mods = yaml.safe_load(r.llmcompressor_yaml)["quant_stage"]["quant_modifiers"]
    assert mods["GPTQModifier"] == {"targets": ["Linear"], "ignore": ["lm_head"], "dampening_frac": 0.01,
                                    "block_size": 128, "actorder": "static", "scheme": "W4A16"}
    assert r.group_size == 128 and "group_size_fallback" not in r.decisions


def test_group_size_fallback_is_recorded():
    smol = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
            "intermediate_size": 1536}
    r = resolve(load_recipes().get("w4a16-gptq"), smol)
    assert r.group_size == 64
    assert r.decisions["group_size_fallback"]["requested"] == 128
    assert "576" in r.decisions["group_size_fallback"]["reason"]
    weights = yaml.safe_load(r.llmcompressor_yaml)["quant_stage"]["quant_modifiers"]["GPTQModifier"]["config_groups"]["group_0"]["weights"]
    assert weights["group_size"] == 64 and weights["num_bits"] == 4 and weights["symmetric"] is True


def test_smoothquant_mappings_per_architecture():
    book = load_recipes()
    olmo = dict(LLAMA, architectures=["Olmo3ForCausalLM"])
    r = resolve(book.get("w8a8-int8"), olmo)
    assert r.smoothquant_mappings == [[["re:.*down_proj"], "re:.*up_proj"]]
    assert "post-norm" in r.decisions["smoothquant"]["reason"]
    r = resolve(book.get("w8a8-int8"), LLAMA)
    assert r.smoothquant_mappings[0][1] == "re:.*input_layernorm"
    unknown = resolve(book.get("w8a8-int8"), dict(LLAMA, architectures=["FancyForCausalLM"]))
    assert unknown.decisions["smoothquant"]["applied"] is False
    assert "SmoothQuantModifier" not in unknown.llmcompressor_yaml and "GPTQModifier" in unknown.llmcompressor_yaml


def test_moe_and_vision_ignores():
    moe = dict(LLAMA, architectures=["Qwen3MoeForCausalLM"], num_experts=64, moe_intermediate_size=768)
    r = resolve(load_recipes().get("fp8-dynamic"), moe)
    assert "re:.*mlp.gate$" in r.ignore and r.ignore[0] == "lm_head"


def test_overrides_and_user_recipe(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({
        "overrides": {"w4a16-gptq": {"group_size": 64, "samples": 128, "dampening_frac": 0.05},
                      "w4a16-autoround": {"iters": 20, "lr": 0.005}},
        "recipes": [{"id": "w8a16-rtn", "name": "W8A16", "suffix": "-W8A16", "scheme": "W8A16", "algorithm": "RTN",
                     "summary": "8-bit weights.", "format": "pack-quantized", "calibration": None,
                     "modifiers": [{"type": "QuantizationModifier", "scheme": "W8A16"}],
                     "hardware": {"native_min_capability": "8.0"}}],
    }))
    book = load_recipes(f)
    g = book.get("w4a16-gptq")
    assert g.group_size == 64 and g.calibration.samples == 128 and g.modifiers[0].dampening_frac == 0.05
    assert book.get("w4a16-autoround").modifiers[0].lr == 0.005
    assert book.get("w8a16-rtn").ignore == ["lm_head"]
    assert len(book) == 7


@pytest.mark.parametrize("content, match", [
    ({"overrides": {"w4a16-gtpq": {"group_size": 64}}}, "did you mean 'w4a16-gptq'"),
    ({"overrides": {"w4a16-gptq": {"groupsize": 64}}}, "unknown parameter 'groupsize'"),
    ({"overrides": {"fp8-dynamic": {"samples": 64}}}, "uses no calibration data"),
    ({"overrides": {"w4a16-gptq": {"iters": 5}}}, "does not apply to w4a16-gptq"),
    ({"overrides": {"w4a16-gptq": {"dampening_frac": 3}}}, "dampening_frac"),
    ({"recipes": [{"id": "x", "name": "x"}]}, "recipe 'x'"),
    ({"oops": 1}, "top level"),
])
def test_bad_overrides(tmp_path, content, match):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=match):
        load_recipes(f)


def test_unknown_recipe_suggests():
    with pytest.raises(UnknownRecipeError) as exc:
        load_recipes().get("fp8")
    assert "fp8-dynamic" in exc.value.one_line()


def test_autoround_packs_its_calibration_rows(tmp_path):
    book = load_recipes()
    assert book.get("w4a16-autoround").calibration.pack is True
    assert book.get("w4a16-gptq").calibration.pack is False
    user = tmp_path / "r.yaml"
    user.write_text(yaml.safe_dump({"overrides": {"w4a16-autoround": {"pack": False}, "w4a16-gptq": {"pack": True}}}))
    book = load_recipes(user)
    assert book.get("w4a16-autoround").calibration.pack is False and book.get("w4a16-gptq").calibration.pack is True
    user.write_text(yaml.safe_dump({"overrides": {"fp8-dynamic": {"pack": True}}}))
    with pytest.raises(ConfigError, match="uses no calibration data"):
        load_recipes(user)


def test_packed_calibration_rows_have_one_length(tiny_llama):
    """AutoRound's fix: with `pack`, every row is exactly seq_len tokens (llm-compressor pads nothing) and starts
    where a conversation starts; without it, one conversation per row and the lengths vary."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from bot.workers.calibration import CalibrationCache

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    spec = {"file": str(Path(__file__).resolve().parents[2] / "bot" / "data" / "calibration.jsonl"), "seed": 42}
    cal = CalibrationCache(spec, tok)
    plain, plain_info = cal.get(16, 512)
    assert len({len(r) for r in plain["input_ids"]}) > 1 and plain_info["packed"] is False
    packed, info = cal.get(16, 128, pack=True)
    starts = {r[0] for r in plain["input_ids"]}  # a conversation's first token (the template's)
    assert len(packed) == info["samples"] == 16 and info["packed"] is True and info["tokens"] == 16 * 128
    assert {len(r) for r in packed["input_ids"]} == {128}
    assert len(starts) == 1 and {r[0] for r in packed["input_ids"]} == starts
    assert all(m == [1] * 128 for m in packed["attention_mask"])
    assert info["fingerprint"] != plain_info["fingerprint"]
    with pytest.raises(ValueError, match="lower seq_len or add calibration rows"):
        cal.get(4, 10**6, pack=True)
