"""Licences and gating: the base's licence and its LICENSE / NOTICE / USE_POLICY files travel to every published
variant; a gated base the token cannot read is reported at once (one request, no retry loop); a licence on
`license_deny` stops the run before anything is downloaded or published."""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import HfApi

from relhelpers import (BASE_REPO, FAST_EVAL, NAMESPACE, RECIPES, model_files, repo_for, run_inproc,
                        safetensors_bytes)

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}
LICENCE_FILES = ("LICENSE", "NOTICE", "USE_POLICY.md")


def _errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def _front_matter(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_licence_and_licence_files_reach_every_published_variant(world):
    base = world.hub.files(BASE_REPO)
    assert _front_matter(base["README.md"])["license"] == "llama3.2"
    for v in RECIPES:
        files = world.hub.files(repo_for(v))
        for name in LICENCE_FILES:
            assert files.get(name) == base[name], f"{repo_for(v)}: {name} missing or different"
        meta = _front_matter(files["README.md"])
        assert meta["license"] == "llama3.2" and meta["base_model"] == BASE_REPO
        manifest = json.loads(files["bot_manifest.json"])
        assert manifest["base"]["base"]["license_files"] == list(LICENCE_FILES)


def _seed_small(hub, repo, **kw):
    if not hub.storage.exists(repo):
        hub.seed_model(repo, files={"model.safetensors": safetensors_bytes()}, config=LLAMA, **kw)


def test_gated_base_the_token_cannot_read_is_reported_once_and_not_retried(world, tmp_path, monkeypatch, capsys):
    repo = "gatedorg/tiny-gated"
    _seed_small(world.hub, repo, gated="manual", gated_users=["someone-else"], card_data={"license": "llama3.2"})
    rc, _, err = run_inproc(monkeypatch, capsys, world.env, [
        "publish", repo, "-r", "fp8-dynamic", "--runs-dir", str(tmp_path / "runs"), "--target", "hub",
        "--namespace", "gated"])
    assert rc == 3
    (line,) = _errors(err)
    assert f"{repo} is gated and this token cannot read it" in line and "HF_TOKEN" in line
    file_requests = world.hub.log.entries(None, rf"^/{repo}/resolve/")
    assert [e.status for e in file_requests] == [403], "the gate was asked more than once (or not at all)"
    assert world.hub.log.count(None, rf"^/api/models/{repo}") == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("model.safetensors"))


@pytest.mark.parametrize("how", ["settings", "watchlist"])
def test_denied_licence_stops_before_download_with_a_clear_message(world, tmp_path, monkeypatch, capsys, how):
    repo = "denyorg/tiny-nc"
    _seed_small(world.hub, repo, card_data={"license": "cc-by-nc-4.0"})
    env, extra = dict(world.env), []
    if how == "settings":
        env["BOT_LICENSE_DENY"] = '["cc-by-nc-4.0"]'
    else:
        wl = tmp_path / "watchlist.yaml"
        wl.write_text("watch:\n  - author: denyorg\n    licenses_denied: [cc-by-nc-4.0]\n    recipes: [fp8-dynamic]\n")
        extra = ["--watchlist", str(wl)]
    before = world.hub.log.count(None, rf"^/{repo}/resolve/[^/]+/model\.safetensors$")
    rc, _, err = run_inproc(monkeypatch, capsys, env, [
        "publish", repo, "-r", "fp8-dynamic", *extra, "--runs-dir", str(tmp_path / "runs"), "--target", "hub",
        "--namespace", "denied"])
    assert rc == 3
    (line,) = _errors(err)
    assert f"{repo} is licensed 'cc-by-nc-4.0', which is on the deny-list (license_deny)" in line
    assert world.hub.log.count(None, rf"^/{repo}/resolve/[^/]+/model\.safetensors$") == before
    assert not [r for r in world.hub.storage.list_repos() if r.startswith("denied/")]
    assert NAMESPACE  # the world's own repos are untouched by this test


def test_deny_list_and_size_budget_apply_to_a_base_resolved_by_an_earlier_run(world, tmp_path, monkeypatch, capsys):
    """The world's base was downloaded under no deny-list; today's settings still decide."""
    from relhelpers import FAST_EVAL, RECIPES_FILE, link_copy_run

    runs = tmp_path / "runs"
    link_copy_run(world.run_root, runs, ["fp8-dynamic"])
    args = ["publish", BASE_REPO, "-r", "fp8-dynamic", "--recipes-file", str(RECIPES_FILE), *FAST_EVAL, "--runs-dir",
            str(runs), "--target", "hub", "--namespace", "late-deny"]
    for extra, needle in (({"BOT_LICENSE_DENY": '["llama3.2"]'}, "is licensed 'llama3.2', which is on the deny-list"),
                          ({"BOT_MAX_PARAMS_B": "0.001"}, "over the runner's limit of 0.001B")):
        rc, _, err = run_inproc(monkeypatch, capsys, {**world.env, **extra}, args)
        assert rc == 3
        (line,) = _errors(err)
        assert needle in line
    assert not [r for r in world.hub.storage.list_repos() if r.startswith("late-deny/")]


# The clause of the Llama 3.1 licence that asks derivatives for an attribution (read from the file, not assumed).
LLAMA_31_CLAUSE = (
    "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\n\nb. Redistribution and Use.\n"
    "i. If you distribute or make available the Llama Materials (or any derivative works thereof), or a product\n"
    "or service (including another AI model) that contains any of them, you shall (A) provide a copy of this\n"
    "Agreement with any such Llama Materials; and (B) prominently display \u201cBuilt with Llama\u201d on a related\n"
    "website, user interface, blogpost, about page, or product documentation.\n")


def test_readable_gated_base_is_published_gated_on_the_base_terms(world, tiny_llama, tmp_path, monkeypatch, capsys):
    """`bot publish` of a gated base this token was granted: downloaded, quantized, validated and published like
    any other, as a gated repo (`gated: inherit`) whose card carries the licence's own attribution phrase."""
    repo, namespace = "gatedorg/tiny-readable", "gatedpub"
    files = {**model_files(tiny_llama), "LICENSE": LLAMA_31_CLAUSE, "USE_POLICY.md": "# Llama 3.1 use policy\n"}
    world.hub.seed_model(repo, files=files, gated="manual", gated_users=[NAMESPACE],
                         card_data={"license": "llama3.1", "license_name": "llama3.1", "license_link": "LICENSE"})
    rc, out, err = run_inproc(monkeypatch, capsys, world.env, [
        "publish", repo, "-r", "fp8-dynamic", *FAST_EVAL, "--runs-dir", str(tmp_path / "runs"), "--target", "hub",
        "--namespace", namespace])
    assert rc == 0, err[-3000:]
    ours = f"{namespace}/tiny-readable-FP8-Dynamic"
    api = HfApi(endpoint=world.hub.url, token=world.env["HF_TOKEN"])
    assert api.model_info(ours).gated == "auto"  # gated like its base; access requests approved automatically
    published = world.hub.files(ours)
    assert published["LICENSE"] == LLAMA_31_CLAUSE.encode() and "USE_POLICY.md" in published
    card = published["README.md"].decode()
    meta = _front_matter(published["README.md"])
    assert meta["license"] == "llama3.1" and meta["base_model"] == repo
    assert "**Built with Llama**" in card
    assert "The base model is gated on the Hub" in card and "This repository is gated on the Hub as well" in card
    base = json.loads(published["bot_manifest.json"])["base"]["base"]
    assert base["gated"] is True and base["attribution"] == ["Built with Llama"]
