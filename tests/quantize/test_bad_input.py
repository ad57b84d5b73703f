"""Bad input to `bot quantize`: one clear line on stderr, a non-zero exit, nothing written that looks complete."""

from __future__ import annotations

import json
import shutil

import pytest

from bot.cli import main


def _run(capsys, *args):
    rc = main(["quantize", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    return rc, errors


def _no_complete_variant(runs):
    return not any(runs.rglob("model/config.json")) and not any(runs.rglob("model.partial"))


def test_unknown_recipe(tiny_llama, tmp_path, capsys):
    rc, err = _run(capsys, str(tiny_llama), "-r", "w4a16-gtpq", "--runs-dir", str(tmp_path))
    assert rc == 2 and len(err) == 1
    assert "unknown recipe 'w4a16-gtpq'" in err[0] and "did you mean 'w4a16-gptq'" in err[0]
    assert _no_complete_variant(tmp_path)


def test_missing_model_dir(tmp_path, capsys):
    rc, err = _run(capsys, str(tmp_path / "nope"), "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and len(err) == 1 and "model directory not found" in err[0]


def test_missing_model_path_like(tmp_path, capsys):
    rc, err = _run(capsys, "./no/such/dir", "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and err == ["error: model directory not found: ./no/such/dir (hint: check the path, or pass a Hub id org/name)"]


@pytest.fixture
def model_copy(tiny_llama, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(tiny_llama, dest)
    return dest


def test_non_causal_lm(model_copy, tmp_path, capsys):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["architectures"] = ["BertForMaskedLM"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    rc, err = _run(capsys, str(model_copy), "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and len(err) == 1 and "not a causal language model" in err[0] and "BertForMaskedLM" in err[0]
    assert _no_complete_variant(tmp_path / "runs")


@pytest.mark.parametrize("suffix", [".bin", ".gguf"])
def test_only_pickle_or_gguf_weights(model_copy, tmp_path, capsys, suffix):
    (model_copy / "model.safetensors").rename(model_copy / f"pytorch_model{suffix}")
    rc, err = _run(capsys, str(model_copy), "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and len(err) == 1
    assert f"only {suffix} weights" in err[0] and "safetensors only" in err[0]
    assert _no_complete_variant(tmp_path / "runs") and not (tmp_path / "runs").exists()


def test_remote_code_refused(model_copy, tmp_path, capsys):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    rc, err = _run(capsys, str(model_copy), "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and "trust_remote_code" in err[0]


def test_already_quantized_refused(model_copy, tmp_path, capsys):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq"}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    rc, err = _run(capsys, str(model_copy), "--runs-dir", str(tmp_path / "runs"))
    assert rc == 3 and "already quantized (gptq)" in err[0]


def test_missing_quantize_environment(model_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BOT_QUANTIZE_PYTHON", shutil.which("python3") or "/usr/bin/python3")
    import subprocess

    probe = subprocess.run([shutil.which("python3"), "-c", "import llmcompressor"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the system python3 has llmcompressor")
    rc, err = _run(capsys, str(model_copy), "-r", "fp8-dynamic", "--runs-dir", str(tmp_path / "runs"))
    assert rc == 4 and len(err) == 1
    assert "the quantize environment" in err[0] and "BOT_QUANTIZE_PYTHON" in err[0]


def test_worker_failure_leaves_failed_manifest(model_copy, tmp_path, capsys):
    """The worker fails on one variant (calibration rows without text): that variant gets a failed manifest with
    the error and no model directory; the data-free variant in the same job still completes."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"id": 2}\n')
    runs = tmp_path / "runs"
    rc, err = _run(capsys, str(model_copy), "-r", "w4a16-gptq", "-r", "fp8-dynamic", "--calibration", str(bad),
                   "--runs-dir", str(runs))
    assert rc == 5 and len(err) == 1 and "1 variant(s) failed: w4a16-gptq" in err[0]
    from bot.rundir import RunDir

    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    rundir = RunDir(run)
    failed = rundir.read_variant("w4a16-gptq")
    assert failed.quantize.status.value == "failed" and "no 'messages' or 'text'" in failed.quantize.error
    assert failed.state() == "failed"
    assert not rundir.model_dir("w4a16-gptq").exists() and not rundir.partial_model_dir("w4a16-gptq").exists()
    assert rundir.read_variant("fp8-dynamic").quantize.status.value == "done"
