"""The watcher's memory: one SQLite file (`runs/ledger.sqlite`).

- `models`: per (model_id, revision): state, reason, attempts, the recipes asked for, timestamps.
- `variants`: per (model_id, revision, variant): state and reason, for `bot status`.
- `authors`: per author, the newest model (createdAt, id) already seen, so a watch cycle stops listing there.

The Hub's state of our target repos stays the truth; losing this file costs requests, never duplicates.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from bot.config import Settings

MODEL_STATES = ("queued", "dispatched", "in-flight", "published", "failed", "skipped")
VARIANT_STATES = ("queued", "quantized", "validated", "rejected", "inconclusive", "published", "failed")
LEDGER_FILE = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT NOT NULL, revision TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, recipes TEXT NOT NULL DEFAULT '[]', retry INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (model_id, revision));
CREATE TABLE IF NOT EXISTS variants (
    model_id TEXT NOT NULL, revision TEXT NOT NULL, variant TEXT NOT NULL, state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL,
    PRIMARY KEY (model_id, revision, variant));
CREATE TABLE IF NOT EXISTS authors (
    author TEXT PRIMARY KEY, newest_created_at TEXT, newest_id TEXT, fingerprint TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class ModelRow:
    model_id: str
    revision: str
    state: str
    reason: str
    attempts: int
    recipes: tuple[str, ...]
    retry: bool  # a temporary skip (too new, too few downloads, Hub error): checked again next cycle
    created_at: str
    updated_at: str

    @property
    def author(self) -> str:
        return self.model_id.split("/", 1)[0]


@dataclass(frozen=True)
class VariantRow:
    model_id: str
    revision: str
    variant: str
    state: str
    reason: str
    updated_at: str


@dataclass(frozen=True)
class AuthorCursor:
    """The newest model of `author` seen so far; `fingerprint` names the watch entries it was listed for."""

    author: str
    newest_created_at: str | None
    newest_id: str | None
    fingerprint: str = ""
    updated_at: str = ""


class Ledger:
    """Small typed API over the SQLite file. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._db:
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA user_version = 1")

    @classmethod
    def for_settings(cls, settings: Settings) -> "Ledger":
        return cls(Path(settings.runs_dir) / LEDGER_FILE)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- models

    def set_model(
        self,
        model_id: str,
        revision: str,
        state: str,
        reason: str = "",
        *,
        recipes: Iterable[str] | None = None,
        retry: bool = False,
        attempt: bool = False,
    ) -> ModelRow:
        """Insert or update one (model, revision). `attempt=True` counts a dispatch or a local run."""
        if state not in MODEL_STATES:
            raise ValueError(f"unknown model state {state!r} (one of {', '.join(MODEL_STATES)})")
        now = _now()
        old = self.get_model(model_id, revision)
        recipes_json = json.dumps(list(recipes) if recipes is not None else list(old.recipes if old else ()))
        with self._db:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM models").fetchone()[0]
            self._db.execute(
                """INSERT INTO models (model_id, revision, state, reason, attempts, recipes, retry, created_at,
                                       updated_at, seq)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (model_id, revision) DO UPDATE SET state = excluded.state,
                     reason = excluded.reason, attempts = models.attempts + ?, recipes = excluded.recipes,
                     retry = excluded.retry, updated_at = excluded.updated_at, seq = excluded.seq""",
                (model_id, revision, state, reason, int(attempt), recipes_json, int(retry), now, now, seq,
                 int(attempt)),
            )
        row = self.get_model(model_id, revision)
        assert row is not None
        return row

    def forget(self, model_id: str, revision: str) -> None:
        """Remove one (model, revision) row and its variants."""
        with self._db:
            self._db.execute("DELETE FROM models WHERE model_id = ? AND revision = ?", (model_id, revision))
            self._db.execute("DELETE FROM variants WHERE model_id = ? AND revision = ?", (model_id, revision))

    def get_model(self, model_id: str, revision: str) -> ModelRow | None:
        cur = self._db.execute("SELECT * FROM models WHERE model_id = ? AND revision = ?", (model_id, revision))
        found = cur.fetchone()
        return _model_row(found) if found else None

    def latest(self, model_id: str, state: str | None = None) -> ModelRow | None:
        """The most recently updated row of a model (optionally in one state)."""
        sql = "SELECT * FROM models WHERE model_id = ?" + (" AND state = ?" if state else "") + " ORDER BY seq DESC"
        found = self._db.execute(sql, (model_id, state) if state else (model_id,)).fetchone()
        return _model_row(found) if found else None

    def models(self, author: str | None = None, model_id: str | None = None) -> list[ModelRow]:
        """All rows, newest first, optionally for one author or one model."""
        sql, args = "SELECT * FROM models", []
        if author is not None:
            sql += " WHERE model_id LIKE ? ESCAPE '\\'"
            args.append(author.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%")
        elif model_id is not None:
            sql += " WHERE model_id = ?"
            args.append(model_id)
        return [_model_row(r) for r in self._db.execute(sql + " ORDER BY seq DESC", args)]

    def final_skip(self, model_id: str, revision: str) -> ModelRow | None:
        """The row of a revision skipped for good (not a temporary skip), else None."""
        row = self.get_model(model_id, revision)
        return row if row is not None and row.state == "skipped" and not row.retry else None

    def to_revisit(self, author: str | None = None) -> list[ModelRow]:
        """The latest row of each model the watcher must look at again: anything but a final skip."""
        seen: set[str] = set()
        out = []
        for row in self.models(author=author):
            if row.model_id in seen:
                continue
            seen.add(row.model_id)
            if row.state != "skipped" or row.retry:
                out.append(row)
        return out

    # ---------------------------------------------------------------- variants

    def set_variant(self, model_id: str, revision: str, variant: str, state: str, reason: str = "") -> VariantRow:
        if state not in VARIANT_STATES:
            raise ValueError(f"unknown variant state {state!r} (one of {', '.join(VARIANT_STATES)})")
        with self._db:
            self._db.execute(
                """INSERT INTO variants (model_id, revision, variant, state, reason, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (model_id, revision, variant) DO UPDATE SET state = excluded.state,
                     reason = excluded.reason, updated_at = excluded.updated_at""",
                (model_id, revision, variant, state, reason, _now()),
            )
        return VariantRow(model_id, revision, variant, state, reason, _now())

    def variants(self, model_id: str | None = None) -> list[VariantRow]:
        sql = "SELECT * FROM variants" + (" WHERE model_id = ?" if model_id else "")
        rows = self._db.execute(sql + " ORDER BY model_id, revision, variant", (model_id,) if model_id else ())
        return [VariantRow(r["model_id"], r["revision"], r["variant"], r["state"], r["reason"], r["updated_at"])
                for r in rows]

    # ---------------------------------------------------------------- authors

    def cursor(self, author: str) -> AuthorCursor | None:
        found = self._db.execute("SELECT * FROM authors WHERE author = ?", (author,)).fetchone()
        if not found:
            return None
        return AuthorCursor(found["author"], found["newest_created_at"], found["newest_id"], found["fingerprint"],
                            found["updated_at"])

    def set_cursor(self, cursor: AuthorCursor) -> None:
        with self._db:
            self._db.execute(
                """INSERT INTO authors (author, newest_created_at, newest_id, fingerprint, updated_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (author) DO UPDATE SET newest_created_at = excluded.newest_created_at,
                     newest_id = excluded.newest_id, fingerprint = excluded.fingerprint,
                     updated_at = excluded.updated_at""",
                (cursor.author, cursor.newest_created_at, cursor.newest_id, cursor.fingerprint, _now()),
            )


def _model_row(row: sqlite3.Row) -> ModelRow:
    return ModelRow(
        model_id=row["model_id"], revision=row["revision"], state=row["state"], reason=row["reason"],
        attempts=row["attempts"], recipes=tuple(json.loads(row["recipes"])), retry=bool(row["retry"]),
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def sync_from_run(ledger: Ledger, rundir, model_id: str, revision: str, variants: Iterable[str] | None = None) -> list[str]:
    """Copy each variant's state (and why it failed or was rejected) from the run directory's manifests into the
    ledger; returns the states in order. The manifests are the truth, the ledger is the cron's index of them."""
    states = []
    for variant in variants if variants is not None else rundir.variants():
        manifest = rundir.read_variant(variant)
        if manifest is None:
            continue
        state = manifest.state()
        state = "queued" if state == "quantizing" else state
        reason = next((r.error for r in (manifest.publish, manifest.validate_, manifest.quantize) if r and r.error), "")
        if state in ("rejected", "inconclusive") and manifest.validate_ and manifest.validate_.gate:
            reason = "; ".join(manifest.validate_.gate.reasons)
        ledger.set_variant(model_id, revision, variant, state, reason or "")
        states.append(state)
    return states
