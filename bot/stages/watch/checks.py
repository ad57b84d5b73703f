"""Per-model checks of the watcher, on a huggingface_hub `ModelInfo`. Each returns a skip reason or None.

Pure functions: no network. `check_model` runs them in order and returns the first reason found. The one
question the Hub must answer for a gated repo (can this token read it?) comes in as a callable, asked only
when the checks before it pass.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from huggingface_hub import ModelInfo

from bot.config import Settings
from bot.watchlist import WatchEntry

QUANT_TAGS = frozenset({
    "quantized", "gguf", "awq", "gptq", "exl2", "exl3", "bitsandbytes", "4-bit", "8-bit", "compressed-tensors",
    "autoround", "auto-round", "nvfp4", "mlx", "hqq", "aqlm", "marlin",
})
BYTES_PER_PARAM_GUESS = 2  # safetensors of a 16-bit checkpoint; used only without the Hub's parameter count


@dataclass(frozen=True)
class CheckResult:
    """`reason` is None when the model passes; `retry` marks a skip that may pass later (age, downloads)."""

    reason: str | None
    retry: bool = False
    params_b: float | None = None


def _card(info: ModelInfo) -> dict[str, Any]:
    data = info.card_data
    if data is None:
        return {}
    return data.to_dict() if hasattr(data, "to_dict") else dict(data)


def _config(info: ModelInfo) -> dict[str, Any]:
    return info.config if isinstance(info.config, dict) else {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def safetensors_files(info: ModelInfo) -> list[str] | None:
    """Safetensors files of the repo, or None when the listing did not include files."""
    if info.siblings is None:
        return None
    return [s.rfilename for s in info.siblings if s.rfilename.endswith(".safetensors")]


def check_safetensors(info: ModelInfo) -> str | None:
    files = safetensors_files(info)
    if files is None or files:
        return None
    gguf = any(s.rfilename.endswith(".gguf") for s in info.siblings or [])
    return "no safetensors weights" + (" (GGUF only)" if gguf else "")


def check_derived(info: ModelInfo, settings: Settings) -> str | None:
    """Already quantized, an adapter, a third party's derivative, or one of our own repos."""
    author = info.id.split("/", 1)[0]
    if author == settings.namespace:
        return f"one of our own repos (namespace {settings.namespace})"
    qconf = _config(info).get("quantization_config")
    if qconf:
        method = qconf.get("quant_method", "?") if isinstance(qconf, dict) else "?"
        return f"already quantized (quantization_config: {method})"
    tags = [t.lower() for t in info.tags or []]
    for tag in tags:
        if tag in QUANT_TAGS:
            return f"already quantized (tag '{tag}')"
        for relation in ("quantized", "adapter"):
            prefix = f"base_model:{relation}:"
            if tag.startswith(prefix):
                return f"{'a quantization' if relation == 'quantized' else 'an adapter'} of {tag[len(prefix):]}"
    card = _card(info)
    relation = str(card.get("base_model_relation") or "").lower()
    bases = _as_list(card.get("base_model"))
    if bases and relation in ("quantized", "adapter"):
        return f"{'a quantization' if relation == 'quantized' else 'an adapter'} of {bases[0]}"
    if bases and all(b.split("/", 1)[0].lower() != author.lower() for b in bases):
        return f"derived from {bases[0]} (base_model in its card)"
    return None


def check_causal_lm(info: ModelInfo) -> str | None:
    archs = _as_list(_config(info).get("architectures"))
    if any(a.endswith("ForCausalLM") for a in archs) or info.pipeline_tag == "text-generation":
        return None
    auto = getattr(info.transformers_info, "auto_model", None)
    if auto == "AutoModelForCausalLM":
        return None
    return f"not a causal LM (architectures: {', '.join(archs) or 'none'}; pipeline_tag: {info.pipeline_tag})"


GATED_PREFIX = "gated ("  # how every skip for a gated repo the token cannot read begins (the ledger reuses it)
LICENCE_PAGE = "https://huggingface.co"  # where a person accepts a gated repo's licence


def licence_link(repo_id: str) -> str:
    return f"{LICENCE_PAGE}/{repo_id}"


def check_gated(info: ModelInfo, can_read: Callable[[], bool] | None = None) -> str | None:
    """A gated repo passes when this token can read it (`can_read`: one request, asked only for a gated repo)."""
    if not info.gated:
        return None
    if can_read is not None and can_read():
        return None
    return (f"{GATED_PREFIX}{info.gated}) and this token cannot read it: accept its licence at "
            f"{licence_link(info.id)} with the account that owns the token")


