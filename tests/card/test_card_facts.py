"""Cards print the facts the stages decided, once: speed ratios only from validate's comparison, the recipe as
applied, one collection title, the paired statistics (CIs, flips, at-chance tasks, fidelity, the gate's state),
no ranking the intervals cannot support; older records render with what they hold."""

from __future__ import annotations

from card_tables import md_tables, number
from cardfakes import BASE_ID, FIDELITY
from test_card_render import check_golden, readme

from bot.manifest import GateState, QuantizeRecord
from bot.recipes import Recipe, load_recipes
from bot.stages.card.render import render_card, render_collection
from bot.stages.publish import COLLECTION_TITLE_MAX, collection_title
from bot.stages.watch.run import SUFFIXES


def _edit(rundir, variant, fn):
    vm = rundir.read_variant(variant)
    fn(vm)
    rundir.write_variant(vm)


def test_speed_the_validation_refused_is_never_a_ratio(gpu_run):
    """Base on tp=4, variant on tp=2 (same 8-GPU host): validate recorded no speedup and why; the card shows the
    reason in every speed row and divides nothing itself."""
    rundir, settings = gpu_run
    base = rundir.read_base()
    base.validate_.speed.settings["tensor_parallel_size"] = 4
    base.validate_.hardware = base.validate_.hardware.model_copy(update={"count": 8})
    rundir.write_base(base)
    why = "base measured with tensor_parallel_size 4, variant with 2"

    def tp2(vm):
        vm.validate_.speed.settings["tensor_parallel_size"] = 2
        vm.validate_.hardware = vm.validate_.hardware.model_copy(update={"count": 8})
        c = vm.validate_.comparison
        c.speedup_batch1 = c.speedup_batched = None
        c.speed_comparable, c.speed_incomparable_reason = False, why

    _edit(rundir, "w4a16-gptq", tp2)
    render_card(rundir, "w4a16-gptq", settings)
    tables = md_tables(readme(rundir, "w4a16-gptq"))
    speed = {row["Measurement"]: row["vs base"] for row in tables["Measurement"]}
    assert speed.pop("Size on disk") == "0.35×"  # a size ratio, not a speed
    assert set(speed.values()) == {f"not comparable ({why})"}
    mine = next(r for r in tables["Model"] if "(this model)" in r["Model"])
    assert mine["Batch-1 speedup"] == mine["Batched speedup"] == f"not comparable ({why})"


def test_one_collection_title_within_the_hubs_limit(gpu_run):
    rundir, settings = gpu_run
    base = rundir.read_base()
    base.base.model_id = "acme/" + "Very-Long-Model-Name-" * 4 + "Instruct"
    rundir.write_base(base)
    text = render_collection(rundir, settings)
    assert text.title == collection_title(base.base.model_id) and len(text.title) <= COLLECTION_TITLE_MAX
    assert text.title.endswith("…")
    assert collection_title(BASE_ID) == "Llama-Demo-8B-Instruct quantized"


def test_recipe_is_typed_and_read_one_way(gpu_run, legacy_run):
    rundir, settings = gpu_run
    vm = rundir.read_variant("w4a16-gptq")
    assert isinstance(vm.quantize.recipe, Recipe) and vm.quantize.recipe.suffix == "-W4A16-GPTQ"
    legacy_dir, _ = legacy_run
    assert isinstance(legacy_dir.read_variant("w4a16-gptq").quantize.recipe, Recipe)  # an older run's dict
    assert QuantizeRecord(recipe={}).recipe is None and QuantizeRecord(recipe={"id": "x"}).recipe is None
    assert SUFFIXES == {r.id: r.suffix for r in load_recipes()}  # the watcher's table is the recipe book's


