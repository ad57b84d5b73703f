"""The SQLite ledger: model, variant and author rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ledger import AuthorCursor, Ledger


def test_model_rows_and_attempts(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "ledger.sqlite"
    with Ledger(path) as led:
        row = led.set_model("org/m", "sha1", "queued", "new", recipes=["w4a16-gptq", "nvfp4"])
        assert (row.state, row.attempts, row.recipes, row.author) == ("queued", 0, ("w4a16-gptq", "nvfp4"), "org")
        row = led.set_model("org/m", "sha1", "dispatched", "publish.yml@main", attempt=True)
        assert (row.state, row.attempts, row.recipes) == ("dispatched", 1, ("w4a16-gptq", "nvfp4"))
        row = led.set_model("org/m", "sha1", "failed", "boom", attempt=True)
        assert row.attempts == 2 and row.created_at <= row.updated_at
        led.set_model("org/m", "sha2", "queued")
    with Ledger(path) as led:  # persisted
        assert led.get_model("org/m", "sha1").state == "failed"
        assert led.latest("org/m").revision == "sha2"
        assert led.latest("org/m", state="failed").revision == "sha1"
        assert led.get_model("org/m", "nope") is None
        assert [r.revision for r in led.models(model_id="org/m")] == ["sha2", "sha1"]


def test_revisit_set(tmp_path: Path) -> None:
    with Ledger(":memory:") as led:
        led.set_model("a/final-skip", "s", "skipped", "gated")
        led.set_model("a/young", "s", "skipped", "too new", retry=True)
        led.set_model("a/pub", "s", "published")
        led.set_model("a/disp", "s", "dispatched")
        led.set_model("a_b/other", "s", "queued")  # '_' must not act as a LIKE wildcard
        led.set_model("ab/other", "s", "queued")
        assert {r.model_id for r in led.to_revisit("a")} == {"a/young", "a/pub", "a/disp"}
        assert {r.model_id for r in led.to_revisit("a_b")} == {"a_b/other"}
        led.forget("a/pub", "s")
        assert led.get_model("a/pub", "s") is None


def test_variants_and_cursors() -> None:
    with Ledger(":memory:") as led:
        led.set_variant("o/m", "s", "nvfp4", "queued")
        led.set_variant("o/m", "s", "nvfp4", "rejected", "recovery 91% < 96%")
        led.set_variant("o/m", "s", "fp8-dynamic", "published")
        rows = led.variants("o/m")
        assert [(v.variant, v.state) for v in rows] == [("fp8-dynamic", "published"), ("nvfp4", "rejected")]
        assert rows[1].reason == "recovery 91% < 96%"
        assert led.cursor("o") is None
        led.set_cursor(AuthorCursor("o", "2026-01-01T00:00:00+00:00", "o/m", "fp1"))
        led.set_cursor(AuthorCursor("o", "2026-02-01T00:00:00+00:00", "o/n", "fp1"))
        cur = led.cursor("o")
        assert (cur.newest_id, cur.fingerprint) == ("o/n", "fp1") and cur.updated_at


def test_unknown_states_are_refused() -> None:
    with Ledger(":memory:") as led:
        with pytest.raises(ValueError, match="unknown model state"):
            led.set_model("o/m", "s", "done")
        with pytest.raises(ValueError, match="unknown variant state"):
            led.set_variant("o/m", "s", "nvfp4", "quantizing")
