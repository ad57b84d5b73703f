"""Keep tokens out of everything the bot writes: logs, manifests, cards, exceptions."""

from __future__ import annotations

import os
import re

_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
_TOKEN_PATTERNS = (
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)[^\s'\"]+"),
)
MASK = "***"


def known_secrets() -> list[str]:
    """Token values from the environment, longest first (so a token containing another is masked whole)."""
    values = {os.environ.get(name, "") for name in _TOKEN_ENV}
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def redact(text: str) -> str:
    """Mask every known token value and anything shaped like a Hub or GitHub token."""
    for value in known_secrets():
        text = text.replace(value, MASK)
    for pattern in _TOKEN_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


def scrubbed_env(extra: dict[str, str] | None = None, *, keep_tokens: bool = False) -> dict[str, str]:
    """Environment for child processes. Quantize/validate workers never need a token, so they get none."""
    env = dict(os.environ)
    if not keep_tokens:
        for name in _TOKEN_ENV:
            env.pop(name, None)
    if extra:
        env.update(extra)
    return env
