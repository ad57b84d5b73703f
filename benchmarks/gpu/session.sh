#!/usr/bin/env bash
# One GPU session on the air-gapped H100 host, running the bot's own commands (not a side script), in priority
# order so that a session cut short still leaves complete results for the phases it finished:
#   C1. SmolLM2-135M-Instruct (real weights): the six recipes quantized on the GPU
#   A.  a random-init model with Qwen3-1.7B's exact config: the six recipes quantized on the GPU
#   C2. SmolLM2: base + six variants validated in vLLM (load, generations, speed) and lm-eval's vLLM backend
#       on the bundled tasks (accuracy recovery on real weights)
#   B.  the Qwen3-1.7B-shaped run validated in vLLM (load, generations, speed vs BF16; no accuracy: random weights)
# Results (manifests, logs, console output) go to $WORK/out; progress to $WORK/progress.txt.
# Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
mkdir -p "$WORK/out" "$WORK/bin"
PY=/opt/torch/.venv/bin/python3
# One interpreter per site (never both on one PYTHONPATH: they hold different compressed-tensors versions).
for site in quantize serve; do
  printf '#!/usr/bin/env bash\nexport PYTHONPATH="%s:/tmp/site-%s:/tmp/smolpkg"\nexec %s "$@"\n' "$ROOT" "$site" "$PY" > "$WORK/bin/py-$site"
  chmod +x "$WORK/bin/py-$site"
done
export BOT_QUANTIZE_PYTHON="$WORK/bin/py-quantize" BOT_SERVE_PYTHON="$WORK/bin/py-serve" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 BOT_RUNS_DIR="$WORK/runs"
BOT=("$WORK/bin/py-quantize" -m bot)   # the bot's own light process (pydantic, typer, rich)
CAL="$ROOT/bot/data/calibration.jsonl"
PHASES="${PHASES:-C1 A C2 B}"   # which phases to run, in this order of priority
want() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
save() { (cd "$WORK" && tar czf "out/$1.tar.gz" --exclude='*/model' --exclude='*/model.partial' \
          --exclude='*.safetensors' runs/local--"$2"* 2>/dev/null); }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  "$WORK/bin/py-serve" -c "import vllm, lm_eval, torch; print('vllm', vllm.__version__, 'lm_eval', lm_eval.__version__, 'torch', torch.__version__)"
  "$WORK/bin/py-quantize" -c "import llmcompressor, compressed_tensors as ct; print('llmcompressor', llmcompressor.__version__, 'compressed-tensors', ct.__version__)"
} > "$WORK/out/env.txt" 2>&1

if want C1; then
log "C1: build SmolLM2 and quantize six recipes (calibration: bundled chats, 64 x 512)"
"$WORK/bin/py-quantize" -m bot.workers.build_model smollm2 "$WORK/models/SmolLM2-135M-Instruct" > "$WORK/build-smol.log" 2>&1
"${BOT[@]}" quantize "$WORK/models/SmolLM2-135M-Instruct" --device cuda --samples 64 --seq-len 512 --calibration "$CAL" \
  > "$WORK/out/C1-quantize.txt" 2>&1; log "C1 rc=$?"
save C SmolLM2
fi

if want A; then
log "A: build Qwen3-1.7B-shaped random model and quantize six recipes (64 x 512; AutoRound 200 iterations)"
"$WORK/bin/py-quantize" -m bot.workers.build_model shape "$WORK/models/Qwen3-1.7B-shape" --shape qwen3-1.7b > "$WORK/build-q.log" 2>&1
"${BOT[@]}" quantize "$WORK/models/Qwen3-1.7B-shape" --device cuda --samples 64 --seq-len 512 --calibration "$CAL" \
  > "$WORK/out/A-quantize.txt" 2>&1; log "A rc=$?"
save A Qwen3
fi
du -sb "$WORK"/runs/*/*/model "$WORK"/models/* > "$WORK/out/sizes.txt" 2>&1

if want C2; then
log "C2: validate SmolLM2 in vLLM (enforce_eager to save start-up time) + lm-eval vLLM backend, bundled tasks, full"
RUN_C=$(ls -d "$WORK"/runs/local--SmolLM2-135M-Instruct@* | head -1)
BOT_VALIDATE__SPEED__ENFORCE_EAGER=true "${BOT[@]}" validate "$RUN_C" --backend vllm \
  --tasks bot_mc_facts,bot_wikitext_mini > "$WORK/out/C2-validate.txt" 2>&1; log "C2 rc=$?"
save C SmolLM2
fi

if want B; then
log "B: validate the Qwen3-1.7B-shaped run in vLLM (enforce_eager; load, generations, speed; accuracy not measured)"
RUN_A=$(ls -d "$WORK"/runs/local--Qwen3-1.7B-shape@* | head -1)
BOT_VALIDATE__SPEED__ENFORCE_EAGER=true "${BOT[@]}" validate "$RUN_A" --backend vllm --tasks none \
  > "$WORK/out/B-validate.txt" 2>&1; log "B rc=$?"
save A Qwen3
fi
log "ALL DONE ($PHASES)"
