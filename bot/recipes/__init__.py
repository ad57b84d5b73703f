"""The six quantization recipes, as data: one YAML file each, validated by one pydantic model.

`load_recipes(user_file)` returns a `RecipeBook`: the built-in recipes with the user's overrides applied and
the user's extra recipes added. Unknown keys anywhere fail loudly (extra="forbid").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.errors import ConfigError, UnknownRecipeError

BUILTIN_ORDER = ("w4a16-gptq", "w4a16-awq", "w4a16-autoround", "w8a8-int8", "fp8-dynamic", "nvfp4")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GPTQSpec(_Strict):
    type: Literal["GPTQModifier"]
    scheme: str
    dampening_frac: float = Field(0.01, gt=0, lt=1)
    block_size: int = Field(128, ge=1)
    actorder: Literal["static", "group", "weight"] | None = None


class AWQSpec(_Strict):
    """AWQ only rescales channels; a QuantizationModifier after it does the quantization."""

    type: Literal["AWQModifier"]
    duo_scaling: bool = True
    n_grid: int = Field(20, ge=1)


class AutoRoundSpec(_Strict):
    type: Literal["AutoRoundModifier"]
    scheme: str
    iters: int = Field(200, ge=0)
    lr: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)
    enable_torch_compile: bool = False


class SmoothQuantSpec(_Strict):
    type: Literal["SmoothQuantModifier"]
    smoothing_strength: float = Field(0.8, gt=0, lt=1)


class QuantizationSpec(_Strict):
    type: Literal["QuantizationModifier"]
    scheme: str


ModifierSpec = Annotated[
    Union[GPTQSpec, AWQSpec, AutoRoundSpec, SmoothQuantSpec, QuantizationSpec], Field(discriminator="type")
]


class CalibrationSpec(_Strict):
    samples: int = Field(512, ge=1)
    seq_len: int = Field(2048, ge=16)
    # Rows of exactly seq_len tokens, whole conversations joined (bot/workers/calibration.py `pack_rows`); False:
    # one conversation per row, cut at seq_len, lengths vary.
    pack: bool = False


class HardwareSpec(_Strict):
    native_min_capability: str
    fallback_min_capability: str | None = None
    fallback: str | None = None
    kernel: str = ""


class GateSpec(_Strict):
    """What a variant of this recipe must show to be published.

    Recovery: the lower bound of the mean recovery's paired-bootstrap CI must reach `min_mean_recovery` (pass);
    an upper bound below it rejects; in between more samples are evaluated. Fidelity bounds (next-token KL
    divergence and top-1 agreement against the base on held-out text) reject damage the tasks can miss; they
    never pass a variant by themselves. Their defaults come from measured runs (benchmarks/eval-*.md).
    """

    min_mean_recovery: float = Field(96.0, ge=0, le=200)
    max_kl_mean: float | None = Field(None, gt=0, description="nats per token; None: not checked")
    min_top1_agreement: float | None = Field(None, ge=0, le=1)


class Recipe(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    suffix: str = Field(pattern=r"^-[A-Za-z0-9._-]+$")
    scheme: str
    algorithm: str
    summary: str
    format: str
    group_size: int | None = Field(None, ge=8)
    calibration: CalibrationSpec | None
    modifiers: list[ModifierSpec] = Field(min_length=1)
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"])
    hardware: HardwareSpec
    gate: GateSpec = GateSpec()

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        if "lm_head" not in self.ignore:
            self.ignore.insert(0, "lm_head")
        needs_data = any(m.type != "QuantizationModifier" for m in self.modifiers) or self.scheme == "NVFP4"
        if needs_data and self.calibration is None:
            raise ValueError(f"recipe {self.id}: its modifiers need calibration data; add `calibration:`")
        return self

    @property
    def needs_calibration(self) -> bool:
        return self.calibration is not None


# Flat override keys a user may set per recipe, and where each one lands.
OVERRIDE_KEYS = {
    "group_size", "samples", "seq_len", "pack", "dampening_frac", "block_size", "iters", "lr", "batch_size",
    "smoothing_strength", "ignore", "min_mean_recovery", "max_kl_mean", "min_top1_agreement", "actorder",
}


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    if key == "group_size":
        data["group_size"] = value
    elif key in ("samples", "seq_len", "pack"):
        if data.get("calibration") is None:
            raise ValueError(f"'{key}' does not apply: {data['id']} uses no calibration data")
        data["calibration"][key] = value
    elif key == "ignore":
        if not isinstance(value, list):
            raise ValueError("'ignore' must be a list of module names or 're:' patterns")
        data["ignore"] = list(dict.fromkeys(["lm_head", *data.get("ignore", []), *value]))
    elif key in ("min_mean_recovery", "max_kl_mean", "min_top1_agreement"):
        data.setdefault("gate", {})[key] = value
    else:
        hit = False
        for mod in data["modifiers"]:
            model = {
                "GPTQModifier": GPTQSpec, "AWQModifier": AWQSpec, "AutoRoundModifier": AutoRoundSpec,
                "SmoothQuantModifier": SmoothQuantSpec, "QuantizationModifier": QuantizationSpec,
            }[mod["type"]]
            if key in model.model_fields:
                mod[key] = value
                hit = True
        if not hit:
            raise ValueError(f"'{key}' does not apply to {data['id']} (its modifiers: "
                             f"{', '.join(m['type'] for m in data['modifiers'])})")


class RecipeBook:
    """The recipes in order, looked up by id with a did-you-mean on a miss."""

    def __init__(self, recipes: list[Recipe]) -> None:
        self._by_id = {r.id: r for r in recipes}

    def ids(self) -> list[str]:
        return list(self._by_id)

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, recipe_id: str) -> Recipe:
        try:
            return self._by_id[recipe_id]
        except KeyError:
            raise UnknownRecipeError(recipe_id, self.ids()) from None

    def select(self, ids: list[str] | None) -> list[Recipe]:
        return list(self) if not ids else [self.get(i) for i in ids]


def _builtin_raw() -> dict[str, dict[str, Any]]:
    out = {}
    for rid in BUILTIN_ORDER:
        text = resources.files(__package__).joinpath(f"{rid}.yaml").read_text(encoding="utf-8")
        out[rid] = yaml.safe_load(text)
    return out


def _validate(data: dict[str, Any], source: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"recipe '{data.get('id', '?')}': {loc}: {err['msg']}", path=source,
                          hint="see `bot recipes --show ID` for the expected fields") from None


def load_recipes(user_file: Path | None = None) -> RecipeBook:
    raw = _builtin_raw()
    if user_file is not None:
        path = Path(user_file)
        if not path.is_file():
            raise ConfigError("recipes file not found", path=str(path), hint="pass an existing YAML file")
        try:
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                              line=mark.line + 1 if mark else None) from None
        if not isinstance(user, dict) or set(user) - {"overrides", "recipes"}:
            raise ConfigError("top level must be a mapping with `overrides:` and/or `recipes:`", path=str(path))
        for rid, params in (user.get("overrides") or {}).items():
            if rid not in raw:
                raise UnknownRecipeError(rid, list(raw))
            if not isinstance(params, dict):
                raise ConfigError(f"overrides.{rid} must be a mapping", path=str(path))
            for key, value in params.items():
                if key not in OVERRIDE_KEYS:
                    raise ConfigError(f"overrides.{rid}: unknown parameter '{key}'", path=str(path),
                                      hint=f"allowed: {', '.join(sorted(OVERRIDE_KEYS))}")
                try:
                    _apply_override(raw[rid], key, value)
                except ValueError as exc:
                    raise ConfigError(f"overrides.{rid}: {exc}", path=str(path)) from None
        for extra in user.get("recipes") or []:
            if not isinstance(extra, dict) or "id" not in extra:
                raise ConfigError("each entry of `recipes:` needs an `id`", path=str(path))
            raw[extra["id"]] = extra
        return RecipeBook([_validate(d, str(path) if rid not in BUILTIN_ORDER or rid in (user.get("overrides") or {}) else "built-in") for rid, d in raw.items()])
    return RecipeBook([_validate(d, "built-in") for d in raw.values()])
