"""Progress of `bot quantize` off a terminal: a real `bot` process with stdout/stderr piped quantizes the tiny
Llama with a calibrated recipe (GPTQ) and a data-free one. stderr carries a start and an end line per recipe with
its elapsed time, a layer line from llm-compressor's sequential pipeline while GPTQ calibrates, and for the second
recipe an expected time and ETA taken from the first one's measured time; plain lines only (no redrawn bar)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d\d:\d\d:\d\d \S")


def test_quantize_prints_recipe_and_layer_progress_when_piped(tiny_llama, calibration_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TTY_", "FORCE_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.run(
        [sys.executable, "-m", "bot", "quantize", str(tiny_llama), "-r", "w4a16-gptq", "-r", "fp8-dynamic",
         "--calibration", str(calibration_file), "--samples", "8", "--seq-len", "64", "--runs-dir",
         str(tmp_path / "runs"), "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert all(LINE.match(line) for line in lines), p.stderr  # timestamped plain lines, nothing else
    assert "\r" not in p.stderr and "\x1b[" not in p.stderr and "━" not in p.stderr

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    start, end = at("w4a16-gptq: started (no estimate"), at("w4a16-gptq: done in ")
    layers = [line for line in lines[start:end] if re.search(r"w4a16-gptq layer \d+/\d+, \d+s in", line)]
    assert layers and "layer 1/" in layers[0], p.stderr  # the first layer at once, later ones throttled
    fp8 = lines[at("fp8-dynamic: started")]
    assert re.search(r"\(expected ~\d+s, ETA \d\d:\d\d:\d\d\)", fp8), fp8  # from the GPTQ time measured above
    assert re.search(r"fp8-dynamic: done in \d+s \(expected ~\d+s\)", p.stderr)
    assert "done in" not in "".join(lines[end + 1:at("fp8-dynamic: started")])
    rows = [line for line in p.stdout.splitlines() if line.startswith("| w4a16-gptq ") or line.startswith("| fp8-")]
    assert len(rows) == 2 and all("| done |" in r for r in rows), p.stdout
