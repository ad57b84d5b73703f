"""What one `bot validate` call measures (its plan), and whether an earlier measurement already is that.

The plan is decided once per call from the settings and the serve environment; `is_current` compares a stored
record with it, so that a rerun skips what is done, resumes what is half done and redoes what was measured
differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.clients.serve_env import ServeEnv, choose_backend, probe, speed_label
from bot.config import WHOLE_TASK, Settings, ValidateSettings
from bot.manifest import AccuracyRecord, Status, ValidateRecord
from bot.stages.validate.engine_errors import contended

BUNDLED_TASKS_DIR = Path(__file__).resolve().parents[2] / "data" / "tasks"
BUNDLED_TASKS = ["bot_mc_facts", "bot_wikitext_mini"]
# Speed on CPU is a smoke measurement: tiny lengths, labelled "CPU", never compared with GPU figures.
CPU_SPEED = {"batch1_input_len": 32, "batch1_output_len": 16, "batch1_runs": 2, "batched_input_len": 32,
             "batched_output_len": 16, "batched_num_prompts": 4}


@dataclass(frozen=True)
class Plan:
    """Everything decided once per `bot validate` call."""

    backend: str
    device: str
    label: str
    tasks: list[str]
    limit: int | None
    num_fewshot: int | None
    include_paths: list[str]
    env: ServeEnv
    prompts: list[str]
    max_new_tokens: int
    speed: dict[str, Any]  # what the validate worker is asked for (capped on CPU; with the dtype)
    dtype: str = "auto"  # what the base and every variant compute in for generations, speed and lm-eval
    cpu_threads: int | None = None  # torch threads of every worker of the call on a CPU (None on a GPU)


def compute_dtype(device: str, bf16_only: bool = False) -> str:
    """One dtype for the base and every variant of a call (paired numbers need one). On a GPU the checkpoint's own
    ("auto"). On a CPU float32: CPUs without native bfloat16 matmul (AVX2 only, as this project's 2-core machines)
    run bf16 products about 8.5 times slower than float32 (18.5 vs 157 GFLOP/s for 256x576 @ 576x1536), and
    float32 holds every bf16 weight exactly. bfloat16 when the run holds a checkpoint that transformers reloads
    only in bf16 (NVFP4): then base and variants all run in it."""
    if device != "cpu":
        return "auto"
    return "bfloat16" if bf16_only else "float32"


def plan_for(settings: Settings, gpu_memory_utilization: float | None = None, bf16_only: bool = False) -> Plan:
    """The plan of one call. `gpu_memory_utilization`: the share of the GPU the vLLM engines get in this call,
    when `bot publish` planned it (bot.stages.memplan: quantize workers hold the rest); it is part of what the
    speed measurement asked for, so a model measured at another share is measured again. `bf16_only`: the run
    holds a checkpoint that reloads only in bfloat16 (`compute_dtype`); the dtype is part of what the speed and
    accuracy measurements asked for, so a model measured in another is measured again."""
    v = settings.validate
    env = probe(settings.serve_python)
    backend, device = choose_backend(v.backend, env, settings.device)
    tasks = list(v.tasks)
    if device == "cpu" and tasks == ValidateSettings().tasks:
        tasks = list(BUNDLED_TASKS)  # the GPU suite is hours on a CPU; CI and laptops get the bundled tasks
    includes = [str(BUNDLED_TASKS_DIR)] + ([str(Path(v.include_path).resolve())] if v.include_path else [])
    speed = v.speed.model_dump()
    if device == "cpu":
        speed.update({k: min(int(speed[k]), cap) for k, cap in CPU_SPEED.items()})
    if gpu_memory_utilization is not None and backend == "vllm":
        speed["gpu_memory_utilization"] = gpu_memory_utilization
    dtype = compute_dtype(device, bf16_only)
    speed["dtype"] = dtype
    threads = settings.cpu_worker_threads() if device == "cpu" else None
    if threads is not None:
        speed["threads"] = threads  # a CPU speed figure depends on it: one taken with another count is taken again
    limit = None if v.limit == WHOLE_TASK else v.limit
    return Plan(backend, device, speed_label(backend, device), tasks, limit, v.num_fewshot, includes, env,
                list(v.prompts), v.max_new_tokens, speed, dtype, threads)


def eval_matches(acc: AccuracyRecord | None, plan: Plan) -> bool:
    if not plan.tasks:  # accuracy not requested (`--tasks none`): nothing to redo
        return True
    return (acc is not None and acc.error is None and acc.backend == plan.backend and acc.dtype == plan.dtype
            and _covers(acc, plan.limit)
            and acc.num_fewshot == plan.num_fewshot and sorted(t.task for t in acc.tasks) == sorted(plan.tasks))


def _covers(acc: AccuracyRecord, limit: int | None) -> bool:
    """The evaluation is the plan's, or a later round of it on more documents (the gate asked for them)."""
    if acc.limit == limit:
        return True
    return acc.rounds > 1 and limit is not None and (acc.limit is None or acc.limit > limit)


def runtime_matches(rec: ValidateRecord | None, plan: Plan) -> bool:
    """Load, generations and speed were measured as this plan would measure them."""
    return (rec is not None and rec.backend == plan.backend and rec.load is not None and rec.load.ok
            and rec.speed is not None and rec.speed.label == plan.label
            and rec.speed.settings.get("requested") == plan.speed
            and [g.prompt for g in rec.generations] == plan.prompts)


def is_current(rec: ValidateRecord | None, plan: Plan) -> bool:
    """Done with the same backend and the same measurements: nothing to redo. A model that did not load stays
    rejected until --force, unless it failed to start while quantize workers shared the GPU and the engine's log
    blames the memory other processes moved: that is measured again (by then with the GPU to itself)."""
    if rec is None or rec.status != Status.done or rec.backend != plan.backend:
        return False
    if rec.load is not None and not rec.load.ok:
        return not (rec.concurrent_with and contended(rec.load.error))
    return runtime_matches(rec, plan) and eval_matches(rec.accuracy, plan)
