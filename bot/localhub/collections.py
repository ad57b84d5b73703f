"""Collections of the local Hub, one JSON file each under `<root>/collections/<namespace>/`."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.localhub.common import StorageError, iso_now, read_json, write_json

if TYPE_CHECKING:
    from bot.localhub.storage import HubStorage


class CollectionStore:
    """Create, read and update collections; every change goes through the storage lock and `changed()`."""

    def __init__(self, storage: "HubStorage") -> None:
        self.storage = storage

    def _path(self, slug: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", slug):
            raise StorageError(404, f"Collection {slug} not found")
        return self.storage.root / "collections" / f"{slug}.json"

    def get(self, slug: str) -> dict[str, Any]:
        path = self._path(slug)
        if not path.exists():
            raise StorageError(404, f"Collection {slug} not found")
        return read_json(path)

    def by_owner(self, owner: str | None = None) -> list[dict[str, Any]]:
        base = self.storage.root / "collections"
        found = [read_json(p) for p in sorted(base.glob("*/*.json"))] if base.exists() else []
        return [c for c in found if owner is None or c["owner"]["name"] == owner]

    def create(self, namespace: str, title: str, description: str | None, private: bool) -> tuple[dict[str, Any], bool]:
        """Return (collection, created). A title already used in the namespace answers the existing one."""
        with self.storage.lock:
            for existing in self.by_owner(namespace):
                if existing["title"] == title:
                    return existing, False
            words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "collection"
            ident = hashlib.sha1(f"{namespace}/{title}/{time.time_ns()}".encode()).hexdigest()[:24]
            slug = f"{namespace}/{words}-{ident}"
            data: dict[str, Any] = {
                "slug": slug, "title": title, "description": description,
                "owner": {"name": namespace, "type": "user"}, "items": [], "lastUpdated": iso_now(),
                "position": 0, "private": private, "theme": "default", "upvotes": 0,
            }
            write_json(self._path(slug), data)
        self.storage.changed()
        return data, True

    def add_item(self, slug: str, item_id: str, item_type: str, note: str | None) -> tuple[dict[str, Any], bool]:
        with self.storage.lock:
            data = self.get(slug)
            if any(i["id"] == item_id and i["type"] == item_type for i in data["items"]):
                return data, False
            object_id = hashlib.sha1(f"{slug}/{item_type}/{item_id}".encode()).hexdigest()[:24]
            item: dict[str, Any] = {"_id": object_id, "id": item_id, "type": item_type, "position": len(data["items"])}
            if note is not None:
                item["note"] = {"text": note, "html": note}
            data["items"].append(item)
            data["lastUpdated"] = iso_now()
            write_json(self._path(slug), data)
        self.storage.changed()
        return data, True

    def update_item(self, slug: str, object_id: str, note: str | None, position: int | None) -> None:
        with self.storage.lock:
            data = self.get(slug)
            for item in data["items"]:
                if item["_id"] == object_id:
                    if note is not None:
                        item["note"] = {"text": note, "html": note}
                    if position is not None:
                        item["position"] = position
                    break
            else:
                raise StorageError(404, f"Item {object_id} not found in {slug}")
            data["lastUpdated"] = iso_now()
            write_json(self._path(slug), data)
        self.storage.changed()
