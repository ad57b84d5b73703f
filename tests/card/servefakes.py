"""A serving search as the validate stage records it, for the synthetic run: the configurations come from the real
plan (bot.stages.serve.plan) for the format on an H100, the per-run numbers are synthetic, and the intervals,
choices and bandwidth limit are decided by the stage's own code (bot.stages.serve.run.decide)."""

from __future__ import annotations

from bot.config import ServeSearchSettings
from bot.manifest import ServeConfigResult, ServeSearchRecord
from bot.stages.serve.formats import WeightFormat
from bot.stages.serve.plan import plan_search
from bot.stages.serve.run import METHOD, decide

LENGTHS = {"batch1_input_len": 128, "batch1_output_len": 256, "batch1_runs": 5, "batched_input_len": 1024,
           "batched_output_len": 256, "batched_num_prompts": 256, "batched_runs": 3}
LONG = {"long_input_len": 16384, "long_output_len": 256, "long_num_prompts": 16, "long_runs": 3}
SETTINGS = {"gpu": "NVIDIA H100 80GB HBM3", "runs": 5, "speed": {"gpu_memory_utilization": 0.85,
                                                                  "max_model_len": 16648, "enforce_eager": False}}

# config id -> workload -> tokens/s per run (kernel reported)
BASE_RUNS = {
    "default": {"batch1": [152.1, 152.4, 152.3, 152.6, 152.2], "batched": [5118.0, 5121.4, 5122.1],
                "long_batch1": [131.0, 131.2, 130.9], "long_batched": [1502.0, 1498.7, 1500.3]},
    "default#2": {"batch1": [151.8, 152.0, 151.9, 152.1, 151.7], "batched": [5109.9, 5115.2, 5112.0],
                  "long_batch1": [130.6, 130.8, 130.7], "long_batched": [1495.1, 1497.0, 1494.4]},
    "kv-cache-dtype=fp8": {"batch1": [152.9, 153.1, 153.0, 152.8, 153.2], "batched": [5160.2, 5158.8, 5163.0],
                           "long_batch1": [139.8, 140.1, 139.9], "long_batched": [2301.5, 2296.0, 2299.4]},
}
VARIANT_RUNS = {
    "default": {"batch1": [242.0, 242.4, 242.1, 242.5, 242.0], "batched": [4862.0, 4866.9, 4864.6],
                "long_batch1": [198.2, 198.5, 198.0], "long_batched": [1702.4, 1699.8, 1701.1]},
    "default#2": {"batch1": [241.6, 241.9, 241.7, 242.0, 241.5], "batched": [4858.3, 4861.0, 4859.5],
                  "long_batch1": [197.9, 198.1, 197.8], "long_batched": [1697.0, 1698.4, 1696.2]},
    "kv-cache-dtype=fp8": {"batch1": [243.0, 242.7, 243.2, 242.9, 243.1], "batched": [4870.2, 4875.9, 4872.0],
                           "long_batch1": [221.4, 221.9, 221.6], "long_batched": [2650.3, 2644.9, 2648.8]},
    "linear-backend=marlin": {"batch1": [270.3, 270.8, 270.1, 270.6, 270.4], "batched": [3301.0, 3298.5, 3305.2]},
    "linear-backend=triton": {"batch1": [180.2, 181.0, 180.5, 180.9, 180.4], "batched": [4100.3, 4096.0, 4098.8]},
}
KERNELS = {"default": "MacheteLinearKernel", "linear-backend=marlin": "MarlinLinearKernel",
           "linear-backend=triton": "TritonW4A16LinearKernel"}


def serve_search(fmt: WeightFormat, runs: dict[str, dict[str, list[float]]], memory: int,
                 base: ServeSearchRecord | None, kernels: dict[str, str]) -> ServeSearchRecord:
    plan = plan_search(fmt, (9, 0), {}, ServeSearchSettings())
    record = ServeSearchRecord(method=METHOD, vllm="0.26.0", gpu=SETTINGS["gpu"], compute_capability="9.0",
                               format=fmt.describe(), settings=dict(SETTINGS), budget_s=900, skipped=list(plan.dropped),
                               searched_at="2026-11-03T11:02:00+00:00")
    for config in plan.configs:
        if config.id not in runs:
            continue
        kernel = kernels.get(config.id) or (kernels.get("default") if config.expected_kernel == plan.default_kernel
                                            else None)
        lengths = dict(LENGTHS, **(LONG if config.long_context else {}))
        record.configs.append(ServeConfigResult(
            **config.model_dump(), kernel=f"CompressedTensorsWNA16 -> {kernel} (x224)" if kernel else None,
            memory_bytes=memory, load_time_s=88.0, seconds=150.0 if config.long_context else 120.0, lengths=lengths,
            runs=runs[config.id]))
        record.spent_s += record.configs[-1].seconds or 0
    decide(record, base, base is None, memory)
    return record
