"""Typed errors. Each carries data and a one-line message that names the next step (`hint`).

The CLI turns any `BotError` into one line on stderr and a non-zero exit code (see `bot.cli._errors`).
"""

from __future__ import annotations


class BotError(Exception):
    """Base class. `exit_code` is what the CLI returns; `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = self.message.replace("\n", " ").strip()
        if self.hint:
            text = f"{text} (hint: {self.hint})"
        return text


class ConfigError(BotError, ValueError):
    """Bad settings, watchlist or recipe override. Carries the file and line when known."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path
        self.line = line


class UnknownRecipeError(ConfigError):
    def __init__(self, name: str, available: list[str]):
        import difflib

        close = difflib.get_close_matches(name, available, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        super().__init__(
            f"unknown recipe '{name}'",
            hint=f"{hint}available: {', '.join(available)}",
        )
        self.name = name


class ModelError(BotError, ValueError):
    """The model cannot be used: not found, not a causal LM, no safetensors, remote code, too large."""

    exit_code = 3

    def __init__(self, message: str, *, model: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.model = model


class EnvironmentMissingError(BotError, RuntimeError):
    """A stage's interpreter lacks the libraries it needs (quantize or serve environment)."""

    exit_code = 4

    def __init__(self, stage: str, python: str, missing: str, setting: str):
        super().__init__(
            f"the {stage} environment ({python}) cannot import {missing}",
            hint=f"install it with `pip install 'bot[{stage}]'` in that interpreter, or point {setting} at one that has it",
        )
        self.stage = stage
        self.python = python
        self.missing = missing


class StageError(BotError, RuntimeError):
    """A stage ran and failed; its manifest records the error and the run can be resumed."""

    exit_code = 5

    def __init__(self, stage: str, message: str, *, hint: str | None = None):
        super().__init__(f"{stage} failed: {message}", hint=hint)
        self.stage = stage


class HubError(BotError, ConnectionError):
    """The Hub (or the local target) refused or failed a request."""

    exit_code = 6

    def __init__(self, message: str, *, repo_id: str | None = None, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.repo_id = repo_id
        self.status = status


class HubAuthError(HubError, PermissionError):
    """401/403: never retried."""


class GitHubError(BotError, ConnectionError):
    exit_code = 7


class LockedError(BotError, RuntimeError):
    """Another bot holds the lock for this model."""

    exit_code = 8


class GateRejected(BotError):
    """A variant failed the quality gate (only raised when publishing it was asked for explicitly)."""

    exit_code = 9
