"""Request log and fault injection for the local Hub: the `RequestHooks` object the tests hand to
`bot.localhub.LocalHub` (see tests/localhub_support/__init__.py).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from bot.localhub.hooks import Intercept, LoggedRequest


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Entries, optionally filtered by method and a regex searched in the path."""
        with self._lock:
            found = list(self._entries)
        if method is not None:
            found = [e for e in found if e.method == method.upper()]
        if path is not None:
            rx = re.compile(path)
            found = [e for e in found if rx.search(e.path)]
        return found

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.entries(method, path))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class Fault:
    """One queued misbehaviour. `status` None with `drop` True closes the connection without an answer."""

    pattern: re.Pattern[str]
    method: str | None
    remaining: int | None  # None: forever
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    after_handling: bool = False  # with drop: handle the request first, then drop (the answer is lost)
    message: str = ""
    hook: Callable[[], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.pattern.search(path))


class FaultInjector:
    """Queue faults by path regex (searched) and method; each fires `times` times (None: until cleared)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def _add(self, path: str, method: str | None, times: int | None, **kw: Any) -> Fault:
        fault = Fault(re.compile(path), method.upper() if method else None, times, **kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, status: int, *, path: str = ".*", method: str | None = None, times: int | None = 1,
             message: str = "injected failure", retry_after: float | None = None) -> Fault:
        return self._add(path, method, times, status=status, message=message, retry_after=retry_after)

    def rate_limit(self, *, times: int = 1, retry_after: float = 1, path: str = ".*",
                   method: str | None = None) -> Fault:
        return self.fail(429, path=path, method=method, times=times, message="rate limited", retry_after=retry_after)

    def server_error(self, status: int = 503, *, times: int = 1, path: str = ".*", method: str | None = None) -> Fault:
        return self.fail(status, path=path, method=method, times=times, message="service unavailable")

    def drop(self, *, times: int = 1, path: str = ".*", method: str | None = None,
             after_handling: bool = False) -> Fault:
        """Close the connection without an answer; `after_handling`: once the request has taken effect."""
        return self._add(path, method, times, drop=True, after_handling=after_handling)

    def deny(self, status: int = 401, *, path: str = ".*", method: str | None = None,
             times: int | None = None) -> Fault:
        """401 answers like the Hub for a bad token; 403 like a token without write permission."""
        message = "Invalid credentials in Authorization header" if status == 401 else "You don't have the rights"
        return self.fail(status, path=path, method=method, times=times, message=message)

    def before(self, fn: Callable[[], None], *, path: str = ".*", method: str | None = None, times: int = 1) -> Fault:
        """Run `fn` before handling a matching request (e.g. a concurrent commit), then answer normally."""
        return self._add(path, method, times, hook=fn)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def intercept(self, method: str, path: str) -> Intercept | None:
        """The first matching fault as the server's `Intercept`; a `before` hook runs here and the request is
        then answered normally."""
        fault = self.take(method, path)
        if fault is None:
            return None
        if fault.hook is not None:
            fault.hook()
            return None
        return Intercept(fault.status, fault.message, fault.retry_after, fault.drop, fault.after_handling)

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault, consumed once."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None
