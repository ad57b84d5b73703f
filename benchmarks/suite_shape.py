"""Synthetic lm-eval tasks with the shape of the default validation suite (issue 16), for timing only.

    python benchmarks/suite_shape.py DEST [--seed 0]

Writes local lm-eval tasks (`shape_arc_challenge`, `shape_hellaswag`, `shape_winogrande`, `shape_gsm8k`, and the
group `shape_mmlu` of 57 subtasks) with the same request layout as lm-eval 0.4.13's `arc_challenge`, `hellaswag`,
`winogrande`, `gsm8k` and `mmlu` (the default `validate.tasks`): the same prompt templates, output types, documents
per split, choices per document, few-shot counts and generation settings, and filler text of about the same token
length per field. The content is meaningless on purpose: accuracy on these tasks means nothing, only the time does
(speed depends on request counts and lengths, not on the words). Run them with
`BOT_VALIDATE__INCLUDE_PATH=DEST bot validate RUN --tasks shape_arc_challenge,...,shape_mmlu`.

Why here and not under bot/: this is benchmark tooling; the bot never evaluates a model on filler, and a card must
never show a number measured on it. DEST/shape.json records the target figures and where each comes from.

Where the figures come from (see TARGETS and MMLU_TEST):
- templates, splits, output types, few-shot counts, stop sequences: lm-eval 0.4.13's task YAMLs
  (lm_eval/tasks/arc/arc_easy.yaml + arc_challenge.yaml, hellaswag/hellaswag.yaml + utils.py,
  winogrande/default.yaml + preprocess_winogrande.py, gsm8k/gsm8k.yaml, mmlu/default/_default_template_yaml and
  the 57 mmlu_<subject>.yaml); max_gen_toks 256 is lm-eval's model default (gsm8k.yaml does not set one).
- documents per split, exact: the datasets' `dataset_infos.json` (huggingface/datasets, datasets/ai2_arc,
  hellaswag, winogrande, gsm8k, hendrycks_test).
- token lengths, ESTIMATES: from the same files' bytes per example (Arrow bytes: text plus 4-byte offsets per
  string and the fixed-width fields, subtracted), at CHARS_PER_TOKEN characters per token for English prose (3 for
  GSM8K's arithmetic), and a split between fields (question vs choices) where only the total is known.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "shape_"
SUITE = ("arc_challenge", "hellaswag", "winogrande", "gsm8k", "mmlu")  # bot.config ValidateSettings().tasks
CHARS_PER_TOKEN = 4.0
GSM8K_STOP = ["Question:", "</s>", "<|im_end|>"]
MAX_GEN_TOKS = 256
FEWSHOT_POOL = 64  # train/dev documents written per task for few-shot sampling (gsm8k: 256)

# Common English words that are one token each with a leading space in byte-level BPE vocabularies (checked for
# SmolLM2's, which the random-weight shapes use, in tests/validate/test_suite_shape.py): N words ~ N tokens.
WORDS = tuple("""the of and to in is that for it as was with be by on not he this are or his from at which but have
an had they you were their one all we can her has there been if more when will would who so no time people year new
first day man way water long little good great old small large house world school place city state family group
number part life work hand home week point area name light river""".split())


@dataclass(frozen=True)
class Target:
    """One task's shape: documents in its evaluated split, choices (requests) per document, mean tokens of each
    request's context and continuation as lm-eval builds them, shots, and where the figures come from."""

    task: str
    output_type: str
    split: str
    docs: int
    choices: int
    context_tokens: float
    continuation_tokens: float
    fewshot: int
    source: str


