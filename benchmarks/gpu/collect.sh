#!/usr/bin/env bash
# Pack what a GPU session measured (manifests, worker logs and results, console output, cards; no weights) into
# $OUT/results.tgz, and print the progress so far. Safe to call while the session is still running.
WORK="${WORK:-/tmp/gpu}"
cd "$WORK" 2>/dev/null || { echo "no $WORK yet"; exit 0; }
FAST="${FAST:-$(cat fast-dir 2>/dev/null || echo /dev/shm/gpu)}"  # the session records where its small runs live
tar czf "${OUT:-/tmp}/results.tgz" --exclude='*/model' --exclude='*/model.partial' --exclude='*.safetensors' \
  --exclude='*/base/snapshot' out progress.txt runs -C "$FAST" runs 2>/dev/null
tail -n "${TAIL:-25}" progress.txt 2>/dev/null
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null
