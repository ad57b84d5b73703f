#!/usr/bin/env bash
# Install (CPU) and run the main job on the bundled default model, publishing to the local Hub target.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/bot publish "$@"
echo "open runs/_local_hub/index.html (the published repos and their cards) and runs/_site/index.html (the status page)"
