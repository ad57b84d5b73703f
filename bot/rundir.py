"""The run directory: `runs/<org>--<name>@<sha>/` with `base/` and one folder per variant.

```
runs/allenai--Olmo-3-7B@1a2b3c4d5e6f/
  base/manifest.json          BaseManifest (where the base came from, its validation)
  base/model/                 the snapshot (local models are referenced, not copied)
  w4a16-gptq/manifest.json    VariantManifest (quantize, validate, card, publish sections)
  w4a16-gptq/model/           the compressed checkpoint (written to model.partial/, renamed when complete)
  w4a16-gptq/card/            README.md + chart, exactly what is uploaded besides the model files
  logs/                       worker logs
  timeline.json, timeline.png what ran when in each `bot publish` attempt (bot.stages.timeline)
```
Writes are atomic (temp file + rename), so a crash never leaves a manifest half written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

from pydantic import BaseModel

from bot.atomicfile import atomic_write_text  # re-exported: callers import it from here too
from bot.errors import LockedError
from bot.manifest import BaseManifest, VariantManifest

M = TypeVar("M", bound=BaseModel)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_id_for(model_id: str, revision: str) -> str:
    org, _, name = model_id.partition("/")
    if not name:
        org, name = "local", org
    return f"{_SAFE.sub('-', org)}--{_SAFE.sub('-', name)}@{revision[:12]}"


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_model(path: Path, cls: type[M]) -> M | None:
    if not path.exists():
        return None
    return cls.model_validate_json(path.read_text(encoding="utf-8"))


def write_model(path: Path, model: BaseModel) -> None:
    atomic_write_text(path, model.model_dump_json(indent=2, by_alias=True) + "\n")


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_model(cls, runs_dir: Path, model_id: str, revision: str) -> "RunDir":
        return cls(Path(runs_dir) / run_id_for(model_id, revision))

    @property
    def run_id(self) -> str:
        return self.root.name

    # layout
    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def variant_dir(self, variant: str) -> Path:
        return self.root / variant

    def model_dir(self, variant: str) -> Path:
        return self.variant_dir(variant) / "model"

    def partial_model_dir(self, variant: str) -> Path:
        return self.variant_dir(variant) / "model.partial"

    def card_dir(self, variant: str) -> Path:
        return self.variant_dir(variant) / "card"

    @property
    def timeline_path(self) -> Path:
        """The run's timeline (bot.stages.timeline): quantize and validate of each model on one time axis."""
        return self.root / "timeline.json"

    @property
    def timeline_chart_path(self) -> Path:
        return self.root / "timeline.png"

    # manifests
    def read_base(self) -> BaseManifest | None:
        return read_model(self.base_dir / "manifest.json", BaseManifest)

    def write_base(self, manifest: BaseManifest) -> None:
        write_model(self.base_dir / "manifest.json", manifest)

    def read_variant(self, variant: str) -> VariantManifest | None:
        return read_model(self.variant_dir(variant) / "manifest.json", VariantManifest)

    def variant_or_new(self, variant: str) -> VariantManifest:
        return self.read_variant(variant) or VariantManifest(run_id=self.run_id, variant=variant)

    def write_variant(self, manifest: VariantManifest) -> None:
        write_model(self.variant_dir(manifest.variant) / "manifest.json", manifest)

    def variants(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/manifest.json") if p.parent.name != "base")

    def discard_partial(self, variant: str) -> None:
        shutil.rmtree(self.partial_model_dir(variant), ignore_errors=True)

    def promote_partial(self, variant: str) -> Path:
        """Make the finished checkpoint visible: model.partial/ -> model/ in one rename."""
        final = self.model_dir(variant)
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.partial_model_dir(variant), final)
        return final

    # lock
    @contextmanager
    def lock(self, ttl_s: int = 6 * 3600, owner: str | None = None) -> Iterator[Path]:
        """Exclusive lock for this run. The holder renews its lease while it lives; a holder that died leaves a
        lease that expires after `ttl_s`, or at once when the holder's pid is gone on this host."""
        with acquire_lock(self.root / ".lock", ttl_s=ttl_s, owner=owner) as path:
            yield path


