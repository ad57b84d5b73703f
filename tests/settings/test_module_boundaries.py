"""The layering, read from the source: process I/O only in bot/clients (and the workers it starts), the CLI reaches
the clients only through the stages, and no code patches a merged `Settings` (bot.config merges once)."""

from __future__ import annotations

import ast
from pathlib import Path

BOT = Path(__file__).resolve().parents[2] / "bot"
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def _modules(*skip: str) -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(BOT.rglob("*.py")):
        rel = path.relative_to(BOT.parent).as_posix()
        if not any(rel.startswith(s) for s in skip):
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), rel)))
    return out


def test_only_the_clients_start_processes() -> None:
    found = []
    for rel, tree in _modules("bot/clients/", "bot/workers/"):
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("subprocess", "os")
                    and node.func.attr in PROCESS_CALLS | {"system", "popen", "execv", "spawnv"}):
                found.append(f"{rel}:{node.lineno}: {node.func.value.id}.{node.func.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "subprocess":
                found += [f"{rel}:{node.lineno}: from subprocess import {a.name}" for a in node.names
                          if a.name in PROCESS_CALLS]
    assert found == [], "process I/O outside bot/clients: " + "; ".join(found)


def test_the_cli_reaches_the_clients_through_the_stages() -> None:
    found = []
    for rel, tree in _modules():
        if not rel.startswith("bot/cli/"):
            continue
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{rel}:{node.lineno}: {n}" for n in names if n == "bot.clients" or n.startswith("bot.clients.")]
    assert found == [], "bot/cli imports bot.clients: " + "; ".join(found)


def test_no_code_patches_merged_settings() -> None:
    found = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "model_copy":
                receiver = ast.unparse(node.func.value)
                if "settings" in receiver.lower() or receiver.endswith((".validate", ".validate_", ".gate")):
                    found.append(f"{rel}:{node.lineno}: {receiver}.model_copy(...)")
    assert found == [], "settings patched after load_settings: " + "; ".join(found)
