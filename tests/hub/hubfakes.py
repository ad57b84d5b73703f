"""Constants and builders shared by the hub tests: tokens, a fake run directory, tiny safetensors files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bot.manifest import (
    BaseManifest,
    BaseModelRecord,
    Comparison,
    GateDecision,
    QuantizeRecord,
    Status,
    VariantManifest,
    VariantValidateRecord,
)
from bot.recipes import load_recipes
from bot.rundir import RunDir


TOKEN = "tester-token-0001"  # the local Hub maps tokens to user names; these are not token-shaped on purpose
OTHER_TOKEN = "other-token-0002"
BASE_ID = "acme/Tiny-1B"
BASE_SHA = "0123456789abcdef0123456789abcdef01234567"
VARIANT = "w4a16-gptq"
SUFFIX = "-W4A16-GPTQ"


def safetensors_bytes(shape: tuple[int, int] = (4, 4), fill: bytes = b"\0") -> bytes:
    """A valid safetensors file holding one F16 tensor."""
    size = shape[0] * shape[1] * 2
    header = json.dumps({"w": {"dtype": "F16", "shape": list(shape), "data_offsets": [0, size]}}).encode()
    return struct.pack("<Q", len(header)) + header + (fill * size)[:size]


def write_folder(folder: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


CARD_BODY = "# Tiny W4A16\n\n| task | recovery |\n|---|---|\n| arc | 99.1 |\n"


def card(base_id: str = BASE_ID, sha: str = BASE_SHA, body: str = CARD_BODY) -> str:
    return (f"---\nbase_model: {base_id}\nbase_model_revision: {sha}\nlicense: apache-2.0\ntags:\n- quantized\n"
            f"---\n{body}")


def make_run(runs_dir: Path, *, variant: str = VARIANT, suffix: str = SUFFIX, validated: bool = True,
             gate_passed: bool = True, readme: str | None = None, extra_card: dict[str, bytes | str] | None = None,
             model_files: dict[str, bytes | str] | None = None, mean_recovery: float | None = 99.12,
             size_bytes: int | None = 2_150_000_000) -> RunDir:
    """A run directory as quantize/validate/card leave it, with tiny files instead of a model."""
    rundir = RunDir.for_model(runs_dir, BASE_ID, BASE_SHA)
    rundir.write_base(BaseManifest(run_id=rundir.run_id, base=BaseModelRecord(
        status=Status.done, model_id=BASE_ID, revision=BASE_SHA, path=str(rundir.base_dir / "model"))))
    validate: VariantValidateRecord | None = None
    if validated:
        validate = VariantValidateRecord(
            status=Status.done, comparison=Comparison(mean_recovery=mean_recovery),
            gate=GateDecision(passed=gate_passed, reasons=[] if gate_passed else ["mean recovery 80.0% < 95.0%"]))
    recipe = load_recipes().get(variant).model_copy(update={"suffix": suffix})  # as the quantize stage stores it
    rundir.write_variant(VariantManifest(
        run_id=rundir.run_id, variant=variant,
        quantize=QuantizeRecord(status=Status.done, recipe_id=variant, recipe=recipe, size_bytes=size_bytes),
        validate=validate))
    write_folder(rundir.model_dir(variant), model_files or {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
        "model.safetensors": safetensors_bytes(),
        "tokenizer.json": "{}",
    })
    write_folder(rundir.card_dir(variant), {"README.md": readme if readme is not None else card(),
                                            "chart.png": b"\x89PNG fake", **(extra_card or {})})
    return rundir
