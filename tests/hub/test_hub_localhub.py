"""The local Hub answers what huggingface_hub asks, persists to disk, logs requests without tokens."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
from hubfakes import OTHER_TOKEN, TOKEN, safetensors_bytes

from bot.localhub import serve_local_hub
from localhub_support import LocalHub


def seed_base(hub: LocalHub, repo_id: str = "acme/base", **kw) -> str:
    return hub.seed_model(
        repo_id,
        config={"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
        card_data={"license": "apache-2.0", "tags": ["text-generation"]},
        readme_body="# Base\n",
        files={"model.safetensors": safetensors_bytes((8, 4)), "tokenizer.json": "{}"},
        **kw,
    )


def test_model_info_reports_sha_card_and_safetensors(hub: LocalHub) -> None:
    sha = seed_base(hub, created_at="2025-01-02T03:04:05.000Z")
    info = HfApi(endpoint=hub.url, token=TOKEN).model_info("acme/base")
    assert info.sha == sha == hub.head("acme/base")
    assert info.card_data["license"] == "apache-2.0"
    assert {"text-generation", "safetensors", "transformers"} <= set(info.tags)
    assert info.pipeline_tag == "text-generation" and info.library_name == "transformers"
    assert info.safetensors.total == 32 and info.safetensors.parameters == {"F16": 32}
    assert info.created_at.year == 2025 and info.gated is False
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "README.md", "config.json",
                                                          "model.safetensors", "tokenizer.json"]


def test_revision_info_and_history(hub: LocalHub) -> None:
    first = seed_base(hub)
    second = hub.add_revision("acme/base", {"tokenizer.json": '{"v": 2}'}, message="new tokenizer")
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert api.model_info("acme/base").sha == second
    assert api.model_info("acme/base", revision=first).sha == first
    assert [c.title for c in api.list_repo_commits("acme/base")] == ["new tokenizer", "Upload model", "initial commit"]
    assert api.list_repo_refs("acme/base").branches[0].target_commit == second
    path = api.hf_hub_download("acme/base", "tokenizer.json", revision=first, cache_dir=str(hub.root.parent / "c"))
    assert Path(path).read_text() == "{}"


def test_list_models_newest_first(hub: LocalHub) -> None:
    for i, day in enumerate(("2025-01-03", "2025-01-01", "2025-01-02")):
        hub.seed_model(f"acme/m{i}", created_at=f"{day}T00:00:00.000Z", files={"config.json": "{}"})
    hub.seed_model("other/x", files={"config.json": "{}"})
    api = HfApi(endpoint=hub.url, token=TOKEN)
    assert [m.id for m in api.list_models(author="acme", sort="createdAt")] == ["acme/m0", "acme/m2", "acme/m1"]
    assert [m.id for m in api.list_models(author="acme", sort="createdAt", limit=1, full=True)] == ["acme/m0"]


def test_resolve_head_has_commit_etag_and_length(hub: LocalHub) -> None:
    sha = seed_base(hub)
    url = f"{hub.url}/acme/base/resolve/main/model.safetensors"
    head = httpx.head(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["ETag"].strip('"') and int(head.headers["Content-Length"]) == len(safetensors_bytes((8, 4)))
    assert httpx.get(url).content == safetensors_bytes((8, 4))


def test_gated_repo_needs_an_allowed_token(hub: LocalHub, tmp_path: Path) -> None:
    seed_base(hub, gated="manual", gated_users=["tester"])
    cache = str(tmp_path / "c")
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info("acme/base").gated == "manual"
    allowed = HfApi(endpoint=hub.url, token=TOKEN)
    assert Path(allowed.hf_hub_download("acme/base", "config.json", cache_dir=cache)).exists()
    with pytest.raises(GatedRepoError):
        HfApi(endpoint=hub.url, token=OTHER_TOKEN).hf_hub_download("acme/base", "config.json", cache_dir=cache + "2")
    assert httpx.head(f"{hub.url}/acme/base/resolve/main/config.json").status_code == 401
    assert httpx.head(f"{hub.url}/acme/base/resolve/main/config.json",
                      headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).status_code == 403


def test_parent_commit_mismatch_is_412(hub: LocalHub) -> None:
    seed_base(hub)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("acme/base", [CommitOperationAdd("a.txt", b"a")], commit_message="x",
                          parent_commit="f" * 40)
    assert err.value.response.status_code == 412


def test_bad_token_is_401_and_log_has_no_authorization(hub: LocalHub) -> None:
    seed_base(hub)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token="not-a-known-token").model_info("acme/base")
    assert err.value.response.status_code == 401
    HfApi(endpoint=hub.url, token=TOKEN).model_info("acme/base")
    entries = hub.log.entries(path="^/api/models/acme/base$")
    assert [e.status for e in entries] == [401, 200] and entries[1].user == "tester"
    assert all("authorization" not in {k.lower() for k in e.headers} for e in entries)
    assert "not-a-known-token" not in repr(hub.log.entries()) and TOKEN not in repr(hub.log.entries())


def test_storage_persists_across_restarts_and_index_lists_repos(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    with LocalHub(root) as hub:
        sha = seed_base(hub)
        api = HfApi(endpoint=hub.url, token="anything")
        api.create_repo("me/card", exist_ok=True)
        readme = b"---\nlicense: mit\n---\n# Card\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        api.create_commit("me/card", [CommitOperationAdd("README.md", readme)], commit_message="card")
    assert (root / "repos/me/card/files/README.md").exists() and (root / "repos/me/card/history.log").exists()
    index = (root / "index.html").read_text()
    assert "acme/base" in index and "me/card" in index and "<table>" in index and "<td>1</td>" in index
    with serve_local_hub(root) as url:
        api = HfApi(endpoint=url, token="anything")
        assert api.model_info("acme/base").sha == sha
        assert [c.title for c in api.list_repo_commits("me/card")] == ["card", "initial commit"]
        assert "me/card" in httpx.get(url + "/").text
        assert httpx.get(f"{url}/api/agent-harnesses").status_code == 404
        assert api.whoami()["name"] == "bot-local"


def test_validate_yaml_rejects_broken_front_matter(hub: LocalHub) -> None:
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo("tester/r")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.create_commit("tester/r", [CommitOperationAdd("README.md", b"---\nkey: [unclosed\n---\nx")],
                          commit_message="bad card")
