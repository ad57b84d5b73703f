"""Distribution fidelity: the arithmetic on known inputs, the held-out text, and the worker end to end as a
subprocess on the tiny real model against an exact copy, a perturbed copy and a copy with one NaN weight."""

from __future__ import annotations

import glob
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from bot.manifest import FidelityRecord
from bot.workers import fidelity_math as fm

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "bot" / "data" / "heldout" / "heldout-v1.txt"

# ---------------------------------------------------------------- arithmetic


def _logits(*rows):
    return torch.log(torch.tensor(rows, dtype=torch.float64)).float()


def test_kl_top1_nll_on_hand_computed_distributions():
    base = _logits([0.5, 0.25, 0.25], [0.1, 0.2, 0.7])
    variant = _logits([0.25, 0.5, 0.25], [0.1, 0.2, 0.7])
    targets = torch.tensor([2, 1])
    s = fm.position_stats(base, variant, targets)
    # KL row 0 = 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.5) + 0 = 0.25 ln 2; row 1 identical
    assert s.kl.tolist() == pytest.approx([0.25 * math.log(2), 0.0], abs=1e-6)
    assert s.agree.tolist() == [False, True]  # argmax 0 vs 1, then 2 vs 2
    assert s.nll_base.tolist() == pytest.approx([-math.log(0.25), -math.log(0.2)], abs=1e-6)
    assert s.nll_variant.tolist() == pytest.approx([-math.log(0.25), -math.log(0.2)], abs=1e-6)
    assert (s.nonfinite_base, s.nonfinite_variant) == (0, 0)

    acc = fm.Accumulator()
    acc.add(s, positions=2)
    out = acc.summary()
    assert out["kl_mean"] == pytest.approx(0.125 * math.log(2), abs=1e-6)
    assert out["kl_max"] == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert out["top1_agreement"] == 0.5 and out["tokens"] == 2 and out["windows"] == 1
    ppl = math.exp((-math.log(0.25) - math.log(0.2)) / 2)
    assert out["ppl_base"] == pytest.approx(ppl, rel=1e-6) and out["ppl_ratio"] == pytest.approx(1.0, abs=1e-6)


def test_ppl_ratio_and_p99_over_windows():
    # the target is twice as likely under the base: NLL differs by ln 2 at each position -> ratio 2
    base = _logits([0.5, 0.5], [0.5, 0.5])
    variant = _logits([0.75, 0.25], [0.75, 0.25])
    s = fm.position_stats(base, variant, torch.tensor([1, 1]))
    acc = fm.Accumulator()
    acc.add(s, 2)
    assert acc.summary()["ppl_ratio"] == pytest.approx(2.0, rel=1e-6)
    assert acc.summary()["ppl_variant"] == pytest.approx(4.0, rel=1e-6)

    acc = fm.Accumulator()
    for chunk in torch.arange(100, dtype=torch.float64).split(30):  # per-position KL 0..99 over four windows
        n = len(chunk)
        acc.add(fm.Positions(kl=chunk, agree=torch.ones(n, dtype=torch.bool), nll_base=torch.ones(n),
                             nll_variant=torch.ones(n), nonfinite_base=0, nonfinite_variant=0), n)
    out = acc.summary()
    assert out["kl_p99"] == pytest.approx(98.01)  # linear interpolation at 0.99 * 99
    assert out["kl_max"] == 99.0 and out["kl_mean"] == 49.5 and out["windows"] == 4 and out["tokens"] == 100


def test_identical_logits_give_zero_kl_full_agreement_and_ratio_one():
    torch.manual_seed(3)
    logits = torch.randn(64, 1000) * 4
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        acc = fm.Accumulator()
        acc.add(fm.position_stats(x, x.clone(), torch.randint(0, 1000, (64,))), 64)
        out = acc.summary()
        assert out["kl_mean"] == 0.0 and out["kl_max"] == 0.0 and out["kl_p99"] == 0.0
        assert out["top1_agreement"] == 1.0 and out["ppl_ratio"] == 1.0 and out["nonfinite"] == 0


def test_nonfinite_positions_are_counted_and_excluded():
    torch.manual_seed(4)
    base, variant = torch.randn(6, 50), torch.randn(6, 50)
    targets = torch.randint(0, 50, (6,))
    broken_v, broken_b = variant.clone(), base.clone()
    broken_v[1, 7] = float("nan")
    broken_v[4, 0] = float("inf")
    broken_b[2, 3] = float("-inf")
    s = fm.position_stats(broken_b, broken_v, targets)
    assert (s.nonfinite_variant, s.nonfinite_base) == (2, 1)
    keep = torch.tensor([0, 3, 5])
    clean = fm.position_stats(base[keep], variant[keep], targets[keep])
    assert torch.equal(s.kl, clean.kl) and torch.equal(s.agree, clean.agree)
    assert torch.equal(s.nll_base, clean.nll_base) and torch.equal(s.nll_variant, clean.nll_variant)
    acc = fm.Accumulator()
    acc.add(s, 6)
    out = acc.summary()
    assert out["nonfinite"] == 2 and out["tokens"] == 6 and all(math.isfinite(out[k]) for k in ("kl_mean", "kl_p99"))

    acc = fm.Accumulator()
    acc.add(fm.position_stats(base, torch.full_like(variant, float("nan")), targets), 6)
    out = acc.summary()
    assert out["nonfinite"] == 6 and out["kl_mean"] is None and out["top1_agreement"] is None
    assert out["ppl_ratio"] is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="logit shapes differ"):
        fm.position_stats(torch.zeros(3, 10), torch.zeros(3, 11), torch.zeros(3, dtype=torch.long))


