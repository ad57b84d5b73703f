"""Variant cards rendered from a synthetic run: golden files, every number against its manifest, missing numbers,
HTML tables, front matter round trip, no local paths, the chart, the collection text."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest
from cardfakes import BASE_SCORES, BASE_SPEED, VARIANTS
from card_tables import decimals, md_tables, number
from huggingface_hub import ModelCard

from bot.manifest import Status
from bot.stages.card.render import render_card, render_cards, render_collection
from bot.stages.card.data import RunData
from bot.stages.card.chart import CHART_NAME, chart_points

GOLDEN = Path(__file__).parent / "golden"


def readme(rundir, variant: str) -> str:
    return (rundir.card_dir(variant) / "README.md").read_text(encoding="utf-8")


def body(text: str) -> str:
    return text.split("\n---\n", 1)[1]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("BOT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with BOT_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file (BOT_UPDATE_GOLDEN=1 to update)"


@pytest.mark.parametrize("variant", ["w4a16-gptq", "nvfp4"])
def test_golden_gpu(gpu_run, variant):
    rundir, settings = gpu_run
    record = render_card(rundir, variant, settings)
    assert record.status == Status.done and record.chart == CHART_NAME
    check_golden(f"{variant}.md", readme(rundir, variant))


def test_golden_cpu(cpu_run):
    rundir, settings = cpu_run
    render_card(rundir, "fp8-dynamic", settings)
    check_golden("fp8-dynamic-cpu.md", readme(rundir, "fp8-dynamic"))


def test_golden_collection(gpu_run):
    rundir, settings = gpu_run
    text = render_collection(rundir, settings)
    assert len(text.description) <= 150 and all(len(n) <= 500 for n in text.notes.values())
    lines = [f"title: {text.title}", f"description: {text.description}", *(f"{k}: {v}" for k, v in text.notes.items())]
    check_golden("collection.txt", "\n".join(lines) + "\n")
    assert "bot-demo/Llama-Demo-8B-Instruct-W4A16-AWQ" not in text.notes  # failed: never published


def test_every_table_number_is_its_manifest_value(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "w4a16-gptq", settings)
    tables = md_tables(readme(rundir, "w4a16-gptq"))
    vm = rundir.read_variant("w4a16-gptq")
    comp = vm.validate_.comparison
    m = VARIANTS["w4a16-gptq"]
    acc = {row["Task"].strip("`"): row for row in tables["Task"]}
    assert set(acc) == set(BASE_SCORES)
    for task, (_metric, base_value, base_err) in BASE_SCORES.items():
        row = acc[task]
        assert number(row["Base"]) == round(base_value * 100, 2)
        assert number(row["This variant"]) == round(m.scores[task] * 100, 2)
        assert number(row["Recovery"]) == round(comp.recovery[task], 2)
        base_se, var_se = row["Stderr (base / variant)"].split(" / ")
        assert number(base_se) == round(base_err * 100, 2) and number(var_se) == round((base_err + 0.0004) * 100, 2)
        paired = next(t for t in comp.tasks if t.task == task)
        low, high = row["Recovery CI"].rstrip("%").split("–")
        assert (float(low), float(high)) == (round(paired.ci[0], 2), round(paired.ci[1], 2))
        assert row["Flips (right→wrong / wrong→right)"] == f"{paired.right_to_wrong} / {paired.wrong_to_right}"
    speed = {row["Measurement"]: row for row in tables["Measurement"]}
    decode, ttft, tpot, batched, memory = BASE_SPEED
    expected = {  # "vs base": the validate stage's ratios only (None: it records none for that row)
        "Batch-1 decode (tokens/s)": (decode, m.decode, 1, comp.speedup_batch1),
        "Batch-1 time to first token (ms)": (ttft, m.ttft, 1, None),
        "Batch-1 time per output token (ms)": (tpot, m.tpot, 1, None),
        "Batched output throughput (tokens/s)": (batched, m.batched, 1, comp.speedup_batched),
        "Weights in GPU memory": (memory / 1e9, m.memory / 1e9, 2, None),
        "Size on disk": (memory / 1e9, m.size / 1e9, 2, comp.size_ratio),
    }
    assert set(speed) == set(expected)
    for what, (b, v, _digits, vs) in expected.items():
        assert number(speed[what]["Base"]) == round(b, decimals(speed[what]["Base"])), what
        assert number(speed[what]["This variant"]) == round(v, decimals(speed[what]["This variant"])), what
        if vs is None:
            assert speed[what]["vs base"] == "—", what
        else:
            assert number(speed[what]["vs base"]) == round(vs, 2), what
    fidelity = {row["Fidelity"]: row["Value"] for row in tables["Fidelity"]}
    fid = vm.validate_.fidelity
    assert number(fidelity["Mean KL divergence (base ‖ variant) per token"]) == fid.kl_mean
    assert number(fidelity["KL divergence, 99th percentile of tokens"]) == fid.kl_p99
    assert number(fidelity["Top-1 agreement (same most likely next token)"]) == round(fid.top1_agreement * 100, 2)
    assert number(fidelity["Tokens scored"]) == fid.tokens and fid.text_fingerprint in fidelity["Held-out text"]
    siblings = {row["Model"]: row for row in tables["Model"]}
    by_name = {RunData.load(rundir, settings).recipes[v].name: v for v in VARIANTS}
    checked = 0
    for model, row in siblings.items():
        vid = next((v for name, v in by_name.items() if name in model), None)
        if vid is None:
            continue
        checked += 1
        sib = rundir.read_variant(vid)
        sc = sib.validate_.comparison
        assert number(row["Size on disk"]) == round(sib.quantize.size_bytes / 1e9, 2)
        assert number(row["Batch-1 speedup"]) == round(sc.speedup_batch1, 2)
        assert number(row["Batched speedup"]) == round(sc.speedup_batched, 2)
        if sc.mean_recovery is not None:
            assert number(row["Mean recovery"]) == round(sc.mean_recovery, 2)
    assert len(siblings) == 6 and checked == 4  # the base, five variants of which four have numbers


def test_missing_measurements_say_not_measured_with_the_reason(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "nvfp4", settings)
    text = readme(rundir, "nvfp4")
    tables = md_tables(text)
    for row in tables["Task"]:
        assert row["This variant"] == "not measured (lm-eval failed)"
        assert row["Recovery"] == "not measured (lm-eval failed)"
    assert "Mean recovery: not measured (lm-eval failed: CUDA out of memory while loading " \
           "bot-demo/Llama-Demo-8B-Instruct-NVFP4 (tried 2.00 GiB))" in text
    awq = next(r for r in tables["Model"] if r["Model"].startswith("W4A16 AWQ"))
    assert awq["Size on disk"] == awq["Mean recovery"] == "not measured (quantization failed)"
    assert awq["Quality gate"].startswith("❌ quantization failed: RuntimeError: AWQ found no smoothing layer")
    assert "> ⚠️ **Published without passing the quality gate** (`--force`)" in text
    assert "accuracy not measured: lm-eval failed" in text
    assert "not measured" not in "".join(r["Base"] for r in tables["Task"])  # the base was measured


def test_cpu_numbers_are_labelled_cpu(cpu_run):
    rundir, settings = cpu_run
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    tables = md_tables(text)
    for row in tables["Measurement"]:
        if row["Measurement"] != "Size on disk":
            assert row["Base"].endswith("(CPU)") and row["This variant"].endswith("(CPU)"), row
    assert "CPU numbers, not GPU speed" in text and "with vLLM" not in text.split("## Speed")[1].split("|")[0]
    for row in tables["Model"][1:]:
        if "quantization failed" not in row["Batch-1 speedup"]:
            assert row["Batch-1 speedup"].endswith("(CPU)") and row["Batched speedup"].endswith("(CPU)")
    assert "This run had no GPU" in text
    assert all(row["Tested in this run"] == "not tested in this run" for row in tables["GPU generation"])
    assert "Speed was measured on CPU only" in text


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.parametrize("variant", ["w4a16-gptq", "nvfp4", "fp8-dynamic", "w8a8-int8"])
def test_markdown_tables_render_to_html(gpu_run, variant):
    rundir, settings = gpu_run
    render_card(rundir, variant, settings)
    html = markdown.markdown(body(readme(rundir, variant)), extensions=["tables", "fenced_code"])
    parser = _Tables()
    parser.feed(html)
    pipe_tables = md_tables(readme(rundir, variant))
    assert len(parser.tables) == len(pipe_tables) + 2  # + the two sample-generation tables
    for table in parser.tables:
        widths = {len(row) for row in table}
        assert len(widths) == 1, f"ragged table: {table[0]}"
        assert all(cell for row in table for cell in row), f"empty cell in table {table[0]}"


def test_front_matter_round_trips(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "w8a8-int8", settings)
    card = ModelCard.load(rundir.card_dir("w8a8-int8") / "README.md")
    data = card.data
    assert data.base_model == "acme/Llama-Demo-8B-Instruct"
    assert data.base_model_relation == "quantized"
    assert data.base_model_revision == "0123456789abcdef0123456789abcdef01234567"
    assert data.license == "apache-2.0" and data.license_name is None
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.language == ["en"] and data.datasets == ["HuggingFaceH4/ultrachat_200k"]
    assert data.tags == ["quantized", "llmcompressor", "compressed-tensors", "vllm", "w8a8", "int8", "smoothquant", "gptq"]
    assert data.model_name == "bot-demo/Llama-Demo-8B-Instruct-W8A8-INT8"
    results = {r.dataset_type: r for r in data.eval_results}
    assert set(results) == {"allenai/ai2_arc", "Rowan/hellaswag", "openai/gsm8k"}
    assert results["openai/gsm8k"].metric_type == "exact_match"
    assert results["openai/gsm8k"].metric_value == round(VARIANTS["w8a8-int8"].scores["gsm8k"] * 100, 2)
    assert results["allenai/ai2_arc"].dataset_config == "ARC-Challenge" and results["allenai/ai2_arc"].task_type == "text-generation"
    assert card.text.lstrip().startswith("# Llama-Demo-8B-Instruct-W8A8-INT8")


def test_data_free_recipe_has_no_datasets_and_no_calibration(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "fp8-dynamic", settings)
    card = ModelCard.load(rundir.card_dir("fp8-dynamic") / "README.md")
    assert card.data.datasets is None and "fp8" in card.data.tags
    assert "oneshot(model=model, recipe=recipe)" in card.text and "this recipe is data-free" in card.text


def test_nothing_local_is_written(gpu_run, tmp_path):
    rundir, settings = gpu_run
    for outcome in render_cards(rundir, settings):
        if outcome.record is None:
            continue
        card_dir = rundir.card_dir(outcome.variant)
        assert outcome.record.files == ["README.md", "bot_manifest.json", CHART_NAME]
        for path in card_dir.rglob("*"):
            if path.suffix in (".md", ".json", ".yaml"):
                text = path.read_text(encoding="utf-8")
                assert str(tmp_path) not in text and "/tmp/" not in text, path
    assert [o.skipped for o in render_cards(rundir, settings) if o.variant == "w4a16-awq"] == [
        "quantization failed: RuntimeError: AWQ found no smoothing layer for 'model.layers.0.mlp'"]


def test_card_section_is_recorded(gpu_run):
    rundir, settings = gpu_run
    record = render_card(rundir, "w4a16-gptq", settings)
    stored = rundir.read_variant("w4a16-gptq").card
    assert stored == record and stored.repo_id == "bot-demo/Llama-Demo-8B-Instruct-W4A16-GPTQ"
    assert stored.template_dir == "built-in" and stored.problems == []
    assert "chat template renders a two-turn conversation identically to the base" in stored.notes
    import hashlib

    assert stored.readme_sha256 == hashlib.sha256(readme(rundir, "w4a16-gptq").encode()).hexdigest()


def test_chart_marks_missing_recovery(gpu_run):
    rundir, settings = gpu_run
    points, kind = chart_points(RunData.load(rundir, settings), "nvfp4")
    assert kind == "batched throughput"
    by_label = {p.label: p for p in points}
    assert by_label["NVFP4"].recovery is None and by_label["NVFP4"].current
    assert "W4A16 AWQ" not in by_label  # no checkpoint, no size: not drawn
    render_card(rundir, "nvfp4", settings)
    assert (rundir.card_dir("nvfp4") / CHART_NAME).read_bytes().startswith(b"\x89PNG")
    assert f"]({CHART_NAME})" in readme(rundir, "nvfp4")


def test_partial_runs_render_with_reasons(gpu_run):
    """Base never validated, one variant only quantized, a local base, an empty recipe section: still a card, every
    gap says why, every table is complete."""
    rundir, settings = gpu_run
    base = rundir.read_base()
    base.validate_ = None
    base.base.source, base.base.model_id = "local", "local/Llama-Demo-8B-Instruct"
    rundir.write_base(base)
    vm = rundir.read_variant("fp8-dynamic")
    vm.validate_ = None
    vm.quantize.recipe = {}
    rundir.write_variant(vm)
    render_card(rundir, "fp8-dynamic", settings)
    text = readme(rundir, "fp8-dynamic")
    card = ModelCard.load(rundir.card_dir("fp8-dynamic") / "README.md")
    assert card.data.base_model is None and card.data.eval_results is None
    assert "base_model_relation" not in card.data.to_dict()
    assert "> ⚠️ **Not validated yet.** The numbers below are incomplete." in text
    assert "No lm-eval task was run for this variant or its base." in text
    tables = md_tables(text)
    assert all(row["This variant"].startswith("not measured (not validated)") for row in tables["Measurement"][:5])
    assert tables["Measurement"][5]["This variant"] == "9.08 GB"  # size on disk comes from quantize
    assert "Sample generations: not measured (not validated)." in text
    assert "FP8_DYNAMIC" in text  # the recipe came from the built-in file of the same id
    render_card(rundir, "w4a16-gptq", settings)
    tables = md_tables(readme(rundir, "w4a16-gptq"))
    assert {row["Base"] for row in tables["Task"]} == {"not measured (not validated)"}
    assert {row["Recovery"] for row in tables["Task"]} == {"98.73%", "99.24%", "96.88%"}  # the manifest's comparison
    html = markdown.markdown(body(readme(rundir, "w4a16-gptq")), extensions=["tables"])
    parser = _Tables()
    parser.feed(html)
    assert all(cell for t in parser.tables for row in t for cell in row)


def test_collection_for_the_published_variants_only(gpu_run):
    rundir, settings = gpu_run
    text = render_collection(rundir, settings, ["w4a16-gptq", "fp8-dynamic"])
    assert list(text.notes) == ["bot-demo/Llama-Demo-8B-Instruct-W4A16-GPTQ", "bot-demo/Llama-Demo-8B-Instruct-FP8-Dynamic"]
    assert "2 variants" in text.description


def test_what_was_measured_is_shown_even_when_a_later_step_failed(gpu_run):
    """lm-eval crashed after the speed run: the speeds stay, the accuracy says why it is missing, and with no
    comparison recorded by the validate stage no ratio is shown."""
    rundir, settings = gpu_run
    vm = rundir.read_variant("w8a8-int8")
    v = vm.validate_
    v.status, v.error = Status.failed, "lmeval_worker: exited with code -9 (killed: out of memory?)\n--- log tail ---\nboom"
    v.accuracy.tasks, v.accuracy.error, v.comparison, v.gate = [], "exited with code -9", None, None
    rundir.write_variant(vm)
    base = rundir.read_base()
    base.validate_.hardware = base.validate_.hardware.model_copy(update={"name": "NVIDIA A100-SXM4-80GB"})
    rundir.write_base(base)
    render_card(rundir, "w8a8-int8", settings)
    text = readme(rundir, "w8a8-int8")
    assert "> ⚠️ **Not validated:** validation failed: lmeval_worker: exited with code -9 (killed: out of memory?)." in text
    assert "boom" not in text and "log tail" not in text
    speed = {row["Measurement"]: row for row in md_tables(text)["Measurement"]}
    decode = speed["Batch-1 decode (tokens/s)"]
    assert number(decode["This variant"]) == VARIANTS["w8a8-int8"].decode
    # the variant's validation stopped before it compared anything: no ratio, and none made up by the card
    assert {row["vs base"] for row in speed.values()} == {"not measured (no comparison recorded)"}
    assert {row["This variant"] for row in md_tables(text)["Task"]} == {"not measured (lm-eval failed: exited with code -9)"}
    assert "The base was measured on NVIDIA A100-SXM4-80GB." in text
