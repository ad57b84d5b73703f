#!/usr/bin/env bash
# AutoRound on SmolLM2-135M-Instruct, on this CPU: round-to-nearest (iters 0) and 20 tuning iterations, through
# `bot quantize`; then benchmarks/autoround_probe.py measures perplexity and the model's massive activations.
# Writes benchmarks/autoround-smollm2-<date>.md + .json. About 10 minutes on two cores.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
W="${W:-$(mktemp -d)}"
DATE="${DATE:-$(date -u +%Y-%m-%d)}"
[ -d "$W/SmolLM2-135M-Instruct" ] || "$PY" -m bot.workers.build_model smollm2 "$W/SmolLM2-135M-Instruct"
runs=()
for iters in 0 20; do
  printf 'overrides:\n  w4a16-autoround: {iters: %s, lr: 0.005}\n' "$iters" > "$W/iters$iters.yaml"
  BOT_RUNS_DIR="$W/runs-iters$iters" "$PY" -m bot quantize "$W/SmolLM2-135M-Instruct" -r w4a16-autoround --device cpu \
    --samples 32 --seq-len 256 --calibration "$ROOT/bot/data/calibration.jsonl" --recipes-file "$W/iters$iters.yaml"
  runs+=("$(ls -d "$W"/runs-iters"$iters"/local--*)")
done
"$PY" "$ROOT/benchmarks/autoround_probe.py" "$ROOT/benchmarks/autoround-smollm2-$DATE" "$W/SmolLM2-135M-Instruct" "${runs[@]}"
