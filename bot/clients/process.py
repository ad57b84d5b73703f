"""Run a worker module in the interpreter configured for its stage.

The quantize (llm-compressor) and serve (vLLM, lm-eval) libraries cannot share an interpreter, so each stage's
heavy work runs as `<python> -m bot.workers.<name> JOB.json` with this project on PYTHONPATH, tokens scrubbed
from the environment, output to a log file, and a JSON result file that the stage reads back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bot.config import PROJECT_ROOT
from bot.errors import EnvironmentMissingError
from bot.secrets import redact, scrubbed_env

STAGE_SETTING = {"quantize": "BOT_QUANTIZE_PYTHON", "serve": "BOT_SERVE_PYTHON"}
_checked: dict[tuple[str, tuple[str, ...]], bool] = {}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def exit_reason(code: int | None) -> str:
    """'exited with code 3', 'was killed (SIGKILL: out of memory?)', 'was stopped (SIGTERM)'."""
    if code is None:
        return "did not start"
    if code < 0 or code in (137, 143):
        sig = -code if code < 0 else code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGKILL:
            return f"was killed ({name}: out of memory?)"
        return f"was stopped ({name})"
    return f"exited with code {code}"


def run_marker(module: str) -> str:
    """The line that opens each worker run in its (appended) log."""
    return f"=== {module} "


def plain(text: str) -> str:
    """Text without terminal colour codes (loggers of the libraries write them into the logs)."""
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class WorkerRun:
    returncode: int
    log_path: Path
    seconds: float

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return plain(redact("\n".join(text.splitlines()[-lines:])))


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = scrubbed_env(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that sleep instead of spinning when they wait: with another job on the same cores, spinning
    # threads starve each other (SmolLM2 greedy decode on 2 shared cores: 9.8 s for 16 tokens spinning, 2.0 s
    # passive). Set OMP_WAIT_POLICY yourself to choose otherwise.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def require_modules(stage: str, python: str, modules: Iterable[str]) -> None:
    """Fail early, in one line, when the stage's interpreter lacks its libraries."""
    mods = tuple(modules)
    key = (python, mods)
    if _checked.get(key):
        return
    code = (
        "import importlib.util, sys\n"
        f"missing = [m for m in {list(mods)!r} if importlib.util.find_spec(m) is None]\n"
        "print(','.join(missing)); sys.exit(1 if missing else 0)\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, env=worker_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentMissingError(stage, python, f"anything ({exc})", STAGE_SETTING.get(stage, "")) from None
    if out.returncode != 0:
        missing = out.stdout.strip() or out.stderr.strip().splitlines()[-1:] or ["?"]
        raise EnvironmentMissingError(stage, python, str(missing if isinstance(missing, str) else missing[0]),
                                      STAGE_SETTING.get(stage, ""))
    _checked[key] = True


def run_worker(
    python: str,
    module: str,
    job: dict,
    job_path: Path,
    log_path: Path,
    *,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    on_line: Callable[[dict], None] | None = None,
    groups: "ProcessGroups | None" = None,
) -> WorkerRun:
    """Start `python -m bot.workers.<module> job_path`; JSON lines on stdout go to `on_line` (progress), everything
    else to the log. The child gets its own process group, so a timeout or Ctrl-C ends it and its children; with
    `groups`, that group is registered there while it runs (paused and ended together with the others)."""
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(job, indent=2, default=str), encoding="utf-8")
    return run_module(python, module, [str(job_path)], log_path, timeout_s=timeout_s, env=env, on_line=on_line,
                      groups=groups)


