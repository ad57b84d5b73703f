"""Turn errors into one line on stderr and an exit code; tracebacks only with BOT_DEBUG=1."""

from __future__ import annotations

import sys

import click
import typer

from bot.errors import BotError
from bot.secrets import redact


def run_app(app: typer.Typer, argv: list[str], debug: bool = False) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except BotError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {redact(exc.one_line())}\n")
        return exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: rerun the same command to resume\n")
        return 130
    except Exception as exc:  # an unexpected bug: one line, and how to see more
        if debug:
            raise
        sys.stderr.write(f"error: {redact(type(exc).__name__ + ': ' + str(exc))} (hint: rerun with BOT_DEBUG=1 for the traceback)\n")
        return 1
    return 0
