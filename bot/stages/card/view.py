"""The view model of a variant card: every string the template prints, built from the run's manifests.

Templates only loop and branch; numbers are formatted here (through `card_format`). A number that was not
measured becomes "not measured (reason)", never a guess. Strings taken from manifests pass through a `Scrubber`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

from bot import __version__
from bot.manifest import BatchedSpeed, Batch1Speed, Comparison, GateState, Status, ValidateRecord
from bot.stages.card.accuracy import AccuracyView, accuracy_view
from bot.stages.card.compare import HardwareView, SiblingsView, hardware_view, siblings_view
from bot.stages.card.data import RunData, quantize_reason, speed_reason, state_reason
from bot.stages.card.format import (
    Scrubber, brief, code, day, gb, html_text, md_cell, ms, not_measured, one_line, ratio, seconds, tok_s,
)
from bot.stages.card.serve_view import ServeFastestView, serve_fastest_view
from bot.stages.card.snippets import (
    DecisionRow, decisions, llm_snippet, oneshot_code, openai_snippet, recipe_yaml, serve_command,
)
from bot.stages.card.view_parts import (
    KeyValue, SpeedRow, VersionRow, calibration_rows, evaluation_rows, license_lines, speed_settings,
    version_rows,
)

DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."
_BACKENDS = {"hf": "transformers", "vllm": "vLLM"}


@dataclass(frozen=True)
class VariantCard:
    title: str
    repo_id: str
    base_id: str
    base_link: str
    recipe_name: str
    warnings: list[str]
    summary: str
    confidence: str  # "How sure are we": mean recovery with its CI, fidelity, the gate ("" when nothing measured)
    hardware: HardwareView
    serve_command: str
    openai_snippet: str
    llm_snippet: str
    accuracy: AccuracyView
    speed_heading: str
    speed_rows: list[SpeedRow]
    speed_notes: list[str]
    serve_fastest: ServeFastestView | None  # the serving search; None: none ran (the part is hidden)
    siblings: SiblingsView
    chart: str | None
    samples: list["Sample"]
    samples_missing: str
    recipe_yaml: str
    llmcompressor_yaml: str
    oneshot_code: str
    calibration: list[KeyValue]
    quantize_facts: list[KeyValue]
    decisions: list[DecisionRow]
    lm_eval_command: str
    evaluation_settings: list[KeyValue]
    speed_settings: list[KeyValue]
    versions: list[VersionRow]
    validated_on: str
    license: list[str]
    provenance: list[KeyValue]


@dataclass(frozen=True)
class Sample:
    prompt: str
    base: str
    variant: str
    flags: str


def build_variant_card(run: RunData, variant: str, scrub: Scrubber, chart: str | None) -> VariantCard:
    vm = run.variants[variant]
    recipe = run.recipes[variant]
    b = run.base.base
    repo_id = run.repo_id(variant)
    vv = vm.validate_
    base_link = f"[{b.model_id}]({run.base_url()})" if run.base_url() else code(b.model_id)
    prompt = next((g.prompt for g in (vv.generations if vv else [])), DEFAULT_PROMPT)
    chat = b.has_chat_template
    acc = accuracy_view(run, variant, scrub)
    heading, speed_rows, speed_notes = _speed(run, variant, scrub)
    samples, samples_missing = _samples(run, variant, scrub)
    validated = day(vv.validated_at or vv.finished_at) if vv else None
    return VariantCard(
        title=repo_id.rsplit("/", 1)[-1],
        repo_id=repo_id,
        base_id=b.model_id,
        base_link=base_link,
        recipe_name=recipe.name,
        warnings=_warnings(run, variant, scrub),
        summary=_summary(run, variant, base_link),
        confidence=acc.confidence,
        hardware=hardware_view(run, variant, scrub),
        serve_command=serve_command(repo_id, b.trust_remote_code),
        openai_snippet=openai_snippet(repo_id, prompt, chat),
        llm_snippet=llm_snippet(repo_id, prompt, chat, b.trust_remote_code),
        accuracy=acc,
        speed_heading=heading,
        speed_rows=speed_rows,
        speed_notes=speed_notes,
        serve_fastest=serve_fastest_view(vv.serve_search if vv else None, repo_id, b.trust_remote_code, scrub),
        siblings=siblings_view(run, variant, scrub),
        chart=chart,
        samples=samples,
        samples_missing=samples_missing,
        recipe_yaml=recipe_yaml(recipe.recipe),
        llmcompressor_yaml=vm.quantize.llmcompressor_recipe.strip("\n") or "# not recorded",
        oneshot_code=oneshot_code(b, vm.quantize, f"{repo_id.rsplit('/', 1)[-1]}"),
        calibration=calibration_rows(vm.quantize.calibration, run.hub_url),
        quantize_facts=_quantize_facts(run, variant),
        decisions=decisions(vm.quantize, recipe.recipe),
        lm_eval_command=scrub(vv.accuracy.command) if vv and vv.accuracy and vv.accuracy.command else "# not recorded",
        evaluation_settings=evaluation_rows(vv, run.base.validate_),
        speed_settings=speed_settings(vv),
        versions=version_rows(vm.quantize.versions, vv.versions if vv else {}),
        validated_on=validated or not_measured(scrub(state_reason(vv) or "no validation date recorded")),
        license=license_lines(b, run.base_url(), run.settings.repo_gated(b.gated)),
        provenance=_provenance(run, variant),
    )


def _warnings(run: RunData, variant: str, scrub: Scrubber) -> list[str]:
    vv = run.variants[variant].validate_
    gate = vv.gate if vv else None
    if gate is None:
        reason = state_reason(vv) or "the quality gate was not evaluated"
        head = "**Not validated yet.**" if reason == "not validated" else f"**Not validated:** {scrub(one_line(reason, 200))}."
        return [f"{head} The numbers below are incomplete."]
    if gate.passed:
        return []
    reasons = "; ".join(scrub(one_line(r, 200)) for r in gate.reasons) or "no reason recorded"
    if run.forced(variant):
        return [f"**Published without passing the quality gate** (`--force`). The gate's reasons: {reasons}."]
    if gate.outcome == GateState.inconclusive:
        return [f"**The quality gate could not decide** (the confidence interval straddles its threshold): {reasons}."]
    return [f"**This variant did not pass the quality gate:** {reasons}."]


def _summary(run: RunData, variant: str, base_link: str) -> str:
    vm = run.variants[variant]
    recipe = run.recipes[variant]
    b = run.base.base
    llmc = vm.quantize.versions.get("llmcompressor")
    fmt = f" `{recipe.format}`" if recipe.format else ""
    parts = [f"This is {base_link} with its weights quantized to **{recipe.name}** by "
             f"[llm-compressor](https://github.com/vllm-project/llm-compressor){' ' + llmc if llmc else ''}, "
             f"saved in the compressed-tensors{fmt} format that [vLLM](https://github.com/vllm-project/vllm) "
             "loads directly."]
    if recipe.summary:
        parts.append(recipe.summary)
    size, base_size = vm.quantize.size_bytes, b.size_bytes
    if size is not None and base_size:
        change = 100 * (1 - size / base_size)
        relation = f"{change:.0f}% less than" if change >= 0.5 else (
            f"{-change:.0f}% more than" if change <= -0.5 else "about the same as")
        parts.append(f"The checkpoint takes {gb(size)} on disk, {relation} the {gb(base_size)} "
                     f"{b.dtype or 'original'} base.")
    elif size is not None:
        parts.append(f"The checkpoint takes {gb(size)} on disk (the base's size was not recorded).")
    else:
        parts.append(f"Its size on disk was not measured ({quantize_reason(vm) or 'size not recorded'}).")
    return " ".join(parts)


# ---------------------------------------------------------------- speed


def _speed_pairs(rec: ValidateRecord | None) -> tuple[Batch1Speed | None, BatchedSpeed | None, str]:
    """What was measured (even when a later validation step failed), and its label."""
    if rec is None or rec.speed is None or rec.speed.error:
        return None, None, ""
    return rec.speed.batch1, rec.speed.batched, rec.speed.label


def _speed(run: RunData, variant: str, scrub: Scrubber) -> tuple[str, list[SpeedRow], list[str]]:
    vm = run.variants[variant]
    vv, bv = vm.validate_, run.base.validate_
    v1, vn, vlabel = _speed_pairs(vv)
    b1, bn, blabel = _speed_pairs(bv)
    comp = vv.comparison if vv else None
    vdev = "CPU" if vv and vv.hardware and vv.hardware.device != "cuda" else "GPU"
    bdev = "CPU" if bv and bv.hardware and bv.hardware.device != "cuda" else "GPU"
    details: dict[str, None] = {}

    def cell(value: float | None, fmt: Callable[[float], str], label: str, reason: str | None, who: str) -> str:
        if value is not None:
            return fmt(value) + (" (CPU)" if label == "CPU" else "")
        full = scrub(reason or "missing")
        if brief(full) != full:
            details[f"{who}: {full}"] = None
        return md_cell(not_measured(brief(full)))

    rows: list[SpeedRow] = []
    specs: list[tuple[str, str, Callable[[Any], float], Callable[[float], str], float | None]] = [
        ("Batch-1 decode (tokens/s)", "batch1", lambda x: x.decode_tokens_per_s, tok_s,
         comp.speedup_batch1 if comp else None),
        ("Batch-1 time to first token (ms)", "batch1", lambda x: x.ttft_ms, ms, None),
        ("Batch-1 time per output token (ms)", "batch1", lambda x: x.tpot_ms, ms, None),
        ("Batched output throughput (tokens/s)", "batched", lambda x: x.output_tokens_per_s, tok_s,
         comp.speedup_batched if comp else None),
    ]
    for what, part, get, fmt, given in specs:
        vsrc, bsrc = (v1, b1) if part == "batch1" else (vn, bn)
        vval = get(vsrc) if vsrc is not None else None
        bval = get(bsrc) if bsrc is not None else None
        rows.append(SpeedRow(what, cell(bval, fmt, blabel, speed_reason(bv, part), "Base"),
                             cell(vval, fmt, vlabel, speed_reason(vv, part), "This variant"),
                             _vs(comp, given, vval is not None and bval is not None)))
    vmem = vv.load.memory_bytes if vv and vv.load and vv.load.ok else None
    bmem = bv.load.memory_bytes if bv and bv.load and bv.load.ok else None
    rows.append(SpeedRow("Weights in GPU memory" if vdev == "GPU" else "Memory growth on load",
                         cell(bmem, gb, bdev, speed_reason(bv, "memory"), "Base"),
                         cell(vmem, gb, vdev, speed_reason(vv, "memory"), "This variant"),
                         _vs(comp, None, vmem is not None and bmem is not None)))
    size, bsize = vm.quantize.size_bytes, run.base.base.size_bytes
    rows.append(SpeedRow("Size on disk", cell(bsize, gb, "", "base size not recorded", "Base"),
                         cell(size, gb, "", quantize_reason(vm) or "size not recorded", "This variant"),
                         _vs(comp, comp.size_ratio if comp else None, size is not None and bsize is not None,
                             speed=False)))
    notes = [f"Not measured — {d}." for d in details] + _speed_notes(vlabel, blabel)
    return _speed_heading(vv, bv, vlabel), rows, notes


def _vs(comp: Comparison | None, given: float | None, both: bool, *, speed: bool = True) -> str:
    """variant / base as the validate stage recorded it (`Comparison`); the card never divides two numbers itself.
    A speed row of a pair validate found incomparable says why; a row it records no ratio for shows none."""
    if speed and comp is not None and not comp.speed_comparable and comp.speed_incomparable_reason:
        return md_cell(f"not comparable ({comp.speed_incomparable_reason})")
    if given is not None:
        return ratio(given)
    if not both:
        return not_measured("needs both numbers")
    return not_measured("no comparison recorded") if comp is None else "—"


def _speed_heading(vv: ValidateRecord | None, bv: ValidateRecord | None, label: str) -> str:
    hw = vv.hardware if vv else None
    if hw is None or not label:
        return "No speed measurement of this variant."
    if label == "CPU":
        backend = _BACKENDS.get(vv.backend, vv.backend) if vv and vv.backend else "transformers"
        return (f"Measured on **CPU** ({hw.name or 'unknown CPU'}) with {backend}. These are **CPU numbers, not GPU "
                "speed**: they only show how the format compares with the base on a CPU.")
    vllm = (vv.versions.get("vllm") if vv else None) or "unknown"
    text = (f"Measured on **{hw.count}× {hw.name}** with **vLLM {vllm}** at **its default configuration** (`vllm "
            "serve` without serving flags), base and variant in the same run.")
    search = vv.serve_search if vv else None
    if search is not None and search.config("default") is not None:
        text += " The fastest configurations measured are under \"Serve it fastest\"."
    if bv is not None and bv.hardware is not None and bv.hardware.name != hw.name:
        text += f" The base was measured on {bv.hardware.name}."
    return text


def _speed_notes(vlabel: str, blabel: str) -> list[str]:
    notes = ["\"vs base\" is the validation's ratio of this variant's number to the base's: above 1.00× is faster "
             "for throughput, below 1.00× is smaller on disk; \"—\" where it records no ratio (compare the two "
             "numbers). Ratios are taken only between a base and a variant measured under the same conditions "
             "(hardware, GPU count, benchmark lengths)."]
    if "CPU" in (vlabel, blabel):
        notes.append("Numbers marked (CPU) were measured without a GPU and are never compared with GPU numbers.")
    return notes


# ---------------------------------------------------------------- samples, facts, provenance


def _samples(run: RunData, variant: str, scrub: Scrubber) -> tuple[list[Sample], str]:
    vv, bv = run.variants[variant].validate_, run.base.validate_
    gens = vv.generations if vv else []
    if not gens:
        return [], not_measured(scrub(state_reason(vv) or "no sample generations recorded"))
    base_by_prompt = {g.prompt: g for g in (bv.generations if bv else [])}
    out = []
    for g in gens:
        bg = base_by_prompt.get(g.prompt)
        base = html_text(bg.output) if bg else f"<i>{html.escape(not_measured(state_reason(bv) or 'prompt not run'))}</i>"
        flags = "; ".join(g.problems) if g.problems else ("" if g.ok else "flagged by the validator")
        out.append(Sample(html.escape(g.prompt), base, html_text(g.output),
                          f"⚠️ Flagged: {html.escape(one_line(flags, 200))}" if flags else ""))
    return out, ""


def _quantize_facts(run: RunData, variant: str) -> list[KeyValue]:
    q = run.variants[variant].quantize
    hw = q.hardware
    where = (f"{hw.count}× {hw.name}" if hw.device == "cuda" else f"CPU ({hw.name})") if hw else "not recorded"
    facts = [KeyValue("Quantized on", md_cell(where)),
             KeyValue("Wall time", seconds(q.wall_time_s) if q.wall_time_s is not None else "not recorded")]
    if q.peak_gpu_memory_bytes is not None:
        facts.append(KeyValue("Peak GPU memory", gb(q.peak_gpu_memory_bytes)))
    if q.peak_rss_bytes is not None:
        facts.append(KeyValue("Peak host memory", gb(q.peak_rss_bytes)))
    if q.finished_at:
        facts.append(KeyValue("Finished", q.finished_at))
    return facts


def _provenance(run: RunData, variant: str) -> list[KeyValue]:
    b = run.base.base
    vm = run.variants[variant]
    rows = [KeyValue("Base model", code(b.model_id)),
            KeyValue("Base revision", code(b.revision) if b.revision else "not recorded"),
            KeyValue("Run", code(run.rundir.run_id)),
            KeyValue("Recipe", code(vm.variant)),
            KeyValue("Made by", f"bot {__version__}")]
    if vm.quantize.status != Status.done:
        rows.append(KeyValue("Quantize status", vm.quantize.status.value))
    return rows

