"""Code and recipe text for model cards: how to run the model, how to reproduce it, what was decided and why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from bot.manifest import BaseModelRecord, CalibrationInfo, QuantizeRecord
from bot.recipes import Recipe
from bot.stages.card.format import code, md_cell


def _py(text: str) -> str:
    """A Python string literal (JSON string syntax is valid Python)."""
    return json.dumps(text, ensure_ascii=False)


def serve_command(repo_id: str, trust_remote_code: bool) -> str:
    return f"vllm serve {repo_id}" + (" --trust-remote-code" if trust_remote_code else "")


def openai_snippet(repo_id: str, prompt: str, chat: bool) -> str:
    if chat:
        call = (
            "response = client.chat.completions.create(\n"
            f"    model={_py(repo_id)},\n"
            f"    messages=[{{\"role\": \"user\", \"content\": {_py(prompt)}}}],\n"
            "    max_tokens=256,\n"
            ")\n"
            "print(response.choices[0].message.content)"
        )
    else:
        call = (
            f"response = client.completions.create(model={_py(repo_id)}, prompt={_py(prompt)}, max_tokens=256)\n"
            "print(response.choices[0].text)"
        )
    return ("from openai import OpenAI\n\n"
            "client = OpenAI(base_url=\"http://localhost:8000/v1\", api_key=\"EMPTY\")\n" + call)


def llm_snippet(repo_id: str, prompt: str, chat: bool, trust_remote_code: bool) -> str:
    extra = ", trust_remote_code=True" if trust_remote_code else ""
    head = ("from vllm import LLM, SamplingParams\n\n"
            f"llm = LLM(model={_py(repo_id)}{extra})\n"
            "params = SamplingParams(temperature=0.7, max_tokens=256)\n")
    if chat:
        body = (f"outputs = llm.chat([{{\"role\": \"user\", \"content\": {_py(prompt)}}}], params)\n")
    else:
        body = f"outputs = llm.generate([{_py(prompt)}], params)\n"
    return head + body + "print(outputs[0].outputs[0].text)"


def recipe_yaml(recipe: Recipe | None) -> str:
    """The applied recipe (as resolved for this model), as YAML."""
    if recipe is None:
        return "# not recorded"
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=110).strip()


def _calibration_code(cal: CalibrationInfo) -> list[str]:
    row = 'tokenizer.apply_chat_template(rows[i]["messages"], tokenize=False)' if cal.chat_template_applied \
        else 'rows[i]["text"]'
    if cal.source.startswith("file:"):
        name = cal.source[len("file:"):]
        load = [f"rows = [json.loads(line) for line in open({_py(name)}, encoding=\"utf-8\") if line.strip()]"]
    else:
        split = f", split={_py(cal.split)}" if cal.split else ""
        load = [f"rows = list(load_dataset({_py(cal.source)}{split}))"]
    return [
        f"# Calibration: {cal.samples} samples, seed {cal.seed}, at most {cal.seq_len} tokens each",
        f"# (the bot's selection; its texts hash to {cal.fingerprint})",
        *load,
        "order = list(range(len(rows)))",
        f"random.Random({cal.seed}).shuffle(order)",
        f"texts = [{row} for i in order[:{cal.samples}]]",
        f"enc = tokenizer(texts, max_length={cal.seq_len}, truncation=True, padding=False, add_special_tokens=False)",
        'dataset = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})',
    ]


def oneshot_code(base: BaseModelRecord, q: QuantizeRecord, out_dir: str) -> str:
    """Equivalent llm-compressor code: the same base revision, calibration selection and recipe YAML."""
    cal = q.calibration
    imports = ["from llmcompressor import oneshot", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if cal is not None:
        extra = ["import json"] if cal.source.startswith("file:") else []
        dsets = "from datasets import Dataset" + ("" if cal.source.startswith("file:") else ", load_dataset")
        imports = [*extra, "import random", "", dsets, *imports]
    rev = f", revision={_py(base.revision)}" if base.source == "hub" and base.revision else ""
    trust = ", trust_remote_code=True" if base.trust_remote_code else ""
    lines = [
        *imports, "",
        f"MODEL_ID = {_py(base.model_id)}",
        f"model = AutoModelForCausalLM.from_pretrained(MODEL_ID{rev}, dtype=\"auto\"{trust})",
        f"tokenizer = AutoTokenizer.from_pretrained(MODEL_ID{rev}{trust})",
        "",
    ]
    if cal is not None:
        lines += [*_calibration_code(cal), ""]
    recipe = q.llmcompressor_recipe.strip("\n")
    literal = f'"""\n{recipe}\n"""' if '"""' not in recipe and "\\" not in recipe else _py(recipe + "\n")
    lines += [f"recipe = {literal}", ""]
    if cal is not None:
        lines.append(f"oneshot(model=model, dataset=dataset, recipe=recipe, num_calibration_samples={cal.samples}, "
                     f"max_seq_length={cal.seq_len})")
    else:
        lines.append("oneshot(model=model, recipe=recipe)  # data-free: no calibration dataset")
    lines += [f"model.save_pretrained({_py(out_dir)}, save_compressed=True)", f"tokenizer.save_pretrained({_py(out_dir)})"]
    return "\n".join(lines)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class DecisionRow:
    what: str
    value: str
    why: str


