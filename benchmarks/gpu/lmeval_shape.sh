#!/usr/bin/env bash
# lm-eval at the default suite's shape on one GPU (issue 16): how long `bot validate` spends in lm-eval for an 8B
# with the default tasks (arc_challenge, hellaswag, winogrande, gsm8k, mmlu) at the default limit (250), base and
# one variant, through the bot's own commands. No dataset can be downloaded on the GPU host, so the tasks are the
# synthetic ones of benchmarks/suite_shape.py: the same request counts, lengths, shots and generation settings,
# filler content (accuracy on them means nothing; the model has random weights anyway). Phases, in PHASES order:
#   build    the Llama-3.1-8B shape (random weights, the real config; SmolLM2's tokenizer and chat template)
#   quant    one variant: `bot quantize M -r $VARIANT` (default fp8-dynamic: data-free, seconds on the GPU)
#   tasks    the synthetic tasks into $WORK/shape-tasks (benchmarks/suite_shape.py)
#   val      `bot validate RUN -v $VARIANT --tasks <the five> --limit $LIMIT` with the tasks on the include path,
#            BOT_VALIDATE__BATCH_SIZE=$BATCH set explicitly, fidelity off and one gate round (random weights: no
#            verdict means anything); vLLM with CUDA graphs, as `bot publish` runs it. The manifests' timings
#            (validate.timings.lmeval_worker, start-up included) are the time `bot publish` pays per model
#   pertask  benchmarks/gpu/lmeval_per_task.py on the job files `bot validate` wrote: per model in PER_TASK_MODELS
#            one engine, each task timed alone (the sum differs from the suite's one call: lm-eval batches all of a
#            suite's loglikelihood requests together)
#   report   $WORK/out/lmeval-shape.json: per model the workers' wall times from the manifests + the per-task times
# BATCH: lm-eval's vllm model takes "auto" as "every request of a type in one vLLM call" (no memory probe:
# lm_eval/models/vllm_causallms.py), the bot's default; an integer N hands vLLM N requests at a time.
# Random weights never stop early: every gsm8k generation runs to max_gen_toks (256), an upper bound for a real model.
# Results (manifests, logs, per-task JSON; no weights) go under $WORK: collect with benchmarks/gpu/collect.sh.
# Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize) and SmolLM2's tokenizer (.gput).
# CPU smoke test (a tiny random model, the hf backend, one document per task):
#   WORK=/tmp/lms FAST=/tmp/lms-fast DEVICE=cpu BACKEND=hf PY=.venv/bin/python SHAPE=tiny LIMIT=1 \
#     PHASES="build quant tasks val pertask report" bash benchmarks/gpu/lmeval_shape.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
FAST="${FAST:-/dev/shm/gpu}"
PHASES="${PHASES:-build quant tasks val pertask report}"
PY="${PY:-/opt/torch/.venv/bin/python3}"
DEVICE="${DEVICE:-cuda}"
BACKEND="${BACKEND:-vllm}"
SHAPE="${SHAPE:-llama-3.1-8b}"        # tiny: the CPU smoke test's 2-layer model
VARIANT="${VARIANT:-fp8-dynamic}"
LIMIT="${LIMIT:-250}"                 # validate.limit's default
BATCH="${BATCH:-auto}"
PER_TASK_MODELS="${PER_TASK_MODELS-base $VARIANT}"
SEED="${SEED:-0}"
mkdir -p "$WORK/out" "$WORK/bin" "$WORK/models" "$WORK/runs" "$FAST/runs"
echo "$FAST" > "$WORK/fast-dir"
# shellcheck source=benchmarks/gpu/sites.sh
source "$ROOT/benchmarks/gpu/sites.sh"
bot_sites "$WORK/runs"  # on disk: 8B
BOT=("$WORK/bin/py-quantize" -m bot)
M="$WORK/models/$SHAPE-shape"
TASKDIR="$WORK/shape-tasks"
TASKS="shape_arc_challenge,shape_hellaswag,shape_winogrande,shape_gsm8k,shape_mmlu"
want() { [[ " $PHASES " == *" $1 "* ]]; }
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
run_of() { ls -d "$WORK"/runs/local--"$(basename "$M")"@* 2>/dev/null | head -1; }

if [ ! -s "$WORK/out/env.txt" ]; then
  { date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>/dev/null
    nproc; free -g | head -2
    "$WORK/bin/py-serve" -c "import lm_eval, torch; print('lm_eval', lm_eval.__version__, 'torch', torch.__version__)"
    "$WORK/bin/py-serve" -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null
  } > "$WORK/out/env.txt" 2>&1
fi

if want build; then
  log "build: $SHAPE"
  if [ "$SHAPE" = tiny ]; then
    [ -d "$M" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model tiny "$M" > "$WORK/out/build.txt" 2>&1
  else
    [ -d "$M" ] || "$WORK/bin/py-quantize" -m bot.workers.build_model shape "$M" --shape "$SHAPE" \
      > "$WORK/out/build.txt" 2>&1
  fi
  log "build rc=$? ($(du -sh "$M" 2>/dev/null | cut -f1))"
fi

if want quant; then
  log "quant: $VARIANT"
  "${BOT[@]}" quantize "$M" -r "$VARIANT" --device "$DEVICE" --samples 32 --seq-len 512 \
    --calibration "$ROOT/bot/data/calibration.jsonl" > "$WORK/out/quant.txt" 2>&1
  log "quant rc=$?"
fi

if want tasks; then
  "$WORK/bin/py-quantize" "$ROOT/benchmarks/suite_shape.py" "$TASKDIR" --seed "$SEED" > "$WORK/out/tasks.json" \
    2> "$WORK/out/tasks-err.txt"
  log "tasks rc=$? $(cat "$WORK/out/tasks.json")"
  cp "$TASKDIR/shape.json" "$WORK/out/shape.json" 2>/dev/null
fi

if want val; then
  run=$(run_of)
  if [ -z "$run" ]; then log "val: no run directory for $M"; else
    log "val: bot validate $run -v $VARIANT --tasks $TASKS --limit $LIMIT (batch $BATCH)"
    BOT_VALIDATE__INCLUDE_PATH="$TASKDIR" BOT_VALIDATE__BATCH_SIZE="$BATCH" BOT_VALIDATE__FIDELITY__ENABLED=false \
      BOT_GATE__MAX_ROUNDS=1 "${BOT[@]}" validate "$run" -v "$VARIANT" --backend "$BACKEND" --device "$DEVICE" \
      --tasks "$TASKS" --limit "$LIMIT" > "$WORK/out/val.txt" 2>&1
    log "val rc=$?"
  fi
fi

if want pertask; then
  run=$(run_of)
  for model in $PER_TASK_MODELS; do
    job="$run/jobs/lmeval-$model.json"
    [ -f "$job" ] || { log "pertask $model: no $job (run the val phase first)"; continue; }
    log "pertask $model"
    "$WORK/bin/py-serve" "$ROOT/benchmarks/gpu/lmeval_per_task.py" time "$job" "$WORK/out/per-task-$model.json" \
      > "$WORK/out/per-task-$model.txt" 2>&1
    log "pertask $model rc=$?"
  done
fi

if want report; then
  run=$(run_of)
  [ -n "$run" ] && "$WORK/bin/py-quantize" "$ROOT/benchmarks/gpu/lmeval_per_task.py" report "$run" \
    "$WORK/out/lmeval-shape.json" "$WORK"/out/per-task-*.json > "$WORK/out/report.txt" 2>&1
  log "report rc=$? -> $WORK/out/lmeval-shape.json"
fi
log "ALL DONE ($PHASES)"
