"""Fakes for the watcher's unit tests: a Hub client with call counters, Hub-shaped model JSON."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from huggingface_hub import ModelInfo

from bot.config import Settings
from bot.errors import HubError
from bot.stages.watch.run import CARD_REVISION_KEY, SUFFIXES, target_repo_id

NOW = datetime.now(timezone.utc).replace(microsecond=0)  # the ledger stamps rows with the real clock


def model_json(model_id: str, *, sha: str = "a" * 40, age_hours: float = 100, params: int | None = 1_000_000_000,
               files: list[str] | None = None, architectures: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What GET /api/models/{id} answers for a plain causal LM, with overrides."""
    data: dict[str, Any] = {
        "id": model_id,
        "author": model_id.split("/")[0],
        "sha": sha,
        "createdAt": (NOW - timedelta(hours=age_hours)).isoformat().replace("+00:00", "Z"),
        "private": False,
        "gated": False,
        "downloads": 1000,
        "tags": ["transformers", "safetensors", "text-generation", "license:apache-2.0"],
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "config": {"architectures": architectures or ["LlamaForCausalLM"], "model_type": "llama"},
        "cardData": {"license": "apache-2.0"},
        "siblings": [{"rfilename": f} for f in (files or ["config.json", "model.safetensors", "README.md"])],
    }
    if params is not None:
        data["safetensors"] = {"parameters": {"BF16": params}, "total": params}
    data.update(extra)
    return data


class FakeHub:
    """In-memory stand-in for bot.clients.hub.HubClient (the watcher's three calls), counting calls."""

    endpoint = "https://fake-hub.invalid"

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.listed_items = 0

    def add(self, model_id: str, **kw: Any) -> dict[str, Any]:
        self.models[model_id] = model_json(model_id, **kw)
        return self.models[model_id]

    def publish(self, settings: Settings, model_id: str, sha: str, recipes: list[str] | None = None) -> None:
        for rid in recipes or list(SUFFIXES):
            repo = target_repo_id(settings, model_id, rid, SUFFIXES[rid])
            self.cards[repo] = {"base_model": model_id, CARD_REVISION_KEY: sha}

    def list_author_models(self, author: str, sort: str = "createdAt", limit: int | None = None) -> Iterator[ModelInfo]:
        self.calls["list"] += 1
        items = [m for m in self.models.values() if m["author"] == author]
        items.sort(key=lambda m: m["createdAt"], reverse=True)
        for item in items[:limit]:
            self.listed_items += 1
            yield ModelInfo(**{k: v for k, v in item.items() if k in ("id", "author", "createdAt", "sha")})

    def model_info(self, repo_id: str, revision: str | None = None) -> ModelInfo:
        self.calls["info"] += 1
        if repo_id not in self.models:
            raise HubError(f"{repo_id} not found", repo_id=repo_id, status=404)
        return ModelInfo(**self.models[repo_id])

    def repo_card_data(self, repo_id: str) -> dict[str, Any] | None:
        self.calls["card"] += 1
        return self.cards.get(repo_id)

    def can_read(self, repo_id: str, revision: str | None = None) -> bool:
        self.calls["access"] += 1
        return not self.models[repo_id].get("gated")


class FakeDispatcher:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def dispatch(self, workflow: str = "publish.yml", ref: str = "main", inputs: Any = None) -> None:
        self.sent.append({"workflow": workflow, "ref": ref, "inputs": dict(inputs or {})})
