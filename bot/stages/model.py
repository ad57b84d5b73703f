"""Resolve the base model (a Hub id pinned to its commit sha, or a local directory) and check it can be used:
a causal LM, safetensors weights, no remote code unless allowed, within the size budget, licence allowed."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import yaml

from bot.config import Settings
from bot.errors import HubAuthError, HubError, ModelError
from bot.manifest import BaseManifest, BaseModelRecord, Status, now_iso
from bot.rundir import RunDir

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LICENSE_FILES = re.compile(r"^(LICEN[CS]E|NOTICE|USE_POLICY|COPYING|ATTRIBUTION)([._-].*)?$", re.IGNORECASE)
# what a licence tells a redistributor to display, in its own words: 'prominently display "Built with Llama"'
ATTRIBUTION = re.compile(r"\bdisplay(?:s|ed|ing)?\s+(?:the\s+(?:words?|phrase|text)\s+)?"
                         r"[\"\u201c\u2018']([^\"\u201d\u2019'\n]{2,80})[\"\u201d\u2019']", re.IGNORECASE)
OTHER_REPO_TYPES = re.compile(r"^(?:https?://[^/]+/)?(datasets|spaces)/")
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
DOWNLOAD_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.jinja", "*.model", "*.txt",
                     "*.md", "*.tiktoken", "LICENSE*", "NOTICE*", "USE_POLICY*", "COPYING*", "merges.txt", "vocab.*"]


def looks_local(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def check_files(files: list[str], model: str) -> None:
    names = [Path(f).name for f in files]
    if not any(n.endswith(".safetensors") for n in names):
        found = sorted({Path(n).suffix for n in names if n.endswith((*PICKLE_WEIGHTS, ".gguf"))})
        what = f"only {', '.join(found)} weights" if found else "no weights"
        raise ModelError(f"{model} has {what}: bot loads safetensors only (pickle weights are never loaded)",
                         model=model, hint="use a repo or directory with *.safetensors files")
    if "config.json" not in names:
        raise ModelError(f"{model} has no config.json", model=model, hint="point at a transformers model directory")


def check_config(config: dict[str, Any], model: str, settings: Settings) -> str:
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    if not arch.endswith("ForCausalLM"):
        raise ModelError(f"{model} is not a causal language model (architectures: {archs or 'none'})", model=model,
                         hint="bot quantizes *ForCausalLM text models only")
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise ModelError(f"{model} is already quantized ({method})", model=model, hint="start from the BF16/FP16 base")
    if config.get("auto_map") and not settings.allows_remote_code(model):
        raise ModelError(f"{model} needs trust_remote_code (config.auto_map)", model=model,
                         hint="allow it for this model or author in watchlist.yaml (trust_remote_code) if you trust it")
    return arch


def check_size(params: int | None, model: str, settings: Settings) -> None:
    if params is not None and settings.max_params_b is not None and params > settings.max_params_b * 1e9:
        raise ModelError(f"{model} has {params / 1e9:.3g}B parameters, over the runner's limit of "
                         f"{settings.max_params_b:g}B (max_params_b)", model=model,
                         hint="raise max_params_b or use a bigger runner")


def check_license(license_id: Any, model: str, settings: Settings) -> None:
    if license_id and str(license_id).lower() in {x.lower() for x in settings.license_deny}:
        raise ModelError(f"{model} is licensed '{license_id}', which is on the deny-list (license_deny): "
                         "nothing is published", model=model,
                         hint="remove it from license_deny if publishing derivatives is allowed")


def safetensors_params(paths: list[Path]) -> int:
    """Parameter count from safetensors headers alone (no torch)."""
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= dim
            total += count if meta["dtype"] in sizes else 0
    return total


def content_hash(path: Path) -> str:
    """A revision for a local directory: config, tokenizer and the safetensors headers and sizes."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                h.update(fh.read(n))
        elif f.stat().st_size < 8_000_000:
            h.update(f.read_bytes())
    return h.hexdigest()


