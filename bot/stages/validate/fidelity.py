"""Distribution fidelity in the stage: which variants need it, one worker call for all of them (the base loaded
once), and the records it fills. The numbers themselves come from `bot/workers/fidelity_worker.py`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bot.config import Settings
from bot.manifest import FidelityRecord, ValidateRecord, VariantValidateRecord
from bot.stages.validate.measure import HELDOUT_TEXT, ModelValidation, WorkerFailed


def text_fingerprint(path: Path = HELDOUT_TEXT) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()  # as the worker records it


def is_current(fid: FidelityRecord | None, settings: Settings, fingerprint: str) -> bool:
    f = settings.validate.fidelity
    return (fid is not None and fid.error is None and fid.text_fingerprint == fingerprint and fid.window == f.window
            and fid.tokens_requested == f.tokens)


def measure_fidelity(base_work: ModelValidation, base_rec: ValidateRecord,
                     targets: dict[str, tuple[VariantValidateRecord, Path]], settings: Settings) -> None:
    """Fill `.fidelity` of every target variant (name -> (record, model dir)). A worker failure is recorded on
    each of them (the gate rejects what it could not measure); a variant that failed alone says why."""
    if not targets:
        return
    requested = settings.validate.fidelity.tokens
    try:
        res = base_work.fidelity(base_rec, {name: path for name, (_, path) in targets.items()})
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