def test_plan_windows():
    # no prefix: a window of 8 tokens scores 7; 20 positions -> 7 + 7 + 6 (last window shortened to 7 tokens)
    assert fm.plan_windows(100, 8, 20) == [(0, 8), (8, 16), (16, 23)]
    # with a BOS prefix each window holds 7 text tokens and still scores 7
    assert fm.plan_windows(100, 8, 14, prefix=1) == [(0, 7), (7, 14)]
    # text too short for the budget: what there is, no padding (10 tokens -> 7 + 1 positions)
    wins = fm.plan_windows(10, 8, 1000)
    assert wins == [(0, 8), (8, 10)] and sum(e - s - 1 for s, e in wins) == 8
    assert fm.plan_windows(9, 8, 1000) == [(0, 8)]  # one leftover token scores nothing on its own
    with pytest.raises(ValueError):
        fm.plan_windows(100, 2, 10, prefix=1)


def test_auto_dtype_rule(tmp_path):
    from bot.workers.fidelity_worker import JobError, resolve_dtype

    plain, nvfp4 = tmp_path / "plain", tmp_path / "nvfp4"
    plain.mkdir()
    nvfp4.mkdir()
    (plain / "config.json").write_text(json.dumps({"quantization_config": {"format": "float-quantized"}}))
    (nvfp4 / "config.json").write_text(json.dumps({"quantization_config": {"config_groups": {
        "group_0": {"format": "nvfp4-pack-quantized"}}}}))
    assert resolve_dtype("auto", "cpu", [str(plain)]) == "float32"
    assert resolve_dtype("auto", "cpu", [str(plain), str(nvfp4)]) == "bfloat16"  # one dtype for the whole job
    assert resolve_dtype("auto", "cuda", [str(plain)]) == "bfloat16"
    assert resolve_dtype("float32", "cuda", [str(plain)]) == "float32"
    with pytest.raises(JobError, match="dtype 'half'"):
        resolve_dtype("half", "cpu", [])
    # an NVFP4 variant asked for in float32 is an error before loading, not a comparison across dtypes
    from bot.workers.fidelity_worker import load_model

    rec, model, _ = load_model(str(nvfp4), {"device": "cpu"}, "float32")
    assert model is None and "only in bfloat16" in rec["error"]


