"""Shared CLI pieces: settings from the command line. Printing lives in bot.cli._output and bot.cli._progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from bot.cli._output import console, out  # noqa: F401 - the consoles, for the commands that import them here
from bot.config import LIMIT_VALUES, WHOLE_TASK, Settings, SettingsLayers, parse_limit
from bot.errors import ConfigError


def cli_layer(**cli: Any) -> dict[str, Any]:
    """Flags as a settings layer: `a__b=v` nests as {"a": {"b": v}}; None means 'not given' and is left out."""
    nested: dict[str, Any] = {}
    for key, value in cli.items():
        if value is None:
            continue
        node = nested
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def settings_layers(watchlist: Path | None = None, *, model: str | None = None,
                    profile: tuple[str, dict[str, Any]] | None = None, **cli: Any) -> SettingsLayers:
    """The inputs of the one merge (bot.config): the watchlist's `defaults:`, then the profile: the watch entry
    covering `model` in that watchlist, or `profile` (name, layer) such as the demo's; then env, then these flags."""
    layers = SettingsLayers(cli=cli_layer(**cli))
    if watchlist is not None:
        from bot.watchlist import load_watchlist

        layers = load_watchlist(watchlist).layers(cli=layers.cli, model_id=model)
    if profile is not None:
        layers = layers.with_profile(profile[1], profile[0])
    return layers


def settings_from_cli(watchlist: Path | None = None, *, model: str | None = None,
                      profile: tuple[str, dict[str, Any]] | None = None, **cli: Any) -> Settings:
    """Settings from the layers above, merged once."""
    return settings_layers(watchlist, model=model, profile=profile, **cli).merge()


def parse_limit_option(value: str | None, flag: str = "--limit") -> int | Literal["all"] | None:
    """A `--limit` flag's text: None (not given), a positive integer or 'all'; else one ConfigError (exit 2)."""
    if value is None:
        return None
    try:
        return parse_limit(value)
    except ValueError:
        raise ConfigError(f"{flag} must be {LIMIT_VALUES} (got {value!r})",
                          hint=f"e.g. {flag} 100, or {flag} {WHOLE_TASK}") from None