def run_module(
    python: str,
    module: str,
    args: list[str],
    log_path: Path,
    *,
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    on_line: Callable[[dict], None] | None = None,
    groups: "ProcessGroups | None" = None,
) -> WorkerRun:
    """`python -m bot.workers.<module> ARGS` as `run_worker` runs it (scrubbed environment, own process group,
    killed with the bot, output appended to `log_path`), for a worker that takes its arguments on the command line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n{run_marker(module)}{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        proc = subprocess.Popen(
            [python, "-m", f"bot.workers.{module}", *args],
            stdout=subprocess.PIPE, stderr=log, text=True, env=worker_env(env), start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        if groups is not None:
            groups.add(proc.pid)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(redact(line))
                log.flush()
                if on_line and line.startswith("{"):
                    try:
                        on_line(json.loads(line))
                    except json.JSONDecodeError:
                        pass
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    raise subprocess.TimeoutExpired(module, timeout_s)
            proc.wait(timeout=timeout_s)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            _kill_group(proc)
            raise
        finally:
            if groups is not None:
                groups.discard(proc.pid)
    return WorkerRun(proc.returncode, log_path, time.monotonic() - started)


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a `preexec_fn` that makes the worker receive SIGKILL when the bot process dies, however it dies
    (SIGKILL included). The worker runs in its own session, so without this a killed bot would leave it running,
    still writing into the run directory that the rerun is about to use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, in the parent, not after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the bot died between fork and prctl
            os._exit(1)

    return preexec


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)  # a paused group (ProcessGroups.pause) acts on SIGTERM once continued
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def current_python() -> str:
    return sys.executable


class ProcessGroups:
    """The process groups of running workers (quantize workers in `bot publish`), paused together while a
    measurement needs the device to itself and ended together when the bot stops.

    `pause()` stops every group (SIGSTOP; GPU work already queued drains, nothing new is launched) and any group
    started while paused; `resume()` continues them (SIGCONT) once every pause is matched. A pause left open
    longer than `max_pause_s` is resumed by a timer, so a measurement that hangs cannot hold the workers forever.
    `on_change(paused)` is told each transition (the run's timeline)."""

    def __init__(self, max_pause_s: float = 900.0, on_change: Callable[[bool], None] | None = None) -> None:
        self.max_pause_s, self.on_change = max_pause_s, on_change
        self._pids: set[int] = set()
        self._depth = 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
            if self._depth:
                _signal_group(pid, signal.SIGSTOP)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    @property
    def paused(self) -> bool:
        return self._depth > 0

    def pause(self) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            for pid in self._pids:
                _signal_group(pid, signal.SIGSTOP)
            self._timer = threading.Timer(self.max_pause_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
        if self.on_change is not None:
            self.on_change(True)

    def resume(self) -> None:
        with self._lock:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth:
                return
            self._continue()
        if self.on_change is not None:
            self.on_change(False)

    def _expire(self) -> None:
        with self._lock:
            if not self._depth:
                return
            self._depth = 0
            self._continue()
        if self.on_change is not None:
            self.on_change(False)

    def _continue(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for pid in self._pids:
            _signal_group(pid, signal.SIGCONT)

    def terminate(self) -> None:
        """End every group (SIGTERM, continued if paused); the threads running them see the workers exit."""
        with self._lock:
            self._depth = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for pid in self._pids:
                _signal_group(pid, signal.SIGTERM)
                _signal_group(pid, signal.SIGCONT)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- GPUs (nvidia-smi)

_GPU_QUERY = "index,name,memory.total,memory.used,memory.free,utilization.gpu"
MIB = 2**20


@dataclass(frozen=True)
class GpuReading:
    """One GPU as nvidia-smi reports it now (memory in bytes; utilization in percent, None when not reported)."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization_pct: float | None


def parse_gpu_query(text: str) -> list[GpuReading]:
    """`nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,utilization.gpu
    --format=csv,noheader,nounits` output (MiB and %), one GPU a line; lines that do not parse are left out."""
    out: list[GpuReading] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            continue
        try:
            index, total, used, free = int(parts[0]), float(parts[2]), float(parts[3]), float(parts[4])
        except ValueError:
            continue
        try:
            util: float | None = float(parts[5])
        except ValueError:  # "[N/A]" (MIG, some virtual GPUs)
            util = None
        out.append(GpuReading(index, parts[1], int(total * MIB), int(used * MIB), int(free * MIB), util))
    return out


def query_gpus(timeout_s: float = 10.0) -> list[GpuReading] | None:
    """The GPUs of this host now, from nvidia-smi; None when there is no nvidia-smi or it fails (no GPU, no
    driver): the caller then has no reading at all, not a reading of zero."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={_GPU_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return parse_gpu_query(out.stdout) or None
