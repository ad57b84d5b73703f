"""The serving search plan: which vLLM 0.26 configurations apply to each recipe's format on each GPU, why the rest
are left out, and the time-budget cut-off."""

from __future__ import annotations

import pytest

from bot.config import ServeSearchSettings, load_settings
from bot.errors import ConfigError
from bot.recipes import load_recipes
from bot.stages.serve.formats import WeightFormat, read_format
from bot.stages.serve.plan import cut_to_budget, estimate_s, parse_cc, plan_search

H100, A100, B200 = (9, 0), (8, 0), (10, 0)
S = ServeSearchSettings()

# The checkpoints' quantization_config groups as llm-compressor 0.14 wrote them (benchmarks/quantize-2026-11-24.json)
W = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True, "actorder": "static"}
GROUPS = {
    "w4a16-gptq": ("pack-quantized", W, None),
    "w4a16-awq": ("pack-quantized", dict(W, symmetric=False, actorder=None), None),
    "w8a8-int8": ("int-quantized", {"num_bits": 8, "type": "int", "strategy": "channel", "group_size": None,
                                    "symmetric": True}, {"num_bits": 8, "type": "int", "strategy": "token"}),
    "fp8-dynamic": ("float-quantized", {"num_bits": 8, "type": "float", "strategy": "channel", "group_size": None,
                                        "symmetric": True}, {"num_bits": 8, "type": "float", "strategy": "token"}),
    "nvfp4": ("nvfp4-pack-quantized", {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                                       "symmetric": True},
              {"num_bits": 4, "type": "float", "strategy": "tensor_group"}),
}


def qc(variant: str) -> dict:
    fmt, weights, acts = GROUPS[variant]
    return {"format": fmt, "config_groups": {"group_0": {"format": fmt, "weights": weights,
                                                         "input_activations": acts}}}


def ids(plan) -> list[str]:
    return [c.id for c in plan.configs]


def test_formats_come_from_the_checkpoint():
    assert read_format(qc("w4a16-gptq"), None, "bfloat16") == WeightFormat(
        "wna16", bits=4, group_size=128, source="quantization_config, format pack-quantized")
    assert read_format(qc("w4a16-awq"), None, "bfloat16").zero_points
    assert read_format(qc("w8a8-int8"), None, "bfloat16").family == "int8_w8a8"
    fp8 = read_format(qc("fp8-dynamic"), None, "bfloat16")
    assert (fp8.family, fp8.per_tensor) == ("fp8_w8a8", False)
    assert read_format(qc("nvfp4"), None, "bfloat16").family == "nvfp4"
    assert read_format(None, None, "bfloat16").family == "bf16"
    assert read_format(qc("w4a16-gptq"), None, "float16").act_dtype == "float16"
    mixed = qc("w4a16-gptq")
    mixed["config_groups"]["group_1"] = qc("fp8-dynamic")["config_groups"]["group_0"]
    assert read_format(mixed, None, "bfloat16").family == "unknown"


def test_the_typed_recipe_only_when_the_checkpoint_recorded_nothing():
    book = load_recipes()
    awq = read_format({}, book.get("w4a16-awq"), "bfloat16")
    assert (awq.family, awq.bits, awq.group_size, awq.zero_points) == ("wna16", 4, 128, True)
    assert awq.source.startswith("recipe w4a16-awq")
    for rid, family in (("w4a16-gptq", "wna16"), ("w8a8-int8", "int8_w8a8"), ("fp8-dynamic", "fp8_w8a8"),
                        ("nvfp4", "nvfp4")):
        assert read_format(None, book.get(rid), "bfloat16").family == family
        assert read_format(qc(rid), book.get(rid), "bfloat16").source.startswith("quantization_config")