def _lock_is_stale(info: dict, ttl_s: float) -> bool:
    """A lock is stale when its lease was not renewed for `ttl_s` seconds, or at once when its holder's pid is
    gone on this host."""
    renewed = info.get("renewed", info.get("acquired", 0))
    try:
        age = time.time() - float(renewed)
    except (TypeError, ValueError):
        return True
    if age > ttl_s or (info.get("unreadable") and age > 5):
        return True
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, TypeError, OverflowError):
            return False
    return False


def _read_lock(path: Path) -> tuple[bytes, dict] | None:
    """(raw bytes, parsed info) of a lock file; None when there is none. Unreadable content (a bot that died
    while writing it) is stale 5 s after the file's modification time."""
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        info = None
    return raw, info if isinstance(info, dict) else {"renewed": mtime, "unreadable": True}


def _create_lock(path: Path, info: dict) -> bool:
    """Create `path` holding `info`, atomically (content and all), unless it exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    try:
        os.link(tmp, path)  # fails if `path` exists; never leaves an empty lock file behind
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, seen: bytes) -> bool:
    """Remove a stale lock, but only if it still holds exactly what was judged stale: when several bots find
    the same stale lock, one removes it and the others then find the winner's live lock."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:  # a bot that died while taking over leaves its guard: old guards are cleared
            if time.time() - guard.stat().st_mtime > 30:
                guard.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    os.close(fd)
    try:
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            return True
        if current != seen:
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        guard.unlink(missing_ok=True)


class _Lease(threading.Thread):
    """Renews the lock's lease every `interval` seconds while the holder lives, so a long job is never taken
    for a dead one; stops when the lock is no longer ours."""

    def __init__(self, path: Path, info: dict, interval: float) -> None:
        super().__init__(name="bot-lock-lease", daemon=True)
        self.path, self.info, self.interval = path, dict(info), interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            held = _read_lock(self.path)
            if held is None or held[1].get("token") != self.info["token"]:
                return
            self.info["renewed"] = time.time()
            try:
                atomic_write_text(self.path, json.dumps(self.info))
            except OSError:
                pass  # a full disk: the lease ages, and may be taken over after the TTL


@contextmanager
def acquire_lock(path: Path, ttl_s: float, owner: str | None = None) -> Iterator[Path]:
    """Hold `path` exclusively. The lease is renewed while held (every ttl/3, at most every minute); a lock
    whose lease is older than `ttl_s`, or whose holder's pid is gone on this host, is taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    info = {"pid": os.getpid(), "host": socket.gethostname(), "acquired": now, "renewed": now,
            "owner": owner or "", "ttl_s": ttl_s, "token": os.urandom(8).hex()}
    for _attempt in range(20):
        if _create_lock(path, info):
            break
        held = _read_lock(path)
        if held is None:
            continue  # released meanwhile
        raw, current = held
        if not _lock_is_stale(current, ttl_s):
            since = current.get("acquired")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since))) if isinstance(
                since, (int, float)) else "?"
            raise LockedError(
                f"{path.parent.name} is being processed by pid {current.get('pid')} on {current.get('host')} "
                f"({current.get('owner') or 'bot'}, since {when})",
                hint=f"wait for it; a lock whose holder died is taken over automatically (pid gone, or lease older "
                     f"than lock_ttl_s={ttl_s:g}s)",
            ) from None
        if not _take_over(path, raw):
            time.sleep(0.05)
    else:
        raise LockedError(f"could not take the lock {path}", hint="retry")
    lease = _Lease(path, info, max(0.2, min(ttl_s / 3, 60.0)))
    lease.start()
    try:
        yield path
    finally:
        lease.stop.set()
        lease.join(timeout=5)
        held = _read_lock(path)
        if held is not None and held[1].get("token") == info["token"]:
            path.unlink(missing_ok=True)
