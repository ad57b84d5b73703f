#!/usr/bin/env bash
# One GPU session on the air-gapped H100 host. Everything runs through the bot's own commands (`bot quantize`,
# `bot validate`, `bot card`), never a side script. Phases, in the order given by PHASES:
#   build  random-init models with exact real configs (Llama-3.1-8B, the same truncated to $TRUNC_LAYERS decoder
#          layers, Qwen3-1.7B), SmolLM2-135M-Instruct (real weights), and a long calibration file
#   quant  four quantize jobs at once on the one GPU (their timings are labelled as shared):
#            F  8B full shape, all six recipes, reduced calibration ($F_SAMPLES rows; AutoRound $F_AR_ITERS iters):
#               the checkpoints whose served speed is measured (speed depends on format and shapes only)
#            T  8B truncated, all six recipes at the recipes' default calibration (512 x 2048 etc., AutoRound 200
#               iterations): the per-layer time that extrapolates to the full model
#            A  Qwen3-1.7B shape, all six recipes (64 x 512 bundled chats)
#            C  SmolLM2 (real weights), all six recipes (64 x 512 bundled chats)
#            B  8B truncated, GPTQ at calibration batch $B_BATCH (compare with T's GPTQ at $CAL_BATCH, run alongside)
#          Without F, each small run (C, A) goes straight on into its validation (vc, va) as soon as it is done.
#   v8     8B: base + six variants in vLLM with CUDA graphs (the default), alone on the GPU: load, generations,
#          batch-1 and batched speed; no accuracy (random weights)
#   card   `bot card` for the 8B run (the example card)
#   va     Qwen3-1.7B shape: base + six variants in vLLM (enforce_eager), no accuracy
#   vc     SmolLM2: base + six variants in vLLM (enforce_eager) + lm-eval's vLLM backend on the bundled tasks
#          (validations queue on a lock: one vLLM start-up at a time; VALIDATE_ONE_AT_A_TIME=0 lets them overlap)
# Results (manifests, logs, console output, cards) go under $WORK (collect with benchmarks/gpu/collect.sh).
# Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize) and SmolLM2's GGUF under /tmp/smolpkg.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
# The 8B run's base and six checkpoints take about 57 GB of the host's 64 GB disk: the truncated, 1.7B and SmolLM2
# models and their runs live in RAM (tmpfs) instead, and the truncated run's checkpoints are dropped once timed.
FAST="${FAST:-/dev/shm/gpu}"
PHASES="${PHASES:-build quant v8 card resume va}"
TRUNC_LAYERS="${TRUNC_LAYERS:-2}"
F_SAMPLES="${F_SAMPLES:-32}"
F_AR_ITERS="${F_AR_ITERS:-10}"
F_WORKERS="${F_WORKERS:-2}"         # parallel quantize workers for the full-shape run (bot quantize --workers)
T_WORKERS="${T_WORKERS:-2}"
F_RECIPES="${F_RECIPES:-}"          # e.g. "nvfp4 w4a16-autoround": only these recipes (default: all six)
T_RECIPES="${T_RECIPES:-}"
T_SAMPLES="${T_SAMPLES:-}"          # empty: the recipes' default calibration (the smoke test sets a few)
S_RECIPES="${S_RECIPES:-}"          # recipes for the small runs C and A (default: all six)
S_WORKERS="${S_WORKERS:-2}"
B_BATCH="${B_BATCH:-8}"
F_DEADLINE="${F_DEADLINE:-0}"       # seconds: stop the full-shape quantize then (complete variants stay), 0 = never
CAL_BATCH="${CAL_BATCH:-1}"         # bot quantize --calibration-batch-size for the 8B runs
GRACE="${GRACE:-45}"
SHAPE8="${SHAPE8:-llama-3.1-8b}"
PY="${PY:-/opt/torch/.venv/bin/python3}"
DEVICE="${DEVICE:-cuda}"            # SMOKE on a CPU machine: DEVICE=cpu BACKEND=hf SHAPE8=tiny QUANT_JOBS="F T"
BACKEND="${BACKEND:-vllm}"
QUANT_JOBS="${QUANT_JOBS:-F T A}"
mkdir -p "$WORK/out" "$WORK/bin" "$WORK/models" "$FAST/models" "$FAST/runs"
echo "$FAST" > "$WORK/fast-dir"  # collect.sh reads it: polls need not repeat the session's FAST
# One interpreter per site (never both on one PYTHONPATH: they hold different compressed-tensors versions).
for site in quantize serve; do
  printf '#!/usr/bin/env bash\nexport PYTHONPATH="%s:/tmp/site-%s:/tmp/smolpkg"\nexec %s "$@"\n' "$ROOT" "$site" "$PY" \
    > "$WORK/bin/py-$site"
  chmod +x "$WORK/bin/py-$site"