def read_front_matter(readme: Path) -> dict[str, Any]:
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    parts = text.split("---", 2)
    try:
        data = yaml.safe_load(parts[1]) if len(parts) >= 3 else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def attribution_phrases(path: Path, license_files: list[str]) -> list[str]:
    """The phrases the base's licence files prescribe to display (e.g. the Llama licences' "Built with Llama"),
    read from the text itself, in order, without duplicates."""
    found: list[str] = []
    for name in license_files:
        text = (path / name).read_text(encoding="utf-8", errors="replace")
        found += [" ".join(m.group(1).split()) for m in ATTRIBUTION.finditer(" ".join(text.split()))]
    return list(dict.fromkeys(found))


def describe(path: Path, model_id: str, revision: str, source: str, settings: Settings) -> BaseModelRecord:
    files = [p.name for p in path.iterdir() if p.is_file()]
    check_files(files, model_id)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    arch = check_config(config, model_id, settings)
    weights = sorted(path.glob("*.safetensors"))
    params = safetensors_params(weights)
    check_size(params, model_id, settings)
    card = read_front_matter(path / "README.md")
    license_id = card.get("license")
    check_license(license_id, model_id, settings)
    tok_cfg = path / "tokenizer_config.json"
    has_template = (path / "chat_template.jinja").is_file() or (
        tok_cfg.is_file() and "chat_template" in json.loads(tok_cfg.read_text(encoding="utf-8")))
    lang = card.get("language")
    license_files = sorted(f for f in files if LICENSE_FILES.match(f))
    return BaseModelRecord(
        status=Status.done, finished_at=now_iso(), source=source, model_id=model_id, revision=revision,
        path=str(path.resolve()), architecture=arch, model_type=config.get("model_type", ""), num_params=params,
        dtype=str(config.get("dtype") or config.get("torch_dtype") or ""), license=license_id,
        license_name=card.get("license_name"), license_link=card.get("license_link"),
        license_files=license_files, attribution=attribution_phrases(path, license_files),
        language=[lang] if isinstance(lang, str) else lang, trust_remote_code=bool(config.get("auto_map")),
        size_bytes=sum(w.stat().st_size for w in weights), has_chat_template=has_template,
    )


def recheck(record: BaseModelRecord, settings: Settings) -> None:
    """The policy checks again, for a base resolved by an earlier run: today's settings (licence deny-list, size
    budget, remote code allowed) decide, not those of the run that downloaded it."""
    model = record.model_id
    if record.trust_remote_code and not settings.allows_remote_code(model):
        raise ModelError(f"{model} needs trust_remote_code (config.auto_map)", model=model,
                         hint="allow it for this model or author in watchlist.yaml (trust_remote_code) if you trust it")
    check_size(record.num_params, model, settings)
    check_license(record.license, model, settings)


def resolve_local(model: str, settings: Settings, run_dir: Path | None = None) -> tuple[RunDir, BaseManifest]:
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(f"model directory not found: {model}", model=model, hint="check the path, or pass a Hub id org/name")
    model_id = f"local/{path.resolve().name}"
    check_files([p.name for p in path.iterdir() if p.is_file()], model)
    revision = content_hash(path)
    rundir = RunDir(run_dir) if run_dir else RunDir.for_model(settings.runs_dir, model_id, revision)
    existing = rundir.read_base()
    if existing and existing.base.status == Status.done and existing.base.revision == revision:
        recheck(existing.base, settings)
        return rundir, existing
    record = describe(path, model_id, revision, "local", settings)
    manifest = BaseManifest(run_id=rundir.run_id, base=record)
    rundir.write_base(manifest)
    return rundir, manifest


def _other_kind(model: str) -> str | None:
    """'dataset' or 'space' for ids written the Hub's URL way (datasets/org/name, https://.../spaces/org/name)."""
    match = OTHER_REPO_TYPES.match(model)
    return {"datasets": "dataset", "spaces": "space"}[match.group(1)] if match else None


def _model_info(model: str, revision: str | None, client):
    """The Hub's model info; a 404 for the repo becomes a ModelError that says what the id is, if not a model."""
    try:
        return client.model_info(model, revision=revision)
    except HubAuthError:
        raise
    except HubError as exc:
        if exc.status != 404 or "revision not found" in exc.message:
            raise
        kind = client.other_repo_type(model)
        if kind:
            raise ModelError(f"{model} is a {kind} on {client.endpoint}, not a model repo", model=model,
                             hint="bot quantizes model repos: pass a model id (org/name)") from None
        raise ModelError(f"{model} is not a model repo on {client.endpoint} (HTTP 404)", model=model,
                         hint="check the id (org/name); dataset and Space ids are not models, and a private model "
                              "needs HF_TOKEN with read access") from None


