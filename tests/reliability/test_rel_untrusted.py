"""Untrusted models: remote code stays off unless the watchlist allows that model or author; pickle weights are
never downloaded nor loaded; a Hub repo whose config asks for remote code is refused (publish) or skipped
(watcher) with the reason, before any weight is downloaded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bot.clients.hub import RetryPolicy, make_hub_client
from bot.config import SettingsLayers
from bot.ledger import Ledger
from localhub_support import LocalHub
from bot.stages.watch.run import run_watch
from bot.watchlist import parse_watchlist
from relhelpers import BASE_REPO, FAST_EVAL, model_files, run_inproc

AUTO_MAP = {"AutoConfig": "configuration_remote.RemoteConfig", "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM"}
REMOTE_REPO = "remoteorg/remote-llama"


def _errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def _with_auto_map(model_dir: Path) -> dict[str, bytes]:
    files = model_files(model_dir)
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps({**config, "auto_map": AUTO_MAP}).encode()
    return files


@pytest.fixture(scope="module")
def remote_repo(world, tiny_llama):
    if not world.hub.storage.exists(REMOTE_REPO):
        world.hub.seed_model(REMOTE_REPO, files=_with_auto_map(tiny_llama))
    return REMOTE_REPO


def _weights_requests(hub, repo):
    return hub.log.count(None, rf"^/{repo}/resolve/[^/]+/model\.safetensors$")


def test_local_model_asking_for_remote_code_is_refused(tiny_llama, tmp_path, monkeypatch, capsys, world):
    model = tmp_path / "remote-llama"
    model.mkdir()
    for name, data in _with_auto_map(tiny_llama).items():
        (model / name).write_bytes(data) if name == "config.json" else os.link(tiny_llama / name, model / name)
    runs = tmp_path / "runs"
    rc, _, err = run_inproc(monkeypatch, capsys, {}, ["publish", str(model), "-r", "fp8-dynamic", "--runs-dir",
                                                     str(runs)])
    assert rc == 3
    (line,) = _errors(err)
    assert "local/remote-llama needs trust_remote_code (config.auto_map)" in line and "watchlist.yaml" in line
    assert not list(runs.rglob("model.partial")) and not list(runs.rglob("model/config.json"))
    assert not (runs / "_local_hub").exists()


def test_hub_repo_asking_for_remote_code_is_refused_before_its_weights_are_downloaded(
        world, remote_repo, tmp_path, monkeypatch, capsys):
    rc, _, err = run_inproc(monkeypatch, capsys, world.env, [
        "publish", remote_repo, "-r", "fp8-dynamic", "--runs-dir", str(tmp_path / "runs"), "--target", "hub",
        "--namespace", "remote-refused"])
    assert rc == 3
    (line,) = _errors(err)
    assert f"{remote_repo} needs trust_remote_code (config.auto_map)" in line
    assert _weights_requests(world.hub, remote_repo) == 0, "weights downloaded for a model that is refused"
    assert world.hub.log.count("GET", rf"^/{remote_repo}/resolve/[^/]+/config\.json$") >= 1


@pytest.mark.parametrize("entry, allowed", [
    ("models: [remoteorg/remote-llama]\n    trust_remote_code: true", True),
    ("author: remoteorg\n    trust_remote_code: true", True),
    ("author: someoneelse\n    trust_remote_code: true", False),
    ("models: [remoteorg/remote-llama]", False),
])
def test_watchlist_entry_allows_remote_code_for_that_model_or_author_only(
        world, remote_repo, tmp_path, monkeypatch, capsys, entry, allowed):
    wl = tmp_path / "watchlist.yaml"
    wl.write_text(f"watch:\n  - {entry}\n    recipes: [fp8-dynamic]\n")
    no_quantize_env = tmp_path / "python-without-llmcompressor"  # stops the run at the quantize stage's check
    no_quantize_env.write_text("#!/bin/sh\necho llmcompressor\nexit 1\n")
    no_quantize_env.chmod(0o755)
    runs = tmp_path / "runs"
    env = {**world.env, "BOT_QUANTIZE_PYTHON": str(no_quantize_env)}
    rc, _, err = run_inproc(monkeypatch, capsys, env, [
        "publish", remote_repo, "-r", "fp8-dynamic", "--watchlist", str(wl), "--runs-dir", str(runs),
        "--target", "hub", "--namespace", "remote-allowed"])
    (line,) = _errors(err)
    if not allowed:
        assert rc == 3 and "needs trust_remote_code" in line
        return
    # Resolution passed (downloaded, described, trust recorded); the quantize stage was reached.
    assert rc == 4 and "the quantize environment" in line and "cannot import llmcompressor" in line
    (base,) = runs.glob("*/base/manifest.json")
    record = json.loads(base.read_text())["base"]
    assert record["status"] == "done" and record["trust_remote_code"] is True


def test_pickle_weights_are_never_downloaded_nor_loaded(world):
    """The base repo has model.safetensors and a decoy pytorch_model.bin: no request ever names the .bin."""
    assert "pytorch_model.bin" in world.hub.files(BASE_REPO)
    assert world.hub.log.count(None, r"pytorch_model\.bin") == 0
    assert _weights_requests(world.hub, BASE_REPO) >= 1  # the safetensors were downloaded (the check can fail)
    assert not [p for p in world.runs.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    quantize_job = json.loads((world.run_root / "jobs" / "quantize.json").read_text())
    assert quantize_job["trust_remote_code"] is False


def test_watcher_skips_a_repo_whose_config_asks_for_remote_code(tmp_path):
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    with LocalHub(tmp_path / "hub") as hub:
        from relhelpers import safetensors_bytes

        hub.seed_model("remoteorg/Custom-1B", files={"model.safetensors": safetensors_bytes()},
                       config={**llama, "auto_map": AUTO_MAP}, card_data={"license": "apache-2.0"})  # no custom_code tag
        hub.seed_model("remoteorg/Plain-1B", files={"model.safetensors": safetensors_bytes()}, config=llama,
                       card_data={"license": "apache-2.0"})
        layers = SettingsLayers(watchlist_defaults={"runs_dir": tmp_path / "runs", "namespace": "bot-test",
                                                    "hub_target": "hub", "hub_endpoint": hub.url}, environ={})
        client = make_hub_client(layers.merge(), RetryPolicy(attempts=1))
        for trust, expected in ((False, "needs remote code (auto_map in config)"), (True, None)):
            wl = parse_watchlist(f"watch:\n  - author: remoteorg\n    trust_remote_code: {str(trust).lower()}\n"
                                 "    recipes: [fp8-dynamic]\n")
            with Ledger(":memory:") as ledger:
                result = run_watch(wl, client, ledger, layers, dry_run=True)
            got = {c.model_id: c for c in result.plan.candidates}
            custom = got["remoteorg/Custom-1B"]
            if expected:
                assert not custom.queued and custom.reason.startswith(expected), custom
            else:
                assert custom.queued, custom
            assert got["remoteorg/Plain-1B"].queued
        assert hub.log.count(None, r"^/remoteorg/.*/resolve/") == 0  # the watcher decides from metadata alone