done
export BOT_QUANTIZE_PYTHON="$WORK/bin/py-quantize" BOT_SERVE_PYTHON="$WORK/bin/py-serve" PYTHONUNBUFFERED=1
[ -d "$ROOT/.gput" ] && export BOT_BUILD_TOKENIZER="$ROOT/.gput"  # SmolLM2's tokenizer, when its GGUF is not here
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 BOT_RUNS_DIR="$WORK/runs"
BOT=("$WORK/bin/py-quantize" -m bot)   # the bot's own light process (pydantic, typer, rich)
CAL="$ROOT/bot/data/calibration.jsonl"
LONG="$WORK/long-calibration.jsonl"
M8="$WORK/models/Llama-3.1-8B-shape"
M8T="$FAST/models/Llama-3.1-8B-shape-${TRUNC_LAYERS}L"
M8B="$FAST/models/Llama-3.1-8B-shape-${TRUNC_LAYERS}L-batch${B_BATCH}"  # a copy: its own run directory
M17="$FAST/models/Qwen3-1.7B-shape"
MS="$FAST/models/SmolLM2-135M-Instruct"
want() { [[ " $PHASES " == *" $1 "* ]]; }
job() { [[ " $QUANT_JOBS " == *" $1 "* ]]; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
run_of() { ls -d "$WORK"/runs/local--"$(basename "$1")"@* "$FAST"/runs/local--"$(basename "$1")"@* 2>/dev/null | head -1; }

if [ ! -s "$WORK/out/env.txt" ]; then
  { date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    nproc; free -g | head -2
    "$WORK/bin/py-serve" -c "import vllm, lm_eval, torch; print('vllm', vllm.__version__, 'lm_eval', lm_eval.__version__, 'torch', torch.__version__)"
    "$WORK/bin/py-quantize" -c "import llmcompressor, compressed_tensors as ct, transformers as t; print('llmcompressor', llmcompressor.__version__, 'compressed-tensors', ct.__version__, 'transformers', t.__version__)"
  } > "$WORK/out/env.txt" 2>&1
fi

if want build; then
  log "build: models and the long calibration file"
  B=("$WORK/bin/py-quantize" -m bot.workers.build_model)
  "$WORK/bin/py-quantize" "$ROOT/benchmarks/gpu/long_calibration.py" "$LONG" > "$WORK/out/build.txt" 2>&1
  if [ "$SHAPE8" = tiny ]; then  # CPU smoke test of this script
    job F && { [ -d "$M8" ] || "${B[@]}" tiny "$M8" --layers 4 >> "$WORK/out/build.txt" 2>&1; }
    job T || job B && { [ -d "$M8T" ] || "${B[@]}" tiny "$M8T" --layers "$TRUNC_LAYERS" >> "$WORK/out/build.txt" 2>&1; }
  else
    job F && { [ -d "$M8" ] || "${B[@]}" shape "$M8" --shape "$SHAPE8" >> "$WORK/out/build.txt" 2>&1; }
    job T || job B && { [ -d "$M8T" ] || "${B[@]}" shape "$M8T" --shape "$SHAPE8" --layers "$TRUNC_LAYERS" \
      >> "$WORK/out/build.txt" 2>&1; }
  fi
  job B && { [ -d "$M8B" ] || cp -r "$M8T" "$M8B"; }
  if [ "$SHAPE8" = tiny ]; then
    job A && { [ -d "$M17" ] || "${B[@]}" tiny "$M17" --layers 2 >> "$WORK/out/build.txt" 2>&1; }
  else
    job A && { [ -d "$M17" ] || "${B[@]}" shape "$M17" --shape qwen3-1.7b >> "$WORK/out/build.txt" 2>&1; }
  fi
  job C && { [ -d "$MS" ] || "${B[@]}" smollm2 "$MS" >> "$WORK/out/build.txt" 2>&1; }
  du -sb "$WORK"/models/* "$FAST"/models/* >> "$WORK/out/build.txt" 2>&1
  log "build done"
fi

validate() {  # name, model dir, extra env..., then -- bot validate arguments
  local name=$1 model=$2; shift 2
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local run; run=$(run_of "$model")
  [ -n "$run" ] || { log "$name: no run directory for $model"; return 1; }
  log "$name: bot validate $run $*"
  # One vLLM start-up at a time: two engines profiling GPU memory at once spoil each other's profile (2026-11-24:
  # "Available KV cache memory: -8.27 GiB"), so validations queue on a lock while quantize jobs go on.
  local lock=(); command -v flock > /dev/null && [ "${VALIDATE_ONE_AT_A_TIME:-1}" = 1 ] && lock=(flock "$WORK/validate.lock")
  "${lock[@]}" env "${envs[@]}" "${BOT[@]}" validate "$run" --backend "$BACKEND" "$@" > "$WORK/out/$name.txt" 2>&1
  log "$name rc=$?"
}

validate_a() {
  validate va "$M17" BOT_VALIDATE__SPEED__ENFORCE_EAGER=true BOT_VALIDATE__SPEED__GPU_MEMORY_UTILIZATION=0.45 \
    -- --tasks none
}
validate_c() {
  validate vc "$MS" BOT_VALIDATE__SPEED__ENFORCE_EAGER=true BOT_VALIDATE__SPEED__GPU_MEMORY_UTILIZATION=0.3 \
    -- --tasks bot_mc_facts,bot_wikitext_mini
}
rflags() { for r in "$@"; do printf -- '-r %s ' "$r"; done; }
q() {  # name, OMP threads, then `bot quantize` arguments; its pid is kept so that it can be stopped for v8
  local name=$1 threads=$2; shift 2
  OMP_NUM_THREADS=$threads "${BOT[@]}" quantize "$@" --device "$DEVICE" >> "$WORK/out/quant-$name.txt" 2>&1 &
  echo $! > "$WORK/pid-$name"; wait $!; log "quant $name rc=$?"
}

tflags=(); [ -n "$T_SAMPLES" ] && tflags=(--samples "$T_SAMPLES")
quant_T() {  # the truncated 8B at the recipes' default calibration (or T_SAMPLES)
  q T 3 "$M8T" --workers "$T_WORKERS" --runs-dir "$FAST/runs" --calibration "$LONG" "${tflags[@]}" \
    --calibration-batch-size "$CAL_BATCH" $(rflags $T_RECIPES)
}
quant_B() {  # its copy, GPTQ at calibration batch B_BATCH
  q B 3 "$M8B" --runs-dir "$FAST/runs" --calibration "$LONG" "${tflags[@]}" --calibration-batch-size "$B_BATCH" \
    -r w4a16-gptq
}

small() {  # C or A: quantize, then (without F) straight on into its validation
  local name=$1 model=$2
  job "$name" && q "$name" 3 "$model" --runs-dir "$FAST/runs" --workers "$S_WORKERS" --samples 64 --seq-len 512 \
    --calibration "$CAL" $(rflags $S_RECIPES)
  job F && return 0
  [ "$name" = C ] && want vc && validate_c
  [ "$name" = A ] && want va && validate_a
  return 0
}

if want quant; then
  cat > "$WORK/speed-recipes.yaml" <<EOF
# Full-shape checkpoints for served speed: fewer AutoRound iterations (format and shapes are unchanged).
overrides:
  w4a16-autoround: {iters: $F_AR_ITERS, lr: 0.005}
EOF
  log "quant: $QUANT_JOBS (F: 8B full, $F_SAMPLES samples; T: 8B ${TRUNC_LAYERS} layers, recipe defaults)"
  job F && { q F 4 "$M8" --workers "$F_WORKERS" --samples "$F_SAMPLES" --calibration "$LONG" \
               --calibration-batch-size "$CAL_BATCH" --recipes-file "$WORK/speed-recipes.yaml" $(rflags $F_RECIPES) &
             PF=$!; }
  job T && { quant_T & }
  job B && { quant_B & }
  if job F; then
    { small C "$MS"; small A "$M17"; } &
    if [ "$F_DEADLINE" -gt 0 ]; then
      ( sleep "$F_DEADLINE"; pid=$(cat "$WORK/pid-F" 2>/dev/null) && kill -0 "$pid" 2>/dev/null \
          && { kill "$pid"; log "quant F stopped at its deadline (${F_DEADLINE}s)"; } ) &
      PW=$!
    fi
    wait "$PF"
    [ -n "${PW:-}" ] && kill "$PW" 2>/dev/null
    # The served-speed run needs the GPU to itself: the other quantize jobs get GRACE seconds to finish, then are
    # stopped (complete variants stay complete) and resumed by `bot quantize` after the 8B validation.
    for _ in $(seq "$GRACE"); do jobs -r | grep -q . || break; sleep 1; done
    for name in T B C A; do
      pid=$(cat "$WORK/pid-$name" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && { kill "$pid"; log "quant $name stopped for v8"; }
    done
  else
    CHAINED=1
    small C "$MS" &
    small A "$M17" &
  fi
  wait; log "quant done"
fi

want v8 && validate v8 "$M8" BOT_VALIDATE__SPEED__ENFORCE_EAGER=false -- --tasks none
if want card; then
  run=$(run_of "$M8")
  [ -n "$run" ] && "${BOT[@]}" card "$run" > "$WORK/out/card.txt" 2>&1; log "card rc=$?"
fi
if want resume; then  # what was stopped for v8: `bot quantize` skips the complete variants and redoes the rest
  log "resume: T and A/C quantize (timings now share the GPU with the small validations)"
  job T && { quant_T & }
  job B && { quant_B & }
  small C "$MS"
  small A "$M17"
fi
# The two small runs share the GPU (their speed figures are labelled as such); the 8B speed above ran alone.
if [ -z "${CHAINED:-}" ]; then
  want va && validate_a &
  want vc && validate_c &
fi
wait

log "ALL DONE ($PHASES)"
