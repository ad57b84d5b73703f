"""plan_watch / run_watch with an in-memory Hub: decisions, reasons, ledger, request counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from watchfakes import NOW, FakeDispatcher, FakeHub

from bot.config import Settings, SettingsLayers
from bot.errors import ConfigError, StageError
from bot.ledger import Ledger
from bot.stages.watch.run import SUFFIXES, plan_watch, run_watch, target_repo_id
from bot.watchlist import DEFAULT_RECIPES, parse_watchlist


def wl(text: str):
    return parse_watchlist(text, "test.yaml")


def decisions(plan) -> dict[str, tuple[str, str]]:
    return {c.model_id: (c.decision, c.reason) for c in plan.candidates}


def test_target_repo_names(settings: Settings) -> None:
    assert target_repo_id(settings, "allenai/Olmo-3-7B", "w4a16-gptq", SUFFIXES["w4a16-gptq"]) == \
        "bot-test/Olmo-3-7B-W4A16-GPTQ"
    custom = Settings(namespace="bot-test", repo_name="{namespace}/{recipe}--{base_name}")
    assert target_repo_id(custom, "a/M", "nvfp4", "-NVFP4") == "bot-test/nvfp4--M"


def test_new_models_are_queued_with_all_recipes(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("allenai/Olmo-3-7B", sha="1" * 40)
    plan = plan_watch(wl("watch:\n  - author: allenai\n"), hub, ledger, layers, now=NOW)
    (cand,) = plan.candidates
    assert (cand.decision, cand.revision, cand.recipes) == ("new", "1" * 40, DEFAULT_RECIPES)
    assert cand.params_b == pytest.approx(1.0)
    assert plan.cursors[0].newest_id == "allenai/Olmo-3-7B"


@pytest.mark.parametrize(
    ("overrides", "needle", "retry"),
    [
        ({"gated": "manual"}, "gated (manual)", False),
        ({"config": {"architectures": ["X"], "model_type": "x", "auto_map": {"AutoModelForCausalLM": "m.X"}}},
         "needs remote code", False),
        ({"files": ["config.json", "model-Q4_K_M.gguf"], "tags": ["gguf"]}, "no safetensors weights (GGUF only)",
         False),
        ({"architectures": ["BertForMaskedLM"], "pipeline_tag": "fill-mask"}, "not a causal LM", False),
        ({"tags": ["safetensors", "gptq", "4-bit"]}, "already quantized (tag 'gptq')", False),
        ({"config": {"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "awq"}}},
         "already quantized (quantization_config: awq)", False),
        ({"cardData": {"license": "mit", "base_model": "someone/Base"}}, "derived from someone/Base", False),
        ({"tags": ["base_model:quantized:a/B"]}, "a quantization of a/b", False),
        ({"params": 70_000_000_000}, "too large (70.0B parameters > max_params_b 8)", False),
        ({"params": None, "siblings": [{"rfilename": "model.safetensors", "size": 40_000_000_000}]},
         "too large (20.0B", False),
        ({"cardData": {"license": "cc-by-nc-4.0"}, "tags": []}, "licence 'cc-by-nc-4.0' is denied", False),
        ({"age_hours": 2}, "too new (2.0 h old < min_age_hours 6)", True),
        ({"downloads": 3}, "3 downloads < min_downloads 10", True),
    ],
)
def test_skip_reasons(hub: FakeHub, ledger: Ledger, layers: SettingsLayers, overrides, needle: str,
                      retry: bool) -> None:
    hub.add("org/Model-7B", **overrides)
    watch = wl("watch:\n  - author: org\n    max_params_b: 8\n    min_age_hours: 6\n    min_downloads: 10\n"
               "    licenses_denied: ['cc-by-nc-*']\n")
    (cand,) = plan_watch(watch, hub, ledger, layers, now=NOW).candidates
    assert cand.decision == "skip"
    assert needle in cand.reason
    assert cand.retry is retry


def test_filters_before_any_model_request(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("Qwen/Qwen3-8B")
    hub.add("Qwen/Qwen3-8B-GGUF")
    hub.add("Qwen/Qwen2.5-7B")
    watch = wl("watch:\n  - author: Qwen\n    include: ['Qwen3-*']\n    exclude: ['*-GGUF']\n")
    plan = plan_watch(watch, hub, ledger, layers, now=NOW)
    got = decisions(plan)
    assert got["Qwen/Qwen3-8B"][0] == "new"
    assert "include/exclude" in got["Qwen/Qwen3-8B-GGUF"][1] and "include/exclude" in got["Qwen/Qwen2.5-7B"][1]
    assert hub.calls["info"] == 1


def test_remote_code_allowed_and_licence_allow_list(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("org/Custom", config={"architectures": ["CustomForCausalLM"], "auto_map": {"AutoModel": "m.M"}})
    hub.add("org/Other", cardData={"license": "other", "license_name": "llama3.1"}, tags=[])
    hub.add("org/NoLicence", cardData={}, tags=[])
    watch = wl("watch:\n  - author: org\n    trust_remote_code: true\n    licenses_allowed: [apache-2.0, 'llama3*']\n")
    got = decisions(plan_watch(watch, hub, ledger, layers, now=NOW))
    assert got["org/Custom"][0] == "new"
    assert got["org/Other"][0] == "new"
    assert got["org/NoLicence"] == ("skip", "licence unknown not in licenses_allowed (apache-2.0, llama3*)")


def test_architecture_filter(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("Qwen/Qwen3-8B", architectures=["Qwen3ForCausalLM"])
    hub.add("Qwen/Other", architectures=["LlamaForCausalLM"])
    got = decisions(plan_watch(wl("watch:\n  - author: Qwen\n    architectures: ['Qwen3*']\n"), hub, ledger,
                               layers, now=NOW))
    assert got["Qwen/Qwen3-8B"][0] == "new"
    assert got["Qwen/Other"] == ("skip", "architecture LlamaForCausalLM not in Qwen3*")


def test_published_partial_and_new_revision(hub: FakeHub, ledger: Ledger, settings: Settings,
                                            layers: SettingsLayers) -> None:
    hub.add("org/Done", sha="d" * 40)
    hub.publish(settings, "org/Done", "d" * 40)
    hub.add("org/Half", sha="h" * 40)
    hub.publish(settings, "org/Half", "h" * 40, ["w4a16-gptq", "fp8-dynamic"])
    hub.add("org/Moved", sha="2" * 40)
    hub.publish(settings, "org/Moved", "1" * 40)
    plan = plan_watch(wl("watch:\n  - author: org\n"), hub, ledger, layers, now=NOW)
    by_id = {c.model_id: c for c in plan.candidates}
    assert (by_id["org/Done"].decision, by_id["org/Done"].ledger_state) == ("skip", "published")
    assert by_id["org/Done"].reason == f"already published at {'d' * 12}"
    half = by_id["org/Half"]
    assert half.decision == "new" and "2 of 6 recipes already at this revision" in half.reason
    assert half.recipes == ("w4a16-awq", "w4a16-autoround", "w8a8-int8", "nvfp4")
    moved = by_id["org/Moved"]
    assert (moved.decision, moved.previous_revision, moved.recipes) == ("new-revision", "1" * 40, DEFAULT_RECIPES)
    assert moved.reason == f"published at {'1' * 12}, now at {'2' * 12}"


def test_second_cycle_lists_once_and_finds_nothing_new(hub: FakeHub, ledger: Ledger, layers: SettingsLayers,
                                                       dispatcher: FakeDispatcher) -> None:
    for i in range(5):
        hub.add(f"org/M{i}", sha=f"{i}" * 40, age_hours=100 + i)
    hub.add("org/Gated", gated="auto")
    hub.add("other/X")
    watch = wl("watch:\n  - author: org\n  - author: other\n")
    first = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    assert len(first.plan.queued) == 6 and len(dispatcher.sent) == 6
    assert hub.calls["list"] == 2
    hub.calls.clear()
    hub.listed_items = 0
    second = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    assert second.plan.queued == ()
    assert len(dispatcher.sent) == 6
    assert hub.calls["list"] == 2  # one listing per author
    assert hub.listed_items == 2  # ... which stopped at the first (already seen) model
    assert {c.reason.split(" ")[0] for c in second.plan.candidates} == {"dispatched"}
    assert "org/Gated" not in {c.model_id for c in second.plan.candidates}  # a final skip is not looked at again


def test_published_models_are_checked_for_new_revisions(hub: FakeHub, ledger: Ledger, settings: Settings,
                                                        layers: SettingsLayers, dispatcher: FakeDispatcher) -> None:
    hub.add("org/M", sha="1" * 40)
    watch = wl("watch:\n  - author: org\n")
    run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    hub.publish(settings, "org/M", "1" * 40)  # the publish workflow did its job
    third = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    assert third.plan.candidates[0].reason == f"already published at {'1' * 12}"
    assert ledger.get_model("org/M", "1" * 40).state == "published"
    assert {v.state for v in ledger.variants("org/M")} == {"published"}
    hub.calls.clear()
    quiet = plan_watch(watch, hub, ledger, layers, now=NOW)
    assert quiet.queued == () and hub.calls["card"] == 0  # the ledger knows: no card reads
    hub.models["org/M"]["sha"] = "2" * 40  # the author pushed a new commit
    fourth = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    (cand,) = fourth.plan.queued
    assert (cand.decision, cand.revision, cand.previous_revision) == ("new-revision", "2" * 40, "1" * 40)
    assert dispatcher.sent[-1]["inputs"]["revision"] == "2" * 40


def test_stale_dispatch_and_max_attempts(hub: FakeHub, ledger: Ledger, layers: SettingsLayers,
                                         dispatcher: FakeDispatcher) -> None:
    hub.add("org/M", sha="1" * 40)
    watch = wl("watch:\n  - models: [org/M]\n")
    run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    later = NOW + timedelta(hours=30)
    again = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=later)
    assert "again after dispatched (1 attempt)" in again.plan.candidates[0].reason
    assert ledger.get_model("org/M", "1" * 40).attempts == 2
    ledger.set_model("org/M", "1" * 40, "failed", "OOM", attempt=True)
    final = plan_watch(watch, hub, ledger, layers, now=later)
    assert final.candidates[0].reason == "failed 3 times (last: OOM)"


def test_dispatch_inputs_and_limit(hub: FakeHub, ledger: Ledger, layers: SettingsLayers,
                                   dispatcher: FakeDispatcher) -> None:
    hub.add("org/A", sha="a" * 40, age_hours=10)
    hub.add("org/B", sha="b" * 40, age_hours=20)
    watch = wl("watch:\n  - author: org\n    recipes: [nvfp4, w4a16-gptq]\n")
    result = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, ref="dev", limit=1,
                       now=NOW)
    assert dispatcher.sent == [{"workflow": "publish.yml", "ref": "dev",
                                "inputs": {"model": "org/A", "revision": "a" * 40, "recipes": "nvfp4,w4a16-gptq"}}]
    assert [a.kind for a in result.actions] == ["dispatched"]
    assert ledger.get_model("org/B", "b" * 40).state == "queued"  # waits for the next cycle
    nxt = run_watch(watch, hub, ledger, layers, dispatch=True, dispatcher=dispatcher, now=NOW)
    assert [c.model_id for c in nxt.plan.queued] == ["org/B"]


def test_dry_run_writes_nothing(hub: FakeHub, ledger: Ledger, layers: SettingsLayers,
                                dispatcher: FakeDispatcher) -> None:
    hub.add("org/A")
    result = run_watch(wl("watch:\n  - author: org\n"), hub, ledger, layers, dispatch=True, dry_run=True,
                       dispatcher=dispatcher, now=NOW)
    assert [a.kind for a in result.actions] == ["would-dispatch"]
    assert dispatcher.sent == [] and ledger.models() == [] and ledger.cursor("org") is None


def test_dispatch_and_run_exclude_each_other(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        run_watch(wl("watch:\n  - author: org\n"), hub, ledger, layers, dispatch=True, run=True)


def test_run_here_records_results(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("org/Good", sha="g" * 40, age_hours=1)
    hub.add("org/Bad", sha="b" * 40, age_hours=2)
    calls = []

    def publish(model_id: str, revision: str, recipes: list[str], s: Settings) -> None:
        calls.append((model_id, revision, recipes, s.namespace))
        if model_id == "org/Bad":
            raise StageError("quantize", "CUDA out of memory", hint="use a bigger GPU")

    watch = wl("watch:\n  - author: org\n    namespace: elsewhere\n    recipes: [fp8-dynamic]\n")
    result = run_watch(watch, hub, ledger, layers, run=True, publish=publish, now=NOW)
    assert calls == [("org/Good", "g" * 40, ["fp8-dynamic"], "elsewhere"), ("org/Bad", "b" * 40, ["fp8-dynamic"],
                                                                           "elsewhere")]
    assert [a.kind for a in result.actions] == ["published", "failed"]
    assert ledger.get_model("org/Good", "g" * 40).state == "published"
    bad = ledger.get_model("org/Bad", "b" * 40)
    assert (bad.state, bad.attempts) == ("failed", 1) and "CUDA out of memory" in bad.reason


def test_run_without_pipeline_is_a_clear_error(hub: FakeHub, ledger: Ledger, layers: SettingsLayers,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    hub.add("org/A")
    monkeypatch.setitem(sys.modules, "bot.stages.pipeline", None)  # import fails
    with pytest.raises(StageError, match="publish_model is missing"):
        run_watch(wl("watch:\n  - author: org\n"), hub, ledger, layers, run=True, now=NOW)


def test_changed_entries_list_from_the_start(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("org/A", age_hours=1)
    hub.add("org/B", age_hours=2)
    run_watch(wl("watch:\n  - author: org\n    include: [A]\n"), hub, ledger, layers, now=NOW)
    hub.listed_items = 0
    plan = plan_watch(wl("watch:\n  - author: org\n    include: [A, B]\n"), hub, ledger, layers, now=NOW)
    assert hub.listed_items == 2
    assert decisions(plan)["org/B"][0] == "new"


def test_created_after_stops_listing(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    hub.add("org/New", age_hours=24)
    hub.add("org/Old", age_hours=24 * 400)
    day = (NOW - timedelta(days=30)).date().isoformat()
    plan = plan_watch(wl(f"watch:\n  - author: org\n    created_after: {day}\n"), hub, ledger, layers, now=NOW)
    assert [c.model_id for c in plan.candidates] == ["org/New"]
    assert hub.listed_items == 2  # stopped at the first older model


def test_hub_errors_skip_one_model_and_retry(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    watch = wl("watch:\n  - models: [org/Missing]\n")
    result = run_watch(watch, hub, ledger, layers, now=NOW)
    (cand,) = result.plan.candidates
    assert cand.decision == "skip" and cand.retry and "not found" in cand.reason
    hub.add("org/Missing", sha="f" * 40)
    run_watch(watch, hub, ledger, layers, now=NOW)
    assert [r.revision for r in ledger.models(model_id="org/Missing")] == ["f" * 40]


def test_run_here_stops_when_the_hub_goes_down(hub: FakeHub, ledger: Ledger, layers: SettingsLayers) -> None:
    """A publish that cannot reach the Hub fails that model and stops the cycle: the next would fail the same way."""
    import httpx

    from bot.errors import HubError
    from bot.stages.watch.run import HubUnreachable

    hub.add("org/First", sha="1" * 40, age_hours=1)
    hub.add("org/Second", sha="2" * 40, age_hours=2)
    calls = []

    def publish(model_id: str, revision: str, recipes: list[str], s: Settings) -> None:
        calls.append(model_id)
        try:
            raise httpx.ConnectError("connection refused")
        except httpx.ConnectError as exc:
            raise HubError(f"download {model_id} failed after 5 attempts: cannot reach {hub.endpoint} (ConnectError)",
                           repo_id=model_id) from exc

    with pytest.raises(HubUnreachable, match=f"^cannot reach {hub.endpoint}: download org/First failed after 5 "
                                             r"attempts \(ConnectError\); the watch cycle stopped"):
        run_watch(wl("watch:\n  - author: org\n    recipes: [fp8-dynamic]\n"), hub, ledger, layers, run=True,
                  publish=publish, now=NOW)
    assert calls == ["org/First"]
    assert ledger.get_model("org/First", "1" * 40).state == "failed"
    assert ledger.get_model("org/Second", "2" * 40).state == "queued"
