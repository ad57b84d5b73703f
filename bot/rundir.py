"""The run directory: `runs/<org>--<name>@<sha>/` with `base/` and one folder per variant.

```
runs/allenai--Olmo-3-7B@1a2b3c4d5e6f/
  base/manifest.json          BaseManifest (where the base came from, its validation)
  base/model/                 the snapshot (local models are referenced, not copied)
  w4a16-gptq/manifest.json    VariantManifest (quantize, validate, card, publish sections)
  w4a16-gptq/model/           the compressed checkpoint (written to model.partial/, renamed when complete)
  w4a16-gptq/card/            README.md + chart, exactly what is uploaded besides the model files
  logs/                       worker logs
```
Writes are atomic (temp file + rename), so a crash never leaves a manifest half written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

from pydantic import BaseModel

from bot.errors import LockedError
from bot.manifest import BaseManifest, VariantManifest

M = TypeVar("M", bound=BaseModel)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_id_for(model_id: str, revision: str) -> str:
    org, _, name = model_id.partition("/")
    if not name:
        org, name = "local", org
    return f"{_SAFE.sub('-', org)}--{_SAFE.sub('-', name)}@{revision[:12]}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        """Exclusive lock for this run. A holder that died leaves a lease that expires after `ttl_s`,
        or at once when the holder's pid is gone on this host."""
        with acquire_lock(self.root / ".lock", ttl_s=ttl_s, owner=owner) as path:
            yield path


def _lock_is_stale(info: dict, ttl_s: int) -> bool:
    if time.time() - float(info.get("acquired", 0)) > ttl_s:
        return True
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
    return False


@contextmanager
def acquire_lock(path: Path, ttl_s: int, owner: str | None = None) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "acquired": time.time(), "owner": owner or ""}
    for _attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                held = {"acquired": 0}
            if _lock_is_stale(held, ttl_s):
                path.unlink(missing_ok=True)
                continue
            raise LockedError(
                f"{path.parent.name} is being processed by pid {held.get('pid')} on {held.get('host')}",
                hint=f"wait for it, or remove {path} if that process is gone",
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    raise LockedError(f"could not take the lock {path}", hint="retry")