# (test num_bytes, test num_examples) per MMLU subject: huggingface/datasets datasets/hendrycks_test/
# dataset_infos.json. 14042 test questions in all; at limit 250, 10219 documents.
MMLU_TEST: dict[str, tuple[int, int]] = {
    "abstract_algebra": (19328, 100), "anatomy": (33121, 135), "astronomy": (46771, 152),
    "business_ethics": (33252, 100), "clinical_knowledge": (62754, 265), "college_biology": (48797, 144),
    "college_chemistry": (24708, 100), "college_computer_science": (42641, 100), "college_mathematics": (24711, 100),
    "college_medicine": (82397, 173), "college_physics": (30181, 102), "computer_security": (27124, 100),
    "conceptual_physics": (40709, 235), "econometrics": (46547, 114), "electrical_engineering": (25142, 145),
    "elementary_mathematics": (70108, 378), "formal_logic": (49785, 126), "global_facts": (18403, 100),
    "high_school_biology": (109732, 310), "high_school_chemistry": (58464, 203),
    "high_school_computer_science": (44476, 100), "high_school_european_history": (270300, 165),
    "high_school_geography": (42034, 198), "high_school_government_and_politics": (66074, 193),
    "high_school_macroeconomics": (117687, 390), "high_school_mathematics": (54854, 270),
    "high_school_microeconomics": (75703, 238), "high_school_physics": (59538, 151),
    "high_school_psychology": (159407, 545), "high_school_statistics": (110702, 216),
    "high_school_us_history": (296734, 204), "high_school_world_history": (378617, 237),
    "human_aging": (46098, 223), "human_sexuality": (32110, 131), "international_law": (53531, 121),
    "jurisprudence": (33986, 108), "logical_fallacies": (50117, 163), "machine_learning": (33880, 112),
    "management": (20002, 103), "marketing": (63025, 234), "medical_genetics": (20864, 100),
    "miscellaneous": (147704, 783), "moral_disputes": (107818, 346), "moral_scenarios": (374026, 895),
    "nutrition": (92410, 306), "philosophy": (80073, 311), "prehistory": (89594, 324),
    "professional_accounting": (124550, 282), "professional_law": (1891762, 1534),
    "professional_medicine": (217561, 272), "professional_psychology": (225899, 612),
    "public_relations": (28760, 110), "security_studies": (204844, 245), "sociology": (66243, 201),
    "us_foreign_policy": (28443, 100), "virology": (38759, 166), "world_religions": (25274, 171),
}
MMLU_ROW_OVERHEAD = 36  # Arrow bytes per row besides the text: 5 string offsets, the list offset, the int64 answer
MMLU_TEMPLATE_TOKENS = 15  # "\nA. " .. "\nD. " and "\nAnswer:" around the question and choices
GSM8K_QUESTION, GSM8K_ANSWER = 60, 97  # tokens: ~240 of the ~522 text bytes per train row / 3 chars per token


def mmlu_text_tokens(subject: str) -> float:
    """Mean tokens of one MMLU question and its four choices (estimate from bytes per example)."""
    num_bytes, n = MMLU_TEST[subject]
    return (num_bytes / n - MMLU_ROW_OVERHEAD) / CHARS_PER_TOKEN


