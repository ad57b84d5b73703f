#!/usr/bin/env bash
# Regenerate the locks under requirements/ (README "Locked installs"): one file per environment.
#   requirements/cpu.txt           Python 3.11 CPU: bot + [quantize,cpu-validate,test] + CPU torch (+ hashes)
#   requirements/quantize-gpu.txt  Python 3.12 GPU host: bot + [quantize]
#   requirements/serve-gpu.txt     Python 3.12 GPU host: bot + [serve]
# The GPU locks are derived from the GPU host kit: each pin is the host's (host-freeze.txt) or the kit's
# (requirements-<site>.txt), and the script fails if the resolution wants any other version; packages neither
# has (bot-only dependencies) take the CPU lock's version.
#   bash scripts/lock.sh [cpu|gpu|all]      (default all; gpu reads requirements/cpu.txt)
# Env: LOCK_DATE       resolve as PyPI stood at that moment (upload times), e.g. 2026-11-24T00:00:00Z; default now
#      GPU_KIT         the GPU host kit directory (default shared/gpu-offline, else ../shared/gpu-offline)
#      LOCK_FIND_LINKS where the CPU torch wheel lies (default: pip's find-links setting)
#      UV              a uv binary (default: uv $UV_VERSION installed with pip into a temporary venv)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
case "$WHAT" in cpu|gpu|all) ;; *) echo "error: unknown lock '$WHAT' (hint: cpu, gpu or all)" >&2; exit 2 ;; esac
UV_VERSION=0.13.9
GPU_KIT="${GPU_KIT:-$( [[ -d shared/gpu-offline ]] && echo shared/gpu-offline || echo ../shared/gpu-offline)}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bot-lock.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
if [[ -z "${UV:-}" ]]; then
  python3 -m venv "$TMP/uv" && "$TMP/uv/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  UV="$TMP/uv/bin/uv"
fi
COMMON=(--no-config --quiet --custom-compile-command "bash scripts/lock.sh" --python-platform x86_64-manylinux_2_28)
[[ -n "${LOCK_DATE:-}" ]] && COMMON+=(--exclude-newer "$LOCK_DATE")
stamp() { echo "# resolved $(date -u +%Y-%m-%d)${LOCK_DATE:+ as of $LOCK_DATE} by scripts/lock.sh with uv $("$UV" --version | cut -d' ' -f2)"; }

lock_cpu() {
  local links=() d
  for d in ${LOCK_FIND_LINKS:-${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}}; do
    links+=(--find-links "$d")
  done
  "$UV" pip compile "${COMMON[@]}" "${links[@]}" --python-version 3.11 --generate-hashes \
    --extra quantize --extra cpu-validate --extra test pyproject.toml requirements/cpu.in -o "$TMP/cpu.txt"
  "$UV" pip compile "${COMMON[@]}" --python-version 3.11 --generate-hashes --no-deps --no-header \
    requirements/cpu-nodeps.in -o "$TMP/nodeps.txt"
  { stamp; echo "# install: pip install --require-hashes --no-deps -r requirements/cpu.txt (scripts/install.sh does)"
    cat "$TMP/cpu.txt"; echo "# installed with --no-deps (requirements/cpu-nodeps.in)"; cat "$TMP/nodeps.txt"
  } > requirements/cpu.txt
  echo "requirements/cpu.txt: $(grep -c '^[A-Za-z0-9]' requirements/cpu.txt) pins"
}

