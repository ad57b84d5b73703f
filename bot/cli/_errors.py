"""Turn errors into one line on stderr and an exit code; tracebacks only with BOT_DEBUG=1 (tokens masked there too).
SIGTERM unwinds like Ctrl-C (exit 143): worker process groups end, the run's lock is released."""

from __future__ import annotations

import signal
import sys
import traceback
from contextlib import contextmanager
from typing import Iterator

import click
import typer

from bot.errors import BotError
from bot.secrets import redact


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the bot is, so it unwinds like Ctrl-C: worker process groups are ended, manifests
    record the interruption and the run's lock is released."""


_signalled: list[int] = []  # SIGTERM seen (typer reports any KeyboardInterrupt as a returned 130 only)


def _on_sigterm(signum: int, frame: object) -> None:
    _signalled.append(signum)
    raise Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_app(app: typer.Typer, argv: list[str], debug: bool = False) -> int:
    with _sigterm_unwinds():
        return _run_app(app, argv, debug)


def _traceback(exc: BaseException) -> None:
    """BOT_DEBUG=1: the whole traceback, chained library errors included, with tokens masked (a server may echo
    what it was sent)."""
    sys.stderr.write(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))


def _interrupted() -> int:
    if _signalled:
        sys.stderr.write("terminated: rerun the same command to resume\n")
        return 143
    sys.stderr.write("interrupted: rerun the same command to resume\n")
    return 130


def _run_app(app: typer.Typer, argv: list[str], debug: bool = False) -> int:
    _signalled.clear()
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            # typer turns KeyboardInterrupt (Ctrl-C, and SIGTERM through Terminated) into a returned 130
            return _interrupted() if rv == 130 else rv
    except BotError as exc:
        if debug:
            _traceback(exc)
        sys.stderr.write(f"error: {redact(exc.one_line())}\n")
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted()
        sys.stderr.write("aborted\n")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:  # Terminated included
        return _interrupted()
    except Exception as exc:  # an unexpected bug: one line, and how to see more
        if debug:
            _traceback(exc)
            return 1
        sys.stderr.write(f"error: {redact(type(exc).__name__ + ': ' + str(exc))} (hint: rerun with BOT_DEBUG=1 for the traceback)\n")
        return 1
    return 0
