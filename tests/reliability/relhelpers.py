"""Helpers of the reliability tests: real `bot` subprocesses, a seeded local Hub, polling, secret scanning."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Planted secrets: token-shaped, so both the exact-value and the pattern redaction are exercised.
HF_SECRET = "hf_" + "PLANTEDsecret0123456789abcdef"
GH_SECRET = "ghp_" + "PLANTEDgithub0123456789abcdefABCD"
SECRETS = (HF_SECRET, GH_SECRET)

BASE_REPO = "acme/tiny-llama"
RECIPES = ["fp8-dynamic", "w8a16-rtn"]  # both data-free: the quickest two variants
RECIPES_FILE = HERE / "recipes.yaml"  # adds w8a16-rtn (W8A16 round-to-nearest) to the six built-ins
NAMESPACE = "bot-local"
# The tiny base has random weights: its multiple-choice answers sit at chance (the paired statistics leave such a
# task out), so the fast evaluation is the perplexity task, which always gives a paired interval.
FAST_EVAL = ["--tasks", "bot_wikitext_mini", "--limit", "2"]
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "HF_ENDPOINT")


def repo_for(variant: str, namespace: str = NAMESPACE, base: str = "tiny-llama") -> str:
    suffix = {"fp8-dynamic": "-FP8-Dynamic", "w8a16-rtn": "-W8A16"}[variant]
    return f"{namespace}/{base}{suffix}"


def safetensors_bytes(params: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "BF16", "shape": [params], "data_offsets": [0, 2 * params]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes(2 * params)


def model_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(model_dir).iterdir()) if p.is_file()}


def bot_env(tmp: Path, *, hub_url: str | None = None, token: str | None = HF_SECRET, **extra: str) -> dict[str, str]:
    """Environment of a `bot` subprocess: no inherited token or endpoint, fast bounded Hub retries, a wide
    console (rich wraps at 80 columns otherwise)."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENV and not k.startswith("BOT_")}
    env.update(HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_DATASETS_OFFLINE="1", COLUMNS="200", PYTHONUNBUFFERED="1",
               BOT_HUB_RETRIES="3", BOT_HUB_RETRY_BASE_S="0.01", BOT_HUB_RETRY_MAX_S="0.05")
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    if token:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


class BotProc:
    """`python -m bot ARGS` with stdout/stderr in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path, name: str) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.args, self.name = args, name
        self.out_path, self.err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=ROOT, env=env, stdout=self._out,
                                     stderr=self._err, text=True)
        self.pid = self.proc.pid
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name}: still running after {timeout}s\n{self.tail()}") from None
        finally:
            for fh in (self._out, self._err):
                if not fh.closed:
                    fh.flush()
        self._out.close()
        self._err.close()
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(120)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def tail(self, n: int = 40) -> str:
        return "\n".join((self.stdout + self.stderr).splitlines()[-n:])


def run_bot(args: list[str], env: dict[str, str], logs: Path, name: str, timeout: float = 600) -> BotProc:
    proc = BotProc(args, env, logs, name)
    proc.wait(timeout)
    return proc


def wait_until(pred: Callable[[], Any], *, proc: BotProc | None = None, timeout: float = 120,
               interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `pred` until it is truthy; fail if `proc` exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = pred()
            if value:
                return value
            raise AssertionError(f"{proc.name} exited ({proc.poll()}) before {what}:\n{proc.tail()}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def status_of(manifest: dict[str, Any] | None, *keys: str) -> str | None:
    node: Any = manifest
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def worker_pids(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker` (e.g. a worker's job file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if marker in cmd and "bot.workers" in cmd and "Z" not in state.split()[1:2]:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state


def count_markers(path: Path, marker: str) -> int:
    try:
        return path.read_text(errors="replace").count(marker)
    except OSError:
        return 0


def link_copy_run(run_root: Path, runs_dir: Path, variants: Iterable[str]) -> Path:
    """A copy of a run directory (base + the given variants) under another runs dir, hard-linked: stages
    replace files by rename, so the original is never modified through the links."""
    dest = runs_dir / run_root.name
    shutil.copytree(run_root / "base", dest / "base", copy_function=os.link,
                    ignore=shutil.ignore_patterns("model"))  # the base snapshot is read where the manifest points
    for v in variants:
        shutil.copytree(run_root / v, dest / v, copy_function=os.link,
                        ignore=shutil.ignore_patterns("card", "card.partial", "*.old"))
    return dest


def edit_json(path: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    """Replace a manifest with an edited copy (a new inode: hard-linked originals stay as they were)."""
    data = json.loads(path.read_text())
    fn(data)
    tmp = path.with_name(path.name + ".edit")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


@dataclass
class Leak:
    where: str
    secret: str


def scan_for_secrets(paths: Iterable[Path], texts: dict[str, str] | None = None,
                     secrets: tuple[str, ...] = SECRETS) -> tuple[list[Leak], int]:
    """Every file under `paths` (bytes, so SQLite pages and binaries count) and the given texts. Returns the
    leaks and how many files were read."""
    leaks: list[Leak] = []
    files = 0
    needles = [(s, s.encode()) for s in secrets]
    for root in paths:
        root = Path(root)
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            files += 1
            for text, raw in needles:
                if raw in data:
                    leaks.append(Leak(str(path), text))
    for name, text in (texts or {}).items():
        for secret in secrets:
            if secret in text:
                leaks.append(Leak(name, secret))
    return leaks, files


@dataclass
class Observations:
    """What the resume chain saw, step by step, for the tests to assert on."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, step: str) -> dict[str, Any]:
        return self.steps[step]


def run_inproc(monkeypatch, capsys, env: dict[str, str], args: list[str]) -> tuple[int, str, str]:
    """`bot ARGS` in this process (fast: no interpreter start) with exactly `env`'s token, endpoint and BOT_*
    settings. Returns (exit code, stdout, stderr)."""
    import os as _os

    from bot.cli import main

    for key in list(_os.environ):
        if key in TOKEN_ENV or key.startswith("BOT_"):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key in TOKEN_ENV or key.startswith("BOT_") or key == "COLUMNS":
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err
