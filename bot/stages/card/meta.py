"""Card metadata: the front matter (huggingface_hub `ModelCardData`, with `model-index` from `EvalResult`) and the
Hub's newer `.eval_results/*.yaml` files.

`library_name: transformers`: the checkpoint is a standard transformers layout whose `quantization_config` is
compressed-tensors, which transformers loads (with `compressed-tensors` installed) and vLLM serves directly. With
`transformers` the Hub shows its usual "Use this model" snippets, including vLLM's, and counts the parameters from
the safetensors; llm-compressor's own published checkpoints (RedHatAI, neuralmagic) declare the same. `vllm` is
added as a tag for discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from bot.stages.card.data import RunData
from bot.stages.card.format import metric_name, score_value

LIBRARY_NAME = "transformers"
FRONT_MATTER_ORDER = [
    "base_model", "base_model_relation", "base_model_revision", "license", "license_name", "license_link",
    "language", "library_name", "pipeline_tag", "datasets", "tags", "model_name", "eval_results",
]
SCHEME_TAGS = {
    "W4A16": ("w4a16", "int4"), "W4A16_ASYM": ("w4a16", "int4"), "W8A8": ("w8a8", "int8"), "W8A16": ("w8a16", "int8"),
    "FP8_DYNAMIC": ("fp8",), "FP8": ("fp8",), "NVFP4": ("nvfp4", "fp4"), "NVFP4A16": ("nvfp4", "fp4"),
}
ALGORITHM_TAGS = {"GPTQModifier": "gptq", "AWQModifier": "awq", "AutoRoundModifier": "autoround",
                  "SmoothQuantModifier": "smoothquant"}


@dataclass(frozen=True)
class TaskDataset:
    """The Hub dataset behind an lm-eval task (model-index `dataset`)."""

    id: str
    name: str
    config: str | None
    split: str | None


TASK_DATASETS: dict[str, TaskDataset] = {
    "arc_challenge": TaskDataset("allenai/ai2_arc", "ARC-Challenge", "ARC-Challenge", "test"),
    "arc_easy": TaskDataset("allenai/ai2_arc", "ARC-Easy", "ARC-Easy", "test"),
    "hellaswag": TaskDataset("Rowan/hellaswag", "HellaSwag", None, "validation"),
    "winogrande": TaskDataset("allenai/winogrande", "WinoGrande", "winogrande_xl", "validation"),
    "gsm8k": TaskDataset("openai/gsm8k", "GSM8K", "main", "test"),
    "mmlu": TaskDataset("cais/mmlu", "MMLU", "all", "test"),
    "truthfulqa_mc2": TaskDataset("truthfulqa/truthful_qa", "TruthfulQA", "multiple_choice", "validation"),
    "piqa": TaskDataset("ybisk/piqa", "PIQA", None, "validation"),
    "ifeval": TaskDataset("google/IFEval", "IFEval", None, "train"),
}

# lm-eval tasks whose dataset is a registered Hub *benchmark* (the only ones `.eval_results/` accepts), with the
# benchmark's task id. Results on a `--limit` subset are never written there: they would sit on the leaderboard
# next to full-benchmark numbers.
EVAL_RESULTS_BENCHMARKS: dict[str, tuple[str, str]] = {
    "gpqa_diamond_zeroshot": ("Idavidrein/gpqa", "gpqa_diamond"),
    "gpqa_diamond_n_shot": ("Idavidrein/gpqa", "gpqa_diamond"),
    "gpqa_diamond_cot_zeroshot": ("Idavidrein/gpqa", "gpqa_diamond"),
    "leaderboard_gpqa_diamond": ("Idavidrein/gpqa", "gpqa_diamond"),
}


def tags_for(run: RunData, variant: str) -> list[str]:
    recipe = run.recipes[variant]
    tags = ["quantized", "llmcompressor", "compressed-tensors", "vllm", *SCHEME_TAGS.get(recipe.scheme, ())]
    tags += [ALGORITHM_TAGS[m] for m in recipe.modifiers if m in ALGORITHM_TAGS]
    return list(dict.fromkeys(tags))


def eval_results(run: RunData, variant: str, repo_id: str) -> list[EvalResult]:
    vv = run.variants[variant].validate_
    acc = vv.accuracy if vv is not None else None
    if acc is None or acc.error or (vv is not None and vv.load is not None and not vv.load.ok):
        return []
    args: dict[str, Any] = {k: v for k, v in (("num_fewshot", acc.num_fewshot), ("limit", acc.limit)) if v is not None}
    out = []
    for t in acc.tasks:
        ds = TASK_DATASETS.get(t.task, TaskDataset(t.task, t.task, None, None))
        out.append(EvalResult(
            task_type="text-generation", task_name="Text Generation",
            dataset_type=ds.id, dataset_name=ds.name, dataset_config=ds.config, dataset_split=ds.split,
            dataset_args=dict(args) or None,
            metric_type=metric_name(t.metric), metric_name=f"{metric_name(t.metric)} ({t.task})",
            metric_value=score_value(t.value, t.metric),
            source_name="lm-evaluation-harness, run by bot", source_url=f"{run.hub_url}/{repo_id}",
        ))
    return out


def card_metadata(run: RunData, variant: str, repo_id: str) -> ModelCardData:
    b = run.base.base
    cal = run.variants[variant].quantize.calibration
    datasets = [cal.source] if cal is not None and not cal.source.startswith("file:") else None
    results = eval_results(run, variant, repo_id)
    custom = b.license == "other" or (b.license is None and b.license_name is not None)
    hub_base = b.source == "hub"
    return ModelCardData(
        base_model=b.model_id if hub_base else None,
        datasets=datasets,
        eval_results=results or None,
        language=b.language or None,
        library_name=LIBRARY_NAME,
        license=b.license or ("other" if b.license_name else None),
        license_name=b.license_name if custom else None,
        license_link=b.license_link if custom else None,
        model_name=repo_id if results else None,
        pipeline_tag="text-generation",
        tags=tags_for(run, variant),
        base_model_relation="quantized" if hub_base else None,
        base_model_revision=b.revision or None,
    )


def front_matter(data: ModelCardData) -> str:
    return data.to_yaml(original_order=FRONT_MATTER_ORDER)


def eval_results_files(run: RunData, variant: str, repo_id: str) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """`.eval_results/<task>.yaml` contents (as YAML-ready lists) and notes on what was skipped and why."""
    try:
        from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml
    except ImportError:
        return {}, ["no .eval_results/ files: the installed huggingface_hub does not support them"]
    vv = run.variants[variant].validate_
    acc = vv.accuracy if vv is not None else None
    if acc is None or acc.error or not acc.tasks:
        return {}, []
    files: dict[str, list[dict[str, Any]]] = {}
    skipped = [t.task for t in acc.tasks if t.task not in EVAL_RESULTS_BENCHMARKS]
    notes = []
    if skipped:
        notes.append("no .eval_results/ for " + ", ".join(skipped) + ": not a registered Hub benchmark")
    benchmark_tasks = [t for t in acc.tasks if t.task in EVAL_RESULTS_BENCHMARKS]
    if benchmark_tasks and acc.limit is not None:
        notes.append(f"no .eval_results/ for {', '.join(t.task for t in benchmark_tasks)}: ran on a "
                     f"{acc.limit}-sample subset, not the full benchmark")
        return {}, notes
    date = (vv.validated_at if vv is not None else None) or None
    for t in benchmark_tasks:
        dataset_id, task_id = EVAL_RESULTS_BENCHMARKS[t.task]
        entry = EvalResultEntry(dataset_id=dataset_id, task_id=task_id, value=score_value(t.value, t.metric),
                                date=date, source_url=f"{run.hub_url}/{repo_id}", source_name="Model card",
                                notes=f"lm-evaluation-harness {t.task}, {metric_name(t.metric)}")
        files[f"{t.task}.yaml"] = eval_result_entries_to_yaml([entry])
    return files, notes
