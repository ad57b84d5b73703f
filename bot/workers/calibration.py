"""Calibration data for the quantize worker: local JSONL or a Hub dataset, chat template applied, tokenized once
per (samples, seq_len) and fingerprinted so the manifest says exactly what the model saw."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any


def _load_rows(spec: dict[str, Any]) -> tuple[list[Any], str, str | None]:
    if spec.get("file"):
        path = Path(spec["file"])
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return rows, f"file:{path.name}", None
    from datasets import load_dataset

    ds = load_dataset(spec["dataset"], split=spec.get("split") or "train")
    return list(ds), spec["dataset"], spec.get("split")


def _as_text(row: Any, tokenizer) -> tuple[str, bool]:
    if isinstance(row, str):
        return row, False
    messages = row.get("messages") or row.get("conversations")
    if messages and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False), True
    if messages:
        return "\n".join(str(m.get("content", "")) for m in messages), False
    for key in ("text", "content", "prompt"):
        if isinstance(row.get(key), str):
            return row[key], False
    raise ValueError(f"calibration row has no 'messages' or 'text': keys {sorted(row)}")


def pack_rows(rows, seq_len: int, limit: int) -> list[list[int]]:
    """Whole conversations (token id lists, consumed lazily) joined in order and cut into at most `limit` rows of
    exactly `seq_len` tokens. Each row starts at the start of a conversation, so position 0 holds the template's
    first token as at inference; the tail that overflows a row is dropped, and so is a last row left short."""
    packed: list[list[int]] = []
    current: list[int] = []
    for ids in rows:
        current.extend(ids)
        if len(current) >= seq_len:
            packed.append(current[:seq_len])
            current = []
            if len(packed) == limit:
                break
    return packed


class CalibrationCache:
    """Rows are read once; tokenized datasets are cached per (samples, seq_len, pack).

    `pack`: every row exactly `seq_len` tokens (see `pack_rows`). AutoRound needs it: llm-compressor 0.14 pads
    variable-length rows to the longest one before handing them to auto-round 0.15, which ignores the mask it is
    given and tunes on the padding (SmolLM2's block losses grow 200x)."""

    def __init__(self, spec: dict[str, Any], tokenizer) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self._rows: list[Any] | None = None
        self._source = ""
        self._split: str | None = None
        self._cache: dict[tuple[int, int, bool], tuple[Any, dict[str, Any]]] = {}

    def get(self, samples: int, seq_len: int, pack: bool = False):
        key = (samples, seq_len, pack)
        if key in self._cache:
            return self._cache[key]
        if self._rows is None:
            self._rows, self._source, self._split = _load_rows(self.spec)
        if not self._rows:
            raise ValueError("calibration data is empty")
        rng = random.Random(int(self.spec.get("seed", 42)))
        order = list(range(len(self._rows)))
        rng.shuffle(order)
        from datasets import Dataset

        if pack:
            texts, templated, ids = self._packed(order, samples, seq_len)
            enc = {"input_ids": ids, "attention_mask": [[1] * seq_len for _ in ids]}
        else:
            texts, templated = [], False
            for i in order[:samples]:
                text, used = _as_text(self._rows[i], self.tokenizer)
                texts.append(text)
                templated = templated or used
            enc = self.tokenizer(texts, max_length=seq_len, truncation=True, padding=False, add_special_tokens=False)
        ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        digest = hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()
        info = {
            "source": self._source, "split": self._split, "samples": len(enc["input_ids"]), "seq_len": seq_len,
            "seed": int(self.spec.get("seed", 42)), "fingerprint": f"sha256:{digest}",
            "chat_template_applied": templated, "tokens": int(sum(len(x) for x in enc["input_ids"])),
            "batch_size": int(self.spec.get("batch_size") or 1), "packed": pack,
        }
        self._cache[key] = (ds, info)
        return ds, info

    def _packed(self, order: list[int], samples: int, seq_len: int) -> tuple[list[str], bool, list[list[int]]]:
        texts: list[str] = []
        templated = False

        def token_rows():  # templated and tokenized only as far as the packed rows need
            nonlocal templated
            for i in order:
                text, used = _as_text(self._rows[i], self.tokenizer)
                texts.append(text)
                templated = templated or used
                yield self.tokenizer(text, add_special_tokens=False)["input_ids"]

        ids = pack_rows(token_rows(), seq_len, samples)
        if not ids:
            raise ValueError(f"calibration text is shorter than one packed row of seq_len {seq_len} tokens: "
                             "lower seq_len or add calibration rows")
        return texts, templated, ids
