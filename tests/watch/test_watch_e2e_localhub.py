"""End to end: the watcher with the real huggingface_hub client (HubClient) over HTTP against bot.localhub,
and dispatches with the real PyGithub against the local GitHub fake."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

import pytest
from fake_github import FakeGitHub

from bot.clients.github import GitHubDispatcher
from bot.config import Settings, SettingsLayers
from bot.ledger import Ledger
from bot.stages.watch.run import CARD_REVISION_KEY, SUFFIXES, run_watch, target_repo_id
from bot.watchlist import parse_watchlist

import localhub_support as localhub  # bot.localhub with the tests' seeding and request log
hub_client = pytest.importorskip("bot.clients.hub")

RECIPES = ["w4a16-gptq", "fp8-dynamic"]
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}
WATCHLIST = f"""
watch:
  - author: acme
    recipes: {json.dumps(RECIPES)}
  - author: thirdparty
    recipes: {json.dumps(RECIPES)}
"""


def safetensors(params: int) -> bytes:
    header = json.dumps({"w": {"dtype": "BF16", "shape": [params], "data_offsets": [0, 2 * params]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(2 * params)


def when(day: int) -> str:
    return f"2025-06-{day:02d}T00:00:00.000Z"


def seed_base(hub: Any, repo_id: str, day: int, *, config: dict | None = None, files: dict | None = None,
              card: dict | None = None, **kw: Any) -> str:
    weights = files if files is not None else {"model.safetensors": safetensors(4096)}
    return hub.seed_model(repo_id, files=weights, config=LLAMA if config is None else config,
                          card_data={"license": "apache-2.0", **(card or {})}, created_at=when(day), **kw)


def publish_ours(hub: Any, settings: Settings, base: str, sha: str) -> None:
    """What publish.yml leaves behind: one repo per recipe whose card names the base revision."""
    for rid in RECIPES:
        repo = target_repo_id(settings, base, rid, SUFFIXES[rid])
        card = {"base_model": base, CARD_REVISION_KEY: sha, "tags": ["compressed-tensors"]}
        if hub.storage.exists(repo):
            hub.add_revision(repo, {"README.md": localhub.seed.card_text(card, "# quantized\n")})
        else:
            hub.seed_model(repo, card_data=card, readme_body="# quantized\n", created_at=when(28))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    hub = localhub.LocalHub(tmp_path / "hub")
    hub.start()
    gh = FakeGitHub().start()
    monkeypatch.setenv("HF_TOKEN", "hf_" + "localdummytoken000000000000")
    layers = SettingsLayers(watchlist_defaults={"runs_dir": tmp_path / "runs", "namespace": "bot-test",
                                                "hub_target": "hub", "hub_endpoint": hub.url}, environ={})
    settings = layers.merge()
    shas = {
        "acme/Base-1B": seed_base(hub, "acme/Base-1B", 10),
        "acme/Published-1B": seed_base(hub, "acme/Published-1B", 9),
        "acme/Moved-1B": seed_base(hub, "acme/Moved-1B", 8),
        "acme/Gated-1B": seed_base(hub, "acme/Gated-1B", 7, gated="manual"),
        "acme/Custom-1B": seed_base(hub, "acme/Custom-1B", 6, config={
            **LLAMA, "architectures": ["AcmeForCausalLM"], "auto_map": {"AutoModelForCausalLM": "modeling_acme.Acme"}},
            tags=["custom_code"]),  # the Hub tags auto_map repos so (bot.localhub does not surface auto_map yet)
        "acme/Base-1B-GGUF": seed_base(hub, "acme/Base-1B-GGUF", 5, config={}, files={"base-1b.Q4_K_M.gguf": b"GGUF"},
                                       tags=["gguf"]),
        "acme/Encoder-base": seed_base(hub, "acme/Encoder-base", 4, config={
            "architectures": ["BertForMaskedLM"], "model_type": "bert"}, card={"pipeline_tag": "fill-mask"}),
        "thirdparty/Base-1B-GPTQ": seed_base(hub, "thirdparty/Base-1B-GPTQ", 11, config={
            **LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4}},
            card={"base_model": "acme/Base-1B"}, tags=["gptq", "4-bit"]),
    }
    publish_ours(hub, settings, "acme/Published-1B", shas["acme/Published-1B"])
    publish_ours(hub, settings, "acme/Moved-1B", shas["acme/Moved-1B"])
    shas["acme/Moved-1B"] = hub.add_revision("acme/Moved-1B", {"generation_config.json": {"do_sample": True}})
    client = hub_client.make_hub_client(settings, hub_client.RetryPolicy(attempts=1))
    dispatcher = GitHubDispatcher(gh.repo, gh.token, base_url=gh.url)
    with Ledger.for_settings(settings) as ledger:
        yield {"hub": hub, "gh": gh, "settings": settings, "layers": layers, "shas": shas, "client": client, "ledger": ledger,
               "dispatcher": dispatcher, "watchlist": parse_watchlist(WATCHLIST, "e2e.yaml")}
    gh.stop()
    hub.stop()


def cycle(w: dict[str, Any]):
    return run_watch(w["watchlist"], w["client"], w["ledger"], w["layers"], dispatch=True,
                     dispatcher=w["dispatcher"], ref="main")


def list_calls(hub: Any) -> int:
    return hub.log.count("GET", r"^/api/models$")


def test_watch_cycles_over_http(world: dict[str, Any]) -> None:
    hub, gh, shas, settings = world["hub"], world["gh"], world["shas"], world["settings"]

    first = cycle(world)
    got = {c.model_id: c for c in first.plan.candidates}
    assert (got["acme/Base-1B"].decision, got["acme/Base-1B"].revision) == ("new", shas["acme/Base-1B"])
    assert got["acme/Base-1B"].params_b == pytest.approx(4096 / 1e9)
    assert got["acme/Published-1B"].reason == f"already published at {shas['acme/Published-1B'][:12]}"
    moved = got["acme/Moved-1B"]
    assert moved.decision == "new-revision" and moved.revision == shas["acme/Moved-1B"]
    assert got["acme/Gated-1B"].reason.startswith("gated (manual)")
    assert got["acme/Custom-1B"].reason.startswith("needs remote code")
    assert got["acme/Base-1B-GGUF"].reason == "no safetensors weights (GGUF only)"
    assert got["acme/Encoder-base"].reason.startswith("not a causal LM")
    assert got["thirdparty/Base-1B-GPTQ"].reason.startswith("already quantized")
    assert list_calls(hub) == 2

    posts = gh.posts()
    assert [p.path for p in posts] == ["/repos/octo/bot/actions/workflows/publish.yml/dispatches"] * 2
    sent = {p.body["inputs"]["model"]: p.body for p in posts}
    assert sent["acme/Base-1B"] == {"ref": "main", "return_run_details": True, "inputs": {
        "model": "acme/Base-1B", "revision": shas["acme/Base-1B"], "recipes": ",".join(RECIPES)}}
    assert sent["acme/Moved-1B"]["inputs"]["revision"] == shas["acme/Moved-1B"]

    # second cycle: nothing new, one listing request per author, nothing dispatched again
    hub.log.clear()
    second = cycle(world)
    assert second.plan.queued == ()
    assert list_calls(hub) == 2
    assert len(gh.posts()) == 2
    assert hub.log.count("GET", r"^/api/models/acme/(Gated|Custom|Encoder|Base-1B-GGUF)") == 0  # final skips

    # publish.yml did its work; the author pushes a new commit to Base-1B and uploads a new model
    publish_ours(hub, settings, "acme/Base-1B", shas["acme/Base-1B"])
    publish_ours(hub, settings, "acme/Moved-1B", shas["acme/Moved-1B"])
    new_sha = hub.add_revision("acme/Base-1B", {"README.md": localhub.seed.card_text({"license": "apache-2.0"}, "v2")})
    seed_base(hub, "acme/Fresh-3B", 20)
    hub.log.clear()
    third = cycle(world)
    queued = {c.model_id: c for c in third.plan.queued}
    assert set(queued) == {"acme/Base-1B", "acme/Fresh-3B"}
    base = queued["acme/Base-1B"]
    assert (base.decision, base.revision, base.previous_revision) == ("new-revision", new_sha, shas["acme/Base-1B"])
    assert queued["acme/Fresh-3B"].decision == "new"
    assert list_calls(hub) == 2
    ledger = world["ledger"]
    assert ledger.get_model("acme/Moved-1B", shas["acme/Moved-1B"]).state == "published"
    assert ledger.get_model("acme/Base-1B", new_sha).state == "dispatched"
    assert ledger.cursor("acme").newest_id == "acme/Fresh-3B"


def test_lost_ledger_reads_the_hub_and_dispatches_nothing_twice(world: dict[str, Any], tmp_path: Path) -> None:
    hub, shas, settings = world["hub"], world["shas"], world["settings"]
    publish_ours(hub, settings, "acme/Base-1B", shas["acme/Base-1B"])
    publish_ours(hub, settings, "acme/Moved-1B", shas["acme/Moved-1B"])
    with Ledger(tmp_path / "fresh.sqlite") as fresh:
        result = run_watch(world["watchlist"], world["client"], fresh, world["layers"], dispatch=True,
                           dispatcher=world["dispatcher"])
    assert result.plan.queued == () and world["gh"].posts() == []
    assert {c.reason for c in result.plan.candidates if c.model_id in shas and "published" in c.reason} == {
        f"already published at {shas[m][:12]}" for m in ("acme/Base-1B", "acme/Published-1B", "acme/Moved-1B")}
