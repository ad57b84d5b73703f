"""Write a calibration JSONL whose rows fill the recipes' default sequence lengths (for timing runs).

    python benchmarks/gpu/long_calibration.py OUT.jsonl [--rows 512] [--min-chars 12000] [--seed 0]

The GPU host cannot reach the Hub, so the recipes' default calibration (ultrachat, 512 x 2048 tokens for GPTQ)
is not available there. Quantization time depends on the number of calibration tokens, not on their content, so
each row here is a multi-turn chat built from the bundled chats (bot/data/calibration.jsonl), shuffled with a
fixed seed, long enough (>= min-chars, about 3 000 tokens) that truncation at 2048 tokens leaves full rows. The
token count the model saw is in each variant's manifest (`calibration.tokens`).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "bot" / "data" / "calibration.jsonl"


def build(rows: int, min_chars: int, seed: int) -> list[dict]:
    chats = [json.loads(line)["messages"] for line in BUNDLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        turns: list[dict] = []
        size = 0
        while size < min_chars:
            chat = [m for m in rng.choice(chats) if m["role"] != "system"]
            turns.extend(chat)
            size += sum(len(m["content"]) for m in chat)
        out.append({"messages": turns})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--min-chars", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.write_text("".join(json.dumps(r) + "\n" for r in build(args.rows, args.min_chars, args.seed)))
    print(f"{args.out}: {args.rows} rows")


if __name__ == "__main__":
    main()
