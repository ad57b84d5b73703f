"""Peak memory bandwidth of the GPUs the bot may run on, from NVIDIA's published specifications (bytes/s), matched
against the device name torch / vLLM report. A GPU not listed gets no bandwidth limit on its card (never a guess).
The most specific pattern comes first ("H100 NVL" before "H100"); patterns match whole words ("A10" is not "A100").
"""

from __future__ import annotations

import re

TB = 10**12
_SPEC = "NVIDIA {} datasheet"

# (substring of the reported name, bytes/s, product named in the source)
GPU_BANDWIDTH: tuple[tuple[str, float, str], ...] = (
    ("H200", 4_800_000_000_000, "H200 Tensor Core GPU (SXM and NVL)"),
    ("H100 NVL", 3_900_000_000_000, "H100 NVL"),
    ("H100 PCIe", 2_000_000_000_000, "H100 PCIe"),
    ("H100", 3_350_000_000_000, "H100 SXM (80 GB HBM3)"),
    ("H800", 3_350_000_000_000, "H800 SXM"),
    ("B200", 8_000_000_000_000, "B200 (HGX B200)"),
    ("A100-SXM4-80GB", 2_039_000_000_000, "A100 80GB SXM"),
    ("A100 80GB PCIe", 1_935_000_000_000, "A100 80GB PCIe"),
    ("A100-SXM4-40GB", 1_555_000_000_000, "A100 40GB SXM"),
    ("A100-PCIE-40GB", 1_555_000_000_000, "A100 40GB PCIe"),
    ("L40S", 864_000_000_000, "L40S"),
    ("L40", 864_000_000_000, "L40"),
    ("L4", 300_000_000_000, "L4"),
    ("A10G", 600_000_000_000, "A10G"),
    ("A10", 600_000_000_000, "A10"),
    ("RTX 4090", 1_008_000_000_000, "GeForce RTX 4090"),
)


def bandwidth_of(gpu_name: str | None) -> tuple[float, str] | None:
    """(bytes/s, its source) for a reported device name ('NVIDIA H200', 'NVIDIA H100 80GB HBM3'); None if unknown."""
    name = gpu_name or ""
    for pattern, bw, product in GPU_BANDWIDTH:
        if re.search(rf"(?<![\w]){re.escape(pattern)}(?![\w])", name):  # whole words: "A10" is not "A100"
            return bw, _SPEC.format(product)
    return None
