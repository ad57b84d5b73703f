"""The `bot` command. This file only builds the app and registers the command modules."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from bot import __version__

app = typer.Typer(
    name="bot",
    help="Quantize Hub models (six llm-compressor recipes), validate them in vLLM + lm-eval, publish them with model cards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per command; each defines `register(app)`.
COMMANDS = ("recipes", "quantize", "validate", "card", "publish", "watch", "status")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """bot: a Hugging Face Hub quantization and publishing bot."""


for _name in COMMANDS:
    importlib.import_module(f"bot.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    from bot.cli._errors import run_app

    return run_app(app, argv if argv is not None else sys.argv[1:], debug=bool(os.environ.get("BOT_DEBUG")))