def test_how_sure_are_we_is_the_manifests_numbers(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    line = next(ln for ln in text.splitlines() if ln.startswith("**How sure are we:**"))
    assert text.index(line) < text.index("## Which GPUs run it")  # near the top
    comp = rundir.read_variant("w4a16-gptq").validate_.comparison
    kl, _p99, top1, _ppl = FIDELITY["w4a16-gptq"]
    assert f"Mean recovery {comp.mean_recovery:.2f}% (95% CI {comp.mean_recovery_ci[0]:.2f}–" \
           f"{comp.mean_recovery_ci[1]:.2f}%, paired over 750 documents)" in line
    assert f"next-token KL {kl:.3g} nats, top-1 agreement {top1 * 100:.2f}% on 4,096 held-out tokens" in line
    assert line.endswith("Gate: passed (the CI's lower bound of the mean recovery must reach 96.0%).")


def test_at_chance_tasks_are_marked_and_left_out(gpu_run):
    rundir, settings = gpu_run

    def chance(vm):
        c = vm.validate_.comparison
        task = next(t for t in c.tasks if t.task == "hellaswag")
        task.at_chance, task.used, task.chance = True, False, 0.25
        c.tasks_compared = ["arc_challenge", "gsm8k"]

    _edit(rundir, "w4a16-gptq", chance)
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    rows = {r["Task"].strip("`"): r for r in md_tables(text)["Task"]}
    assert rows["hellaswag"]["Recovery"] == "99.24% (base at chance (25.00%): not counted)"
    assert "(" not in rows["gsm8k"]["Recovery"]
    assert "Mean recovery over 2 tasks:" in text and "At chance: the base's score on `hellaswag`" in text
    assert "paired over 500 documents" in text  # the documents of the tasks counted


def test_variants_the_intervals_cannot_separate_are_not_ranked(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    assert "Closest to the base" not in text
    assert "**Accuracy:** the variants cannot be told apart (their confidence intervals overlap): FP8 Dynamic " \
           "99.66% (95% CI 98.91–100.41%), W8A8 INT8 99.39% (95% CI 98.44–100.34%), W4A16 GPTQ 98.28%" in text

    def narrow(vm):
        c = vm.validate_.comparison
        c.mean_recovery_ci = [c.mean_recovery - 0.05, c.mean_recovery + 0.05]

    for vid in ("w4a16-gptq", "w8a8-int8", "fp8-dynamic"):
        _edit(rundir, vid, narrow)
    render_card(rundir, "w4a16-gptq", settings)
    assert "**Closest to the base:** FP8 Dynamic (99.66% (95% CI 99.61–99.71%) mean recovery; its interval lies " \
           "above every other variant's)." in readme(rundir, "w4a16-gptq")


def test_an_inconclusive_gate_says_so(gpu_run):
    rundir, settings = gpu_run

    def undecided(vm):
        g = vm.validate_.gate
        g.passed, g.state, g.rounds = False, GateState.inconclusive, 3
        g.reasons = ["mean recovery CI 95.1–97.4% straddles 96.0% after 3 rounds (limit 1000 reached)"]

    _edit(rundir, "w4a16-gptq", undecided)
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    assert "> ⚠️ **The quality gate could not decide** (the confidence interval straddles its threshold)" in text
    assert "Gate: inconclusive (the CI's lower bound of the mean recovery must reach 96.0%, after 3 evaluation " \
           "rounds)." in text
    mine = next(r for r in md_tables(text)["Model"] if "(this model)" in r["Model"])
    assert mine["Quality gate"].startswith("❔ inconclusive: mean recovery CI 95.1–97.4%")


def test_older_records_render_what_they_hold(legacy_run):
    """No CIs, flips, fidelity, gate state or typed hardware verdict: nothing of them is invented."""
    rundir, settings = legacy_run
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    check_golden("w4a16-gptq-legacy.md", text)
    tables = md_tables(text)
    assert "Recovery CI" not in tables["Task"][0] and "Fidelity" not in tables
    assert "Next-token fidelity: not measured (this run's validation did not record it)." in text
    assert "**How sure are we:** Mean recovery 98.28% (no confidence interval recorded). Gate: passed (mean " \
           "recovery at least 96.00%)." in text
    assert "no confidence intervals were recorded" in text and "Closest to the base" not in text
    hopper = next(r for r in tables["GPU generation"] if r["GPU generation"] == "Hopper")
    assert hopper["Tested in this run"].startswith("✅ NVIDIA H100 80GB HBM3: loaded and ran natively")  # compat
    speed = {row["Measurement"]: row["vs base"] for row in tables["Measurement"]}
    assert number(speed["Batch-1 decode (tokens/s)"]) == 1.59  # the ratio that older validate recorded
