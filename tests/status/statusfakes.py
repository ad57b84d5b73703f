"""A realistic runs/ directory for the status site: the card tests' synthetic 8B run (tests/card/cardfakes.py),
brought to the states a follower wants to see, plus ledger rows the watcher wrote.

acme/Llama-Demo-8B-Instruct @ 0123456789ab (run directory, written with bot.manifest models):
  w4a16-gptq       published (repo + collection), recovery with CI, fidelity, comparable speedups, card chart
  w4a16-awq        quantize failed (the error carries markup, which must come out escaped)
  w4a16-autoround  quantizing now
  w8a8-int8        validated by an older bot: mean recovery without CI, no fidelity, speed not comparable
  fp8-dynamic      inconclusive: the CI straddles the threshold
  nvfp4            rejected: lm-eval failed (no recovery)
acme/Next-3B @ feedfacecafe   dispatched by the watcher, variants queued (no run directory here)
acme/Remote-7B                skipped by the watcher (remote code)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "card"))

from cardfakes import BASE_ID, REVISION, make_run  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.ledger import Ledger, sync_from_run  # noqa: E402
from bot.manifest import (  # noqa: E402
    CardRecord, FidelityRecord, GateDecision, GateState, PublishRecord, QuantizeRecord, Status, VariantManifest,
)
from bot.rundir import RunDir  # noqa: E402
from bot.stages.card.chart import CHART_NAME, draw_chart  # noqa: E402
from bot.stages.card.data import RunData  # noqa: E402
from bot.stages.validate.compare import gate_rule  # noqa: E402

NEXT_ID, NEXT_REV = "acme/Next-3B", "feedfacecafe" + "0" * 28
SKIP_ID, SKIP_REV = "acme/Remote-7B", "abad1dea" + "1" * 32
SKIP_REASON = "config has auto_map (remote code): not allowed by the watchlist"
AWQ_ERROR = "RuntimeError: AWQ found no smoothing layer for <script>alert(1)</script> 'model.layers.0.mlp'"
GPTQ_URL = "https://huggingface.co/bot-demo/Llama-Demo-8B-Instruct-W4A16-GPTQ"
GPTQ_COLLECTION = "bot-demo/llama-demo-8b-instruct-quantized-65f0c1d2e3a4b5c6d7e8f901"
RULE = gate_rule(96.0, 0.95)
FIDELITY = FidelityRecord(kl_mean=0.02137, kl_p99=0.31, kl_max=1.9, top1_agreement=0.9412, tokens=8192,
                          tokens_requested=8192, windows=8, window=1024, text="bot_wikitext_mini",
                          backend="vllm", device="cuda", dtype="bfloat16")


def _edit(rundir: RunDir, variant: str, fn) -> VariantManifest:
    vm = rundir.read_variant(variant)
    assert vm is not None
    fn(vm)
    rundir.write_variant(vm)
    return vm


def _published(vm: VariantManifest) -> None:
    v = vm.validate_
    v.comparison.mean_recovery_ci = [96.91, 99.42]
    v.comparison.confidence = 0.95
    v.comparison.speed_comparable = True
    v.fidelity = FIDELITY
    v.gate = GateDecision(passed=True, state=GateState.passed, threshold=96.0, rule=RULE)
    vm.card = CardRecord(status=Status.done, chart=CHART_NAME, finished_at="2026-11-03T10:41:00+00:00")
    vm.publish = PublishRecord(status=Status.done, target="hub", repo_id="bot-demo/Llama-Demo-8B-Instruct-W4A16-GPTQ",
                               url=GPTQ_URL, commit="c0ffee" * 6 + "abcd", collection=GPTQ_COLLECTION,
                               started_at="2026-11-03T10:42:10+00:00", finished_at="2026-11-03T10:44:31+00:00")


def _old_validated(vm: VariantManifest) -> None:
    v = vm.validate_
    v.comparison.speed_comparable = False
    v.comparison.speed_incomparable_reason = "base measured with tensor_parallel_size 2, variant with 1"
    v.gate = GateDecision(passed=True, threshold=96.0)  # an older bot: no state, no rule, no CI, no fidelity
    v.comparison.mean_recovery_ci, v.comparison.tasks, v.fidelity = None, [], None


def _inconclusive(vm: VariantManifest) -> None:
    v = vm.validate_
    v.comparison.mean_recovery_ci = [95.12, 100.31]
    v.comparison.speed_comparable = True
    v.fidelity = FidelityRecord(kl_mean=0.00412, top1_agreement=0.9876, tokens=8192)
    v.gate = GateDecision(passed=False, state=GateState.inconclusive, threshold=96.0, rule=RULE, rounds=3, limit=1000,
                          reasons=["mean recovery 99.5% [95.1, 100.3] straddles 96% after 3 round(s) at 1000 samples "
                                   "per task: the tasks cannot tell this variant from the threshold"])


def _rejected(vm: VariantManifest) -> None:
    vm.validate_.gate = GateDecision(passed=False, state=GateState.rejected, threshold=96.0, rule=RULE,
                                     reasons=["accuracy not measured: lm-eval failed"])


def make_runs(root: Path) -> tuple[Settings, RunDir]:
    rundir, settings = make_run(root)
    _edit(rundir, "w4a16-gptq", _published)
    _edit(rundir, "w4a16-awq", lambda vm: setattr(vm.quantize, "error", AWQ_ERROR))
    _edit(rundir, "w8a8-int8", _old_validated)
    _edit(rundir, "fp8-dynamic", _inconclusive)
    _edit(rundir, "nvfp4", _rejected)
    rundir.write_variant(VariantManifest(run_id=rundir.run_id, variant="w4a16-autoround", quantize=QuantizeRecord(
        recipe_id="w4a16-autoround", recipe={"id": "w4a16-autoround", "name": "W4A16 AutoRound"},
        status=Status.running, started_at="2026-11-03T11:02:00+00:00")))
    # the card stage's chart for the published variant (drawn with the card's own module)
    assert draw_chart(RunData.load(rundir, settings), "w4a16-gptq", rundir.card_dir("w4a16-gptq") / CHART_NAME)
    with Ledger(Path(settings.runs_dir) / "ledger.sqlite") as ledger:
        ledger.set_model(BASE_ID, REVISION, "in-flight", "running here", recipes=rundir.variants(), attempt=True)
        sync_from_run(ledger, rundir, BASE_ID, REVISION)
        ledger.set_model(NEXT_ID, NEXT_REV, "dispatched", "publish.yml@main", recipes=["w4a16-gptq", "fp8-dynamic"],
                         attempt=True)
        for v in ("w4a16-gptq", "fp8-dynamic"):
            ledger.set_variant(NEXT_ID, NEXT_REV, v, "queued")
        ledger.set_model(SKIP_ID, SKIP_REV, "skipped", SKIP_REASON)
    return settings, rundir


if __name__ == "__main__":  # python tests/status/statusfakes.py DIR: a realistic runs/ under DIR (docs screenshot)
    settings, _ = make_runs(Path(sys.argv[1]))
    print(settings.runs_dir)
