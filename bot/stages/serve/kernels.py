"""What vLLM 0.26.0 can run a compressed-tensors checkpoint's linear layers with on CUDA, read from its source.

Every entry below is a kernel class of vLLM 0.26.0, in the priority order vLLM tries them (the first that is
supported and can implement the layer is its default), with the conditions its source checks. Sources (paths in
the vllm-project/vllm tree at v0.26.0):

- vllm/model_executor/kernels/linear/__init__.py: the CUDA priority lists `_POSSIBLE_KERNELS` (mixed precision,
  W4A16), `_POSSIBLE_INT8_KERNELS`, `_POSSIBLE_FP8_KERNELS`, `_POSSIBLE_WFP8A16_KERNELS`, `_POSSIBLE_NVFP4_KERNELS`;
  `_LINEAR_BACKEND_KERNEL_MAP` (which kernels `--linear-backend NAME` keeps: the engine argument
  `linear_backend`, vllm/config/kernel.py `LinearBackend`); `VLLM_DISABLED_KERNELS` (class names, comma-separated,
  vllm/envs.py) is honoured by every selector.
- vllm/model_executor/kernels/linear/mixed_precision/{cutlass,machete,allspark,marlin,conch,exllama,triton_w4a16,
  humming}.py: `get_min_capability` and `can_implement` of each W4A16 kernel; machete_utils.py / marlin_utils.py /
  allspark_utils.py (vllm/model_executor/layers/quantization/utils/) their quant types and group sizes.
- vllm/model_executor/kernels/linear/scaled_mm/{cutlass,triton,marlin,flashinfer,pytorch,humming}.py: the INT8 and
  FP8 kernels' `is_supported` / `can_implement`.
- vllm/model_executor/kernels/linear/nvfp4/{flashinfer,cutlass,marlin,fbgemm,emulation,humming}.py and
  `init_nvfp4_linear_kernel`: NVFP4 (0.26 has no VLLM_NVFP4_GEMM_BACKEND; `--linear-backend` picks the backend).
- vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py `_get_scheme_from_parts`: which
  scheme a checkpoint gets (FP8 W8A8 needs compute capability 8.9, below it the weight-only W8A16 scheme).
- vllm/config/cache.py `CacheDType` (`--kv-cache-dtype`: auto, fp8, fp8_e4m3, fp8_e5m2, ...);
  vllm/v1/attention/backends/flash_attn.py `supports_kv_cache_dtype`: an FP8 KV cache runs in FlashAttention 3 on
  compute capability 9.x; elsewhere vLLM picks an attention backend that stores FP8 (Triton attention).

Deliberately not searched: `VLLM_MARLIN_INPUT_DTYPE` (quantizes Marlin's activations to int8/fp8: another model than
the one validated), `VLLM_TEST_FORCE_FP8_MARLIN` on compute capability >= 8.9 (runs FP8 weight-only, skipping the
activation quantization), `VLLM_MARLIN_USE_ATOMIC_ADD` (marlin_utils.py `should_use_atomic_add_reduce`: only for
layers with fewer than 2048 outputs and at least 2048 inputs). Optional packages the GPU host lacks (FlashInfer,
Conch, Humming, fbgemm-gpu) are asked of the serve interpreter (bot.clients.serve_env) instead of assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bot.stages.serve.formats import WeightFormat

Check = Callable[[WeightFormat], "str | None"]  # why the kernel cannot implement this format (None: it can)


@dataclass(frozen=True)
class Kernel:
    name: str  # vLLM's class name (what `describe_kernels` reports)
    backend: str | None  # the `--linear-backend` value that keeps only it for this layer type (None: none does)
    min_cc: tuple[int, int] | None = None  # from its get_min_capability / is_supported
    max_cc: tuple[int, int] | None = None  # exclusive upper bound (Machete: exactly 9.x; AllSpark: 8.x)
    module: str | None = None  # optional package it imports
    weight_only: bool = False  # activations stay 16-bit (W4A16 / W8A16 math)
    check: Check | None = None
    testing_only: str | None = None  # vLLM says it is not for serving
    source: str = ""


def _no_act_order(what: str) -> Check:
    return lambda f: f"{what} does not support activation reordering (g_idx)" if f.act_order else None


def _machete(f: WeightFormat) -> str | None:
    if f.bits not in (4, 8):
        return f"Machete runs 4- and 8-bit weights, not {f.bits}-bit"
    if f.group_size not in (-1, 64, 128):
        return f"Machete supports groups of 64 or 128 (or per channel), not {f.group_size}"
    return None


def _allspark(f: WeightFormat) -> str | None:
    if f.bits != 8 or f.zero_points or f.group_size != -1:
        return "AllSpark runs only symmetric 8-bit weights, one scale per channel (uint8b128)"
    return _no_act_order("AllSpark")(f)


def _marlin(f: WeightFormat) -> str | None:
    if f.zero_points and f.bits != 4:
        return "Marlin runs zero points with 4-bit weights only"
    if f.bits not in (4, 8):
        return f"Marlin runs 4- and 8-bit weights, not {f.bits}-bit"
    if f.group_size not in (-1, 32, 64, 128):
        return f"Marlin supports groups of 32, 64 or 128 (or per channel), not {f.group_size}"
    return None


def _exllama(f: WeightFormat) -> str | None:
    if f.act_dtype != "float16":
        return f"Exllama runs float16 activations only; this model runs in {f.act_dtype}"
    if f.zero_points or f.bits not in (4, 8):
        return "Exllama runs symmetric 4- and 8-bit weights only"
    return None


def _triton_w4a16(f: WeightFormat) -> str | None:
    if f.bits != 4:
        return f"the Triton W4A16 kernel runs 4-bit weights only, not {f.bits}-bit"
    if f.group_size not in (-1, 32, 64, 128, 256):
        return f"the Triton W4A16 kernel supports groups of 32-256, not {f.group_size}"
    return _no_act_order("the Triton W4A16 kernel")(f)


def _per_tensor_only(f: WeightFormat) -> str | None:
    return None if f.per_tensor else "needs per-tensor weight and activation scales; this checkpoint has per-channel " \
                                     "weights and per-token activations"


def _not_per_tensor(f: WeightFormat) -> str | None:
    return "needs per-channel or per-token scales; this checkpoint is per-tensor" if f.per_tensor else None


_MP = "vllm/model_executor/kernels/linear/mixed_precision/"
_SM = "vllm/model_executor/kernels/linear/scaled_mm/"
_FP4 = "vllm/model_executor/kernels/linear/nvfp4/"

# W4A16 (CompressedTensorsWNA16 -> choose_mp_linear_kernel): `_POSSIBLE_KERNELS[PlatformEnum.CUDA]`
WNA16 = (
    Kernel("CutlassW4A8LinearKernel", "cutlass", (9, 0), (10, 0),
           check=lambda f: "runs W4A8 (FP8 activations) only; this checkpoint keeps 16-bit activations",
           source=_MP + "cutlass.py"),
    Kernel("MacheteLinearKernel", "machete", (9, 0), (10, 0), weight_only=True, check=_machete,
           source=_MP + "machete.py (is_device_capability(90))"),
    Kernel("AllSparkLinearKernel", None, (8, 0), (9, 0), weight_only=True, check=_allspark,
           source=_MP + "allspark.py, allspark_utils.py"),
    Kernel("MarlinLinearKernel", "marlin", (7, 5), weight_only=True, check=_marlin, source=_MP + "marlin.py"),
    Kernel("ConchLinearKernel", "conch", (8, 0), module="conch", weight_only=True, source=_MP + "conch.py"),
    Kernel("ExllamaLinearKernel", "exllama", (6, 0), weight_only=True, check=_exllama, source=_MP + "exllama.py"),
    Kernel("TritonW4A16LinearKernel", "triton", None, weight_only=True, check=_triton_w4a16,
           source=_MP + "triton_w4a16.py (Triton checks the capability itself)"),
    Kernel("HummingLinearKernel", "humming", (7, 5), module="humming", weight_only=True,
           check=_no_act_order("Humming"), source=_MP + "humming.py"),
)

# W8A8 INT8, dynamic per-token activations (CompressedTensorsW8A8Int8 -> init_int8_linear_kernel)
INT8_W8A8 = (
    Kernel("CutlassInt8ScaledMMLinearKernel", "cutlass", (7, 5), source=_SM + "cutlass.py (the scheme needs 7.5)"),
    Kernel("TritonInt8ScaledMMLinearKernel", "triton", (7, 5), source=_SM + "triton.py"),
    Kernel("HummingInt8ScaledMMLinearKernel", "humming", (7, 5), module="humming", source=_SM + "humming.py"),
)

# FP8 W8A8 (CompressedTensorsW8A8Fp8, compute capability >= 8.9 -> init_fp8_linear_kernel)
FP8_W8A8 = (
    Kernel("MarlinFP8ScaledMMLinearKernel", "marlin", (7, 5), (8, 9), weight_only=True,
           source=_SM + "marlin.py (at >= 8.9 only with VLLM_TEST_FORCE_FP8_MARLIN=1: not searched)"),
    Kernel("FlashInferFP8ScaledMMLinearKernel", "flashinfer_cutlass", (10, 0), module="flashinfer",
           check=_per_tensor_only, source=_SM + "flashinfer.py"),
    Kernel("CutlassFP8ScaledMMLinearKernel", "cutlass", (8, 9), source=_SM + "cutlass.py"),
    Kernel("PerTensorTorchFP8ScaledMMLinearKernel", "torch", (8, 9), check=_per_tensor_only,
           source=_SM + "pytorch.py"),
    Kernel("ChannelWiseTorchFP8ScaledMMLinearKernel", "torch", (8, 9), check=_not_per_tensor,
           source=_SM + "pytorch.py"),
    Kernel("HummingFP8ScaledMMLinearKernel", "humming", (7, 5), module="humming", source=_SM + "humming.py"),
)

# FP8 weights with 16-bit activations (CompressedTensorsW8A16Fp8 -> init_wfp8_a16_linear_kernel): an FP8 checkpoint
# below compute capability 8.9, or one without activation quantization
FP8_W8A16 = (
    Kernel("HummingFP8ScaledMMLinearKernel", "humming", (7, 5), module="humming", weight_only=True,
           source=_SM + "humming.py"),
    Kernel("MarlinFP8ScaledMMLinearKernel", "marlin", (7, 5), weight_only=True, source=_SM + "marlin.py"),
)

# NVFP4 (CompressedTensorsW4A4Fp4 -> init_nvfp4_linear_kernel): `_POSSIBLE_NVFP4_KERNELS[PlatformEnum.CUDA]`
NVFP4 = (
    Kernel("FlashInferCuteDslNvFp4LinearKernel", "flashinfer_cutedsl", (10, 0), (11, 0), module="flashinfer",
           source=_FP4 + "flashinfer.py (is_device_capability_family(100))"),
    Kernel("FlashInferCutlassNvFp4LinearKernel", "flashinfer_cutlass", (10, 0), module="flashinfer",
           source=_FP4 + "flashinfer.py"),
    Kernel("CutlassNvFp4LinearKernel", "cutlass", (10, 0),
           source=_FP4 + "cutlass.py (cutlass_scaled_mm_supports_fp4: FP4 tensor cores, Blackwell)"),
    Kernel("MarlinNvFp4LinearKernel", "marlin", (7, 5), weight_only=True, source=_FP4 + "marlin.py"),
    Kernel("FlashInferTrtllmNvFp4LinearKernel", "flashinfer_trtllm", (10, 0), module="flashinfer",
           source=_FP4 + "flashinfer.py (the source checks only for FlashInfer; its FP4 GEMM needs Blackwell)"),
    Kernel("FlashInferCudnnNvFp4LinearKernel", "flashinfer_cudnn", (10, 0), module="flashinfer",
           source=_FP4 + "flashinfer.py (the source checks only for FlashInfer; its FP4 GEMM needs Blackwell)"),
    Kernel("FbgemmNvFp4LinearKernel", "fbgemm", (10, 0), module="fbgemm_gpu", source=_FP4 + "fbgemm.py"),
    Kernel("EmulationNvFp4LinearKernel", "emulation", None,
           testing_only="dequantizes to BF16 (vLLM: 'slow and unoptimized', for testing)",
           source=_FP4 + "emulation.py"),
    Kernel("HummingNvFp4LinearKernel", "humming", (7, 5), module="humming", source=_FP4 + "humming.py"),
)

# Weight-only NVFP4 (no activation quantization in the checkpoint): vLLM forces Marlin unless --linear-backend says
NVFP4_A16 = (Kernel("MarlinNvFp4LinearKernel", "marlin", (7, 5), weight_only=True, source=_FP4 + "marlin.py"),)

BY_FAMILY: dict[str, tuple[Kernel, ...]] = {
    "wna16": WNA16, "int8_w8a8": INT8_W8A8, "fp8_w8a8": FP8_W8A8, "fp8_w8a16": FP8_W8A16, "nvfp4": NVFP4,
    "nvfp4_a16": NVFP4_A16,
}
FP8_W8A8_MIN_CC = (8, 9)  # compressed_tensors.py: CompressedTensorsW8A8Fp8.get_min_capability() == 89
KV_SOURCE = "vllm/config/cache.py CacheDType; vllm/v1/attention/backends/flash_attn.py supports_kv_cache_dtype"


def family_on(fmt: WeightFormat, cc: tuple[int, int]) -> str:
    """The kernel family vLLM uses for this format on this GPU (FP8 W8A8 falls back to weight-only below 8.9)."""
    if fmt.family == "fp8_w8a8" and cc < FP8_W8A8_MIN_CC:
        return "fp8_w8a16"
    return fmt.family


def why_not(kernel: Kernel, fmt: WeightFormat, cc: tuple[int, int], modules: dict[str, bool]) -> str | None:
    """Why vLLM 0.26 would not run this kernel for this format on this GPU with these packages (None: it can)."""
    if kernel.min_cc is not None and cc < kernel.min_cc:
        return f"needs compute capability {kernel.min_cc[0]}.{kernel.min_cc[1]} or higher"
    if kernel.max_cc is not None and cc >= kernel.max_cc:
        lo, hi = kernel.min_cc, kernel.max_cc
        if lo is not None and lo[1] == 0 and hi == (lo[0] + 1, 0):
            return f"runs on compute capability {lo[0]}.x only"
        return f"runs below compute capability {hi[0]}.{hi[1]} only"
    if kernel.module and not modules.get(kernel.module):
        return f"needs the {kernel.module} package, which the serve interpreter lacks"
    if kernel.check is not None:
        reason = kernel.check(fmt)
        if reason:
            return reason
    return None
