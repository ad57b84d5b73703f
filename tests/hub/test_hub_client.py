"""HubClient against the local Hub: one commit per publish, no-op republish, retries, auth errors, collections."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
from hubfakes import OTHER_TOKEN, card, safetensors_bytes, write_folder

from bot.clients.hub import HubClient, RetryPolicy
from bot.errors import HubAuthError, HubError
from localhub_support import LocalHub

REPO = "tester/Tiny-1B-W4A16-GPTQ"
COMMIT = r"^/api/models/tester/Tiny-1B-W4A16-GPTQ/commit/"


def folder(tmp_path: Path, **overrides: bytes | str | None) -> Path:
    files: dict[str, bytes | str | None] = {"config.json": '{"model_type": "llama"}',
                                            "model.safetensors": safetensors_bytes(), "README.md": card()}
    files.update(overrides)
    target = tmp_path / "upload"
    for rel in list(files):
        if files[rel] is None:
            (target / rel).unlink(missing_ok=True)
            del files[rel]
    return write_folder(target, files)  # type: ignore[arg-type]


def commits_made(hub: LocalHub) -> int:
    return hub.log.count("POST", COMMIT)


def test_publish_is_one_commit_and_identical_republish_none(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    out = client.publish_folder(REPO, folder(tmp_path), "bot: first", "desc")
    assert out.changed and out.commit == hub.head(REPO)
    assert sorted(out.uploaded) == ["README.md", "config.json", "model.safetensors"] and out.deleted == []
    assert commits_made(hub) == 1 and len(hub.commits(REPO)) == 2  # the repo's initial commit + ours
    assert hub.commits(REPO)[0].title == "bot: first" and hub.commits(REPO)[0].message == "desc"

    again = client.publish_folder(REPO, folder(tmp_path), "bot: again")
    assert not again.changed and again.commit == out.commit and again.uploaded == []
    assert commits_made(hub) == 1 and len(hub.commits(REPO)) == 2
    assert hub.log.count("POST", "/preupload/") == 1  # nothing is even offered for upload the second time


def test_card_only_change_touches_only_readme(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    client.publish_folder(REPO, folder(tmp_path), "first")
    hub.log.clear()
    out = client.publish_folder(REPO, folder(tmp_path, **{"README.md": card(body="# new card\n")}), "card")
    assert out.changed and out.uploaded == ["README.md"] and out.deleted == []
    (commit_req,) = hub.log.entries("POST", COMMIT)
    assert [op["path"] for op in commit_req.body["ops"]] == ["README.md"]
    assert commit_req.body["header"]["parentCommit"] == hub.commits(REPO)[1].sha
    assert hub.commits(REPO)[0].changed == ["README.md"]


def test_stale_file_deleted_in_the_same_commit(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    client.publish_folder(REPO, folder(tmp_path, **{"old/stale.json": "{}", "extra.txt": "x"}), "first")
    out = client.publish_folder(REPO, folder(tmp_path, **{"old/stale.json": None, "extra.txt": "y"}), "second")
    assert out.uploaded == ["extra.txt"] and out.deleted == ["old/stale.json"]
    assert commits_made(hub) == 2
    assert sorted(hub.files(REPO)) == [".gitattributes", "README.md", "config.json", "extra.txt", "model.safetensors"]
    assert hub.commits(REPO)[0].deleted == ["old/stale.json"]


def test_concurrent_commit_412_rereads_and_retries_once(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    client.publish_folder(REPO, folder(tmp_path), "first")
    hub.faults.before(lambda: hub.add_revision(REPO, {"someone-else.txt": "hi"}, author="other"), path=COMMIT)
    out = client.publish_folder(REPO, folder(tmp_path, **{"README.md": card(body="v2")}), "second")
    assert out.changed and out.deleted == ["someone-else.txt"]  # the repo ends up exactly as published
    assert [e.status for e in hub.log.entries("POST", COMMIT)] == [200, 412, 200]
    assert [c.title for c in hub.commits(REPO)][:3] == ["second", "Update model", "first"]


def test_second_conflict_is_a_clear_error(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    client.publish_folder(REPO, folder(tmp_path), "first")
    hub.faults.fail(412, path=COMMIT, times=2, message="A commit has happened since")
    with pytest.raises(HubError) as err:
        client.publish_folder(REPO, folder(tmp_path, **{"README.md": card(body="v2")}), "second")
    assert err.value.status == 412 and "changed while publishing" in str(err.value) and "rerun" in str(err.value)
    assert len(hub.commits(REPO)) == 2


def test_429_retry_after_is_honoured_then_success(hub: LocalHub, client: HubClient, tmp_path: Path,
                                                   sleeps: list[float]) -> None:
    hub.faults.rate_limit(times=2, retry_after=7, path=COMMIT)
    out = client.publish_folder(REPO, folder(tmp_path), "first")
    assert out.changed and sleeps == [7.0, 7.0]
    assert [e.status for e in hub.log.entries("POST", COMMIT)] == [429, 429, 200]
    assert len(hub.commits(REPO)) == 2


def test_read_retries_on_5xx_and_dropped_connection(hub: LocalHub, client: HubClient, sleeps: list[float]) -> None:
    hub.seed_model("acme/base", files={"config.json": "{}"})
    hub.faults.server_error(502, path="^/api/models/acme/base$")
    hub.faults.drop(path="^/api/models/acme/base$")
    assert client.model_info("acme/base").sha == hub.head("acme/base")
    assert [e.status for e in hub.log.entries("GET", "^/api/models/acme/base$")] == [502, None, 200]
    assert len(sleeps) == 2 and 0.01 <= sleeps[0] <= 0.0125 and 0.02 <= sleeps[1] <= 0.025  # backoff + jitter


def test_dropped_commit_is_retried_without_a_duplicate(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    hub.faults.drop(path=COMMIT)
    out = client.publish_folder(REPO, folder(tmp_path), "first")
    assert out.changed and [e.status for e in hub.log.entries("POST", COMMIT)] == [None, 200]
    assert len(hub.commits(REPO)) == 2


def test_commit_whose_answer_was_lost_is_not_made_twice(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    client.publish_folder(REPO, folder(tmp_path), "first")
    hub.faults.drop(path=COMMIT, after_handling=True)
    out = client.publish_folder(REPO, folder(tmp_path, **{"README.md": card(body="v2")}), "second")
    assert out.changed and out.uploaded == ["README.md"] and out.commit == hub.head(REPO)
    assert [e.status for e in hub.log.entries("POST", COMMIT)] == [200, None]  # recognised on the re-read
    assert [c.title for c in hub.commits(REPO)] == ["second", "first", "initial commit"]


def test_503_beyond_the_bound_fails_clearly(hub: LocalHub, client: HubClient, sleeps: list[float]) -> None:
    hub.seed_model("acme/base", files={"config.json": "{}"})
    hub.faults.server_error(503, times=None, path="^/api/models/acme/base$")
    with pytest.raises(HubError) as err:
        client.model_info("acme/base")
    assert err.value.status == 503 and "after 4 attempts" in str(err.value) and "rerun later" in str(err.value)
    assert hub.log.count("GET", "^/api/models/acme/base$") == 4 and len(sleeps) == 3


def test_401_is_an_auth_error_and_never_retried(hub: LocalHub, client: HubClient, tmp_path: Path,
                                                sleeps: list[float]) -> None:
    hub.faults.deny(401)
    with pytest.raises(HubAuthError) as err:
        client.publish_folder(REPO, folder(tmp_path), "first")
    assert err.value.status == 401 and "HF_TOKEN" in str(err.value) and "write access" in str(err.value)
    # create_repo(exist_ok=True) itself looks the repo up once after a 401; nothing is sent again
    assert [(e.method, e.path) for e in hub.log.entries()] == [("POST", "/api/repos/create"),
                                                                ("GET", f"/api/models/{REPO}")]
    with pytest.raises(HubAuthError):
        client.model_info("acme/base")
    assert hub.log.count("GET", "^/api/models/acme/base$") == 1 and sleeps == []


def test_403_on_commit_names_the_missing_write_permission(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    hub.faults.deny(403, path=COMMIT)
    with pytest.raises(HubAuthError) as err:
        client.publish_folder(REPO, folder(tmp_path), "first")
    assert err.value.status == 403 and "write access to 'tester'" in str(err.value)
    assert hub.log.count("POST", COMMIT) == 1


def test_gated_and_missing_repos(hub: LocalHub, policy: RetryPolicy, tmp_path: Path) -> None:
    hub.seed_model("acme/gated", files={"config.json": "{}"}, gated="auto", gated_users=["tester"])
    other = HubClient(hub.url, OTHER_TOKEN, policy, cache_dir=tmp_path / "c1")
    allowed = HubClient(hub.url, "tester-token-0001", policy, cache_dir=tmp_path / "c2")
    assert allowed.can_read("acme/gated") and not other.can_read("acme/gated")
    with pytest.raises(HubAuthError, match="gated") as err:
        other.download("acme/gated", hub.head("acme/gated"), tmp_path / "dl")
    assert "accept the conditions" in str(err.value)
    with pytest.raises(HubError) as missing:
        allowed.model_info("acme/nope")
    assert missing.value.status == 404 and "check the repo id" in str(missing.value)
    assert allowed.repo_card_data("acme/nope") is None


def test_download_takes_safetensors_and_metadata_only(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    sha = hub.seed_model("acme/base", card_data={"license": "mit"}, files={
        "config.json": "{}", "model.safetensors": safetensors_bytes(), "pytorch_model.bin": b"pickle",
        "tokenizer.json": "{}", "tokenizer.model": b"sp", "LICENSE": "MIT", "weights.gguf": b"g", "x.pkl": b"p"})
    path = client.download("acme/base", sha, tmp_path / "dl")
    got = sorted(p.name for p in path.iterdir() if p.is_file())
    assert got == ["LICENSE", "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"]
    assert client.repo_card_data("acme/base") == {"license": "mit"}


def test_list_author_models_newest_first(hub: LocalHub, client: HubClient) -> None:
    for name, day in (("old", "2024-01-01"), ("new", "2025-06-01"), ("mid", "2025-01-01")):
        hub.seed_model(f"acme/{name}", created_at=f"{day}T00:00:00.000Z", files={"config.json": "{}"})
    assert [m.id for m in client.list_author_models("acme")] == ["acme/new", "acme/mid", "acme/old"]
    assert [m.id for m in client.list_author_models("acme", limit=2)] == ["acme/new", "acme/mid"]
    assert list(client.list_author_models("nobody")) == []


def test_collection_complete_with_notes_and_idempotent(hub: LocalHub, client: HubClient) -> None:
    items = [("tester/a", "w4a16: 99.1% mean recovery"), ("tester/b", "fp8: 99.8% mean recovery")]
    first = client.ensure_collection("tester", "Tiny-1B quantized", "variants", items)
    assert first.items == items and first.title == "Tiny-1B quantized"
    again = client.ensure_collection("tester", "Tiny-1B quantized", "variants",
                                     [("tester/a", "w4a16: 99.3% mean recovery"), items[1]])
    assert again.slug == first.slug and again.items == [("tester/a", "w4a16: 99.3% mean recovery"), items[1]]
    assert hub.log.count("POST", "^/api/collections$") == 2 and hub.log.count("PATCH") == 1


@pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning")  # huggingface_hub PUTs with data=
def test_lfs_upload_path_without_xet(hub: LocalHub, client: HubClient, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # read at import time
    hub.config.lfs_patterns = ("*.safetensors",)
    weights = safetensors_bytes((64, 64), fill=os.urandom(1))
    client.publish_folder(REPO, folder(tmp_path, **{"model.safetensors": weights}), "lfs")
    assert hub.log.count("POST", r"\.git/info/lfs/objects/batch$") == 1 and hub.log.count("PUT", "^/_lfs/") == 1
    (commit_req,) = hub.log.entries("POST", COMMIT)
    assert {"key": "lfsFile", "path": "model.safetensors"} in commit_req.body["ops"]
    remote = client.remote_files(REPO)
    assert remote["model.safetensors"].lfs_sha256 == hashlib.sha256(weights).hexdigest()
    assert hub.files(REPO)["model.safetensors"] == weights
    assert not client.publish_folder(REPO, folder(tmp_path, **{"model.safetensors": weights}), "same").changed
