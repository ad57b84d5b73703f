"""publish_variant / publish_collection over fake run directories, against the local Hub and the embedded target."""

from __future__ import annotations

from pathlib import Path

import pytest
from hubfakes import BASE_SHA, SUFFIX, VARIANT, card, make_run, safetensors_bytes

import bot.clients.hub as hubmod
from bot import __version__
from bot.clients.hub import HubClient, RetryPolicy, make_hub_client, open_target
from bot.config import Settings
from bot.errors import GateRejected, HubAuthError, StageError
from bot.localhub import HubStorage
from localhub_support import LocalHub
from bot.manifest import Status
from bot.stages.publish import plan_variant, publish_collection, publish_variant

REPO = f"tester/Tiny-1B{SUFFIX}"


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return Settings(runs_dir=tmp_path / "runs", namespace="tester", **kw)  # type: ignore[arg-type]


def test_publish_variant_commits_model_and_card_and_records_it(hub: LocalHub, client: HubClient,
                                                               tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir)
    record = publish_variant(rundir, VARIANT, settings, client)
    assert record.status == Status.done and record.changed and record.repo_id == REPO
    assert record.commit == hub.head(REPO) and record.base_revision == BASE_SHA and record.target == "hub"
    assert record.files == ["README.md", "chart.png", "config.json", "model.safetensors", "tokenizer.json"]
    assert rundir.read_variant(VARIANT).publish == record and rundir.read_variant(VARIANT).state() == "published"
    (commit,) = hub.commits(REPO)[:1]
    assert commit.title == f"bot {__version__}: {VARIANT} of acme/Tiny-1B@{BASE_SHA[:12]}"
    assert BASE_SHA in commit.message and hub.log.count("POST", "/commit/") == 1

    again = publish_variant(rundir, VARIANT, settings, client)
    assert again.status == Status.done and again.changed is False and again.commit == record.commit
    assert hub.log.count("POST", "/commit/") == 1


def test_refuses_unvalidated_or_rejected_unless_forced(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir, gate_passed=False)
    with pytest.raises(GateRejected, match="gate rejected: mean recovery 80.0%"):
        publish_variant(rundir, VARIANT, settings, client)
    assert rundir.read_variant(VARIANT).publish is None and hub.log.entries() == []
    record = publish_variant(rundir, VARIANT, settings, client, force=True)
    assert record.status == Status.done and record.forced and record.forced_over == [
        "gate rejected: mean recovery 80.0% < 95.0%"]
    assert rundir.read_variant(VARIANT).publish.forced

    unvalidated = make_run(tmp_path / "other-runs", validated=False)
    with pytest.raises(StageError, match="validate is not run"):
        publish_variant(unvalidated, VARIANT, settings, client)


def test_card_readme_is_required(client: HubClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir)
    (rundir.card_dir(VARIANT) / "README.md").unlink()
    with pytest.raises(StageError, match="no README.md") as err:
        publish_variant(rundir, VARIANT, settings, client)
    assert "bot card" in str(err.value)


def test_dry_run_uploads_nothing(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir)
    record = publish_variant(rundir, VARIANT, settings, client, dry_run=True)
    assert record.status == Status.pending and record.changed is True and record.repo_id == REPO
    assert rundir.read_variant(VARIANT).publish is None
    assert hub.log.entries(method="POST") == [] and not hub.storage.exists(REPO)
    publish_variant(rundir, VARIANT, settings, client)
    (rundir.card_dir(VARIANT) / "README.md").write_text(card(body="# better card\n"))
    plan = plan_variant(rundir, VARIANT, settings, client)
    assert plan.would_commit and plan.remote.upload == ("README.md",) and plan.sizes()["model.safetensors"] > 0
    assert hub.log.count("POST", "/commit/") == 1


def test_failure_is_recorded_in_the_manifest(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir)
    hub.faults.deny(403, path="/commit/")
    with pytest.raises(HubAuthError):
        publish_variant(rundir, VARIANT, settings, client)
    publish = rundir.read_variant(VARIANT).publish
    assert publish.status == Status.failed and "403" in publish.error and "write access" in publish.error
    assert publish.hint and rundir.read_variant(VARIANT).state() == "failed"


