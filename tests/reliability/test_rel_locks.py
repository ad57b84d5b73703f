"""Concurrency: one bot per run directory. Two `bot publish` at once: one works, the other exits 8 with a
LockedError line. A lock whose holder died (pid gone) or whose lease expired is taken over; a live holder renews
its lease, so a long stage is never mistaken for a dead one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from relhelpers import FAST_EVAL, RECIPES_FILE, BotProc, link_copy_run, read_json, repo_for, run_inproc, wait_until

VARIANT = "fp8-dynamic"


def args_for(runs, namespace):
    return ["publish", "acme/tiny-llama", "-r", VARIANT, "--recipes-file", str(RECIPES_FILE), *FAST_EVAL,
            "--runs-dir", str(runs), "--target", "hub", "--namespace", namespace]


@pytest.fixture
def copy(world, tmp_path):
    runs = tmp_path / "runs"
    return runs, link_copy_run(world.run_root, runs, [VARIANT])


@pytest.fixture
def hold_commit(world):
    """Hold the commit request of a namespace until released (the holder keeps its lock meanwhile)."""
    events = {"entered": threading.Event(), "release": threading.Event()}

    def arm(namespace):
        def hold():
            events["entered"].set()
            events["release"].wait(60)

        world.hub.faults.before(hold, path=rf"^/api/models/{repo_for(VARIANT, namespace)}/commit/main$",
                                method="POST")
        return events

    yield arm
    events["release"].set()
    world.hub.faults.clear()


def plant_lock(run, **info):
    data = {"host": socket.gethostname(), "owner": "publish", **info}
    (run / ".lock").write_text(json.dumps(data))


@pytest.mark.parametrize("left_behind", [False, True], ids=["no-lock", "stale-lock-of-a-dead-bot"])
def test_two_publishes_at_once_one_works_and_the_other_exits_8(world, copy, tmp_path, left_behind):
    """Both start together; with `left_behind`, both also find the lock of a bot that died: one takes it over."""
    runs, run = copy
    if left_behind:
        dead = subprocess.Popen(["true"])
        dead.wait()
        plant_lock(run, pid=dead.pid, acquired=time.time(), renewed=time.time(), token="dead")
    # The winner's upload takes 3 s more, so it still holds the lock even if the other starts slower.
    world.hub.faults.before(lambda: time.sleep(3), path=rf"^/api/models/{repo_for(VARIANT, 'twice')}/commit/main$",
                            method="POST")
    procs = [BotProc(args_for(runs, "twice"), world.env, tmp_path / "logs", f"p{i}") for i in range(2)]
    world.procs.extend(procs)
    rcs = [p.wait(600) for p in procs]
    assert sorted(rcs) == [0, 8], [p.tail() for p in procs]
    winner, loser = (procs[0], procs[1]) if rcs[0] == 0 else (procs[1], procs[0])
    (line,) = loser.error_lines()
    assert line.startswith(f"error: {run.name} is being processed by pid {winner.pid} on {socket.gethostname()}")
    assert "stage:" not in loser.stderr, "the loser started working"
    assert len(world.hub.commits(repo_for(VARIANT, "twice"))) == 2  # one publish
    assert not (run / ".lock").exists()
    world.hub.faults.clear()


def test_lock_of_a_dead_holder_is_taken_over_at_once(world, copy, monkeypatch, capsys):
    runs, run = copy
    dead = subprocess.Popen(["true"])
    dead.wait()
    plant_lock(run, pid=dead.pid, acquired=time.time(), renewed=time.time())
    rc, _, err = run_inproc(monkeypatch, capsys, world.env, args_for(runs, "deadholder"))
    assert rc == 0, err
    assert not (run / ".lock").exists()


def test_lease_past_its_ttl_is_taken_over_and_a_fresh_one_is_not(world, copy, monkeypatch, capsys):
    runs, run = copy
    alive = subprocess.Popen(["sleep", "60"])
    try:
        plant_lock(run, pid=alive.pid, acquired=time.time() - 100, renewed=time.time())
        env = {**world.env, "BOT_LOCK_TTL_S": "30"}
        rc, _, err = run_inproc(monkeypatch, capsys, env, args_for(runs, "lease"))
        assert rc == 8, err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert f"is being processed by pid {alive.pid}" in line and "lock_ttl_s=30" in line

        plant_lock(run, pid=alive.pid, acquired=time.time() - 100, renewed=time.time() - 40)
        rc, _, err = run_inproc(monkeypatch, capsys, env, args_for(runs, "lease"))
        assert rc == 0, err
        assert len(world.hub.commits(repo_for(VARIANT, "lease"))) == 2
    finally:
        alive.kill()
        alive.wait()


def test_a_live_holder_renews_its_lease_beyond_the_ttl(world, copy, hold_commit, tmp_path, monkeypatch, capsys):
    runs, run = copy
    ev = hold_commit("renewed")
    env = {**world.env, "BOT_LOCK_TTL_S": "2"}  # renewed every 2/3 s
    holder = BotProc(args_for(runs, "renewed"), env, tmp_path / "logs", "holder")
    world.procs.append(holder)
    try:
        wait_until(ev["entered"].is_set, proc=holder, timeout=600, what="the holder's upload")
        first = read_json(run / ".lock")
        time.sleep(4.5)  # more than twice the TTL
        later = read_json(run / ".lock")
        assert later["pid"] == holder.pid and later["token"] == first["token"]
        assert later["renewed"] > first["renewed"] + 3 and time.time() - later["renewed"] < 2
        rc, _, err = run_inproc(monkeypatch, capsys, env, args_for(runs, "renewed"))
        assert rc == 8, "a live holder's lock was taken over after the TTL"
        assert f"pid {holder.pid}" in err
    finally:
        ev["release"].set()
    assert holder.wait(600) == 0, holder.tail()
    assert not (run / ".lock").exists()
    assert os.path.exists(run / VARIANT / "manifest.json")


def test_takeover_removes_only_the_lock_it_judged_stale(tmp_path):
    from bot.rundir import _take_over

    path = tmp_path / ".lock"
    path.write_text(json.dumps({"pid": 1, "token": "dead"}))
    seen = path.read_bytes()
    path.write_text(json.dumps({"pid": 2, "token": "new holder"}))  # another bot took it over meanwhile
    assert _take_over(path, seen) is False and json.loads(path.read_text())["token"] == "new holder"
    assert _take_over(path, path.read_bytes()) is True and not path.exists()
    assert not (tmp_path / ".lock.takeover").exists()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    from bot.rundir import acquire_lock

    path = tmp_path / ".lock"
    with acquire_lock(path, ttl_s=60, owner="test"):
        mine = json.loads(path.read_text())
        assert mine["pid"] == os.getpid() and mine["owner"] == "test"
        path.write_text(json.dumps({**mine, "token": "someone else"}))  # taken over (e.g. after a long stall)
    assert json.loads(path.read_text())["token"] == "someone else"
    with acquire_lock(tmp_path / ".lock2", ttl_s=60):
        pass
    assert not (tmp_path / ".lock2").exists()