# ---------------------------------------------------------------- the held-out text


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _sentences(text: str) -> set[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return {re.sub(r"\W+", " ", p).strip().lower() for p in parts if len(p.split()) >= 4}


def _ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_heldout_text_shares_no_sentence_with_calibration_or_tasks():
    text = HELDOUT.read_text(encoding="utf-8")
    assert 25_000 <= len(text.encode()) <= 40_000
    others = []
    for path in [ROOT / "bot" / "data" / "calibration.jsonl", *map(Path, glob.glob(str(ROOT / "bot/data/tasks/*.jsonl")))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                others.extend(_strings(json.loads(line)))
    assert len(others) > 100
    assert not _sentences(text) & set().union(*map(_sentences, others))
    assert not _ngrams(text) & set().union(*map(_ngrams, others))  # no 8-word run in common either


def test_heldout_text_ships_in_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "heldout/*" in data["tool"]["setuptools"]["package-data"]["bot.data"]
    assert (HELDOUT.parent / "README.md").is_file()


# ---------------------------------------------------------------- the worker on real tiny models


def _edit_weights(src: Path, dest: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    path = dest / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return dest


def _run_worker(job: dict, job_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    job_path.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "bot.workers.fidelity_worker", str(job_path)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    return proc, json.loads(Path(job["result_path"]).read_text())


@pytest.fixture(scope="module")
def worker_runs(tiny_llama, tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("fidelity")
    exact = tmp / "exact"
    shutil.copytree(tiny_llama, exact)

    def perturb(t):
        g = torch.Generator().manual_seed(0)
        for k, v in t.items():
            if v.dim() == 2 and "embed" not in k:
                t[k] = (v.float() + 0.5 * v.float().std() * torch.randn(v.shape, generator=g)).to(v.dtype)

    perturbed = _edit_weights(tiny_llama, tmp / "perturbed", perturb)
    # NaN in the embedding row of a token that first appears late in the first window: the positions before it
    # are exact, the rest are not finite
    ids = AutoTokenizer.from_pretrained(tiny_llama)(HELDOUT.read_text(encoding="utf-8"))["input_ids"][:64]
    late = next(t for i, t in enumerate(ids) if i >= 20 and t not in ids[:i])

    def poison(t):
        t["model.embed_tokens.weight"][late, 0] = float("nan")

    nan = _edit_weights(tiny_llama, tmp / "nan", poison)
    job = {"base_path": str(tiny_llama), "device": "cpu", "dtype": "auto", "text_path": str(HELDOUT),
           "tokens": 256, "window": 64, "trust_remote_code": False,
           "variants": [{"name": "exact", "model_path": str(exact)}, {"name": "perturbed", "model_path": str(perturbed)},
                        {"name": "nan", "model_path": str(nan)}, {"name": "missing", "model_path": str(tmp / "nope")}]}
    first = _run_worker({**job, "result_path": str(tmp / "r1.json")}, tmp / "j1.json")
    second = _run_worker({**job, "result_path": str(tmp / "r2.json")}, tmp / "j2.json")
    return first, second


def test_worker_result_contract(worker_runs):
    (proc, res), _ = worker_runs
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert res["status"] == "done" and res["text"] == "heldout-v1" and res["dtype"] == "float32"  # auto on cpu
    assert res["text_fingerprint"] == "sha256:" + hashlib.sha256(HELDOUT.read_bytes()).hexdigest()
    assert res["tokens"] == 256 and res["window"] == 64 and res["windows"] == 5  # 63 * 4 + 4
    assert res["base"]["nonfinite"] == 0 and res["base"]["ppl"] > 1 and res["base"]["seconds"] > 0
    assert res["hardware"]["device"] == "cpu" and "torch" in res["versions"] and res["wall_time_s"] > 0
    for rec in res["variants"].values():
        # the stage adds what it asked for (`tokens_requested`); the worker reports what it measured
        assert set(FidelityRecord.model_fields) - {"tokens_requested"} == set(rec)
        assert (rec["vocab"], rec["topk"], rec["backend"], rec["device"], rec["dtype"]) == \
            ("full", None, "hf", "cpu", "float32")
        assert rec["text_fingerprint"] == res["text_fingerprint"] and rec["window"] == 64


def test_exact_copy_matches_and_perturbed_copy_differs(worker_runs):
    (_, res), _ = worker_runs
    exact, perturbed = res["variants"]["exact"], res["variants"]["perturbed"]
    assert exact["error"] is None and exact["tokens"] == 256 and exact["nonfinite"] == 0
    assert exact["kl_mean"] == 0.0 and exact["kl_max"] == 0.0 and exact["top1_agreement"] == 1.0
    assert exact["ppl_ratio"] == 1.0 and exact["ppl_base"] == exact["ppl_variant"] == res["base"]["ppl"]
    assert perturbed["error"] is None and perturbed["nonfinite"] == 0
    assert perturbed["kl_mean"] > 0 and perturbed["kl_max"] >= perturbed["kl_p99"] >= 0
    assert perturbed["top1_agreement"] < 1 and perturbed["ppl_ratio"] != 1.0


def test_nan_weight_counts_nonfinite_positions_and_scores_the_rest(worker_runs):
    (_, res), _ = worker_runs
    nan = res["variants"]["nan"]
    assert nan["error"] is None and 0 < nan["nonfinite"] < nan["tokens"] == 256
    assert nan["kl_mean"] == 0.0 and nan["top1_agreement"] == 1.0  # the finite positions are the base's own


def test_a_variant_that_does_not_load_is_recorded_and_the_others_run(worker_runs):
    (_, res), _ = worker_runs
    missing = res["variants"]["missing"]
    assert missing["error"] and missing["tokens"] == 0 and missing["kl_mean"] is None


def test_rerun_gives_identical_numbers(worker_runs):
    (_, first), (proc, second) = worker_runs
    assert proc.returncode == 0

    def numbers(res):
        return ({k: v for k, v in res["base"].items() if k not in ("seconds", "load_time_s", "memory_bytes")},
                {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in res["variants"].items()})

    assert numbers(first) == numbers(second)


def test_bad_job_is_one_line_and_exit_2(tmp_path, tiny_llama):
    job = {"base_path": str(tiny_llama), "variants": [], "device": "cpu", "dtype": "auto", "tokens": 64,
           "window": 16, "text_path": str(tmp_path / "absent.txt"), "result_path": str(tmp_path / "r.json")}
    proc, res = _run_worker(job, tmp_path / "j.json")
    assert proc.returncode == 2 and res["status"] == "failed"
    assert proc.stderr.strip().splitlines()[-1] == f"error: text_path {tmp_path / 'absent.txt'} is not a file"