def is_gated_skip(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(GATED_PREFIX)


def check_remote_code(info: ModelInfo, entry: WatchEntry, settings: Settings) -> str | None:
    auto_map = _config(info).get("auto_map")
    custom = "custom_code" in (info.tags or [])  # the Hub's tag for repos whose config has auto_map
    if not (auto_map or custom) or entry.trust_remote_code or settings.allows_remote_code(info.id):
        return None
    where = "auto_map in config" if auto_map else "tag custom_code"
    return f"needs remote code ({where}); set `trust_remote_code: true` on its watch entry to allow it"


def check_architectures(info: ModelInfo, entry: WatchEntry) -> str | None:
    if entry.architectures is None:
        return None
    archs = _as_list(_config(info).get("architectures"))
    if any(fnmatch.fnmatchcase(a, p) for a in archs for p in entry.architectures):
        return None
    return f"architecture {', '.join(archs) or 'unknown'} not in {', '.join(entry.architectures)}"


def param_count(info: ModelInfo) -> int | None:
    """Total parameters: the Hub's safetensors metadata, else an estimate from the safetensors file sizes."""
    if info.safetensors is not None and info.safetensors.total:
        return int(info.safetensors.total)
    sizes = [s.size for s in info.siblings or [] if s.rfilename.endswith(".safetensors") and s.size]
    return sum(sizes) // BYTES_PER_PARAM_GUESS if sizes else None


def check_size(info: ModelInfo, entry: WatchEntry, settings: Settings) -> tuple[str | None, float | None]:
    params = param_count(info)
    params_b = params / 1e9 if params is not None else None
    limit = entry.max_params_b if entry.max_params_b is not None else settings.max_params_b
    if limit is not None and params_b is not None and params_b > limit:
        return f"too large ({params_b:.1f}B parameters > max_params_b {limit:g})", params_b
    return None, params_b


def licences(info: ModelInfo) -> list[str]:
    """Licence ids and names from the card and the `license:` tags, lower-case."""
    card = _card(info)
    found = _as_list(card.get("license")) + _as_list(card.get("license_name"))
    found += [t.split(":", 1)[1] for t in info.tags or [] if t.startswith("license:")]
    return list(dict.fromkeys(x.lower() for x in found if x))


def check_licence(info: ModelInfo, entry: WatchEntry, settings: Settings) -> str | None:
    found = licences(info)
    denied = [p.lower() for p in [*entry.licenses_denied, *settings.license_deny]]
    for lic in found:
        if any(fnmatch.fnmatchcase(lic, p) for p in denied):
            return f"licence '{lic}' is denied"
    if entry.licenses_allowed is not None:
        allowed = [p.lower() for p in entry.licenses_allowed]
        if not any(fnmatch.fnmatchcase(lic, p) for lic in found for p in allowed):
            return f"licence {', '.join(found) or 'unknown'} not in licenses_allowed ({', '.join(allowed)})"
    return None


def check_age(info: ModelInfo, entry: WatchEntry, now: datetime) -> str | None:
    if entry.min_age_hours <= 0 or info.created_at is None:
        return None
    created = info.created_at if info.created_at.tzinfo else info.created_at.replace(tzinfo=timezone.utc)
    age_h = (now - created).total_seconds() / 3600
    if age_h < entry.min_age_hours:
        return f"too new ({age_h:.1f} h old < min_age_hours {entry.min_age_hours:g}); checked again next cycle"
    return None


def check_downloads(info: ModelInfo, entry: WatchEntry) -> str | None:
    if entry.min_downloads <= 0:
        return None
    downloads = info.downloads or 0
    if downloads < entry.min_downloads:
        return f"{downloads} downloads < min_downloads {entry.min_downloads}; checked again next cycle"
    return None


def check_model(info: ModelInfo, entry: WatchEntry, settings: Settings, now: datetime | None = None,
                can_read: Callable[[], bool] | None = None) -> CheckResult:
    """Every check in order: the first failing one decides. Age and downloads are temporary skips.
    `can_read` answers whether this token can read a gated repo; without it a gated repo is skipped."""
    now = now or datetime.now(timezone.utc)
    for check in (
        lambda: check_safetensors(info),
        lambda: check_derived(info, settings),
        lambda: check_causal_lm(info),
        lambda: check_gated(info, can_read),
        lambda: check_remote_code(info, entry, settings),
        lambda: check_architectures(info, entry),
    ):
        reason = check()
        if reason:
            return CheckResult(reason)
    reason, params_b = check_size(info, entry, settings)
    if reason:
        return CheckResult(reason, params_b=params_b)
    reason = check_licence(info, entry, settings)
    if reason:
        return CheckResult(reason, params_b=params_b)
    for reason in (check_age(info, entry, now), check_downloads(info, entry)):
        if reason:
            return CheckResult(reason, retry=True, params_b=params_b)
    return CheckResult(None, params_b=params_b)
