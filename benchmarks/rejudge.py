"""Take the verdict (paired comparison and gate) on a copied run directory whose measurements are complete but
whose validate call ended before judging (a GPU lease that ran out). Uses the validate stage's own `judge`, on
the run's own records and per-document files; measures nothing. Fidelity that was not measured stays absent and
the gate then decides on the tasks alone (the report says so).

    python benchmarks/rejudge.py RUN_DIR_COPY
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.config import load_settings
from bot.manifest import Status
from bot.rundir import RunDir
from bot.stages.validate.judge import judge
from bot.stages.validate.measure import recipe_for, weights_size


def main(argv: list[str]) -> int:
    rundir = RunDir(Path(argv[0]))
    settings = load_settings(environ={})
    base = rundir.read_base()
    assert base is not None and base.validate_ is not None
    for variant in rundir.variants():
        m = rundir.read_variant(variant)
        rec = m.validate_ if m else None
        if rec is None or rec.accuracy is None or not rec.accuracy.samples_file or rec.gate is not None:
            print(f"{variant}: left as it is ({'no measurement' if rec is None or rec.accuracy is None else 'judged'})")
            continue
        rec.status = Status.done
        judge(rec, variant, recipe_for(m, settings), base.validate_, rundir.base_dir, weights_size(Path(base.base.path)),
              rundir.variant_dir(variant), weights_size(rundir.model_dir(variant)), settings)
        rundir.write_variant(m)
        print(f"{variant}: {rec.gate.outcome.value} {rec.comparison.mean_recovery} {rec.comparison.mean_recovery_ci}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
