"""Idempotence: publishing the same run again makes no commit anywhere; a changed number in a manifest, after
`bot card`, changes only the card files, in one commit (never the checkpoint)."""

from __future__ import annotations

import re

from relhelpers import FAST_EVAL, RECIPES, RECIPES_FILE, link_copy_run, edit_json, repo_for, run_inproc

MODEL_FILES = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "LICENSE", "NOTICE",
               "USE_POLICY.md", "chat_template.jinja", "generation_config.json", "recipe.yaml"}


def _publish_args(runs, namespace, variants=("fp8-dynamic",)):
    return ["publish", "acme/tiny-llama", *sum((["-r", v] for v in variants), []), "--recipes-file", str(RECIPES_FILE),
            *FAST_EVAL, "--runs-dir", str(runs), "--target", "hub", "--namespace", namespace]


def test_publishing_the_same_run_twice_makes_no_commit(world, monkeypatch, capsys):
    hub = world.hub
    repos = [r for r in hub.storage.list_repos()]
    before = {r: [c.sha for c in hub.commits(r)] for r in repos}
    collections = hub.storage.collections.by_owner("bot-local")
    commits_seen = hub.log.count("POST", r"/commit/")
    rc, out, err = run_inproc(monkeypatch, capsys, world.env, world.args)
    assert rc == 0, err
    assert {r: [c.sha for c in hub.commits(r)] for r in hub.storage.list_repos()} == before
    assert hub.log.count("POST", r"/commit/") == commits_seen, "a commit request was even attempted"
    assert hub.storage.collections.by_owner("bot-local") == collections
    assert out.count("no change: nothing committed") == len(RECIPES)
    for v in RECIPES:
        assert world.manifest(v)["publish"]["changed"] is False


def test_a_changed_number_updates_only_the_card_in_one_commit(world, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    run = link_copy_run(world.run_root, runs, ["fp8-dynamic"])
    repo = repo_for("fp8-dynamic", "edited")
    rc, _, err = run_inproc(monkeypatch, capsys, world.env, _publish_args(runs, "edited"))
    assert rc == 0, err
    first = world.hub.commits(repo)
    assert len(first) == 2

    manifest = run / "fp8-dynamic" / "manifest.json"

    def bump(m):  # the variant's batch-1 time to first token: a number of the card's speed table only
        m["validate"]["speed"]["batch1"]["ttft_ms"] = 4242.4

    # The number as the card formats it ("4242.4"): a dot never occurs in a commit sha or a URL's hex part,
    # so the marker cannot match by chance (a bare "4242" once matched inside
    # the base's random revision), and it stands alone, not inside a longer number.
    def shows(text: str) -> bool:
        return re.search(r"(?<![\w.])4242\.4(?![\w])", text) is not None

    edit_json(manifest, bump)
    assert not shows((run / "fp8-dynamic" / "card" / "README.md").read_text())
    rc, out, err = run_inproc(monkeypatch, capsys, world.env, ["card", str(run), "--variant", "fp8-dynamic"])
    assert rc == 0, err
    assert shows((run / "fp8-dynamic" / "card" / "README.md").read_text())
    rc, _, err = run_inproc(monkeypatch, capsys, world.env, _publish_args(runs, "edited"))
    assert rc == 0, err

    commits = world.hub.commits(repo)
    assert len(commits) == 3, "exactly one new commit"
    changed = set(commits[0].changed) | set(commits[0].deleted)
    assert "README.md" in changed
    # The card's README and its machine-readable copy of the manifests (bot_manifest.json, which holds the
    # edited number too) are all that changed: no checkpoint file is uploaded again.
    assert changed <= {"README.md", "bot_manifest.json"}, changed
    assert not changed & MODEL_FILES
    assert shows(world.hub.files(repo)["README.md"].decode())
