"""Bad input to `bot publish`: each is one `error:` line on stderr, a non-zero exit code, and nothing published
(no repo created, no weights downloaded)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.ledger import Ledger
from relhelpers import BASE_REPO, RECIPES_FILE, run_inproc, safetensors_bytes

NS = "badinput"
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}


@pytest.fixture(scope="module")
def bad_repos(world):
    hub = world.hub
    if not hub.storage.exists("badorg/pickle-only"):
        hub.seed_model("badorg/pickle-only", files={"pytorch_model.bin": b"PICKLE"}, config=LLAMA)
        hub.seed_model("badorg/bert-tiny", files={"model.safetensors": safetensors_bytes()},
                       config={"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    return hub


def _publish(world, monkeypatch, capsys, runs: Path, model: str, *extra: str, env: dict | None = None):
    rc, out, err = run_inproc(monkeypatch, capsys, {**world.env, **(env or {})}, [
        "publish", model, "-r", "fp8-dynamic", "--recipes-file", str(RECIPES_FILE), "--runs-dir", str(runs),
        "--target", "hub", "--namespace", NS, *extra])
    return rc, [line for line in err.splitlines() if line.startswith("error:")]


def _nothing_published(world, runs: Path) -> None:
    assert not [r for r in world.hub.storage.list_repos() if r.startswith(f"{NS}/")]
    assert not list(runs.rglob("model/config.json")) and not list(runs.rglob("card/README.md"))


@pytest.mark.parametrize("model, needles, env", [
    ("badorg/does-not-exist", ["badorg/does-not-exist is not a model repo on http://127.0.0.1:", "(HTTP 404)",
                               "dataset and Space ids are not models"], {}),
    ("HuggingFaceH4/ultrachat_200k", ["is not a model repo on", "dataset and Space ids are not models"], {}),
    ("datasets/HuggingFaceH4/ultrachat_200k", ["'datasets/HuggingFaceH4/ultrachat_200k' is a dataset id, not a model"],
     {}),
    ("https://huggingface.co/spaces/acme/demo", ["is a space id, not a model"], {}),
    ("not//a/repo", ["'not//a/repo' is not a Hub model id", "use org/name"], {}),
    ("badorg/pickle-only", ["badorg/pickle-only has only .bin weights: bot loads safetensors only"], {}),
    ("badorg/bert-tiny", ["badorg/bert-tiny is not a causal language model", "BertForMaskedLM"], {}),
    (BASE_REPO, ["acme/tiny-llama has 0.0263B parameters, over the runner's limit of 0.001B (max_params_b)"],
     {"BOT_MAX_PARAMS_B": "0.001"}),
])
def test_bad_model_is_one_error_line_exit_3_and_nothing_published(world, bad_repos, tmp_path, monkeypatch, capsys,
                                                                   model, needles, env):
    runs = tmp_path / "runs"
    weights_before = world.hub.log.count("GET", r"/resolve/[^/]+/(model\.safetensors|pytorch_model\.bin)$")
    rc, errors = _publish(world, monkeypatch, capsys, runs, model, env=env)
    assert rc == 3 and len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0]
    assert world.hub.log.count("GET", r"/resolve/[^/]+/(model\.safetensors|pytorch_model\.bin)$") == weights_before
    _nothing_published(world, runs)


@pytest.mark.parametrize("text, needles", [
    ("watch:\n  - author: acme\n    recipes: [fp8-dynamic\n  - author: other\n",
     [":4: not valid YAML", "check the indentation and quoting"]),
    ("watch:\n  - author: acme\n    recipes: [w4a16-gtpq]\n",
     [":3: watch[0].recipes[0]: unknown recipe 'w4a16-gtpq'", "did you mean 'w4a16-gptq'?"]),
    ("watch:\n  - author: acme\n    recipe: [fp8-dynamic]\n",
     [":3: unknown key 'recipe' in watch[0]", "did you mean 'recipes'?"]),
])
def test_bad_watchlist_is_reported_with_file_and_line(world, tmp_path, monkeypatch, capsys, text, needles):
    wl = tmp_path / "watchlist.yaml"
    wl.write_text(text)
    rc, errors = _publish(world, monkeypatch, capsys, tmp_path / "runs", BASE_REPO, "--watchlist", str(wl))
    assert rc == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {wl}:")
    for needle in needles:
        assert needle in errors[0]
    _nothing_published(world, tmp_path / "runs")


def test_no_network_fails_clearly_after_bounded_retries(world, tmp_path, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    started = time.monotonic()
    rc, errors = _publish(world, monkeypatch, capsys, tmp_path / "runs", BASE_REPO,
                          env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    elapsed = time.monotonic() - started
    assert rc == 6 and len(errors) == 1, errors
    assert (f"read model info of {BASE_REPO} failed after 3 attempts: cannot reach http://127.0.0.1:{port}"
            in errors[0]) and "check the network, or HF_ENDPOINT" in errors[0]
    assert elapsed < 15


@pytest.fixture(params=["tmpfs", "rlimit"])
def small_disk(request, tmp_path):
    """`tmpfs`: a runs directory on a 12 MB tmpfs (needs root; skipped where mounting is not permitted).
    `rlimit`: a quantize interpreter whose files may not grow past 8 MB (RLIMIT_FSIZE with SIGXFSZ ignored, so a
    write fails with EFBIG instead of killing the worker). Either way the 50 MB checkpoint cannot be saved."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if request.param == "tmpfs":
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)],
                                               capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not permitted here (the rlimit variant covers the guarantee)")
        yield mnt / "runs", {}, "No space left on device"
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        return
    wrapper = tmp_path / "python-8mb-files"
    wrapper.write_text(f"#!{sys.executable}\nimport os, resource, signal, sys\n"
                       "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                       "resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))\n"
                       f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n")
    wrapper.chmod(0o755)
    yield mnt / "runs", {"BOT_QUANTIZE_PYTHON": str(wrapper)}, "File too large"


def test_disk_full_while_saving_fails_the_variant_cleanly(tiny_llama, small_disk, monkeypatch, capsys):
    runs, env, why = small_disk
    rc, _, err = run_inproc(monkeypatch, capsys, env, ["publish", str(tiny_llama), "-r", "fp8-dynamic",
                                                        "--runs-dir", str(runs), "--target", "local"])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 5 and len(errors) == 1, err[-3000:]
    assert "no variant was published (fp8-dynamic failed:" in errors[0] and why in errors[0]
    (run,) = [p for p in runs.iterdir() if p.is_dir() and "@" in p.name]
    manifest = json.loads((run / "fp8-dynamic" / "manifest.json").read_text())
    assert manifest["quantize"]["status"] == "failed" and why in manifest["quantize"]["error"]
    assert not (run / "fp8-dynamic" / "model").exists() and not (run / "fp8-dynamic" / "model.partial").exists()
    assert not (runs / "_local_hub").exists(), "the publish target was opened with nothing to publish"
    with Ledger(runs / "ledger.sqlite") as ledger:
        (row,) = ledger.variants()
    assert row.state == "failed" and why in row.reason
