# Sourced by the GPU session scripts (eval_session.sh, lmeval_shape.sh, serve_session.sh): one interpreter wrapper
# per site ($WORK/bin/py-quantize, $WORK/bin/py-serve) over the offline kit's /tmp/site-<site>, and the bot's
# environment for them. Needs ROOT, WORK, PY, DEVICE. $1: the runs directory; $2: more PYTHONPATH (optional).
bot_sites() {
  local runs="$1" extra="${2:+:$2}" pyabs site
  case "$PY" in /*) pyabs="$PY" ;; *) pyabs="$ROOT/$PY" ;; esac
  for site in quantize serve; do
    if [ "$DEVICE" = cpu ]; then  # CPU smoke test: the bot's own environment does both
      printf '#!/usr/bin/env bash\nexport PYTHONPATH="%s"\nexec %s "$@"\n' "$ROOT" "$pyabs" > "$WORK/bin/py-$site"
    else
      printf '#!/usr/bin/env bash\nexport PYTHONPATH="%s:/tmp/site-%s%s"\nexec %s "$@"\n' "$ROOT" "$site" "$extra" \
        "$pyabs" > "$WORK/bin/py-$site"
    fi
    chmod +x "$WORK/bin/py-$site"
  done
  export BOT_QUANTIZE_PYTHON="$WORK/bin/py-quantize" BOT_SERVE_PYTHON="$WORK/bin/py-serve" PYTHONUNBUFFERED=1
  if [ -d "$ROOT/.gput" ]; then export BOT_BUILD_TOKENIZER="$ROOT/.gput"; fi  # SmolLM2's tokenizer, without its GGUF
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 BOT_RUNS_DIR="$runs"
}
