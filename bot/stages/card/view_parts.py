"""Small rows of the variant card's view model: calibration, evaluation settings, versions, licence."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.manifest import BaseModelRecord, CalibrationInfo, ValidateRecord
from bot.stages.card.format import code, md_cell

_VERSION_ORDER = ("llmcompressor", "compressed-tensors", "auto-round", "transformers", "torch", "vllm", "lm-eval",
                  "lm_eval", "datasets", "accelerate", "python")


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class AccuracyRow:
    task: str
    metric: str
    base: str
    variant: str
    recovery: str
    ci: str  # the validate stage's paired CI of the task's recovery
    flips: str  # right -> wrong / wrong -> right documents
    stderr: str


@dataclass(frozen=True)
class SpeedRow:
    what: str
    base: str
    variant: str
    vs_base: str


@dataclass(frozen=True)
class VersionRow:
    library: str
    version: str
    used_for: str


def calibration_rows(cal: CalibrationInfo | None, hub_url: str) -> list[KeyValue]:
    if cal is None:
        return [KeyValue("Calibration", "none: this recipe is data-free (scales come from the weights alone)")]
    if cal.source.startswith("file:"):
        source = f"{code(cal.source[len('file:'):])} (a local JSONL file, not on the Hub)"
    else:
        source = f"[{cal.source}]({hub_url}/datasets/{cal.source})"
    rows = [KeyValue("Source", source)]
    if cal.split:
        rows.append(KeyValue("Split", code(cal.split)))
    rows += [
        KeyValue("Samples", str(cal.samples)),
        KeyValue("Max sequence length", f"{cal.seq_len} tokens"),
        KeyValue("Seed", str(cal.seed)),
        KeyValue("Chat template applied", "yes" if cal.chat_template_applied else "no"),
    ]
    if cal.tokens is not None:
        rows.append(KeyValue("Tokens", f"{cal.tokens:,}"))
    if cal.batch_size > 1:
        rows.append(KeyValue("Calibration batch", f"{cal.batch_size} samples per forward pass, grouped by length, "
                                                  "each batch cut to its shortest sample"))
    rows.append(KeyValue("Fingerprint", code(cal.fingerprint)))
    return rows


def evaluation_rows(vv: ValidateRecord | None, bv: ValidateRecord | None) -> list[KeyValue]:
    acc = vv.accuracy if vv else None
    if acc is None:
        return [KeyValue("lm-eval", "not run for this variant")]
    tasks = ", ".join(code(t.task) for t in acc.tasks) or "none recorded"
    rows = [KeyValue("Tasks", tasks),
            KeyValue("Samples per task", f"{acc.limit} (`--limit`)" if acc.limit is not None else "all (full tasks)"),
            KeyValue("Few-shot", str(acc.num_fewshot) if acc.num_fewshot is not None else "each task's default"),
            KeyValue("Backend", code(acc.backend) if acc.backend else "not recorded")]
    if bv is not None and bv.accuracy is not None and bv.accuracy.command and bv.accuracy.limit != acc.limit:
        rows.append(KeyValue("Base samples per task", str(bv.accuracy.limit)))
    return rows


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (dict, list)):
        return code(json.dumps(v, sort_keys=True))
    return md_cell(str(v)) if v is not None else "default"


def speed_settings(vv: ValidateRecord | None) -> list[KeyValue]:
    speed = vv.speed if vv else None
    if speed is None:
        return [KeyValue("Speed benchmark", "not run for this variant")]
    rows = [KeyValue("Measured on", speed.label)]
    if speed.batch1 is not None:
        one = speed.batch1
        rows.append(KeyValue("Batch 1", f"{one.input_len} input tokens, {one.output_len} output tokens, "
                                        f"best of {one.runs} runs"))
    if speed.batched is not None:
        many = speed.batched
        rows.append(KeyValue("Batched", f"{many.num_prompts} prompts of {many.input_len} input / "
                                        f"{many.output_len} output tokens"))
    rows += [KeyValue(code(str(k)), _value(v)) for k, v in speed.settings.items()]
    return rows


def version_rows(quantize: dict[str, str], validate: dict[str, str]) -> list[VersionRow]:
    def key(name: str) -> tuple[int, str]:
        return (_VERSION_ORDER.index(name) if name in _VERSION_ORDER else len(_VERSION_ORDER), name)

    rows = [VersionRow(code(k), code(v), "quantization") for k, v in sorted(quantize.items(), key=lambda kv: key(kv[0]))]
    rows += [VersionRow(code(k), code(v), "validation") for k, v in sorted(validate.items(), key=lambda kv: key(kv[0]))]
    return rows or [VersionRow("not recorded", "not recorded", "—")]


def license_lines(b: BaseModelRecord, base_url: str | None, gated: bool = False) -> list[str]:
    base = f"[{b.model_id}]({base_url})" if base_url else code(b.model_id)
    author = b.model_id.split("/", 1)[0] if "/" in b.model_id and b.source == "hub" else None
    lines = []
    if b.license and b.license != "other":
        lines.append(f"This model is a quantized derivative of {base} and keeps its licence: **{b.license}**.")
    elif b.license_name:
        link = f" ([terms]({b.license_link}))" if b.license_link else ""
        lines.append(f"This model is a quantized derivative of {base} and keeps its licence: **{b.license_name}**{link}.")
    else:
        lines.append(f"This model is a quantized derivative of {base}, which declares no licence in its card: check "
                     "the base repository before using it.")
    if b.license_files:
        lines.append("The base's licence files are included unchanged: " + ", ".join(code(f) for f in b.license_files) + ".")
    if b.gated:
        lines.append("The base model is gated on the Hub: its access conditions apply to this derivative too.")
    if gated:
        lines.append("This repository is gated on the Hub as well: request access on its page (granted "
                     "automatically) and accept the base's terms.")
    for phrase in b.attribution:
        lines.append(f"As the base's licence asks, this derivative displays: **{phrase}**.")
    credit = f" (**{author}**)" if author else ""
    lines.append(f"All credit for the model goes to its authors{credit}. Quantization changes the numeric format of "
                 "the weights only; it adds no training and no new data beyond the calibration set listed above.")
    return lines
