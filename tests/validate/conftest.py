"""Fixtures for `bot validate`: quantized runs built once per session through `bot quantize`."""

from __future__ import annotations

import pytest

from bot.rundir import RunDir
from validate_helpers import copy_run, quantize, run_cli


@pytest.fixture(scope="session")
def tiny_quantized(tiny_llama, tmp_path_factory, calibration_file) -> RunDir:
    """The tiny random Llama quantized with FP8-Dynamic (data-free) and W4A16-GPTQ (16 calibration samples)."""
    return quantize(tiny_llama, tmp_path_factory.mktemp("validate-tiny-q"), ["fp8-dynamic", "w4a16-gptq"],
                    calibration_file)


@pytest.fixture(scope="session")
def tiny_validated(tiny_quantized, tmp_path_factory) -> tuple[RunDir, int]:
    """A copy of the tiny run validated once through `bot validate` (CPU, hf backend, bundled tasks)."""
    rundir = copy_run(tiny_quantized, tmp_path_factory.mktemp("validate-tiny"))
    rc = run_cli(["validate", str(rundir.root), "--limit", "20"])
    return rundir, rc
