"""The watchlist (`watchlist.yaml`): which authors and models the watcher follows, and with which recipes.

```yaml
defaults: {namespace: my-org}          # the watchlist layer of bot.config.load_settings
watch:
  - author: allenai
    include: ["Olmo-3*"]
    recipes: [w4a16-gptq, fp8-dynamic]
```
`load_watchlist(path)` validates it (unknown keys fail) and reports problems as `file:line: what (hint)`: the YAML
is composed into nodes first, so every pydantic error location maps back to the line it came from.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bot.config import Settings, SettingsLayers
from bot.errors import ConfigError, UnknownRecipeError

DEFAULT_RECIPES = ("w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MODEL_ID = r"^([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$"


def known_recipe_ids(recipes_file: Path | None = None) -> list[str]:
    """Recipe ids from `bot.recipes` (built-ins plus the user's file), or the six built-in names."""
    try:
        from bot.recipes import load_recipes
    except ImportError:
        return list(DEFAULT_RECIPES)
    return load_recipes(recipes_file).ids()


def _check_recipes(value: list[str] | None, info: ValidationInfo) -> list[str] | None:
    if value is None:
        return None
    available = list((info.context or {}).get("recipes") or DEFAULT_RECIPES)
    for index, name in enumerate(value):
        if name not in available:
            hint = UnknownRecipeError(name, available).hint or ""
            raise PydanticCustomError(
                "unknown_recipe", "unknown recipe '{name}'", {"name": name, "hint": hint, "index": index}
            )
    if len(set(value)) != len(value):
        raise PydanticCustomError("duplicate_recipe", "a recipe is listed twice", {"hint": "list each recipe once"})
    return value


class WatchEntry(BaseModel):
    """One followed author (all its new models, filtered) or an explicit list of models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    author: str | None = Field(default=None, pattern=_NAME, description="Hub user or organisation to follow")
    models: list[str] | None = Field(default=None, description="explicit ids; 'name' alone means author/name")
    include: list[str] | None = Field(default=None, description="fnmatch globs on the model name or id")
    exclude: list[str] = Field(default_factory=list, description="fnmatch globs; a match is never taken")
    architectures: list[str] | None = Field(default=None, description="allowed config.architectures (globs)")
    max_params_b: float | None = Field(default=None, gt=0, description="largest model, billions of parameters")
    recipes: list[str] | None = Field(default=None, min_length=1, description="None: settings.recipes, else all")
    min_age_hours: float = Field(default=0, ge=0, description="wait until the repo is this old (hours)")
    min_downloads: int = Field(default=0, ge=0)
    created_after: date | None = Field(default=None, description="ignore models created before this day")
    trust_remote_code: bool = False
    namespace: str | None = Field(default=None, pattern=_NAME)
    repo_name: str | None = None
    private: bool | None = None
    licenses_allowed: list[str] | None = None
    licenses_denied: list[str] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: list[str] | None) -> list[str] | None:
        import re

        for model_id in value or []:
            if not re.match(_MODEL_ID, model_id):
                raise PydanticCustomError(
                    "model_id", "'{model}' is not a model id", {"model": model_id, "hint": "write org/name"}
                )
        return value

    @field_validator("recipes")
    @classmethod
    def _check_recipe_names(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        return _check_recipes(value, info)

    @field_validator("repo_name")
    @classmethod
    def _check_repo_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format(namespace="n", base_name="b", suffix="-S", recipe="r")
            except (KeyError, IndexError) as exc:
                raise PydanticCustomError(
                    "repo_name", "unknown placeholder {bad} in repo_name",
                    {"bad": str(exc), "hint": "use {namespace}, {base_name}, {suffix} and {recipe} only"},
                ) from None
        return value

    @model_validator(mode="after")
    def _author_or_models(self) -> "WatchEntry":
        if self.author is None and not self.models:
            raise PydanticCustomError(
                "entry_target", "an entry needs `author:` or `models:`", {"hint": "add `author: <org>` or a `models:` list"}
            )
        if self.author is None and any("/" not in m for m in self.models or []):
            raise PydanticCustomError(
                "model_id", "model ids without an org need `author:`", {"hint": "write org/name, or add `author:`"}
            )
        return self

    # ---------------------------------------------------------------- queries

    @property
    def label(self) -> str:
        return self.author or ", ".join(self.models or [])

    def model_ids(self) -> list[str]:
        """The explicit ids, each as org/name."""
        return [m if "/" in m else f"{self.author}/{m}" for m in self.models or []]

    def covers(self, model_id: str) -> bool:
        """Whether this entry takes `model_id` (author or explicit list, then include/exclude globs)."""
        if self.models is not None:
            if model_id not in self.model_ids():
                return False
        elif self.author is None or model_id.split("/", 1)[0].lower() != self.author.lower():
            return False
        return self.name_allowed(model_id)

    def name_allowed(self, model_id: str) -> bool:
        def hit(patterns: Sequence[str]) -> bool:
            name = model_id.split("/")[-1].lower()
            return any(fnmatch.fnmatchcase(name, p.lower()) or fnmatch.fnmatchcase(model_id.lower(), p.lower())
                       for p in patterns)

        if self.exclude and hit(self.exclude):
            return False
        return self.include is None or hit(self.include)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Watchlist(BaseModel):
    """The whole file: `defaults:` (settings layer) and `watch:` (entries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, Any] = Field(default_factory=dict)
    watch: list[WatchEntry] = Field(min_length=1)
    _source: str = PrivateAttr(default="watchlist.yaml")

    @property
    def source(self) -> str:
        """The file it was read from (for messages)."""
        return self._source

    @field_validator("defaults")
    @classmethod
    def _check_defaults(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            Settings.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise PydanticCustomError("settings", "{loc}: {msg}", {"loc": loc, "msg": err["msg"]}) from None
        try:
            _check_recipes(value.get("recipes"), info)
        except PydanticCustomError as exc:
            ctx = dict(exc.context or {})
            ctx["path"] = ["recipes", ctx.pop("index", 0)]
            raise PydanticCustomError(exc.type, exc.message_template, ctx) from None
        return value

    def layers(self, cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
               model_id: str | None = None) -> SettingsLayers:
        """The merge's inputs: this file's `defaults:`, the entry covering `model_id` (if any), env and CLI."""
        base = SettingsLayers(watchlist_defaults=dict(self.defaults), cli=dict(cli or {}), environ=environ,
                              source=self.source)
        return entry_layers(base, self.entry_for(model_id), model_id) if model_id else base

    def settings(self, cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                 model_id: str | None = None) -> Settings:
        """defaults < watchlist `defaults:` < `model_id`'s entry < environment < CLI, merged once by bot.config."""
        return self.layers(cli, environ, model_id).merge()

    def entry_for(self, model_id: str) -> WatchEntry | None:
        """The first entry that takes `model_id` (explicit lists first), or None."""
        ordered = [e for e in self.watch if e.models is not None] + [e for e in self.watch if e.models is None]
        return next((e for e in ordered if e.covers(model_id)), None)

    def listed_authors(self) -> dict[str, list[WatchEntry]]:
        """Authors to list (entries without explicit models), each with its entries in file order."""
        groups: dict[str, list[WatchEntry]] = {}
        for entry in self.watch:
            if entry.models is None and entry.author is not None:
                groups.setdefault(entry.author, []).append(entry)
        return groups


def group_fingerprint(entries: Sequence[WatchEntry]) -> str:
    """Changes when any entry of an author changes: the watcher then lists that author from the start."""
    return hashlib.sha256(json.dumps([e.fingerprint() for e in entries]).encode()).hexdigest()[:16]


def recipes_for(entry: WatchEntry | None, settings: Settings, available: Sequence[str]) -> tuple[str, ...]:
    """The entry's recipes, else the settings' recipes, else every known recipe."""
    if entry is not None and entry.recipes is not None:
        return tuple(entry.recipes)
    if settings.recipes is not None:
        return tuple(settings.recipes)
    return tuple(available)


def entry_profile(entry: WatchEntry | None, model_id: str | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings layer of a watch entry (the profile of `bot.config.load_settings`: above the watchlist's
    `defaults:`, below the environment and the command line): its namespace, repo_name, private and max_params_b;
    `trust_remote_code: true` adds the model (or the author) to the defaults' list; `licenses_denied` adds to the
    defaults' `license_deny`."""
    if entry is None:
        return {}
    layer: dict[str, Any] = {key: getattr(entry, key) for key in ("namespace", "repo_name", "private", "max_params_b")
                             if getattr(entry, key) is not None}
    if entry.trust_remote_code and (model_id or entry.author):
        allowed = [*defaults.get("trust_remote_code", []), model_id or entry.author]
        layer["trust_remote_code"] = list(dict.fromkeys(allowed))
    if entry.licenses_denied:
        layer["license_deny"] = list(dict.fromkeys([*defaults.get("license_deny", []), *entry.licenses_denied]))
    return layer


def entry_layers(layers: SettingsLayers, entry: WatchEntry | None, model_id: str | None) -> SettingsLayers:
    """`layers` with the entry's profile (see `entry_profile`); unchanged without an entry."""
    if entry is None:
        return layers
    return layers.with_profile(entry_profile(entry, model_id, layers.watchlist_defaults),
                               f"{layers.source}: watch entry {entry.label}")


# ---------------------------------------------------------------- loading with line numbers


def _mapping_get(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def line_of(root: yaml.Node, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest node along a pydantic error location (a missing key: its parent)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            hit = _mapping_get(node, part)
            if hit is None:
                continue  # a missing key, or a pydantic tag such as 'list[str]'
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _loc_text(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    if loc and loc[0] == "defaults":
        model: type[BaseModel] = Settings
        for part in loc[1:-1]:
            if not isinstance(part, str):
                continue
            field = model.model_fields.get(part) or model.model_fields.get(f"{part}_")
            sub = field.annotation if field else None
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                model = sub
        return sorted((f.alias or name) for name, f in model.model_fields.items())
    if len(loc) >= 3 and loc[0] == "watch":
        return list(WatchEntry.model_fields)
    return ["defaults", "watch"]


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(message, hint) for one pydantic error."""
    loc = tuple(err["loc"])
    where = _loc_text(loc)
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + f"allowed keys: {', '.join(allowed)}"
        return f"unknown key '{key}'" + (f" in {_loc_text(loc[:-1])}" if len(loc) > 1 else ""), hint
    if kind == "missing":
        return f"missing required key '{loc[-1]}'", "see the comments in watchlist.yaml"
    msg = err["msg"]
    if kind in ("unknown_recipe", "model_id", "entry_target", "duplicate_recipe", "repo_name"):
        return f"{where}: {msg}", str(ctx.get("hint", ""))
    if kind == "settings":
        return f"{where}.{ctx['loc']}: {ctx['msg']}", "see bot/config.py for the settings and their types"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
    return f"{where}: {msg}{shown}", "see the comments in watchlist.yaml for each field's type"


def _duplicate_key(node: yaml.Node) -> tuple[str, int] | None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    return key_node.value, key_node.start_mark.line + 1
                seen.add(key_node.value)
            found = _duplicate_key(value_node)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item)
            if found:
                return found
    return None


def parse_watchlist(text: str, source: str = "watchlist.yaml") -> Watchlist:
    """Validate watchlist text; every problem is a ConfigError with `source:line:`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", path=source, line=mark.line + 1 if mark else None,
                          hint="check the indentation and quoting around that line") from None
    if root is None or data is None:
        raise ConfigError("the watchlist is empty", path=source, line=1,
                          hint="add a `watch:` list with at least one `- author: <org>` entry")
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping with `defaults:` and `watch:`", path=source,
                          line=root.start_mark.line + 1, hint="start the file with `watch:`")
    dup = _duplicate_key(root)
    if dup:
        raise ConfigError(f"key '{dup[0]}' appears twice", path=source, line=dup[1], hint="keep one of them")
    recipes_file = (data.get("defaults") or {}).get("recipes_file") if isinstance(data.get("defaults"), dict) else None
    context = {"recipes": known_recipe_ids(Path(recipes_file) if isinstance(recipes_file, str) else None)}
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        try:
            Settings.model_validate(defaults)
        except ValidationError as exc:
            _raise_first([{**e, "loc": ("defaults", *e["loc"])} for e in exc.errors()], root, source)
    try:
        watchlist = Watchlist.model_validate(data, context=context)
    except ValidationError as exc:
        _raise_first(exc.errors(), root, source)
    watchlist._source = source
    return watchlist


def _raise_first(errors: list[Any], root: yaml.Node, source: str) -> NoReturn:
    def with_loc(err: Any) -> Any:
        ctx = err.get("ctx") or {}
        extra = ctx.get("path") or ([ctx["index"]] if isinstance(ctx.get("index"), int) else [])
        return {**err, "loc": (*err["loc"], *extra)}

    errors = [with_loc(e) for e in errors]
    located = sorted(((line_of(root, e["loc"]), i, e) for i, e in enumerate(errors)), key=lambda t: (t[0], t[1]))
    line, _, err = located[0]
    message, hint = _describe(err)
    more = len(located) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    raise ConfigError(message, path=source, line=line, hint=hint or None) from None


def load_watchlist(path: str | Path) -> Watchlist:
    """Read and validate a watchlist file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("watchlist not found", path=str(file),
                          hint="pass --watchlist PATH, or copy watchlist.yaml from the repository")
    return parse_watchlist(file.read_text(encoding="utf-8"), source=str(file))