def test_w4a16_on_hopper_searches_marlin_and_triton_against_machete():
    plan = plan_search(read_format(qc("w4a16-gptq"), None, "bfloat16"), H100, {}, S)
    assert plan.default_kernel == "MacheteLinearKernel"
    assert ids(plan) == ["default", "default#2", "kv-cache-dtype=fp8", "linear-backend=marlin",
                         "linear-backend=triton"]
    marlin = plan.configs[3]
    assert marlin.flags == ["--linear-backend", "marlin"] and marlin.engine == {"linear_backend": "marlin"}
    assert marlin.expected_kernel == "MarlinLinearKernel" and "MacheteLinearKernel first" in marlin.why
    dropped = {d.label: d.reason for d in plan.dropped}
    assert "FP8 activations" in dropped["CutlassW4A8LinearKernel"]
    assert "8.x only" in dropped["AllSparkLinearKernel"]
    assert "float16 activations only" in dropped["ExllamaLinearKernel"]
    assert "conch package" in dropped["ConchLinearKernel"] and "humming package" in dropped["HummingLinearKernel"]
    assert "MacheteLinearKernel" not in dropped  # the default: measured by the defaults rows


def test_w4a16_elsewhere_and_with_optional_packages():
    awq = read_format(qc("w4a16-awq"), None, "bfloat16")
    ampere = plan_search(awq, A100, {}, S)
    assert ampere.default_kernel == "MarlinLinearKernel" and "linear-backend=triton" in ids(ampere)
    assert "needs compute capability 9.0" in {d.label: d.reason for d in ampere.dropped}["MacheteLinearKernel"]
    blackwell = plan_search(awq, B200, {"conch": True}, S)
    assert blackwell.default_kernel == "MarlinLinearKernel"
    assert "linear-backend=conch" in ids(blackwell) and "9.x only" in {
        d.label: d.reason for d in blackwell.dropped}["MacheteLinearKernel"]
    fp16 = plan_search(read_format(qc("w4a16-gptq"), None, "float16"), H100, {}, S)
    assert "linear-backend=exllama" in ids(fp16)  # Exllama applies to float16 models


def test_act_order_checkpoints_lose_the_kernels_that_cannot_reorder():
    grouped = WeightFormat("wna16", bits=4, group_size=128, act_order=True)
    plan = plan_search(grouped, H100, {"humming": True}, S)
    dropped = {d.label: d.reason for d in plan.dropped}
    assert "g_idx" in dropped["TritonW4A16LinearKernel"] and "g_idx" in dropped["HummingLinearKernel"]
    assert "linear-backend=marlin" in ids(plan)


def test_int8_fp8_nvfp4_and_the_base():
    int8 = plan_search(read_format(qc("w8a8-int8"), None, "bfloat16"), H100, {}, S)
    assert int8.default_kernel == "CutlassInt8ScaledMMLinearKernel" and "linear-backend=triton" in ids(int8)
    fp8 = plan_search(read_format(qc("fp8-dynamic"), None, "bfloat16"), H100, {}, S)
    assert fp8.default_kernel == "CutlassFP8ScaledMMLinearKernel" and ids(fp8)[-1] == "linear-backend=torch"
    reasons = {d.label: d.reason for d in fp8.dropped}
    assert "per-tensor" in reasons["PerTensorTorchFP8ScaledMMLinearKernel"]
    assert "below compute capability 8.9" in reasons["MarlinFP8ScaledMMLinearKernel"]
    fp8_ampere = plan_search(read_format(qc("fp8-dynamic"), None, "bfloat16"), A100, {}, S)
    assert fp8_ampere.family == "fp8_w8a16" and fp8_ampere.default_kernel == "MarlinFP8ScaledMMLinearKernel"
    nvfp4 = plan_search(read_format(qc("nvfp4"), None, "bfloat16"), H100, {"flashinfer": True}, S)
    assert nvfp4.default_kernel == "MarlinNvFp4LinearKernel"  # weight-only on Hopper: no FP4 tensor cores
    assert ids(nvfp4) == ["default", "default#2", "kv-cache-dtype=fp8"]
    assert "testing" in {d.label: d.reason for d in nvfp4.dropped}["EmulationNvFp4LinearKernel"]
    native = plan_search(read_format(qc("nvfp4"), None, "bfloat16"), B200, {}, S)
    assert native.default_kernel == "CutlassNvFp4LinearKernel"
    assert "another model" in {d.label: d.reason for d in native.dropped}["MarlinNvFp4LinearKernel"]
    base = plan_search(read_format(None, None, "bfloat16"), H100, {}, S)
    assert ids(base) == ["default", "default#2", "kv-cache-dtype=fp8"] and base.default_kernel is None


