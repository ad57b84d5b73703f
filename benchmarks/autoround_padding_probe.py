"""AutoRound through llm-compressor on the first layers of SmolLM2: does padding inflate the tuning loss?

    python benchmarks/autoround_padding_probe.py MODEL_DIR MODE BS ITERS BF16 NLAYERS NSAMPLES

MODEL_DIR: SmolLM2-135M-Instruct as `python -m bot.workers.build_model smollm2 DIR` writes it. MODE `var`: the
bundled calibration rows as `bot quantize` builds them (lengths vary, llm-compressor right-pads them); `uniform`:
every row cut to the shortest (no padding). BF16 1 makes auto-round tune in bf16 on a CPU without AVX512-BF16.
Prints auto-round's per-block "loss iter 0" lines, whether real tokens got zeroed rotary embeddings, and the
hidden-state error of the result against the fp32 layers on tests/data/eval.txt.
"""
import sys, re, json, math
import torch
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
MODEL = sys.argv[1]
mode, bs, iters, bf16, nl, ns = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6]), int(sys.argv[7])
torch.manual_seed(0)
if bf16:
    from auto_round.utils import device_manager as dm
    dm.CpuARDevice.supports_bf16 = lambda self: True
from transformers import AutoModelForCausalLM, AutoTokenizer
from datasets import Dataset
sys.path.insert(0, str(ROOT))
from bot.workers.calibration import CalibrationCache
from bot.workers.quantize_worker import _cpu_quirks
_cpu_quirks()
tok = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL, dtype="auto")
model.model.layers = model.model.layers[:nl]; model.config.num_hidden_layers = nl
cal = CalibrationCache({"file": str(ROOT / "bot" / "data" / "calibration.jsonl")}, tok)
ds, info = cal.get(ns, 512)
if mode == "uniform":
    m = min(len(x) for x in ds["input_ids"])
    ds = Dataset.from_dict({"input_ids": [x[:m] for x in ds["input_ids"]], "attention_mask": [x[:m] for x in ds["attention_mask"]]})
lens = [len(x) for x in ds["input_ids"]]
print("lengths", lens[:8], "min", min(lens), "max", max(lens), flush=True)
recipe = f"""
quant_stage:
  quant_modifiers:
    AutoRoundModifier:
      targets: [Linear]
      ignore: [lm_head]
      iters: {iters}
      batch_size: {bs}
      enable_torch_compile: false
      config_groups:
        group_0:
          targets: [Linear]
          weights: {{num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 64, dynamic: false}}
"""
from loguru import logger
lines = []
logger.add(lambda m: lines.append(str(m)), filter=lambda r: "loss iter" in r["message"])
import logging
class H(logging.Handler):
    def emit(self, r):
        if "loss iter" in r.getMessage(): lines.append(r.getMessage())
logging.getLogger().addHandler(H())
from llmcompressor import oneshot
from auto_round.algorithms import block_runner as br
_orig = br.BlockForwardRunner._select_batch
seen = {"n": 0}
def _sel(self, inputs, others, indices):
    bi, bo = _orig(self, inputs, others, indices)
    pe = bo.get("position_embeddings")
    if pe is not None and seen["n"] < 6 and isinstance(bi, torch.Tensor):
        cos = pe[0]
        real = bi.abs().sum(-1) != 0            # [b, seq]: rows whose hidden state is not a zero pad
        zero_rope = cos.abs().sum(-1) == 0      # [1|b, seq]
        bad = (real & zero_rope).sum().item()
        print(f"select_batch: batch {tuple(bi.shape)} rope {tuple(cos.shape)} am={type(bo.get('attention_mask')).__name__} "
              f"real tokens with zeroed rotary: {bad} of {real.sum().item()}", flush=True)
        seen["n"] += 1
    return bi, bo
br.BlockForwardRunner._select_batch = _sel
ref = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
ref.model.layers = ref.model.layers[:nl]; ref.config.num_hidden_layers = nl
model = oneshot(model=model, recipe=recipe, dataset=ds, num_calibration_samples=ns, max_seq_length=512)
# compare hidden states of the quantized truncated model against the fp32 truncated base on held-out text
print('\n'.join(l for l in lines), flush=True)
text = (ROOT / "tests" / "data" / "eval.txt").read_text()
ids = tok(text, return_tensors="pt").input_ids[:, :512]
with torch.no_grad():
    hq = model.float()(ids, output_hidden_states=True).hidden_states
    hr = ref(ids, output_hidden_states=True).hidden_states
for i in range(1, nl + 1):
    d = (hq[i] - hr[i])[0]
    print(f"after layer {i}: rel err (tokens 1..) {float(d[1:].norm() / hr[i][0, 1:].norm()):.4f}  token0 abs err {float(d[0].abs().max()):.1f}")
