"""Atomic text files: shared by the run directory (bot.rundir) and the local Hub's storage (bot.localhub)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path` and rename it over `path`: readers see the old or the new
    content, never a part. A failed write (disk full) leaves `path` as it was and removes the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
