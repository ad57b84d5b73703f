"""SmolLM2's massive activations and AutoRound on CPU: is the format or the tuning at fault?

    python benchmarks/autoround_probe.py OUT_STEM MODEL_DIR RUN_DIR [RUN_DIR ...]

MODEL_DIR is SmolLM2-135M-Instruct as `bot.workers.build_model smollm2` writes it; each RUN_DIR holds a
`w4a16-autoround` variant made by `bot quantize` (see `autoround_probe.sh`). Writes OUT_STEM.json and OUT_STEM.md:
the residual stream's largest value per layer (first token vs the median token) and the perplexity of the base and
of each variant on tests/data/eval.txt, with the AutoRound settings read from the variant's manifest.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "tests" / "data" / "eval.txt").read_text()
PROMPT = [{"role": "user", "content": "Explain why the sky is blue in two sentences."}]


def _load(path: Path):
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def activations(tok, model) -> list[dict]:
    ids = tok.apply_chat_template(PROMPT, return_tensors="pt", add_generation_prompt=True)
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    rows = []
    for i, h in enumerate(states):
        per_token = h[0].abs().max(dim=-1).values
        rows.append({"after_layer": i, "max": round(float(per_token.max()), 1), "argmax_token": int(per_token.argmax()),
                     "median_token_max": round(float(per_token.median()), 1)})
    return rows


def perplexity(tok, model) -> float:
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return round(math.exp(model(ids, labels=ids).loss.item()), 2)


def main() -> None:
    out, model, runs = Path(sys.argv[1]), Path(sys.argv[2]), [Path(r) for r in sys.argv[3:]]
    variants = []
    for run in runs:
        manifest = json.loads((run / "w4a16-autoround" / "manifest.json").read_text())["quantize"]
        mod = next(m for m in manifest["recipe"]["modifiers"] if m["type"] == "AutoRoundModifier")
        cal = manifest["calibration"]
        variants.append({"run": run.name, "iters": mod.get("iters"), "lr": mod.get("lr"),
                         "group_size": manifest["applied"].get("group_size"),
                         "calibration": f"{cal['samples']} x {cal['seq_len']}", "wall_time_s": manifest["wall_time_s"],
                         "device": manifest["hardware"]["device"],
                         "perplexity": perplexity(*_load(run / "w4a16-autoround" / "model"))})
    base = _load(model)  # loaded once for both measurements
    data = {"host": platform.processor() or platform.machine(), "torch": torch.__version__,
            "base_perplexity": perplexity(*base), "activations": activations(*base), "variants": variants}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# AutoRound on SmolLM2-135M-Instruct (CPU): format vs tuning\n",
             f"Written by `bash benchmarks/autoround_probe.sh` on {platform.machine()} "
             f"({os.cpu_count()} cores), torch {data['torch']}, fp32; `bot quantize` with the AutoRound recipe "
             "overridden as in the table.\n",
             f"Base perplexity on tests/data/eval.txt: {data['base_perplexity']}.\n",
             "| AutoRound iters | lr | group | calibration | device | quantize (s) | perplexity | vs base |",
             "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        lines.append(f"| {v['iters']} | {v['lr']} | {v['group_size']} | {v['calibration']} | {v['device']} | "
                     f"{v['wall_time_s']:.1f} | {v['perplexity']} | {v['perplexity'] / data['base_perplexity']:.2f}x |")
    lines += ["", "Residual stream, largest absolute value after each layer (one chat prompt):", "",
              "| decoder layers passed | max | at token | median token's max |", "|---|---|---|---|"]
    lines += [f"| {a['after_layer']} | {a['max']} | {a['argmax_token']} | {a['median_token_max']} |"
              for a in data["activations"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
