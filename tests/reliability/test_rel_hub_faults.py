"""Hub faults met by the pipeline's publish (`bot publish --target hub` against the local Hub, in-process).

Each test publishes a hard-linked copy of the resumed world run (every stage before publish is complete, so
only the upload happens) into its own namespace, with faults injected on that namespace's requests. The retry
bound is a setting: BOT_HUB_RETRIES=3 and millisecond delays (relhelpers.bot_env) unless a test says otherwise.
"""

from __future__ import annotations

import json
import time

import pytest

from bot.ledger import Ledger
from relhelpers import FAST_EVAL, RECIPES_FILE, link_copy_run, repo_for, run_inproc

VARIANT = "fp8-dynamic"


@pytest.fixture
def faults(world):
    world.hub.faults.clear()
    yield world.hub.faults
    world.hub.faults.clear()


@pytest.fixture
def timed(world, monkeypatch):
    """(monotonic time, request) for every request the local Hub answers from now on."""
    seen: list[tuple[float, object]] = []
    original = world.hub.log.add

    def add(entry):
        seen.append((time.monotonic(), entry))
        original(entry)

    monkeypatch.setattr(world.hub.log, "add", add)
    return seen


def publish(world, tmp_path, monkeypatch, capsys, namespace, **env):
    runs = tmp_path / "runs"
    if not runs.exists():
        link_copy_run(world.run_root, runs, [VARIANT])
    args = ["publish", "acme/tiny-llama", "-r", VARIANT, "--recipes-file", str(RECIPES_FILE), *FAST_EVAL,
            "--runs-dir", str(runs), "--target", "hub", "--namespace", namespace]
    rc, out, err = run_inproc(monkeypatch, capsys, {**world.env, **env}, args)
    return rc, out, err, runs / world.run_root.name


def commit_path(namespace):
    return rf"^/api/models/{repo_for(VARIANT, namespace)}/commit/main$"


def errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def ledger_rows(runs_root):
    with Ledger(runs_root.parent / "ledger.sqlite") as ledger:
        return ledger.models(model_id="acme/tiny-llama"), ledger.variants("acme/tiny-llama")


def test_commit_failing_beyond_the_bound_publishes_nothing_records_failure_and_resumes(
        world, faults, tmp_path, monkeypatch, capsys):
    ns = "atomic"
    repo = repo_for(VARIANT, ns)
    faults.fail(503, path=commit_path(ns), method="POST", times=None, message="backend unavailable")
    rc, out, err, run = publish(world, tmp_path, monkeypatch, capsys, ns)
    assert rc == 6
    (line,) = errors(err)
    assert f"publish to {repo} failed after 3 attempts: HTTP 503" in line and "rerun later" in line
    assert world.hub.log.count("POST", commit_path(ns)) == 3, "the retry bound (BOT_HUB_RETRIES=3) was not kept"
    # Nothing that looks published: the repo holds only what create_repo made, no collection lists it.
    assert sorted(world.hub.files(repo)) == [".gitattributes"]
    assert not [c for c in world.hub.storage.collections.by_owner(ns)]
    pub = json.loads((run / VARIANT / "manifest.json").read_text())["publish"]
    assert pub["status"] == "failed" and "HTTP 503" in pub["error"] and "backend unavailable" in pub["error"]
    models, variants = ledger_rows(run)
    assert models[0].state == "failed" and "HTTP 503" in models[0].reason
    assert [(v.variant, v.state) for v in variants] == [(VARIANT, "failed")] and "HTTP 503" in variants[0].reason

    # The Hub recovers: the same command publishes, in one commit.
    faults.clear()
    rc, out, err, _ = publish(world, tmp_path, monkeypatch, capsys, ns)
    assert rc == 0, err
    assert len(world.hub.commits(repo)) == 2 and "model.safetensors" in world.hub.files(repo)
    models, variants = ledger_rows(run)
    assert models[0].state == "published" and variants[0].state == "published"


