"""A synthetic but complete run directory: base + five variants, written with bot.manifest models (no torch).

Numbers are chosen to look like an 8B model on an H100 (see the GPU notes of the shared workspace):
  w4a16-gptq   passed, every number measured
  w4a16-awq    quantization failed (no checkpoint, nothing measured)
  w8a8-int8    passed, SmoothQuant applied
  fp8-dynamic  passed, data-free
  nvfp4        lm-eval failed (out of memory), gate failed, published with --force
The GPU run's base and w4a16-gptq also hold a serving search (tests/card/servefakes.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings
from bot.manifest import (
    AccuracyRecord, BaseManifest, BaseModelRecord, Batch1Speed, BatchedSpeed, CalibrationInfo, Comparison,
    FidelityRecord, GateDecision, GateState, Generation, Hardware, HardwareVerdict, LoadCheck, QuantizeRecord,
    SpeedRecord, Status, TaskComparison, TaskScore, ValidateRecord, VariantManifest, VariantValidateRecord,
)
from bot.recipes import load_recipes
from bot.recipes.resolve import resolve
from bot.rundir import RunDir, run_id_for
from bot.stages.quantize import applied_recipe
from bot.stages.serve.formats import WeightFormat
from bot.stages.validate.compare import hardware_compat
from servefakes import BASE_RUNS, KERNELS, VARIANT_RUNS, serve_search

BASE_ID = "acme/Llama-Demo-8B-Instruct"
REVISION = "0123456789abcdef0123456789abcdef01234567"
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
          "num_key_value_heads": 8, "intermediate_size": 14336, "num_hidden_layers": 32}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
H100 = Hardware(device="cuda", name="NVIDIA H100 80GB HBM3", count=1, driver="580.82.07", compute_capability="9.0",
                memory_bytes=85_520_809_984)
CPU = Hardware(device="cpu", name="AMD EPYC 9454", count=1)
VALIDATE_VERSIONS = {"vllm": "0.26.0", "lm-eval": "0.4.13", "torch": "2.9.0", "transformers": "4.57.1"}
QUANT_VERSIONS = {"python": "3.11.11", "torch": "2.9.0", "transformers": "4.57.1", "llmcompressor": "0.14.0.1",
                  "compressed-tensors": "0.19.0"}
PROMPTS = ["Explain in two sentences why the sky is blue.", "Write a Python function that returns the n-th Fibonacci number."]
BASE_OUTPUTS = [
    "Sunlight is scattered by the molecules of the air, and blue light is scattered far more than red.\n\n"
    "So the sky looks blue from every direction.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
]
BASE_SCORES = {"arc_challenge": ("acc_norm,none", 0.5520, 0.0145), "hellaswag": ("acc_norm,none", 0.7910, 0.0041),
               "gsm8k": ("exact_match,strict-match", 0.7680, 0.0116)}
LIMIT = 250
LM_EVAL = ("lm_eval --model vllm --model_args pretrained={model},dtype=auto,gpu_memory_utilization=0.85,max_model_len=4096 "
           "--tasks arc_challenge,hellaswag,gsm8k --limit 250 --batch_size auto --output_path {out}")
SPEED_SETTINGS = {"enforce_eager": False, "max_model_len": 4096, "gpu_memory_utilization": 0.85, "kv_cache_dtype": "auto"}


@dataclass(frozen=True)
class Measured:
    size: int
    scores: dict[str, float]  # task -> value
    decode: float
    ttft: float
    tpot: float
    batched: float
    memory: int
    kernel: str
    outputs: list[str]


VARIANTS = {
    "w4a16-gptq": Measured(5_702_000_000, {"arc_challenge": 0.5450, "hellaswag": 0.7850, "gsm8k": 0.7440},
                           242.2, 15.1, 4.13, 4864.5, 5_590_000_000, "MacheteLinearKernel",
                           [BASE_OUTPUTS[0].replace("far more", "much more"), BASE_OUTPUTS[1]]),
    "w8a8-int8": Measured(9_081_000_000, {"arc_challenge": 0.5490, "hellaswag": 0.7890, "gsm8k": 0.7600},
                          223.9, 16.0, 4.47, 6195.8, 8_970_000_000, "CutlassScaledMMLinearKernel", BASE_OUTPUTS),
    "fp8-dynamic": Measured(9_081_000_000, {"arc_challenge": 0.5500, "hellaswag": 0.7900, "gsm8k": 0.7640},
                            222.4, 15.8, 4.50, 6298.2, 8_970_000_000, "CutlassFP8ScaledMMLinearKernel", BASE_OUTPUTS),
    "nvfp4": Measured(5_420_000_000, {}, 198.7, 17.2, 5.03, 4402.0, 5_310_000_000, "MarlinNvFp4 (weight-only)",
                      [BASE_OUTPUTS[0], "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"]),
}
BASE_SPEED = (152.3, 18.4, 6.57, 5120.5, 16_060_000_000)
# What the validate stage's paired statistics record (the lead's Comparison/TaskComparison/FidelityRecord/GateDecision
# fields; until that branch lands the fixtures set them): half-widths of the 95% CIs, flips per task, fidelity.
CI_HALF = {"w4a16-gptq": 1.35, "w8a8-int8": 0.95, "fp8-dynamic": 0.75}
TASK_CI_HALF = {"arc_challenge": 3.1, "hellaswag": 1.2, "gsm8k": 2.6}
FLIPS = {"w4a16-gptq": {"arc_challenge": (9, 7), "hellaswag": (6, 5), "gsm8k": (14, 8)},
         "w8a8-int8": {"arc_challenge": (5, 4), "hellaswag": (3, 3), "gsm8k": (7, 5)},
         "fp8-dynamic": {"arc_challenge": (3, 3), "hellaswag": (2, 2), "gsm8k": (4, 3)}}
FIDELITY = {"w4a16-gptq": (0.0412, 0.318, 0.9305, 1.0281), "w8a8-int8": (0.0118, 0.0934, 0.9712, 1.0062),
            "fp8-dynamic": (0.00853, 0.0671, 0.9768, 1.0041)}
HELD_OUT = ("wikitext-2-raw-v1 test (first 4,096 tokens)",
            "sha256:4b1f0a6c2d8e9f7a3b5c1d2e4f6a8b0c9d7e5f3a1b2c4d6e8f0a9b7c5d3e1f2a")


def write_checkpoint(path: Path, *, template: str = CHAT_TEMPLATE, quantized: bool = True,
                     license_files: tuple[str, ...] = ("LICENSE", "NOTICE")) -> None:
    path.mkdir(parents=True, exist_ok=True)
    config = dict(CONFIG, torch_dtype="bfloat16")
    if quantized:
        config["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized"}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}, "chat_template": template}, indent=2))
    (path / "tokenizer.json").write_text("{}")
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    for name in license_files:
        (path / name).write_text(f"{name} of the demo model\n")


def _speed(label: str, decode: float, ttft: float, tpot: float, batched: float) -> SpeedRecord:
    return SpeedRecord(label=label, settings=dict(SPEED_SETTINGS) if label == "GPU" else {"backend": "hf"},
                       batch1=Batch1Speed(input_len=128, output_len=256, runs=3, decode_tokens_per_s=decode, ttft_ms=ttft,
                                          tpot_ms=tpot),
                       batched=BatchedSpeed(num_prompts=256, input_len=1024, output_len=256, output_tokens_per_s=batched,
                                            requests_per_s=round(batched / 256, 2)))


def _generations(outputs: list[str]) -> list[Generation]:
    return [Generation(prompt=p, output=o, ok=True) for p, o in zip(PROMPTS, outputs)]


def _paired(vid: str, recovery: dict[str, float], passed: bool, threshold: float) -> tuple[Comparison, GateDecision]:
    """The paired statistics and three-state gate a current validate stage records."""
    tasks = [TaskComparison(task=t, metric=BASE_SCORES[t][0], base=BASE_SCORES[t][1], variant=VARIANTS[vid].scores[t],
                            recovery=r,
                            ci=[round(r - TASK_CI_HALF[t], 2), round(r + TASK_CI_HALF[t], 2)], docs=LIMIT,
                            right_to_wrong=FLIPS[vid][t][0], wrong_to_right=FLIPS[vid][t][1])
             for t, r in recovery.items()]
    mean = round(sum(recovery.values()) / len(recovery), 4)
    comp = Comparison(mean_recovery_ci=[round(mean - CI_HALF[vid], 2), round(mean + CI_HALF[vid], 2)],
                      confidence=0.95, bootstrap={"resamples": 2000, "seed": 0, "method": "paired percentile"},
                      tasks=tasks, tasks_compared=list(recovery))
    gate = GateDecision(passed=passed, state=GateState.passed if passed else GateState.rejected, threshold=threshold,
                        rule=f"the CI's lower bound of the mean recovery must reach {threshold:.1f}%", rounds=1,
                        limit=LIMIT)
    return comp, gate


def _fidelity(vid: str) -> FidelityRecord:
    kl, p99, top1, ppl = FIDELITY[vid]
    return FidelityRecord(kl_mean=kl, kl_p99=p99, kl_max=p99 * 4, top1_agreement=top1, ppl_base=9.412,
                          ppl_variant=round(9.412 * ppl, 3), ppl_ratio=ppl, tokens=4096, windows=4, window=1024,
                          text=HELD_OUT[0], text_fingerprint=HELD_OUT[1], backend="vllm", device="cuda",
                          dtype="bfloat16", seconds=41.7)


def make_run(root: Path, *, device: str = "cuda", license: str = "apache-2.0", license_name: str | None = None,
             license_link: str | None = None, legacy: bool = False) -> tuple[RunDir, Settings]:
    """Write the whole run under `root`; returns the run directory and the settings to render it with.
    `legacy`: records as an older bot wrote them (no CIs, flips, fidelity, gate state, hardware verdict; a dict
    recipe; the hardware verdict inside `compat`)."""
    settings = Settings(runs_dir=root / "runs", namespace="bot-demo")
    rundir = RunDir(root / "runs" / run_id_for(BASE_ID, REVISION))
    hw, label = (H100, "GPU") if device == "cuda" else (CPU, "CPU")
    scale = 1.0 if device == "cuda" else 0.02
    base_path = rundir.base_dir / "model"
    write_checkpoint(base_path, quantized=False)
    b_decode, b_ttft, b_tpot, b_batched, b_mem = BASE_SPEED
    base_val = ValidateRecord(
        status=Status.done, backend="vllm" if device == "cuda" else "hf", hardware=hw, versions=VALIDATE_VERSIONS,
        load=LoadCheck(ok=True, backend="vllm", load_time_s=92.4, memory_bytes=b_mem),
        generations=_generations(BASE_OUTPUTS),
        speed=_speed(label, b_decode * scale, b_ttft / scale, b_tpot / scale, b_batched * scale),
        accuracy=AccuracyRecord(tasks=[TaskScore(task=t, metric=m, value=v, stderr=e, samples=LIMIT)
                                       for t, (m, v, e) in BASE_SCORES.items()], limit=LIMIT, backend="vllm",
                                command=LM_EVAL.format(model=base_path, out=rundir.root / "base" / "lm_eval")),
        validated_at="2026-11-03T09:12:44+00:00", finished_at="2026-11-03T09:12:44+00:00",
    )
    searched = device == "cuda" and not legacy  # the serving search: base and w4a16-gptq (bot/stages/serve)
    if searched:
        base_val.serve_search = serve_search(WeightFormat("bf16", source="no quantization_config"), BASE_RUNS, b_mem,
                                             None, {})
    rundir.write_base(BaseManifest(run_id=rundir.run_id, base=BaseModelRecord(
        status=Status.done, model_id=BASE_ID, revision=REVISION, path=str(base_path), architecture="LlamaForCausalLM",
        model_type="llama", num_params=8_030_261_248, dtype="bfloat16", license=license, license_name=license_name,
        license_link=license_link, license_files=["LICENSE", "NOTICE"], language=["en"], size_bytes=b_mem,
        has_chat_template=True), validate=base_val))
    book = load_recipes()
    for vid in ("w4a16-gptq", "w4a16-awq", "w8a8-int8", "fp8-dynamic", "nvfp4"):
        recipe = book.get(vid)
        resolved = resolve(recipe, CONFIG)
        q = QuantizeRecord(recipe_id=vid, recipe=recipe.model_dump(mode="json") if legacy else applied_recipe(resolved),
                           llmcompressor_recipe=resolved.llmcompressor_yaml, applied=resolved.manifest_view(),
                           versions=QUANT_VERSIONS, hardware=H100, started_at="2026-11-03T08:01:10+00:00")
        if resolved.samples:
            q.calibration = CalibrationInfo(
                source="HuggingFaceH4/ultrachat_200k", split="train_sft", samples=resolved.samples,
                seq_len=resolved.seq_len or 2048, seed=42, chat_template_applied=True, tokens=resolved.samples * 1187,
                fingerprint="sha256:9f2c4e1a7b3d5f60718293a4b5c6d7e8f9012345678901234567890abcdef123")
        if vid == "w4a16-awq":
            q.status, q.error = Status.failed, "RuntimeError: AWQ found no smoothing layer for 'model.layers.0.mlp'"
            rundir.write_variant(VariantManifest(run_id=rundir.run_id, variant=vid, quantize=q))
            continue
        m = VARIANTS[vid]
        q.status, q.finished_at, q.wall_time_s, q.size_bytes = Status.done, "2026-11-03T08:31:52+00:00", 1842.7, m.size
        q.peak_gpu_memory_bytes = 21_400_000_000
        write_checkpoint(rundir.model_dir(vid))
        comp = Comparison(speedup_batch1=round(m.decode / b_decode, 4), speedup_batched=round(m.batched / b_batched, 4),
                          size_ratio=round(m.size / b_mem, 4), speed_comparable=not legacy)
        acc = AccuracyRecord(tasks=[TaskScore(task=t, metric=BASE_SCORES[t][0], value=v, stderr=BASE_SCORES[t][2] + 0.0004,
                                              samples=LIMIT) for t, v in m.scores.items()],
                             limit=LIMIT, backend="vllm",
                             command=LM_EVAL.format(model=rundir.model_dir(vid), out=rundir.variant_dir(vid) / "lm_eval"))
        if m.scores:
            comp.recovery = {t: round(100 * v / BASE_SCORES[t][1], 4) for t, v in m.scores.items()}
            comp.mean_recovery = round(sum(comp.recovery.values()) / len(comp.recovery), 4)
            gate = GateDecision(passed=comp.mean_recovery >= recipe.gate.min_mean_recovery,
                                threshold=recipe.gate.min_mean_recovery)
            if not legacy:
                paired, gate = _paired(vid, comp.recovery, gate.passed, recipe.gate.min_mean_recovery)
                for name in ("mean_recovery_ci", "confidence", "bootstrap", "tasks", "tasks_compared"):
                    setattr(comp, name, getattr(paired, name))
        else:
            acc.tasks, acc.error = [], f"CUDA out of memory while loading {rundir.model_dir(vid)} (tried 2.00 GiB)"
            gate = GateDecision(passed=False, forced=True, threshold=recipe.gate.min_mean_recovery,
                                reasons=["accuracy not measured: lm-eval failed"])
        compat = hardware_compat(recipe, hw, m.kernel if device == "cuda" else None)
        val = VariantValidateRecord(
            compat=compat.model_dump() if legacy else {},
            hardware_verdict=None if legacy else compat,
            fidelity=None if legacy or vid not in FIDELITY else _fidelity(vid),
            status=Status.done, backend="vllm" if device == "cuda" else "hf", hardware=hw, versions=VALIDATE_VERSIONS,
            load=LoadCheck(ok=True, backend="vllm", load_time_s=88.0, memory_bytes=m.memory, kernel=m.kernel),
            generations=_generations(m.outputs),
            speed=_speed(label, m.decode * scale, m.ttft / scale, m.tpot / scale, m.batched * scale),
            accuracy=acc, comparison=comp, gate=gate,
            validated_at="2026-11-03T10:40:05+00:00", finished_at="2026-11-03T10:40:05+00:00")
        if searched and vid == "w4a16-gptq":
            fmt = WeightFormat("wna16", bits=4, group_size=128, source="quantization_config, format pack-quantized")
            val.serve_search = serve_search(fmt, VARIANT_RUNS, m.memory, base_val.serve_search, KERNELS)
        rundir.write_variant(VariantManifest(run_id=rundir.run_id, variant=vid, quantize=q, validate=val))
    return rundir, settings
