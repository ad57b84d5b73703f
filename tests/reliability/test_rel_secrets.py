"""Secrets: with a planted HF_TOKEN and GITHUB_TOKEN, nothing the bot writes or prints contains them: manifests,
worker logs, cards, the ledger's SQLite bytes, the local Hub's files, stdout/stderr (plain, BOT_DEBUG=1 with
tracebacks, HF_DEBUG=1 with huggingface_hub's request logging) and exception messages, on success and on an
error path where the server echoes the token back."""

from __future__ import annotations

import sqlite3
import traceback

import pytest

from bot.config import load_settings
from bot.errors import BotError
from relhelpers import (
    FAST_EVAL, GH_SECRET, HF_SECRET, RECIPES_FILE, BotProc, link_copy_run, repo_for, run_inproc, scan_for_secrets,
)

VARIANT = "fp8-dynamic"


def test_the_scanner_finds_a_planted_secret(tmp_path):
    """The scan below can fail: a token in a file, in SQLite pages or in a text is found."""
    (tmp_path / "a.json").write_text(f'{{"x": "{HF_SECRET}"}}')
    con = sqlite3.connect(tmp_path / "l.sqlite")
    con.execute("CREATE TABLE t (reason TEXT)")
    con.execute("INSERT INTO t VALUES (?)", (f"failed with {GH_SECRET}",))
    con.commit()
    con.close()
    leaks, files = scan_for_secrets([tmp_path], {"stderr": f"token {HF_SECRET}"})
    assert files == 2 and {(leak.where.rsplit('/', 1)[-1], leak.secret) for leak in leaks} == {
        ("a.json", HF_SECRET), ("l.sqlite", GH_SECRET), ("stderr", HF_SECRET)}


@pytest.fixture
def echo_fault(world):
    """A commit endpoint that fails for good and echoes the token it was sent in its error message."""
    world.hub.faults.fail(500, path=rf"^/api/models/{repo_for(VARIANT, 'leaky')}/commit/main$", method="POST",
                          times=None, message=f"backend exploded while checking token {HF_SECRET} (ref {GH_SECRET})")
    yield
    world.hub.faults.clear()


def test_no_token_in_anything_written_or_printed(world, echo_fault, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    run = link_copy_run(world.run_root, runs, [VARIANT])
    args = ["publish", "acme/tiny-llama", "-r", VARIANT, "--recipes-file", str(RECIPES_FILE), *FAST_EVAL,
            "--runs-dir", str(runs), "--target", "hub", "--namespace", "leaky"]
    procs = []
    # Plain, then verbose: tracebacks (BOT_DEBUG=1) and huggingface_hub's request log as curl lines (HF_DEBUG=1).
    for name, extra in (("plain", {}), ("verbose", {"BOT_DEBUG": "1", "HF_DEBUG": "1"})):
        proc = BotProc(args, {**world.env, "BOT_HUB_RETRIES": "2", **extra}, tmp_path / "logs", name)
        procs.append(proc)
        assert proc.wait(600) == 6, proc.tail()
    # The error path was taken, with the echo in it, and the token really was sent (the local Hub maps it).
    verbose = procs[1].stderr
    assert "Traceback (most recent call last)" in verbose and "authorization: <TOKEN>" in verbose
    assert "backend exploded while checking token ***" in procs[0].stderr
    assert any(e.user == "bot-local" for e in world.hub.log.entries("POST", "/commit/"))

    # The same error in-process: the exception the pipeline raises, its message and its formatted traceback.
    from bot.stages.pipeline import publish_model

    for key, value in world.env.items():
        if key.startswith(("BOT_", "HF_TOKEN", "HF_ENDPOINT", "GITHUB_TOKEN")):
            monkeypatch.setenv(key, value)
    settings = load_settings(cli={"runs_dir": runs, "hub_target": "hub", "namespace": "leaky",
                                  "recipes_file": RECIPES_FILE, "validate": {"tasks": ["bot_wikitext_mini"], "limit": 2}})  # FAST_EVAL
    with pytest.raises(BotError) as caught:
        publish_model("acme/tiny-llama", None, [VARIANT], settings)
    exc = caught.value

    # And a successful publish to the local target (runs/_local_hub), tokens still in the environment.
    local_args = [a if a != "hub" else "local" for a in args]
    rc, out, err = run_inproc(monkeypatch, capsys, world.env, local_args)
    assert rc == 0, err
    assert (runs / "_local_hub" / "repos" / "leaky").is_dir()
    texts = {"str(exc)": str(exc), "repr(exc)": repr(exc), "one_line": exc.one_line(),
             "traceback_only": "".join(traceback.format_exception_only(type(exc), exc))}
    texts["local.stdout"], texts["local.stderr"] = out, err
    for proc in procs + world.procs:
        texts[f"{proc.name}.stdout"] = proc.stdout
        texts[f"{proc.name}.stderr"] = proc.stderr

    leaks, files = scan_for_secrets([world.root, tmp_path], texts)
    assert files > 50  # manifests, logs, cards, ledger, hub objects, HF cache, captured outputs
    assert (run / VARIANT / "manifest.json").is_file() and (runs / "ledger.sqlite").is_file()
    assert list((runs / "_local_hub").rglob("README.md"))
    assert leaks == []
