#!/usr/bin/env bash
# Calibration batch size (bot quantize --calibration-batch-size) on this machine's CPU: W4A16-GPTQ and W8A8 of
# SmolLM2-135M-Instruct (real weights) with 64 rows x 512 tokens, batch 1 vs 8, then each variant's word
# perplexity on the bundled wikitext sample (lm-eval, hf backend) against the base. The rows are long enough to fill
# 512 tokens, so batching cuts nothing. Writes benchmarks/calibration-batch-<date>.md + .json via report.py.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
W="${WORK:-/tmp/calbatch}"
PY="${PY:-$ROOT/.venv/bin/python}"
mkdir -p "$W"
[ -d "$W/SmolLM2-135M-Instruct" ] || "$PY" -m bot.workers.build_model smollm2 "$W/SmolLM2-135M-Instruct"
"$PY" "$ROOT/benchmarks/gpu/long_calibration.py" "$W/long.jsonl" --rows 64 --min-chars 4000
for b in 1 8; do
  "$PY" -m bot quantize "$W/SmolLM2-135M-Instruct" --out "$W/runs/batch$b" -r w4a16-gptq -r w8a8-int8 --device cpu \
    --samples 64 --seq-len 512 --calibration "$W/long.jsonl" --calibration-batch-size "$b"
  "$PY" -m bot validate "$W/runs/batch$b" --backend hf --tasks bot_wikitext_mini --limit all
done
DATE=$(date -u +%Y-%m-%d)
"$PY" "$ROOT/benchmarks/report.py" "$ROOT/benchmarks/calibration-batch-$DATE" "$W/runs/batch1" "$W/runs/batch8" \
  --title "Calibration batch 1 vs 8 on CPU (SmolLM2-135M, 64 x 512): quantize time and perplexity"
