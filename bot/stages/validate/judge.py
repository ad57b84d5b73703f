"""The verdict on one variant: its comparison with the base (paired on the same documents where per-document
results exist) and the gate's decision on it. Deterministic: the same records give the same verdict, so a
rerun of `bot validate` (which judges every variant again) never flips a decision when nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.manifest import AccuracyRecord, ValidateRecord, VariantValidateRecord
from bot.recipes import Recipe
from bot.stages.validate.compare import compare, decide_gate, gate_threshold
from bot.stages.validate.paired import compare_tasks


def read_samples(folder: Path, acc: AccuracyRecord | None) -> dict[str, Any] | None:
    if acc is None or not acc.samples_file:
        return None
    try:
        return json.loads((folder / acc.samples_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def more_documents(base: ValidateRecord, limit: int | None) -> bool:
    """Whether a larger limit than `limit` would evaluate documents not evaluated yet: some task of the base
    has documents left (lm-eval reports each task's size; without it, a task that filled the limit may)."""
    acc = base.accuracy
    if limit is None or acc is None or not acc.tasks:
        return False
    return any(t.samples is None or (t.documents > t.samples if t.documents else t.samples >= limit)
               for t in acc.tasks)


def can_grow(rec: VariantValidateRecord, base: ValidateRecord, settings: Settings) -> bool:
    acc = rec.accuracy
    return (acc is not None and acc.error is None and acc.rounds < settings.gate.max_rounds
            and more_documents(base, acc.limit))


def judge(rec: VariantValidateRecord, variant: str, recipe: Recipe | None, base: ValidateRecord, base_folder: Path,
          base_size: int | None, variant_folder: Path, variant_size: int | None, settings: Settings) -> None:
    """Fill `rec.comparison` and `rec.gate` from the measured facts."""
    b, v = read_samples(base_folder, base.accuracy), read_samples(variant_folder, rec.accuracy)
    paired = compare_tasks(b, v, settings.gate) if b is not None and v is not None else None
    rec.comparison = compare(base, rec, base_size, variant_size, paired)
    acc = rec.accuracy
    # None: every task was evaluated whole (each had fewer documents than the limit asked for)
    limit = acc.limit if acc is not None and more_documents(base, acc.limit) else None
    rec.gate = decide_gate(rec, rec.comparison, gate_threshold(variant, recipe, settings.gate), settings.gate, recipe,
                           can_grow=can_grow(rec, base, settings), rounds=acc.rounds if acc else 1, limit=limit)
