"""The optional observer of the local Hub's requests.

The product runs the server without one. Tests pass a `RequestHooks` object (tests/localhub_support) that sees
every request and may make it fail: answer with an error or drop the connection, before or after handling.
The record handed to `seen` never holds the Authorization or Cookie header; it carries the user *name* the
server resolved instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

_MAX_STR = 120


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # without Authorization and Cookie
    body: Any  # JSON summary: long strings cut, NDJSON commits as {"header": ..., "ops": [{key, path}]}
    status: int | None  # None: the connection was dropped on purpose
    user: str | None = None


@dataclass(frozen=True)
class Intercept:
    """What a hook makes of one request: an error answer (`status`), or with `drop` a connection closed without
    one; `after_handling` (with `drop`): the request takes effect first, then its answer is lost."""

    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    drop: bool = False
    after_handling: bool = False


class RequestHooks(Protocol):
    def intercept(self, method: str, path: str) -> Intercept | None:
        """Called before each request is handled; None: handle it normally."""

    def seen(self, request: LoggedRequest) -> None:
        """Called once each request is answered (or dropped)."""


def summarize(value: Any) -> Any:
    """Shrink a JSON body for the record: long strings (base64 contents, samples) become their length."""
    if isinstance(value, dict):
        return {k: summarize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summarize(v) for v in value]
    if isinstance(value, str) and len(value) > _MAX_STR:
        return f"<{len(value)} chars>"
    return value
