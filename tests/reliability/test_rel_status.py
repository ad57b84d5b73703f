"""`bot status`: each model's per-variant state from the ledger (queued, quantized, validated, rejected,
published, failed) with the reason."""

from __future__ import annotations

import json

import re

from bot.ledger import Ledger
from relhelpers import FAST_EVAL, RECIPES, RECIPES_FILE, edit_json, link_copy_run, repo_for, run_inproc

WIDE = {"COLUMNS": "250"}


def _rows(out: str) -> dict[str, str]:
    """variant -> its table line (rich draws │ between cells)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) > 4 and cells[3]:
            rows[cells[3]] = line
    return rows


def test_status_shows_each_variant_state_with_its_reason(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    states = {
        "w4a16-gptq": ("queued", ""),
        "w4a16-awq": ("quantized", ""),
        "w4a16-autoround": ("validated", ""),
        "w8a8-int8": ("rejected", "mean recovery 91.2% < 96.0%"),
        "fp8-dynamic": ("published", ""),
        "nvfp4": ("failed", "quantize worker exited with -9 (killed: out of memory?)"),
    }
    with Ledger(runs / "ledger.sqlite") as ledger:
        ledger.set_model("acme/Tiny-1B", "a" * 40, "failed", "5 of 6 variants: see variants")
        for variant, (state, reason) in states.items():
            ledger.set_variant("acme/Tiny-1B", "a" * 40, variant, state, reason)
    rc, out, err = run_inproc(monkeypatch, capsys, WIDE, ["status", "--runs-dir", str(runs)])
    assert rc == 0, err
    rows = _rows(out)
    for variant, (state, reason) in states.items():
        assert variant in rows, out
        assert f" {state} " in rows[variant] and reason in rows[variant], rows[variant]
    assert "5 of 6 variants" in rows["-"]


def test_status_follows_the_resumed_run_through_its_states(world, monkeypatch, capsys):
    """The ledger as each kill of the resume chain left it, then `bot status` on the finished run."""
    seen = {step: world.obs[step]["after"]["ledger"]["variants"] for step in ("quantize", "validate", "card", "upload")}
    assert {v: s for v, (s, _) in seen["quantize"].items()} == {v: "queued" for v in RECIPES}  # SIGTERM: synced
    assert {v: s for v, (s, _) in seen["validate"].items()} == {v: "quantized" for v in RECIPES}
    assert {v: s for v, (s, _) in seen["card"].items()} == {v: "validated" for v in RECIPES}
    assert world.obs["quantize"]["after"]["ledger"]["model"] == (
        "failed", "interrupted: rerun the same command to resume")
    rc, out, err = run_inproc(monkeypatch, capsys, WIDE, ["status", "--runs-dir", str(world.runs), "--model",
                                                          "acme/tiny-llama"])
    assert rc == 0, err
    rows = _rows(out)
    for v in RECIPES:
        assert " published " in rows[v]


def test_status_shows_rejected_and_failed_variants_with_their_reasons(world, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    run = link_copy_run(world.run_root, runs, RECIPES)

    def unpublished(m):
        m["publish"] = None  # the copy starts before its first publish

    edit_json(run / "fp8-dynamic" / "manifest.json", unpublished)
    edit_json(run / "w8a16-rtn" / "manifest.json", unpublished)
    # every validate call judges again from the records: the rejection comes from a threshold the CI cannot reach
    env = {**world.env, "BOT_GATE__MIN_RECOVERY": json.dumps({"fp8-dynamic": 0, "w8a16-rtn": 150})}
    world.hub.faults.deny(403, path=r"^/api/repos/create$", method="POST")
    try:
        rc, _, err = run_inproc(monkeypatch, capsys, env, [
            "publish", "acme/tiny-llama", *sum((["-r", v] for v in RECIPES), []), "--recipes-file",
            str(RECIPES_FILE), *FAST_EVAL, "--runs-dir", str(runs), "--target", "hub", "--namespace", "status"])
    finally:
        world.hub.faults.clear()
    assert rc == 6, err
    assert not world.hub.storage.exists(repo_for("fp8-dynamic", "status"))
    rc, out, err = run_inproc(monkeypatch, capsys, WIDE, ["status", "--runs-dir", str(runs)])
    assert rc == 0, err
    rows = _rows(out)
    assert " failed " in rows["fp8-dynamic"] and "403" in rows["fp8-dynamic"] and "HF_TOKEN" in rows["fp8-dynamic"]
    assert " rejected " in rows["w8a16-rtn"] and "is below 150.00%" in rows["w8a16-rtn"]


def test_worker_exit_reasons_name_the_signal():
    from bot.clients.process import exit_reason, plain

    assert exit_reason(3) == "exited with code 3"
    assert exit_reason(-9) == "was killed (SIGKILL: out of memory?)" == exit_reason(137)
    assert exit_reason(-15) == "was stopped (SIGTERM)" == exit_reason(143)
    assert exit_reason(None) == "did not start"
    assert plain("\x1b[33;1mWARNING\x1b[0m autoround") == "WARNING autoround"