def test_settings_shape_the_plan():
    fmt = read_format(qc("w4a16-gptq"), None, "bfloat16")
    lean = ServeSearchSettings(default_engines=1, kv_cache_dtypes=["auto"], kernels=False)
    plan = plan_search(fmt, H100, {}, lean)
    assert ids(plan) == ["default"] and not plan.configs[0].long_context
    assert {"linear-backend=marlin", "linear-backend=triton"} <= {d.id for d in plan.dropped}
    kv = plan_search(fmt, H100, {}, ServeSearchSettings(kv_cache_dtypes=["auto", "fp8_e5m2"]))
    fp8 = next(c for c in kv.configs if c.id == "kv-cache-dtype=fp8_e5m2")
    assert fp8.changes_numerics and fp8.long_context and fp8.engine == {"kv_cache_dtype": "fp8_e5m2"}
    assert plan_search(fmt, None, {}, S).default_kernel is None  # no GPU: only the defaults and the KV dtypes
    assert parse_cc("9.0") == (9, 0) and parse_cc(None) is None and parse_cc("x") is None


def test_budget_cut_off_keeps_order_and_records_what_it_skipped():
    plan = plan_search(read_format(qc("w4a16-gptq"), None, "bfloat16"), H100, {}, S)
    est = lambda c: estimate_s(c, S)  # noqa: E731
    assert est(plan.configs[0]) == S.engine_start_s + S.bench_s + S.long_bench_s
    assert est(plan.configs[3]) == S.engine_start_s + S.bench_s  # kernels: no long-context point
    admitted, skipped = cut_to_budget(plan.configs, 600, 0, est)
    assert [c.id for c in admitted] == ["default", "default#2"]  # 250 + 250; the KV run (250) no longer fits
    assert [s.id for s in skipped] == ["kv-cache-dtype=fp8", "linear-backend=marlin", "linear-backend=triton"]
    assert all(s.kind == "budget" and "budget_s=600" in s.reason for s in skipped)
    assert admitted[0].estimate_s == 250
    admitted, skipped = cut_to_budget(plan.configs, 700, 0, est)
    assert [c.id for c in admitted] == ["default", "default#2", "linear-backend=marlin"]  # a cheaper later one fits
    admitted, _ = cut_to_budget(plan.configs, 60, 0, est)
    assert [c.id for c in admitted] == ["default"]  # the defaults always run first
    admitted, skipped = cut_to_budget(plan.configs[1:2], 600, 500, est, first_always=False)
    assert admitted == [] and "100 s left" in skipped[0].reason
    admitted, _ = cut_to_budget(plan.configs[:1], 600, 500, est)
    assert [c.id for c in admitted] == ["default"]  # the baseline is admitted whatever is left


def test_search_settings_are_validated_and_merged():
    s = load_settings(environ={"BOT_VALIDATE__SERVE_SEARCH__ENABLED": "true",
                               "BOT_VALIDATE__SERVE_SEARCH__BUDGET_S": "1200"})
    assert s.validate.serve_search.enabled and s.validate.serve_search.budget_s == 1200
    assert load_settings(environ={}).validate.serve_search.enabled is False  # off unless asked
    with pytest.raises(ConfigError, match="BOT_VALIDATE__SERVE_SEARCH__KV_CACHE_DTYPES"):
        load_settings(environ={"BOT_VALIDATE__SERVE_SEARCH__KV_CACHE_DTYPES": "[auto, int3]"})
    with pytest.raises(ConfigError):
        load_settings(environ={"BOT_VALIDATE__SERVE_SEARCH__RUNS": "1"})