def mmlu_description(subject: str) -> str:
    """The description lm-eval's mmlu_<subject>.yaml puts before each question (the real text)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


TARGETS: dict[str, Target] = {
    "arc_challenge": Target(
        "arc_challenge", "multiple_choice", "test", 1172, 4, 42, 6, 0,
        "ARC-Challenge test 1172 docs, 377740 B: 322 B/doc, ~250 B text after ids, labels and offsets; question "
        "~150 chars (37 tokens) + 'Question: '/'\\nAnswer:' 5 tokens; choices ~25 chars (6 tokens); 4 choices per "
        "doc (a few ARC questions have 3 or 5: estimate)"),
    "hellaswag": Target(
        "hellaswag", "multiple_choice", "validation", 10042, 4, 80, 25, 0,
        "HellaSwag validation 10042 docs, 11194634 B: 1115 B/doc, ~1007 B of ctx (stored twice: ctx and "
        "ctx_a+ctx_b) and 4 endings; endings ~100 chars (25 tokens: estimate), so query (label + ctx) ~317 chars "
        "(80 tokens)"),
    "winogrande": Target(
        "winogrande", "multiple_choice", "validation", 1267, 2, 15, 11, 0,
        "WinoGrande xl validation 1267 docs, 164199 B: 130 B/doc, ~112 B text: sentence ~100 chars (25 tokens) and "
        "2 options; two contexts (text before the blank + option, ~15 tokens) share one continuation (the text "
        "after the blank, ~11 tokens): where the blank falls is an estimate"),
    "gsm8k": Target(
        "gsm8k", "generate_until", "test", 1319, 1, 5 * (GSM8K_QUESTION + GSM8K_ANSWER + 7) + GSM8K_QUESTION + 5,
        MAX_GEN_TOKS, 5,
        "GSM8K main test 1319 docs (713732 B), train 7473 docs (3963202 B: 530 B/doc): question ~240 chars (60 "
        "tokens), answer ~280 chars of arithmetic and <<a*b=c>> annotations at ~3 chars/token (97 tokens): split "
        "estimated; 5 shots from train; continuation column = max_gen_toks (a random-weight model runs to it; a "
        "real model stops at 'Question:' or its end token earlier)"),
}
for _subject in MMLU_TEST:
    _words = len(mmlu_description(_subject).split())
    TARGETS[f"mmlu_{_subject}"] = Target(
        f"mmlu_{_subject}", "multiple_choice", "test", MMLU_TEST[_subject][1], 4,
        round(_words + 3 + mmlu_text_tokens(_subject) + MMLU_TEMPLATE_TOKENS, 1), 1, 0,
        f"MMLU {_subject} test: {MMLU_TEST[_subject][1]} docs, {MMLU_TEST[_subject][0]} B; the real description; "
        "question + 4 choices from bytes per doc (estimate); continuation ' A'..' D'")


# ---------------------------------------------------------------- filler


def _n(rng: random.Random, mean: float) -> int:
    """A length around `mean` (uniform 0.5x..1.5x, at least 1): real documents vary, and the padding of batches
    with them."""
    return max(1, round(mean * rng.uniform(0.5, 1.5)))


def filler(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))


def _arc(rng: random.Random, i: int) -> dict[str, Any]:
    t = TARGETS["arc_challenge"]
    labels = list("ABCD")
    return {"id": f"shape-arc-{i}", "question": filler(rng, _n(rng, t.context_tokens - 5)),
            "choices": {"text": [filler(rng, _n(rng, t.continuation_tokens)) for _ in labels], "label": labels},
            "answerKey": rng.choice(labels)}


def _hellaswag(rng: random.Random, _i: int) -> dict[str, Any]:
    t = TARGETS["hellaswag"]
    return {"query": filler(rng, _n(rng, t.context_tokens)),
            "choices": [filler(rng, _n(rng, t.continuation_tokens)) for _ in range(4)], "label": rng.randrange(4)}


def _winogrande(rng: random.Random, _i: int) -> dict[str, Any]:
    t = TARGETS["winogrande"]
    before = filler(rng, _n(rng, t.context_tokens - 2))
    options = [filler(rng, rng.choice((1, 2, 3))) for _ in range(2)]
    return {"contexts": [f"{before} {o}" for o in options], "continuation": filler(rng, _n(rng, t.continuation_tokens)),
            "label": rng.randrange(2)}


def _gsm8k(rng: random.Random, _i: int) -> dict[str, Any]:
    answer = filler(rng, _n(rng, GSM8K_ANSWER - 3))
    return {"question": filler(rng, _n(rng, GSM8K_QUESTION)), "answer": f"{answer}\n#### {rng.randrange(1, 1000)}"}


def _mmlu(subject: str):
    text = mmlu_text_tokens(subject)

    def doc(rng: random.Random, _i: int) -> dict[str, Any]:
        # four choices of ~10% of the text each (estimate), the question the rest
        return {"question": filler(rng, _n(rng, text * 0.6)),
                "choices": [filler(rng, _n(rng, text * 0.1)) for _ in range(4)], "answer": rng.randrange(4)}

    return doc


def _write_jsonl(path: Path, make, n: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(make(rng, i), separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- task YAMLs

_MC_METRICS = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
               {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]


def _yaml_doc(name: str, split: str, files: dict[str, str], **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"task": PREFIX + name, "dataset_path": "json", "dataset_kwargs": {"data_files": files}}
    doc["test_split" if split == "test" else "validation_split"] = split
    return {**doc, **fields, "metadata": {"version": 1.0, "shape_of": name}}


def _task_yamls() -> dict[str, dict[str, Any]]:
    out = {
        "arc_challenge": _yaml_doc(
            "arc_challenge", "test",
            {"test": "data/arc_challenge.test.jsonl", "train": "data/arc_challenge.train.jsonl"},
            training_split="train", output_type="multiple_choice", doc_to_text="Question: {{question}}\nAnswer:",
            doc_to_target="{{choices.label.index(answerKey)}}", doc_to_choice="{{choices.text}}",
            metric_list=_MC_METRICS),
        "hellaswag": _yaml_doc(
            "hellaswag", "validation", {"validation": "data/hellaswag.validation.jsonl",
                                        "train": "data/hellaswag.train.jsonl"},
            training_split="train", output_type="multiple_choice", doc_to_text="{{query}}", doc_to_target="{{label}}",
            doc_to_choice="choices", metric_list=_MC_METRICS),
        # as lm-eval's winogrande: doc_to_text gives the gold index (an int: "multiple inputs"), the choices are the
        # two contexts, and both share one continuation
        "winogrande": _yaml_doc(
            "winogrande", "validation", {"validation": "data/winogrande.validation.jsonl",
                                         "train": "data/winogrande.train.jsonl"},
            training_split="train", output_type="multiple_choice", doc_to_text="label", doc_to_target="continuation",
            doc_to_choice="contexts", metric_list=_MC_METRICS[:1]),
        "gsm8k": _yaml_doc(
            "gsm8k", "test", {"test": "data/gsm8k.test.jsonl", "train": "data/gsm8k.train.jsonl"},
            training_split="train", fewshot_split="train", output_type="generate_until",
            doc_to_text="Question: {{question}}\nAnswer:", doc_to_target="{{answer}}",
            metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                          "ignore_case": True, "ignore_punctuation": False,
                          "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
            generation_kwargs={"until": list(GSM8K_STOP), "do_sample": False, "temperature": 0.0,
                               "max_gen_toks": MAX_GEN_TOKS},
            repeats=1, num_fewshot=5,
            filter_list=[{"name": "strict-match", "filter": [{"function": "regex",
                                                              "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                             {"function": "take_first"}]},
                         {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                                  "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                                 {"function": "take_first"}]}]),
    }
    for subject in MMLU_TEST:
        out[f"mmlu_{subject}"] = _yaml_doc(
            f"mmlu_{subject}", "test", {"test": f"../data/mmlu/{subject}.test.jsonl",
                                        "dev": f"../data/mmlu/{subject}.dev.jsonl"},
            fewshot_split="dev", fewshot_config={"sampler": "first_n"}, output_type="multiple_choice",
            description=mmlu_description(subject),
            doc_to_text="{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. "
                        "{{choices[3]}}\nAnswer:",
            doc_to_choice=["A", "B", "C", "D"], doc_to_target="answer", metric_list=_MC_METRICS[:1])
    return out


def generate(dest: Path, seed: int = 0) -> dict[str, Any]:
    """Write the tasks and their data under `dest` (deterministic for a seed); returns what shape.json holds."""
    dest.mkdir(parents=True, exist_ok=True)
    makers = {"arc_challenge": _arc, "hellaswag": _hellaswag, "winogrande": _winogrande, "gsm8k": _gsm8k}
    for name, make in makers.items():
        t = TARGETS[name]
        rng = random.Random(f"{seed}:{name}")  # str seeds are hashed with sha512: stable across runs and hosts
        _write_jsonl(dest / "data" / f"{name}.{t.split}.jsonl", make, t.docs, rng)
        _write_jsonl(dest / "data" / f"{name}.train.jsonl", make, 256 if name == "gsm8k" else FEWSHOT_POOL, rng)
    for subject in MMLU_TEST:
        rng = random.Random(f"{seed}:mmlu_{subject}")
        _write_jsonl(dest / "data" / "mmlu" / f"{subject}.test.jsonl", _mmlu(subject), MMLU_TEST[subject][1], rng)
        _write_jsonl(dest / "data" / "mmlu" / f"{subject}.dev.jsonl", _mmlu(subject), 5, rng)
    for name, doc in _task_yamls().items():
        path = dest / ("mmlu" if name.startswith("mmlu_") else "") / f"{PREFIX}{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    group = {"group": f"{PREFIX}mmlu", "task": [f"{PREFIX}mmlu_{s}" for s in MMLU_TEST],
             "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
             "metadata": {"version": 2, "shape_of": "mmlu"}}
    (dest / "mmlu" / f"_{PREFIX}mmlu.yaml").write_text(yaml.safe_dump(group, sort_keys=False), encoding="utf-8")
    info = {"seed": seed, "suite": [PREFIX + t for t in SUITE], "chars_per_token": CHARS_PER_TOKEN,
            "targets": {PREFIX + k: asdict(v) for k, v in TARGETS.items()}}
    (dest / "shape.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def requests_at(limit: int | None) -> dict[str, dict[str, int]]:
    """Documents and requests per suite task at a limit (None: the whole split): what lm-eval will build."""
    out: dict[str, dict[str, int]] = {}
    for name in SUITE:
        leaves = [k for k in TARGETS if k.startswith("mmlu_")] if name == "mmlu" else [name]
        docs = sum(min(TARGETS[k].docs, limit or TARGETS[k].docs) for k in leaves)
        out[PREFIX + name] = {"subtasks": len(leaves), "docs": docs,
                              "requests": sum(min(TARGETS[k].docs, limit or TARGETS[k].docs) * TARGETS[k].choices
                                              for k in leaves)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="suite_shape", description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    info = generate(args.dest, args.seed)
    sys.path.insert(0, str(ROOT))
    from bot.config import ValidateSettings  # the default suite and limit this shape stands for

    default = ValidateSettings()
    if list(default.tasks) != list(SUITE):
        print(f"note: validate.tasks is now {default.tasks}, this shape is of {list(SUITE)}", file=sys.stderr)
    limit = default.limit if isinstance(default.limit, int) else None
    print(json.dumps({"dest": str(args.dest), "tasks": ",".join(info["suite"]), "limit": default.limit,
                      "requests": requests_at(limit)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
