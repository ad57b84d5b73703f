"""Checks on the checkpoint a card describes: tokenizer, chat template, generation config, licence files.

The chat template is rendered with jinja2 the way transformers renders it (sandboxed, trim_blocks/lstrip_blocks,
`raise_exception`, a JSON `tojson`), on a two-turn conversation, for the base and the variant, each with its own
special tokens: the two strings must be identical. No transformers import, so it runs in the light environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
CONVERSATION = (
    {"role": "user", "content": "Hello! Who are you?"},
    {"role": "assistant", "content": "I am a helpful assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
)
_FIXED_NOW = datetime(2026, 1, 1, 12, 0, 0)


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)  # the card stage fails on these
    notes: list[str] = field(default_factory=list)  # recorded, not fatal
    has_chat_template: bool = False


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def chat_template(model_dir: Path) -> str | None:
    """The template transformers would use: chat_template.jinja, then chat_template.json, then
    tokenizer_config.json (a string, or a list of named templates of which "default" is used)."""
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        value = (_read_json(model_dir / name) or {}).get("chat_template")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            if isinstance(named.get("default"), str):
                return named["default"]
    return None


def _token(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return "" if value is None else str(value)


def special_tokens(model_dir: Path) -> dict[str, str]:
    cfg = _read_json(model_dir / "tokenizer_config.json") or {}
    smap = _read_json(model_dir / "special_tokens_map.json") or {}
    return {name: _token(cfg.get(name, smap.get(name))) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render_chat(template: str, tokens: dict[str, str]) -> str:
    """Render the two-turn conversation with a generation prompt."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: _FIXED_NOW.strftime(fmt)
    compiled = env.from_string(template)
    return compiled.render(messages=[dict(m) for m in CONVERSATION], add_generation_prompt=True, **tokens)


def _render_or_error(template: str, tokens: dict[str, str]) -> tuple[str | None, str | None]:
    try:
        return render_chat(template, tokens), None
    except jinja2.exceptions.TemplateError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _first_difference(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, i - 12)
    return f"first difference at character {i}: base {a[start:i + 30]!r} vs variant {b[start:i + 30]!r}"


def check_checkpoint(model_dir: Path, base_dir: Path | None, license_files: list[str]) -> CheckResult:
    """Everything a user of the published checkpoint needs besides the weights."""
    result = CheckResult()
    if not (model_dir / "config.json").is_file():
        result.errors.append("checkpoint has no config.json")
    if not (model_dir / "tokenizer_config.json").is_file():
        result.errors.append("tokenizer_config.json missing")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        result.errors.append(f"no tokenizer file ({' or '.join(TOKENIZER_FILES)})")
    missing = [name for name in license_files if not (model_dir / name).is_file()]
    if missing:
        result.errors.append(f"the base's licence files are missing: {', '.join(missing)}")
    base = base_dir if base_dir is not None and base_dir.is_dir() else None
    if not (model_dir / "generation_config.json").is_file():
        if base is not None and (base / "generation_config.json").is_file():
            result.errors.append("generation_config.json missing (the base has one)")
        else:
            result.notes.append("no generation_config.json (the base has none either): vLLM uses its defaults")
    template = chat_template(model_dir)
    result.has_chat_template = template is not None
    if base is None:
        result.notes.append("base snapshot not available: chat template not compared with the base")
        return result
    base_template = chat_template(base)
    if base_template is None and template is None:
        result.notes.append("no chat template (the base has none either)")
        return result
    if template is None:
        result.errors.append("chat template missing (the base has one)")
        return result
    if base_template is None:
        result.notes.append("the checkpoint has a chat template but the base has none")
        return result
    ours, our_err = _render_or_error(template, special_tokens(model_dir))
    theirs, their_err = _render_or_error(base_template, special_tokens(base))
    if our_err or their_err:
        if our_err == their_err:
            result.notes.append(f"chat template does not render a two-turn conversation, same as the base ({our_err})")
        else:
            result.errors.append(f"chat template renders differently: base {their_err or 'ok'}, variant {our_err or 'ok'}")
    elif ours != theirs:
        assert ours is not None and theirs is not None
        result.errors.append("chat template renders a two-turn conversation differently from the base: "
                             + _first_difference(theirs, ours))
    else:
        result.notes.append("chat template renders a two-turn conversation identically to the base")
    return result