def test_429_retry_after_is_honoured(world, faults, timed, tmp_path, monkeypatch, capsys):
    ns = "ratelimited"
    faults.rate_limit(times=1, retry_after=2, path=commit_path(ns), method="POST")
    rc, _, err, _ = publish(world, tmp_path, monkeypatch, capsys, ns)
    assert rc == 0, err
    mine = [(t, e) for t, e in timed if f"/{ns}/" in e.path]
    assert [e.status for _, e in mine if e.method == "POST" and "/commit/" in e.path] == [429, 200]
    (i,) = [i for i, (_, e) in enumerate(mine) if e.status == 429]
    gap = mine[i + 1][0] - mine[i][0]  # from the 429 to the next request (the re-read of the head)
    assert 2.0 <= gap < 3.5, f"waited {gap:.2f}s for Retry-After: 2 (the backoff alone would be ~0.01s)"
    assert len(world.hub.commits(repo_for(VARIANT, ns))) == 2


def test_5xx_are_retried_with_exponential_backoff_and_bounded_jitter(world, faults, timed, tmp_path, monkeypatch,
                                                                      capsys):
    ns = "flaky"
    for status in (500, 502, 503):
        faults.fail(status, path=commit_path(ns), method="POST", times=1)
    rc, _, err, _ = publish(world, tmp_path, monkeypatch, capsys, ns, BOT_HUB_RETRIES="4",
                            BOT_HUB_RETRY_BASE_S="0.2", BOT_HUB_RETRY_MAX_S="0.8")
    assert rc == 0, err
    mine = [(t, e) for t, e in timed if f"/{ns}/" in e.path]
    assert [e.status for _, e in mine if e.method == "POST" and "/commit/" in e.path] == [500, 502, 503, 200]
    # The wait: from a failed commit's answer to the next request (the re-read of the repo's head).
    gaps = [mine[i + 1][0] - t for i, (t, e) in enumerate(mine) if "/commit/" in e.path and e.status != 200]
    for gap, delay in zip(gaps, (0.2, 0.4, 0.8), strict=True):  # base * 2^(n-1), plus up to 25 % jitter
        assert delay <= gap <= delay * 1.25 + 0.75, gaps
    assert len(world.hub.commits(repo_for(VARIANT, ns))) == 2


def test_dropped_connections_are_retried_and_a_lost_answer_is_not_committed_twice(
        world, faults, tmp_path, monkeypatch, capsys):
    ns = "dropped"
    faults.drop(times=1, path=commit_path(ns), method="POST")  # dropped before the commit is made
    faults.drop(times=1, path=commit_path(ns), method="POST", after_handling=True)  # made, the answer lost
    rc, out, err, run = publish(world, tmp_path, monkeypatch, capsys, ns)
    assert rc == 0, err
    assert world.hub.log.count("POST", commit_path(ns)) == 2
    assert len(world.hub.commits(repo_for(VARIANT, ns))) == 2, "the commit whose answer was lost was made again"
    pub = json.loads((run / VARIANT / "manifest.json").read_text())["publish"]
    assert pub["status"] == "done" and pub["commit"] == world.hub.head(repo_for(VARIANT, ns))


@pytest.mark.parametrize("status, needle", [
    (401, "HF_TOKEN missing, invalid or expired"),
    (403, "the token (HF_TOKEN) lacks write access to 'deny403'"),
])
def test_401_and_403_are_not_retried_and_name_the_token_and_permission(world, faults, tmp_path, monkeypatch,
                                                                        capsys, status, needle):
    ns = f"deny{status}"
    faults.deny(status, path=r"^/api/repos/create$", method="POST")
    rc, _, err, run = publish(world, tmp_path, monkeypatch, capsys, ns)
    assert rc == 6
    (line,) = errors(err)
    assert needle in line and "HF_TOKEN" in line
    creates = [e for e in world.hub.log.entries("POST", r"^/api/repos/create$") if (e.body or {}).get("organization") == ns]
    assert len(creates) == 1, "an auth failure was retried"
    assert not world.hub.storage.exists(repo_for(VARIANT, ns))
    models, variants = ledger_rows(run)
    assert models[0].state == "failed" and str(status) in models[0].reason
    assert variants[0].state == "failed"
