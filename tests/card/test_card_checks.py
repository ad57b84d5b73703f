"""Checkpoint checks (chat template, tokenizer, licence files), template errors, licences, .eval_results, the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import typer
import yaml
from cardfakes import CHAT_TEMPLATE
from huggingface_hub import ModelCard, parse_eval_result_entries
from typer.testing import CliRunner

from bot.config import DEFAULT_TEMPLATES
from bot.errors import ConfigError, StageError
from bot.manifest import Status, TaskScore
from bot.stages.card.render import render_card, render_template
from bot.stages.card.checks import check_checkpoint, render_chat


def _tokenizer_config(model_dir):
    return json.loads((model_dir / "tokenizer_config.json").read_text())


def _set_template(model_dir, template):
    cfg = _tokenizer_config(model_dir)
    if template is None:
        cfg.pop("chat_template", None)
    else:
        cfg["chat_template"] = template
    (model_dir / "tokenizer_config.json").write_text(json.dumps(cfg))


def test_render_chat_matches_a_known_string():
    out = render_chat(CHAT_TEMPLATE, {"bos_token": "<s>", "eos_token": "</s>"})
    assert out == ("<s><|user|>\nHello! Who are you?</s>\n<|assistant|>\nI am a helpful assistant.</s>\n"
                   "<|user|>\nWhat is 2 + 2?</s>\n<|assistant|>\n")


def test_chat_template_that_differs_fails_the_card(gpu_run):
    rundir, settings = gpu_run
    _set_template(rundir.model_dir("w4a16-gptq"), CHAT_TEMPLATE.replace("<|assistant|>", "<|bot|>"))
    with pytest.raises(StageError) as exc:
        render_card(rundir, "w4a16-gptq", settings)
    assert "chat template renders a two-turn conversation differently from the base" in str(exc.value)
    assert "<|bot|>" in str(exc.value) and "character 142" in str(exc.value)
    card = rundir.read_variant("w4a16-gptq").card
    assert card.status == Status.failed and any("chat template" in p for p in card.problems)
    assert not rundir.card_dir("w4a16-gptq").exists()


def test_different_special_tokens_fail_too(gpu_run):
    rundir, settings = gpu_run
    cfg = _tokenizer_config(rundir.model_dir("fp8-dynamic"))
    cfg["eos_token"] = "</s>"
    (rundir.model_dir("fp8-dynamic") / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(StageError, match="differently from the base"):
        render_card(rundir, "fp8-dynamic", settings)


def test_chat_template_jinja_file_is_read_first(gpu_run):
    rundir, settings = gpu_run
    model = rundir.model_dir("w8a8-int8")
    _set_template(model, "{{ 'ignored because chat_template.jinja wins' }}")
    (model / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    assert render_card(rundir, "w8a8-int8", settings).status == Status.done


def test_missing_files_are_problems(gpu_run):
    rundir, settings = gpu_run
    model = rundir.model_dir("w4a16-gptq")
    (model / "NOTICE").unlink()
    (model / "tokenizer.json").unlink()
    _set_template(model, None)
    result = check_checkpoint(model, rundir.base_dir / "model", ["LICENSE", "NOTICE"])
    assert result.errors == ["no tokenizer file (tokenizer.json or tokenizer.model)",
                             "the base's licence files are missing: NOTICE", "chat template missing (the base has one)"]
    with pytest.raises(StageError, match="NOTICE"):
        render_card(rundir, "w4a16-gptq", settings)
    assert rundir.read_variant("w4a16-gptq").card.problems == result.errors


def test_without_the_base_snapshot_the_comparison_is_skipped_with_a_note(gpu_run):
    rundir, settings = gpu_run
    shutil.rmtree(rundir.base_dir / "model")
    record = render_card(rundir, "w4a16-gptq", settings)
    assert "base snapshot not available: chat template not compared with the base" in record.notes


def test_undefined_template_variable_fails_clearly(gpu_run, tmp_path):
    rundir, settings = gpu_run
    templates = tmp_path / "my-templates"
    shutil.copytree(DEFAULT_TEMPLATES, templates)
    text = (templates / "variant.md.j2").read_text().splitlines()
    text.insert(3, "Downloads: {{ card.downloads }}")
    (templates / "variant.md.j2").write_text("\n".join(text) + "\n")
    with pytest.raises(ConfigError) as exc:
        render_card(rundir, "w4a16-gptq", settings, templates_dir=templates)
    message = exc.value.one_line()
    assert f"{templates / 'variant.md.j2'}:4:" in message and "'downloads'" in message
    assert "VariantCard" in message
    assert not rundir.card_dir("w4a16-gptq").exists()


def test_template_syntax_error_and_missing_template(tmp_path):
    (tmp_path / "variant.md.j2").write_text("line one\n{% for x in %}\n")
    with pytest.raises(ConfigError, match=r"variant\.md\.j2:2: template syntax error"):
        render_template(tmp_path, "variant.md.j2")
    with pytest.raises(ConfigError, match="template collection.md.j2 not found"):
        render_template(tmp_path, "collection.md.j2")


def test_custom_licence_is_inherited(tmp_path):
    from cardfakes import make_run

    rundir, settings = make_run(tmp_path, license="other", license_name="acme-community-license",
                                license_link="LICENSE")
    render_card(rundir, "w4a16-gptq", settings)
    card = ModelCard.load(rundir.card_dir("w4a16-gptq") / "README.md")
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other", "acme-community-license", "LICENSE")
    assert "keeps its licence: **acme-community-license** ([terms](LICENSE))" in card.text


def test_eval_results_files_only_for_full_benchmark_runs(gpu_run):
    rundir, settings = gpu_run
    vm = rundir.read_variant("w4a16-gptq")
    vm.validate_.accuracy.tasks.append(TaskScore(task="gpqa_diamond_zeroshot", metric="acc_norm,none", value=0.3131))
    rundir.write_variant(vm)
    record = render_card(rundir, "w4a16-gptq", settings)
    assert ".eval_results/gpqa_diamond_zeroshot.yaml" not in record.files
    assert any("250-sample subset" in n for n in record.notes)
    vm = rundir.read_variant("w4a16-gptq")
    vm.validate_.accuracy.limit = None
    rundir.write_variant(vm)
    record = render_card(rundir, "w4a16-gptq", settings)
    assert ".eval_results/gpqa_diamond_zeroshot.yaml" in record.files
    data = yaml.safe_load((rundir.card_dir("w4a16-gptq") / ".eval_results" / "gpqa_diamond_zeroshot.yaml").read_text())
    (entry,) = parse_eval_result_entries(data)
    assert (entry.dataset_id, entry.task_id, entry.value) == ("Idavidrein/gpqa", "gpqa_diamond", 31.31)
    assert entry.source_url == "https://huggingface.co/bot-demo/Llama-Demo-8B-Instruct-W4A16-GPTQ"


def test_cli_renders_every_quantized_variant(gpu_run, monkeypatch):
    from bot.cli.card import register

    rundir, _settings = gpu_run
    monkeypatch.setenv("BOT_NAMESPACE", "bot-demo")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """bot"""

    register(app)
    result = CliRunner().invoke(app, ["card", str(rundir.root)])
    assert result.exit_code == 0, result.output
    assert "w4a16-awq: skipped (quantization failed: RuntimeError" in result.output
    assert "(3 files, for bot-demo/Llama-Demo-8B-Instruct-NVFP4)" in result.output
    for vid in ("w4a16-gptq", "w8a8-int8", "fp8-dynamic", "nvfp4"):
        assert (rundir.card_dir(vid) / "README.md").is_file()
    result = CliRunner().invoke(app, ["card", str(rundir.root), "--variant", "w4a16-awq"])
    assert result.exit_code != 0 and isinstance(result.exception, StageError)
    assert "has no checkpoint to describe (quantization failed" in str(result.exception)
