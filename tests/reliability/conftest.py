"""Fixtures of the reliability tests.

`world` is the one expensive thing, built once per session: a local Hub (in this process) serving a base repo
`acme/tiny-llama` (the tiny random Llama plus a decoy `pytorch_model.bin`, LICENSE, NOTICE, USE_POLICY.md and a
licence in the card), and a real `bot publish acme/tiny-llama --target hub` that is killed once in every stage
(download, quantize, validate, card, upload) and rerun until it finishes. What each step saw is recorded in
`world.obs` for test_rel_resume.py; the finished run and its published repos are what the other tests start from.
Everything runs with a planted HF_TOKEN / GITHUB_TOKEN (test_rel_secrets.py scans for them afterwards).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from relhelpers import (  # noqa: E402
    BASE_REPO, FAST_EVAL, GH_SECRET, HF_SECRET, NAMESPACE, RECIPES, RECIPES_FILE, ROOT, BotProc, Observations,
    bot_env, count_markers, model_files, pid_alive, read_json, repo_for, run_bot, status_of, wait_until, worker_pids,
)

from localhub_support import LocalHub  # noqa: E402

STAGE_TIMEOUT_S = 900  # generous: a shared 2-core machine may be running other suites meanwhile
SLOW_LOOP = "{% for _ in range(1000000000) %}{% endfor %}"  # ~a minute of Jinja: the card stage, held open


@dataclass
class World:
    root: Path
    hub: LocalHub
    runs: Path
    logs: Path
    env: dict[str, str]
    sha: str
    args: list[str]
    obs: Observations = field(default_factory=Observations)
    procs: list[BotProc] = field(default_factory=list)

    @property
    def run_root(self) -> Path:
        return self.runs / f"acme--tiny-llama@{self.sha[:12]}"

    def manifest(self, name: str) -> dict[str, Any] | None:
        return read_json(self.run_root / name / "manifest.json")

    def run(self, args: list[str], name: str, env: dict[str, str] | None = None, timeout: float = 300) -> BotProc:
        proc = run_bot(args, env or self.env, self.logs, name, timeout)
        self.procs.append(proc)
        return proc

    def start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> BotProc:
        proc = BotProc(args, env or self.env, self.logs, name)
        self.procs.append(proc)
        return proc


def seed_base(hub: LocalHub, repo_id: str, model_dir: Path, **extra_files: Any) -> str:
    files: dict[str, Any] = model_files(model_dir)
    files.update({
        "pytorch_model.bin": b"PICKLE DECOY: bot must never download this file",
        "NOTICE": "tiny-llama NOTICE: attribution that must travel with every derivative\n",
        "USE_POLICY.md": "# Acceptable use\n\nDo not use tiny-llama for anything important.\n",
    })
    files.update(extra_files)
    return hub.seed_model(repo_id, files=files, card_data={
        "license": "llama3.2", "license_name": "llama3.2", "license_link": "LICENSE", "pipeline_tag": "text-generation"},
        readme_body="# tiny-llama\n\nA tiny random Llama.\n")


def _snapshot(world: World, what: str) -> dict[str, Any]:
    """Manifests, request counts, worker-log markers and the lock, as they are now."""
    r = world.run_root
    hub = world.hub
    return {
        "what": what,
        "base": world.manifest("base"),
        "variants": {v: world.manifest(v) for v in RECIPES},
        "weights_downloads": hub.log.count("GET", rf"^/{BASE_REPO}/resolve/[^/]+/model\.safetensors$"),
        "pickle_requests": hub.log.count(None, r"pytorch_model\.bin"),
        "quantize_workers": count_markers(r / "logs" / "quantize.log", "=== quantize_worker"),
        "validate_workers": {n: count_markers(r / "logs" / f"validate-{n}.log", "=== validate_worker")
                             for n in ["base", *RECIPES]},
        "lmeval_workers": {n: count_markers(r / "logs" / f"validate-{n}.log", "=== lmeval_worker")
                           for n in ["base", *RECIPES]},
        "lock": read_json(r / ".lock"),
        "commits": {v: len(hub.commits(repo_for(v))) if hub.storage.exists(repo_for(v)) else 0 for v in RECIPES},
        "repo_files": {v: sorted(hub.files(repo_for(v))) if hub.storage.exists(repo_for(v)) else None
                       for v in RECIPES},
        "cards": {v: (r / v / "card" / "README.md").is_file() for v in RECIPES},
        "model_dirs": {v: (r / v / "model" / "config.json").is_file() for v in RECIPES},
        "partial_dirs": {v: (r / v / "model.partial").exists() for v in RECIPES},
        "ledger": _ledger(world.runs / "ledger.sqlite"),
    }


def _ledger(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    con = sqlite3.connect(path)
    try:
        model = con.execute("SELECT state, reason FROM models WHERE model_id = ?", (BASE_REPO,)).fetchone()
        variants = {v: (s, r) for v, s, r in con.execute(
            "SELECT variant, state, reason FROM variants WHERE model_id = ?", (BASE_REPO,))}
    finally:
        con.close()
    return {"model": tuple(model) if model else None, "variants": variants}


def _kill_step(world: World, name: str, args: list[str], ready, sig: int, what: str,
               workers: str | None = None) -> dict[str, Any]:
    """Start `bot publish`, wait until `ready()` says the stage is running, send `sig`, record everything."""
    proc = world.start(args, name)
    try:
        wait_until(ready, proc=proc, timeout=STAGE_TIMEOUT_S, what=what)
    except BaseException:
        proc.kill()
        raise
    at_kill = _snapshot(world, f"{name}: at the kill")
    pids = worker_pids(workers) if workers else []
    rc = proc.kill(sig)
    gone = True
    if pids:
        try:
            wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=30, what="the workers to end")
        except AssertionError:
            gone = False
    after = _snapshot(world, f"{name}: after the kill")
    return {"rc": rc, "pid": proc.pid, "at_kill": at_kill, "after": after, "worker_pids": pids, "workers_gone": gone,
            "stderr": proc.stderr, "seconds": time.monotonic() - proc.started}


@pytest.fixture(scope="session")
def world(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("reliability-world")
    hub = LocalHub(root / "hub", tokens={HF_SECRET: NAMESPACE})
    hub.start()
    try:
        sha = seed_base(hub, BASE_REPO, tiny_llama)
        env = bot_env(root, hub_url=hub.url, GITHUB_TOKEN=GH_SECRET,
                      BOT_GATE__MIN_RECOVERY=json.dumps({v: 0 for v in RECIPES}),  # random weights: the gate passes
                      BOT_GATE__REQUIRE_GENERATION="false",  # a random model's generations loop
                      BOT_VALIDATE__FIDELITY__TOKENS="1024")  # two 8-bit data-free variants: far inside the bounds
        args = ["publish", BASE_REPO, *sum((["-r", v] for v in RECIPES), []), "--recipes-file", str(RECIPES_FILE),
                *FAST_EVAL, "--runs-dir", str(root / "runs"), "--target", "hub"]
        w = World(root, hub, root / "runs", root / "logs", env, sha, args)
        try:
            _resume_chain(w)
            yield w
        finally:
            for proc in w.procs:  # nothing of ours outlives the session, whatever failed
                if proc.poll() is None:
                    proc.kill()
    finally:
        hub.stop()


def _resume_chain(w: World) -> None:
    r = w.run_root
    t0 = time.monotonic()

    # 1. download: the weights request is held open by the local Hub; SIGKILL meanwhile.
    entered, released = threading.Event(), threading.Event()

    def hold_download() -> None:
        entered.set()
        released.wait(120)

    w.hub.faults.before(hold_download, path=rf"^/{BASE_REPO}/resolve/[^/]+/model\.safetensors$", method="GET")
    w.obs.steps["download"] = _kill_step(
        w, "1-download", w.args,
        lambda: entered.is_set() and status_of(w.manifest("base"), "base", "status") == "running",
        signal.SIGKILL, "the download to be running")
    released.set()

    # 2. quantize: the worker has started loading the base; SIGTERM (the bot ends its worker group and unwinds).
    def quantizing() -> bool:
        return (all(status_of(w.manifest(v), "quantize", "status") == "running" for v in RECIPES)
                and '"event": "load"' in _read(r / "logs" / "quantize.log")
                and bool(worker_pids(str(r / "jobs" / "quantize.json"))))

    w.obs.steps["quantize"] = _kill_step(w, "2-quantize", w.args, quantizing, signal.SIGTERM,
                                         "the quantize worker to be running", workers=str(r / "jobs" / "quantize.json"))

    # 3. validate: the base's validation worker runs; SIGKILL (the worker dies with the bot: PR_SET_PDEATHSIG).
    def validating() -> bool:
        return (status_of(w.manifest("base"), "validate", "status") == "running"
                and bool(worker_pids(str(r / "jobs" / "validate-base.json"))))

    w.obs.steps["validate"] = _kill_step(w, "3-validate", w.args, validating, signal.SIGKILL,
                                         "the base validation to be running",
                                         workers=str(r / "jobs" / "validate-base.json"))

    # 4. card: a template that loops for a minute holds the card stage open (card.partial/ exists); SIGKILL.
    slow = w.root / "slow-templates"
    shutil.copytree(ROOT / "templates", slow)
    (slow / "variant.md.j2").write_text(SLOW_LOOP + (slow / "variant.md.j2").read_text())
    w.obs.steps["card"] = _kill_step(
        w, "4-card", [*w.args, "--templates", str(slow)],
        lambda: any((r / v / "card.partial").is_dir() for v in RECIPES), signal.SIGKILL, "the card stage")

    # 5. upload: the first variant's commit request is held by the local Hub, then dropped; SIGKILL meanwhile.
    entered2, released2 = threading.Event(), threading.Event()

    def hold_commit() -> None:
        entered2.set()
        released2.wait(120)
        raise ConnectionResetError("the client is gone")  # the held commit never lands

    w.hub.faults.before(hold_commit, path=rf"^/api/models/{repo_for(RECIPES[0])}/commit/main$", method="POST")
    w.obs.steps["upload"] = _kill_step(
        w, "5-upload", w.args,
        lambda: entered2.is_set() and status_of(w.manifest(RECIPES[0]), "publish", "status") == "running",
        signal.SIGKILL, "the upload to be running")
    released2.set()
    time.sleep(0.2)

    # 6. the same command again: it finishes.
    before = _snapshot(w, "6-final: before")
    proc = w.run(w.args, "6-final", timeout=STAGE_TIMEOUT_S)
    w.obs.steps["final"] = {"rc": proc.proc.returncode,
                            "before": before, "after": _snapshot(w, "6-final: after"), "stderr": proc.stderr,
                            "stdout": proc.stdout, "seconds": time.monotonic() - proc.started}
    w.obs.steps["chain"] = {"seconds": time.monotonic() - t0}
    timings = {k: round(v.get("seconds", 0), 1) for k, v in w.obs.steps.items()}
    (w.root / "chain-timings.json").write_text(json.dumps(timings))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
