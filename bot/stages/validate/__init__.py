"""The validate stage: load, generate, speed, fidelity and lm-eval for the base and each variant; the gate.

plan (what to measure) -> run (the workers, per model) -> compare (pure arithmetic and the gate);
parallel (tensor-parallel size), engine_errors (vLLM start-up root causes).
"""

from bot.stages.validate.run import validate_run

__all__ = ["validate_run"]
