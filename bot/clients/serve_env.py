"""What the serve interpreter can do (libraries, GPUs), asked once per interpreter, and the backend chosen from it.

`bot validate` runs its workers in `settings.serve_python`: vLLM + lm-eval on a GPU host, or transformers +
lm-eval (the `hf` backend) anywhere else. The probe is one short subprocess; its answer is cached per process.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Literal

from bot.clients.process import STAGE_SETTING, worker_env
from bot.errors import EnvironmentMissingError

Backend = Literal["vllm", "hf"]
_PROBE = r"""
import importlib.util, json
mods = {m: importlib.util.find_spec(m) is not None
        for m in ("vllm", "lm_eval", "transformers", "torch", "compressed_tensors", "psutil",
                  "flashinfer", "conch", "humming", "fbgemm_gpu")}  # the last four: optional vLLM kernels
gpus = []
if mods["torch"]:
    import torch
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory)})
print("PROBE " + json.dumps({"modules": mods, "gpus": gpus}))
"""
_cache: dict[str, "ServeEnv"] = {}


@dataclass(frozen=True)
class ServeEnv:
    python: str
    modules: dict[str, bool] = field(default_factory=dict)
    gpus: tuple[dict, ...] = ()

    def has(self, module: str) -> bool:
        return bool(self.modules.get(module))

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def capability(self) -> str | None:
        return self.gpus[0]["capability"] if self.gpus else None

    @property
    def gpu_memory_bytes(self) -> int | None:
        return int(self.gpus[0]["memory_bytes"]) if self.gpus else None


def probe(python: str, *, refresh: bool = False, timeout_s: float = 180) -> ServeEnv:
    """Ask `python` which libraries it has and which GPUs torch sees."""
    if not refresh and python in _cache:
        return _cache[python]
    setting = STAGE_SETTING["serve"]
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s,
                             env=worker_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentMissingError("serve", python, f"anything ({type(exc).__name__}: {exc})", setting) from None
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentMissingError("serve", python, f"its probe failed ({last})", setting)
    data = json.loads(line[len("PROBE "):])
    env = ServeEnv(python=python, modules=data["modules"], gpus=tuple(data["gpus"]))
    _cache[python] = env
    return env


def choose_backend(requested: str, env: ServeEnv, device: str = "auto") -> tuple[Backend, str]:
    """(backend, device): vLLM when asked for or when `auto` finds vLLM and a GPU; else transformers.
    Raises EnvironmentMissingError naming the setting to change when the interpreter cannot do it."""
    setting = STAGE_SETTING["serve"]
    missing = [m for m in ("lm_eval", "transformers", "torch") if not env.has(m)]
    if requested == "vllm" or (requested == "auto" and device != "cpu" and env.has("vllm") and env.gpu_count):
        if not env.has("vllm"):
            raise EnvironmentMissingError("serve", env.python, "vllm", setting)
        if missing:
            raise EnvironmentMissingError("serve", env.python, ", ".join(missing), setting)
        if not env.gpu_count or device == "cpu":
            raise EnvironmentMissingError("serve", env.python, "a CUDA GPU (torch sees none) for the vllm backend",
                                          setting)
        return "vllm", "cuda"
    if missing:
        raise EnvironmentMissingError("serve", env.python, ", ".join(missing), setting)
    if device == "cuda" and not env.gpu_count:
        raise EnvironmentMissingError("serve", env.python, "a CUDA GPU (device=cuda, torch sees none)", setting)
    return "hf", ("cuda" if env.gpu_count and device != "cpu" else "cpu")


def speed_label(backend: Backend, device: str) -> str:
    """Numbers with different labels are never compared (a CPU figure says nothing about a GPU)."""
    if device == "cpu":
        return "CPU"
    return "GPU" if backend == "vllm" else "GPU (transformers)"
