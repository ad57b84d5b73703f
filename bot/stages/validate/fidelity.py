"""Distribution fidelity in the stage: which variants need it, one worker call for all of them (the base loaded
once), and the records it fills. The numbers themselves come from `bot/workers/fidelity_worker.py`."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from bot.config import Settings
from bot.manifest import FidelityRecord, ValidateRecord, VariantValidateRecord
from bot.stages.timeline.record import FIDELITY_LANE
from bot.stages.validate.measure import HELDOUT_TEXT, ModelValidation, WorkerFailed


def text_fingerprint(path: Path = HELDOUT_TEXT) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()  # as the worker records it


def is_current(fid: FidelityRecord | None, settings: Settings, fingerprint: str) -> bool:
    f = settings.validate.fidelity
    return (fid is not None and fid.error is None and fid.text_fingerprint == fingerprint and fid.window == f.window
            and fid.tokens_requested == f.tokens)


def wanted(rec: VariantValidateRecord, settings: Settings, force: bool, fingerprint: str) -> bool:
    """A variant that loaded, whose fidelity is not yet measured as the settings ask (or `force`)."""
    return (settings.validate.fidelity.enabled and rec.load is not None and rec.load.ok
            and (force or not is_current(rec.fidelity, settings, fingerprint)))


class Beside:
    """The fidelity worker in a thread of its own, beside the last variant's lm-eval: on a CPU the two workers
    compute at once, each with its own threads (Settings.cpu_worker_threads), and neither takes a speed figure,
    which the last variant took before. (On a GPU the stage does not use this: lm-eval's vLLM engine holds most
    of the GPU's memory while the fidelity worker would load the base and a variant in transformers.) `join`
    re-raises what the thread raised and returns the names it measured."""

    def __init__(self, base_work: ModelValidation, base_rec: ValidateRecord, settings: Settings) -> None:
        self.base_work, self.base_rec, self.settings = base_work, base_rec, settings
        self.targets: dict[str, tuple[VariantValidateRecord, Path]] = {}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, targets: dict[str, tuple[VariantValidateRecord, Path]]) -> None:
        self.targets = targets
        self._thread = threading.Thread(target=self._run, name="fidelity", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = "done"
        try:
            measure_fidelity(self.base_work, self.base_rec, self.targets, self.settings, lane=FIDELITY_LANE)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by join()
            self._error, status = exc, "failed"
        finally:
            self.base_work.on_event("lane-end", {"lane": FIDELITY_LANE, "status": status})

    def join(self) -> list[str]:
        if self._thread is None:
            return []
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self.targets)


def measure_fidelity(base_work: ModelValidation, base_rec: ValidateRecord,
                     targets: dict[str, tuple[VariantValidateRecord, Path]], settings: Settings,
                     lane: str | None = None) -> None:
    """Fill `.fidelity` of every target variant (name -> (record, model dir)). A worker failure is recorded on
    each of them (the gate rejects what it could not measure); a variant that failed alone says why."""
    if not targets:
        return
    requested = settings.validate.fidelity.tokens
    try:
        res = base_work.fidelity(base_rec, {name: path for name, (_, path) in targets.items()}, lane=lane)
    except WorkerFailed as exc:
        for rec, _ in targets.values():
            rec.fidelity = FidelityRecord(error=str(exc).splitlines()[0][:500], tokens_requested=requested)
        return
    per = res.get("variants") or {}
    for name, (rec, _) in targets.items():
        data = per.get(name)
        if data is None:
            rec.fidelity = FidelityRecord(error="the fidelity worker returned nothing for this variant",
                                          tokens_requested=requested)
            continue
        rec.fidelity = FidelityRecord.model_validate({**data, "tokens_requested": requested})