# constraints for one GPU site: host-freeze < kit site pins < (names neither has) CPU lock; overrides: the kit's
# deliberate departures (the host's version used against the metadata; optional vllm kernels left out)
gpu_inputs() {
  python3 - "$GPU_KIT" "$1" requirements/cpu.txt "$TMP" <<'EOF'
import re, sys
kit, site, cpu, tmp = sys.argv[1:]
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def pins(path, src):
    out = {}
    for line in open(path):
        s = line.split("#")[0].strip().rstrip("\\").strip()
        if "==" in s and not s.startswith("-"):
            n, v = s.split("==", 1)
            out[canon(n)] = (n.strip(), v.split(";")[0].strip(), src)
    return out
merged = pins(f"{kit}/requirements-{site}.txt", f"kit-{site}")
for name, pin in pins(f"{kit}/host-freeze.txt", "host").items():
    merged.setdefault(name, pin)
for name, pin in pins(cpu, "cpu-lock").items():
    if name != "torch":
        merged.setdefault(name, pin)
with open(f"{tmp}/{site}.constraints", "w") as fh:
    fh.writelines(f"{n}=={v}\n" for n, v, _ in sorted(merged.values()))
with open(f"{tmp}/{site}.sources", "w") as fh:
    fh.writelines(f"{k} {v} {src}\n" for k, (_, v, src) in sorted(merged.items()))
overrides = []
for line in open(f"{kit}/requirements-{site}.txt"):
    if m := re.match(r"#\s+(\S+): host (\S+) used although", line):
        overrides.append(f"{m[1]}=={m[2]}")
    elif m := re.match(r"#\s+(\S+): skipped", line):
        overrides.append(f"{m[1]} ; sys_platform == 'never'")
with open(f"{tmp}/{site}.overrides", "w") as fh:
    fh.writelines(o + "\n" for o in overrides)
EOF
}

# the resolved pins, each checked against its source and labelled with it; every kit pin must be in the lock
gpu_write() {
  python3 - "$1" "$GPU_KIT" "$TMP" "$2" "$(stamp)" <<'EOF'
import re, sys
site, kit, tmp, out, stamp = sys.argv[1:]
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
src = {k: (v, s) for k, v, s in (l.split() for l in open(f"{tmp}/{site}.sources"))}
lines, bad = [], []
for line in open(f"{tmp}/{site}.txt"):
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    n, v = s.split("==", 1)
    want = src.get(canon(n))
    if want is None or want[0] != v:
        bad.append(f"{n}=={v} (host/kit: {want[0] if want else 'none'})")
    lines.append(f"{s:<47} # {want[1] if want else '?'}\n")
kit_pins = {canon(l.split("==")[0]) for l in open(f"{kit}/requirements-{site}.txt") if "==" in l and not l.startswith("#")}
missing = sorted(kit_pins - {canon(l.split("==")[0]) for l in lines})
if bad or missing:
    sys.exit(f"error: {site} lock departs from the GPU kit: {', '.join(bad + ['missing ' + m for m in missing])}"
             " (hint: regenerate the kit's pins with its resolve.py first)")
ov = [l.split(";")[0].strip() for l in open(f"{tmp}/{site}.overrides") if l.strip()]
kept, left = [o for o in ov if "==" in o], [o for o in ov if "==" not in o]
with open(out, "w") as fh:
    fh.write(f"{stamp}\n# Python 3.12, linux x86_64, the GPU host (CUDA 13; torch 2.11.0+cu130): bot + [{site}].\n"
             f"# Each pin's source: host = the kit's host-freeze.txt, kit-{site} = its requirements-{site}.txt,\n"
             "# cpu-lock = requirements/cpu.txt (packages neither has).\n"
             "# Install with pip --no-deps: like the kit, this departs from the metadata on purpose"
             f" (the host's\n# {', '.join(kept) or 'none'}; left out: {', '.join(left) or 'none'}).\n")
    fh.writelines(lines)
print(f"{out}: {len(lines)} pins")
EOF
}

lock_gpu() {
  [[ -f "$GPU_KIT/host-freeze.txt" ]] || { echo "error: no GPU kit at $GPU_KIT (hint: set GPU_KIT)" >&2; exit 2; }
  local site
  for site in quantize serve; do
    gpu_inputs "$site"
    "$UV" pip compile "${COMMON[@]}" --python-version 3.12 --no-header --no-annotate --extra "$site" \
      -c "$TMP/$site.constraints" --override "$TMP/$site.overrides" pyproject.toml -o "$TMP/$site.txt"
    gpu_write "$site" "requirements/$site-gpu.txt"
  done
}

if [[ "$WHAT" != gpu ]]; then lock_cpu; fi
if [[ "$WHAT" != cpu ]]; then lock_gpu; fi
