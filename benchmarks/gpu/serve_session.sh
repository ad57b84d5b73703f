#!/usr/bin/env bash
# The serving search on one GPU (issue 17: the fastest measured way to serve each variant). Everything runs through
# the bot's own commands (`bot quantize`, `bot validate`, `bot card`); the search is the validate stage's
# (bot/stages/serve), switched on by BOT_VALIDATE__SERVE_SEARCH__ENABLED. Phases, in the order given by PHASES:
#   build  the Llama-3.1-8B shape with random weights (speed depends on format and shape only)
#   quant  its six variants, reduced calibation (32 x 512 bundled chats, AutoRound 0 iterations: the same format)
#   serve  for each of SERVE_VARIANTS in turn: `bot validate RUN -v X --tasks none` with the search on (the base
#          first, once: later calls keep its search), CUDA graphs on, fidelity off (random weights); each model's
#          manifest is saved after every configuration, so a poll's collect.sh brings back what was measured
#   card   `bot card` for the run (the "Serve it fastest" part), then the report benchmarks/serving-<date>.md
# Per 8B model: one validate engine (about 100 s) plus the search, capped by SERVE_BUDGET seconds (defaults twice,
# the FP8 KV cache at the long-context point, then the other kernels that apply). One 30-minute lease holds the
# set-up, the base and two or three variants: run the rest in a second session with PHASES="serve card" and the same
# WORK (a fresh machine needs build and quant again). The compile cache stays under $WORK/vllm-cache, so the second
# default engine and a rerun reuse torch.compile's work.
# Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize): see benchmarks/gpu/README.md.
# CPU smoke test of the script (the search is recorded as not run with the hf backend; a tiny model):
#   WORK=/tmp/ss PY=.venv/bin/python DEVICE=cpu BACKEND=hf SHAPE8=tiny SERVE_VARIANTS=fp8-dynamic \
#     QUANT_RECIPES=fp8-dynamic bash benchmarks/gpu/serve_session.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
PHASES="${PHASES:-build quant serve card}"
PY="${PY:-/opt/torch/.venv/bin/python3}"
DEVICE="${DEVICE:-cuda}"
BACKEND="${BACKEND:-vllm}"
SHAPE8="${SHAPE8:-llama-3.1-8b}"
QUANT_RECIPES="${QUANT_RECIPES:-}"  # default: all six
SERVE_VARIANTS="${SERVE_VARIANTS:-w4a16-gptq fp8-dynamic w8a8-int8 nvfp4 w4a16-awq w4a16-autoround}"
SERVE_BUDGET="${SERVE_BUDGET:-600}"
LONG_TOKENS="${LONG_TOKENS:-16384}"
mkdir -p "$WORK/out" "$WORK/bin" "$WORK/models" "$WORK/runs" "$WORK/vllm-cache"
echo "$WORK" > "$WORK/fast-dir"  # collect.sh: everything lives under WORK here
# shellcheck source=benchmarks/gpu/sites.sh
source "$ROOT/benchmarks/gpu/sites.sh"
bot_sites "$WORK/runs"
export VLLM_CACHE_ROOT="$WORK/vllm-cache"
BOT=("$WORK/bin/py-quantize" -m bot)
M8="$WORK/models/Llama-3.1-8B-shape"
want() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
run_of() { ls -d "$WORK"/runs/local--"$(basename "$1")"@* 2>/dev/null | head -1; }
rflags() { for r in "$@"; do printf -- '-r %s ' "$r"; done; }

if [ ! -s "$WORK/out/env.txt" ]; then
  { date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null
    nproc; free -g | head -2
    "$WORK/bin/py-serve" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    "$WORK/bin/py-serve" -c "import importlib.util as u; print({m: bool(u.find_spec(m)) for m in ('flashinfer', 'conch', 'humming', 'fbgemm_gpu')})"
  } > "$WORK/out/env.txt" 2>&1
fi

if want build; then
  log "build: $SHAPE8"
  if [ "$SHAPE8" = tiny ]; then
    [ -d "$M8" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model tiny "$M8" --layers 2 > "$WORK/out/build.txt" 2>&1
  else
    [ -d "$M8" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model shape "$M8" --shape "$SHAPE8" \
      > "$WORK/out/build.txt" 2>&1
  fi
  log "build rc=$?"
fi

if want quant; then
  printf 'overrides:\n  w4a16-autoround: {iters: 0}\n' > "$WORK/serve-recipes.yaml"
  log "quant: ${QUANT_RECIPES:-all six recipes} (32 x 512 calibration: format and shape as the recipes make them)"
  "${BOT[@]}" quantize "$M8" --device "$DEVICE" --workers 2 --samples 32 --seq-len 512 \
    --calibration "$ROOT/bot/data/calibration.jsonl" --recipes-file "$WORK/serve-recipes.yaml" \
    $(rflags $QUANT_RECIPES) >> "$WORK/out/quant.txt" 2>&1
  log "quant rc=$?"
fi

if want serve; then
  run=$(run_of "$M8")
  [ -n "$run" ] || { log "serve: no run directory for $M8"; exit 1; }
  for v in $SERVE_VARIANTS; do
    log "serve $v: bot validate $run -v $v --tasks none (search budget ${SERVE_BUDGET}s per model)"
    BOT_VALIDATE__SERVE_SEARCH__ENABLED=true BOT_VALIDATE__SERVE_SEARCH__BUDGET_S="$SERVE_BUDGET" \
      BOT_VALIDATE__SERVE_SEARCH__LONG_CONTEXT_TOKENS="$LONG_TOKENS" BOT_VALIDATE__FIDELITY__ENABLED=false \
      BOT_VALIDATE__SPEED__ENFORCE_EAGER=false \
      "${BOT[@]}" validate "$run" -v "$v" --backend "$BACKEND" --tasks none > "$WORK/out/serve-$v.txt" 2>&1
    log "serve $v rc=$?"
  done
fi

if want card; then
  run=$(run_of "$M8")
  [ -n "$run" ] && { "${BOT[@]}" card "$run" > "$WORK/out/card.txt" 2>&1; log "card rc=$?"; }
  [ -n "$run" ] && "$WORK/bin/py-quantize" "$ROOT/benchmarks/serving_report.py" "$run" \
    --env "$WORK/out/env.txt" --out "$WORK/out/serving-$(date -u +%Y-%m-%d).md" > "$WORK/out/report.txt" 2>&1
  log "report rc=$?"
fi
log "ALL DONE ($PHASES)"
