"""Resume: a real `bot publish` subprocess is killed (SIGKILL, or SIGTERM) in each stage in turn; the same command
rerun finishes, and what was complete before a kill is not done again.

The kills happen in the session fixture `world` (conftest.py), which records what it saw; each test here checks
one stage. Evidence that work was not redone: the base weights are requested from the Hub no more often, the
manifests' `finished_at` / `wall_time_s` / `validated_at` stay the same, and the worker logs gain no new
`=== <worker>` start marker.
"""

from __future__ import annotations

import sqlite3

from relhelpers import RECIPES, repo_for


def _q(snap, v):
    return snap["variants"][v]["quantize"]


def _val(snap, v):
    return snap["variants"][v]["validate"]


def test_kill_during_download_then_rerun_downloads_and_takes_over_the_dead_lock(world):
    step, nxt = world.obs["download"], world.obs["quantize"]
    assert step["rc"] == -9
    at = step["at_kill"]
    assert at["base"]["base"]["status"] == "running" and at["weights_downloads"] == 0  # held by the local Hub
    # SIGKILL leaves the lock behind, naming a pid that no longer exists ...
    lock = step["after"]["lock"]
    assert lock is not None and lock["pid"] == step["pid"] and lock["owner"] == "download"
    # ... and the rerun takes it over (the pid is gone) and completes the download.
    assert nxt["at_kill"]["base"]["base"]["status"] == "done"
    assert nxt["at_kill"]["base"]["base"]["license_files"] == ["LICENSE", "NOTICE", "USE_POLICY.md"]
    assert nxt["after"]["weights_downloads"] == 2  # the held request, then the rerun's


def test_kill_during_quantize_sigterm_ends_the_worker_and_rerun_skips_the_download(world):
    step, nxt = world.obs["quantize"], world.obs["validate"]
    assert step["rc"] == 143 and "terminated: rerun the same command to resume" in step["stderr"]
    assert all(_q(step["at_kill"], v)["status"] == "running" for v in RECIPES)
    assert step["worker_pids"] and step["workers_gone"], "the quantize worker outlived the bot"
    after = step["after"]
    assert after["lock"] is None, "SIGTERM must release the lock"
    assert not any(after["model_dirs"].values()), "no checkpoint may look complete after an interrupted quantize"
    # The rerun: the download was complete, so it is not repeated.
    base_before, base_after = after["base"]["base"], nxt["after"]["base"]["base"]
    assert base_after["finished_at"] == base_before["finished_at"]
    assert nxt["after"]["weights_downloads"] == after["weights_downloads"] == 2
    assert all(_q(nxt["at_kill"], v)["status"] == "done" for v in RECIPES)


def test_kill_during_validate_kills_its_worker_and_rerun_keeps_the_quantized_variants(world):
    step, nxt = world.obs["validate"], world.obs["card"]
    assert step["rc"] == -9
    assert step["at_kill"]["base"]["validate"]["status"] == "running"
    assert step["worker_pids"] and step["workers_gone"], "the validate worker outlived a SIGKILLed bot"
    assert step["after"]["lock"]["pid"] == step["pid"]  # left behind by SIGKILL, taken over by the rerun
    # The rerun validates, but quantizes nothing again: same records, no new worker start.
    for v in RECIPES:
        assert _q(nxt["after"], v) == _q(step["after"], v), f"{v} was quantized again"
        assert _q(nxt["after"], v)["wall_time_s"] is not None
    assert step["after"]["quantize_workers"] == nxt["after"]["quantize_workers"] == 2  # killed run + its rerun
    assert nxt["after"]["weights_downloads"] == 2
    assert all(_val(nxt["at_kill"], v)["status"] == "done" for v in RECIPES)


def test_kill_during_card_rerun_renders_cards_without_validating_again(world):
    step, nxt = world.obs["card"], world.obs["upload"]
    assert step["rc"] == -9
    assert not any(step["after"]["cards"].values()), "the card was being rendered aside, not in card/"
    assert all(_val(step["at_kill"], v)["status"] == "done" for v in RECIPES)
    for v in RECIPES:
        assert _val(nxt["after"], v)["validated_at"] == _val(step["after"], v)["validated_at"]
        assert _q(nxt["after"], v) == _q(step["after"], v)
    assert nxt["after"]["validate_workers"] == step["after"]["validate_workers"]
    assert nxt["after"]["lmeval_workers"] == step["after"]["lmeval_workers"]
    assert nxt["after"]["base"]["validate"] == step["after"]["base"]["validate"]
    assert all(nxt["at_kill"]["cards"].values())  # rendered again by the rerun, before its upload


def test_kill_during_upload_leaves_nothing_published_and_rerun_publishes_once(world):
    step, final = world.obs["upload"], world.obs["final"]
    first = RECIPES[0]
    assert step["rc"] == -9
    assert step["at_kill"]["variants"][first]["publish"]["status"] == "running"
    assert step["after"]["repo_files"][first] == [".gitattributes"], "a killed upload left content in the repo"
    assert step["after"]["commits"][first] == 1  # the repo's initial commit only
    # The rerun finishes: one commit per variant repo with the checkpoint and the card; no stage redone.
    assert final["rc"] == 0, final["stderr"][-2000:]
    before, after = final["before"], final["after"]
    for v in RECIPES:
        files = after["repo_files"][v]
        assert {"README.md", "config.json", "model.safetensors", "LICENSE", "NOTICE", "USE_POLICY.md"} <= set(files)
        assert after["commits"][v] == 2, f"{repo_for(v)}: {after['commits'][v]} commits"
        assert after["variants"][v]["publish"]["status"] == "done"
        assert _q(after, v) == _q(before, v)
        assert _val(after, v)["validated_at"] == _val(before, v)["validated_at"]
    for key in ("weights_downloads", "quantize_workers", "validate_workers", "lmeval_workers"):
        assert after[key] == before[key], key
    assert after["pickle_requests"] == 0
    assert after["lock"] is None


def test_ledger_after_the_resumed_run_says_published(world):
    con = sqlite3.connect(world.runs / "ledger.sqlite")
    try:
        models = con.execute("SELECT state, reason FROM models WHERE model_id = 'acme/tiny-llama'").fetchall()
        variants = dict(con.execute("SELECT variant, state FROM variants WHERE model_id = 'acme/tiny-llama'"))
    finally:
        con.close()
    assert models == [("published", "2 published")]
    assert variants == {v: "published" for v in RECIPES}
