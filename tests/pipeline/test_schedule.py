"""What an overlapped `bot publish` starts next (bot.stages.schedule), on a fake plan of six variants: the base
first, each variant once its quantize is done, in recipe order; the lane ends only when quantize is over."""

from __future__ import annotations

from bot.manifest import QuantizeRecord, Status, VariantManifest
from bot.rundir import RunDir
from bot.stages.schedule import DONE, WAIT, Step, next_step, spread, variant_states

ORDER = ["w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4"]


def _drive(events: list[tuple[str, str]]) -> list[str]:
    """Replay quantize outcomes in time order; after each, take every step the lane would take (each validation
    completing before the next outcome), and return the validation order."""
    states = {v: "pending" for v in ORDER}
    base, validated, order = "pending", set(), []
    for variant, outcome in [*events, ("", "over")]:
        over = outcome == "over"
        if not over:
            states[variant] = outcome
        while (step := next_step(ORDER, states, base, validated, over)) not in (WAIT, DONE):
            if step.kind == "base":
                base = "done"
                order.append("base")
            else:
                validated.add(step.variant)
                order.append(step.variant)
        if over:
            assert step == DONE
    return order


def test_the_base_first_then_each_variant_as_it_is_quantized():
    events = [("fp8-dynamic", "done"), ("nvfp4", "done"), ("w4a16-awq", "failed"), ("w4a16-gptq", "done"),
              ("w8a8-int8", "done"), ("w4a16-autoround", "done")]
    assert _drive(events) == ["base", "fp8-dynamic", "nvfp4", "w4a16-gptq", "w8a8-int8", "w4a16-autoround"]


def test_the_base_starts_before_anything_is_quantized():
    assert next_step(ORDER, {}, "pending", set(), False) == Step("base")
    assert next_step(ORDER, {}, "done", set(), False) == WAIT


def test_ready_variants_go_in_recipe_order():
    states = {"nvfp4": "done", "w4a16-gptq": "done", "fp8-dynamic": "done"}
    assert next_step(ORDER, states, "done", set(), False) == Step("variant", "w4a16-gptq")
    assert next_step(ORDER, states, "done", {"w4a16-gptq"}, False) == Step("variant", "fp8-dynamic")


def test_a_failed_base_ends_the_lane_and_stale_failures_do_not():
    assert next_step(ORDER, {"fp8-dynamic": "done"}, "failed", set(), False) == DONE  # serial after quantize
    stale = {v: "failed" for v in ORDER}  # an earlier attempt's manifests, about to be quantized again
    assert next_step(ORDER, stale, "done", set(), False) == WAIT
    assert next_step(ORDER, stale, "done", set(), True) == DONE


def test_cheap_first_orders_each_worker_without_moving_variants():
    costs = [3.0, 4.0, 8.0, 3.0, 0.1, 1.0]  # recipe_cost of the six on an 8B Llama
    plain, cheap = spread(costs, 3), spread(costs, 3, cheap_first=True)
    assert plain == [[2], [1, 4, 5], [0, 3]]  # AutoRound alone; AWQ+FP8+NVFP4; GPTQ+W8A8
    assert [sorted(g) for g in cheap] == plain
    assert cheap[1] == [4, 5, 1]  # FP8, then NVFP4, then AWQ: validation has work early


def test_states_come_from_the_run_directory(tmp_path):
    rundir = RunDir(tmp_path / "run")
    done = VariantManifest(run_id="r", variant="fp8-dynamic", quantize=QuantizeRecord(status=Status.done))
    rundir.write_variant(done)
    rundir.write_variant(VariantManifest(run_id="r", variant="nvfp4", quantize=QuantizeRecord(status=Status.running)))
    assert variant_states(rundir, ["fp8-dynamic", "nvfp4", "w4a16-gptq"]) == {
        "fp8-dynamic": "running", "nvfp4": "running", "w4a16-gptq": "pending"}  # done without its model/: not yet
    (rundir.model_dir("fp8-dynamic") / "config.json").parent.mkdir(parents=True)
    (rundir.model_dir("fp8-dynamic") / "config.json").write_text("{}")
    assert variant_states(rundir, ["fp8-dynamic"]) == {"fp8-dynamic": "done"}
