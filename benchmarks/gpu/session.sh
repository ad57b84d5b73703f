#!/usr/bin/env bash
# One GPU session on the air-gapped H100 host, running the bot's own commands (not a side script):
#   C. SmolLM2-135M-Instruct (real weights): six recipes on the GPU, validated in vLLM + lm-eval (bundled tasks)
#   A. a random-init model with Qwen3-1.7B's exact config: six recipes on the GPU (timings, memory, sizes)
#   B. the same run validated in vLLM (load, generations, batch-1 and batched speed vs BF16, CUDA graphs on)
# Results: manifests + logs under $WORK/out (copied back by the caller). Progress: $WORK/progress.txt.
# Needs the offline kit installed (/tmp/site-serve, /tmp/site-quantize).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${WORK:-/tmp/gpu}"
mkdir -p "$WORK/out" "$WORK/bin"
PY=/opt/torch/.venv/bin/python3
# One interpreter per site (never both on one PYTHONPATH: they hold different compressed-tensors versions).
for site in quantize serve; do
  cat > "$WORK/bin/py-$site" <<EOS
#!/usr/bin/env bash
export PYTHONPATH="$ROOT:/tmp/site-$site"
exec $PY "\$@"
EOS
  chmod +x "$WORK/bin/py-$site"
done
export BOT_QUANTIZE_PYTHON="$WORK/bin/py-quantize" BOT_SERVE_PYTHON="$WORK/bin/py-serve"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 BOT_RUNS_DIR="$WORK/runs"
BOT=("$WORK/bin/py-quantize" -m bot)   # the bot's own light process (pydantic, typer, rich from the quantize site)
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$WORK/progress.txt"; }
save() { (cd "$WORK" && tar czf "out/$1.tar.gz" --exclude='*/model' --exclude='*/model.partial' --exclude='*.safetensors' runs/*"$2"* 2>/dev/null); }

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv > "$WORK/out/gpu.csv"
"$WORK/bin/py-serve" -c "import vllm, lm_eval, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >> "$WORK/out/gpu.csv" 2>&1

log "C: build SmolLM2"
"$WORK/bin/py-quantize" -m bot.workers.build_model smollm2 "$WORK/models/SmolLM2-135M-Instruct" > "$WORK/build-smol.log" 2>&1
log "C: quantize six recipes (calibration: bundled 82 chats, 64 x 512)"
/usr/bin/time -v "${BOT[@]}" quantize "$WORK/models/SmolLM2-135M-Instruct" --device cuda --samples 64 --seq-len 512 \
  --calibration "$ROOT/bot/data/calibration.jsonl" > "$WORK/out/C-quantize.txt" 2>&1; log "C: quantize rc=$?"
RUN_C=$(ls -d "$WORK"/runs/local--SmolLM2-135M-Instruct@* | head -1)
log "C: validate (vLLM, enforce_eager for start-up time, lm-eval bundled tasks, full)"
BOT_VALIDATE__SPEED__ENFORCE_EAGER=true "${BOT[@]}" validate "$RUN_C" --backend vllm --tasks bot_mc_facts,bot_wikitext_mini \
  > "$WORK/out/C-validate.txt" 2>&1; log "C: validate rc=$?"
save C local--SmolLM2

log "A: build Qwen3-1.7B-shaped random model"
"$WORK/bin/py-quantize" -m bot.workers.build_model shape "$WORK/models/Qwen3-1.7B-shape" --shape qwen3-1.7b > "$WORK/build-q.log" 2>&1
log "A: quantize six recipes (128 x 512 calibration tokens, recipe defaults otherwise: AutoRound 200 iters)"
/usr/bin/time -v "${BOT[@]}" quantize "$WORK/models/Qwen3-1.7B-shape" --device cuda --samples 128 --seq-len 512 \
  --calibration "$ROOT/bot/data/calibration.jsonl" > "$WORK/out/A-quantize.txt" 2>&1; log "A: quantize rc=$?"
save A local--Qwen3-1.7B
log "B: validate in vLLM with CUDA graphs (speed vs BF16; bundled task, 40 samples: random weights score at chance)"
RUN_A=$(ls -d "$WORK"/runs/local--Qwen3-1.7B-shape@* | head -1)
"${BOT[@]}" validate "$RUN_A" --backend vllm --tasks bot_mc_facts --limit 40 > "$WORK/out/B-validate.txt" 2>&1
log "B: validate rc=$?"
save A local--Qwen3-1.7B
du -sb "$RUN_A"/*/model "$RUN_C"/*/model > "$WORK/out/sizes.txt" 2>&1
log "ALL DONE"