def precheck_hub(model: str, sha: str, info, settings: Settings, client) -> None:
    """The checks `describe` makes, from the Hub's metadata and config.json alone, before any weight is
    downloaded: remote code, architecture, licence deny-list, size budget."""
    text = client.read_text(model, "config.json", revision=sha)
    if text is None:
        raise ModelError(f"{model} has no config.json", model=model, hint="point at a transformers model repo")
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        raise ModelError(f"{model}: config.json is not valid JSON", model=model, hint="check the repo") from None
    if not isinstance(config, dict):
        raise ModelError(f"{model}: config.json is not a JSON object", model=model, hint="check the repo")
    check_config(config, model, settings)
    card = getattr(info, "card_data", None)
    check_license(card.get("license") if card is not None else None, model, settings)
    st = getattr(info, "safetensors", None)
    check_size(int(st.total) if st is not None and st.total else None, model, settings)


def resolve_hub(model: str, revision: str | None, settings: Settings, client,
                run_dir: Path | None = None) -> tuple[RunDir, BaseManifest]:
    """Pin the Hub model to its commit sha, check it from its metadata, then download safetensors + tokenizer +
    licence files into the run dir (under the run's lock: two bots never download into the same directory)."""
    kind = _other_kind(model)
    if kind:
        raise ModelError(f"'{model}' is a {kind} id, not a model", model=model,
                         hint="bot quantizes model repos: pass a model id (org/name)")
    if not REPO_ID.match(model):
        raise ModelError(f"'{model}' is not a Hub model id", model=model, hint="use org/name, e.g. allenai/Olmo-3-7B")
    info = _model_info(model, revision, client)
    sha = info.sha
    files = [s.rfilename for s in (info.siblings or [])]
    check_files(files, model)
    rundir = RunDir(run_dir) if run_dir else RunDir.for_model(settings.runs_dir, model, sha)

    def finished() -> BaseManifest | None:
        existing = rundir.read_base()
        if existing and existing.base.status == Status.done and Path(existing.base.path).is_dir():
            return existing
        return None

    existing = finished()
    if existing:
        recheck(existing.base, settings)
        return rundir, existing
    if getattr(info, "gated", False) and not client.can_read(model, sha):
        raise ModelError(f"{model} is gated and this token cannot read it", model=model,
                         hint="accept the licence on the Hub with the account that owns HF_TOKEN, or drop it from "
                              "the watchlist")
    precheck_hub(model, sha, info, settings, client)
    with rundir.lock(settings.lock_ttl_s, owner="download"):
        existing = finished()  # another bot may have finished it while we checked
        if existing:
            recheck(existing.base, settings)
            return rundir, existing
        target = rundir.base_dir / "model"
        started = now_iso()
        rundir.write_base(BaseManifest(run_id=rundir.run_id, base=BaseModelRecord(
            status=Status.running, started_at=started, source="hub", model_id=model, revision=sha)))
        client.download(model, sha, target, DOWNLOAD_PATTERNS)
        record = describe(target, model, sha, "hub", settings)
        record.started_at = started
        record.gated = bool(getattr(info, "gated", False))
        if record.license is None and getattr(info, "card_data", None):
            record.license = info.card_data.get("license")
        manifest = BaseManifest(run_id=rundir.run_id, base=record)
        rundir.write_base(manifest)
    return rundir, manifest


def resolve_model(model: str, revision: str | None, settings: Settings, client=None,
                  run_dir: Path | None = None) -> tuple[RunDir, BaseManifest]:
    if looks_local(model):
        return resolve_local(model, settings, run_dir)
    if client is None:
        from bot.clients.hub import source_client

        with source_client(settings) as hub:
            return resolve_hub(model, revision, settings, hub, run_dir)
    return resolve_hub(model, revision, settings, client, run_dir)