def test_collection_per_base_with_a_note_per_variant(hub: LocalHub, client: HubClient, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    rundir = make_run(settings.runs_dir)
    make_run(settings.runs_dir, variant="fp8-dynamic", suffix="-FP8-Dynamic", mean_recovery=99.84, size_bytes=None)
    for variant in (VARIANT, "fp8-dynamic"):
        publish_variant(rundir, variant, settings, client)
    out = publish_collection(rundir, settings, client, [VARIANT, "fp8-dynamic", "never-published"])
    assert out is not None and out.title == "Tiny-1B quantized"
    assert out.items == [(REPO, f"{VARIANT}: 99.1% mean recovery, 2.15 GB"),
                         ("tester/Tiny-1B-FP8-Dynamic", "fp8-dynamic: 99.8% mean recovery")]
    assert rundir.read_variant(VARIANT).publish.collection == out.slug
    assert publish_collection(rundir, settings, client).items == out.items  # idempotent


@pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning")  # huggingface_hub PUTs with data=
def test_embedded_local_target_under_the_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubmod, "LOCAL_LFS_THRESHOLD", 4096)  # weights take the streamed LFS path (xet installed)
    settings = settings_for(tmp_path, hub_target="auto")
    weights = safetensors_bytes((64, 64))
    rundir = make_run(settings.runs_dir, model_files={"config.json": "{}", "model.safetensors": weights})
    with open_target(settings, RetryPolicy(attempts=2, base_delay_s=0)) as client:
        assert client.target == "local"
        record = publish_variant(rundir, VARIANT, settings, client)
        publish_collection(rundir, settings, client)
    root = settings.local_hub_root()
    assert record.url == (root / "repos" / REPO).resolve().as_uri() and record.target == "local"
    head = HubStorage(root).get_commit(REPO, HubStorage(root).resolve(REPO, "main"))
    assert head.files["model.safetensors"].lfs and not head.files["README.md"].lfs  # weights went by LFS PUT
    files = root / "repos" / REPO / "files"
    assert (files / "model.safetensors").read_bytes() == (rundir.model_dir(VARIANT) / "model.safetensors").read_bytes()
    index = (root / "index.html").read_text()
    assert REPO in index and "<td>99.1</td>" in index and f"repos/{REPO}/files/" in index
    with open_target(settings) as client:  # persistent: a second run finds the same repo, commits nothing
        assert publish_variant(rundir, VARIANT, settings, client).changed is False
    watcher = make_hub_client(settings)  # the watcher reads published cards from the local target on disk
    assert watcher.repo_card_data(REPO)["base_model_revision"] == BASE_SHA
    assert watcher.repo_card_data("tester/never-published") is None


@pytest.mark.parametrize("target", ["hub", "local"])
def test_planted_token_never_written_or_raised(target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "hf_" + "plantedSECRETabcdefghijklmnopqrstuvwxyz0123456789"
    monkeypatch.setenv("HF_TOKEN", planted)
    fast = RetryPolicy(attempts=2, base_delay_s=0)
    with LocalHub(tmp_path / "hub", tokens={planted: "tester"}) as hub:
        settings = settings_for(tmp_path, hub_target=target, hub_endpoint=hub.url)
        if target == "local":
            settings = settings_for(tmp_path, hub_target="local", local_hub_dir=tmp_path / "hub-local")
        rundir = make_run(settings.runs_dir)
        with open_target(settings, fast) as client:
            assert planted not in repr(client)
            publish_variant(rundir, VARIANT, settings, client)
            publish_collection(rundir, settings, client)
            (rundir.card_dir(VARIANT) / "README.md").write_text(card(body="v2"))
            hub.faults.deny(401)
            if target == "hub":
                with pytest.raises(HubAuthError) as err:
                    publish_variant(rundir, VARIANT, settings, client)
                texts = [str(err.value), err.value.one_line(), repr(err.value)]
                cause: BaseException | None = err.value
                while cause is not None:
                    texts.append(str(cause))
                    cause = cause.__cause__
                assert all(planted not in t for t in texts)
        if target == "hub":
            assert hub.log.entries()[0].user == "tester" and planted not in repr(hub.log.entries())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "index.html" for p in written)
    leaked = [p for p in written if planted.encode() in p.read_bytes()]
    assert leaked == []


def test_dry_run_never_creates_the_local_target(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, hub_target="local")
    rundir = make_run(settings.runs_dir, model_files={"config.json": "{}", "model.safetensors": safetensors_bytes((8, 8))})
    root = settings.local_hub_root()
    assert not root.exists()
    with open_target(settings, RetryPolicy(attempts=2, base_delay_s=0), read_only=True) as client:
        assert client.target == "local" and not client.repo_exists(REPO)
        record = publish_variant(rundir, VARIANT, settings, client, dry_run=True)
    assert record.changed is True and not root.exists()  # everything would be new; nothing was written