def _mapping_text(mapping: Any) -> str:
    """[[balance layers], smooth layer] -> "`smooth` → `a`, `b`"."""
    if isinstance(mapping, (list, tuple)) and len(mapping) == 2 and isinstance(mapping[0], (list, tuple)):
        return f"{code(str(mapping[1]))} → " + ", ".join(code(str(b)) for b in mapping[0])
    return code(str(mapping))


def decisions(q: QuantizeRecord, recipe: Recipe | None) -> list[DecisionRow]:
    """The per-architecture decisions recorded in `quantize.applied`, each with its reason."""
    applied = q.applied
    rows: list[DecisionRow] = []
    if applied.get("architecture"):
        rows.append(DecisionRow("Architecture", code(str(applied["architecture"])), "read from the base's config.json"))
    requested = recipe.group_size if recipe is not None else None
    fallback = applied.get("group_size_fallback")
    group = applied.get("group_size", requested)
    if isinstance(fallback, dict):
        rows.append(DecisionRow("Group size", f"{fallback.get('applied')} (recipe asks {fallback.get('requested')})",
                                md_cell(str(fallback.get("reason", "")))))
    elif group is None:
        rows.append(DecisionRow("Group size", "none (one scale per output channel)", "the scheme is per-channel"))
    elif recipe is not None and recipe.scheme == "NVFP4":
        rows.append(DecisionRow("Group size", str(group), "fixed by the NVFP4 format"))
    else:
        rows.append(DecisionRow("Group size", str(group), "as the recipe asks: every in-feature divides by it"))
    reasons = applied.get("ignore_reasons") or {}
    for pattern in applied.get("ignore") or (recipe.ignore if recipe is not None else []):
        why = reasons.get(pattern) or "listed by the recipe"
        rows.append(DecisionRow("Not quantized", code(str(pattern)), md_cell(str(why))))
    sq = applied.get("smoothquant")
    if isinstance(sq, dict):
        maps = applied.get("smoothquant_mappings") or []
        value = "<br>".join(_mapping_text(m) for m in maps) if sq.get("applied") and maps else (
            "applied" if sq.get("applied") else "skipped")
        rows.append(DecisionRow("SmoothQuant", value, md_cell(str(sq.get("reason", "")))))
    awq = applied.get("awq_mappings")
    if isinstance(awq, list) and awq:
        rows.append(DecisionRow("AWQ mappings", "<br>".join(code(str(m)) for m in awq),
                                "llm-compressor's AWQ mapping registry for this architecture"))
    elif isinstance(awq, str) and awq:
        rows.append(DecisionRow("AWQ mappings", md_cell(awq), "resolved by llm-compressor at run time"))
    if applied.get("compute_dtype"):
        rows.append(DecisionRow("Calibration dtype", code(str(applied["compute_dtype"])),
                                "quantized on a CPU: calibrated in float32, stored in the base's dtype"))
    if applied.get("cpu_threads"):
        rows.append(DecisionRow("CPU threads", str(applied["cpu_threads"]),
                                "quantized on a CPU with this many torch threads: they set the order of the sums, "
                                "so the same count reproduces the same weights"))
    return rows
