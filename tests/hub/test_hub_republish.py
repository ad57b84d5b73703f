"""`bot publish` twice on the same run makes no commit the second time: the first publish is already complete.

Against `minihub.MiniHub` (a second, minimal Hub server in the test tree, not `bot.localhub`), through the real
pipeline (`publish_model`): a Qwen3-MoE-shaped base (its expert in-features force the W4A16 group-size fallback),
all six recipes, every gate rejected and `--force`, which is when the cards of the first publish used to lack
their sibling links (they were added by the second publish: a new README.md in 6 of 6 repos). The run's
quantize and validate records are written as those stages write them for this very validate plan (so both
stages skip, as they do on any resumed run); card, publish and collection run for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hubfakes import safetensors_bytes, write_folder
from minihub import MiniHub

from bot.config import Settings
from bot.manifest import (
    AccuracyRecord, Comparison, GateDecision, GateState, Generation, LoadCheck, SpeedRecord, Status, TaskScore,
    ValidateRecord, VariantManifest, VariantValidateRecord,
)
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.recipes.resolve import resolve
from bot.stages.model import resolve_local
from bot.stages.pipeline import publish_model
from bot.stages.quantize import _record_from_result
from bot.stages.validate.plan import plan_for

MOE = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
       "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144,
       "moe_intermediate_size": 1472, "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 2,
       "torch_dtype": "bfloat16"}
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
TOKENIZER = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}


def _checkpoint(path: Path, quantized: bool) -> Path:
    config = dict(MOE, **({"quantization_config": {"quant_method": "compressed-tensors"}} if quantized else {}))
    return write_folder(path, {
        "config.json": json.dumps(config), "tokenizer_config.json": json.dumps(TOKENIZER), "tokenizer.json": "{}",
        "generation_config.json": json.dumps({"eos_token_id": 2}), "model.safetensors": safetensors_bytes(),
        "LICENSE": "Apache-2.0\n", "README.md": "---\nlicense: apache-2.0\n---\n# Tiny MoE\n"})


def _measured(plan, cls=ValidateRecord, **extra):
    """A validate record as the stage leaves it for `plan` (so a rerun of the stage skips it)."""
    return cls(status=Status.done, backend=plan.backend, validated_at="2026-11-20T10:00:00+00:00",
               load=LoadCheck(ok=True, backend=plan.backend, memory_bytes=1_000_000),
               generations=[Generation(prompt=p, output="Blue light scatters more.", ok=True) for p in plan.prompts],
               speed=SpeedRecord(label=plan.label, settings={"requested": plan.speed}),
               accuracy=AccuracyRecord(backend=plan.backend, dtype=plan.dtype, limit=plan.limit,
                                       num_fewshot=plan.num_fewshot,
                                       tasks=[TaskScore(task=t, metric="acc,none", value=0.5) for t in plan.tasks]),
               **extra)


@pytest.fixture
def moe_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "minihub-test-token")
    with MiniHub(user="tester") as hub:
        base_dir = _checkpoint(tmp_path / "Tiny-MoE", quantized=False)
        settings = Settings(runs_dir=tmp_path / "runs", namespace="tester", hub_target="hub", hub_endpoint=hub.url,
                            hub_retries=1)
        rundir, base = resolve_local(str(base_dir), settings)
        plan = plan_for(settings)
        base.validate_ = _measured(plan)
        rundir.write_base(base)
        for recipe in load_recipes().select(list(BUILTIN_ORDER)):
            resolved = resolve(recipe, MOE, samples=32, seq_len=256)
            quantize = _record_from_result(resolved, {"status": "done", "size_bytes": 400_000, "files": []})
            gate = GateDecision(passed=False, state=GateState.rejected, threshold=96.0,
                                reasons=["mean recovery 61.2% below 96.0%"], rule="CI lower bound at least 96%")
            validate = _measured(plan, VariantValidateRecord, gate=gate,
                                 comparison=Comparison(mean_recovery=61.2, speed_comparable=True))
            rundir.write_variant(VariantManifest(run_id=rundir.run_id, variant=recipe.id, quantize=quantize,
                                                 validate=validate))
            _checkpoint(rundir.model_dir(recipe.id), quantized=True)
        yield hub, base_dir, settings, rundir


def test_publishing_twice_makes_no_commit_the_second_time(moe_run):
    hub, base_dir, settings, rundir = moe_run
    ids = list(BUILTIN_ORDER)
    first = publish_model(str(base_dir), None, ids, settings, force=True)
    assert [v.state for v in first.variants] == ["published"] * 6
    repos = {v.variant: v.repo_id for v in first.variants}
    assert repos["w4a16-gptq"] == "tester/Tiny-MoE-W4A16-GPTQ"
    heads, commits, collections = hub.heads(), hub.commit_requests(), json.dumps(hub.collections, sort_keys=True)
    assert commits == 6
    for vid, repo in repos.items():  # the first publish is complete: every card links every sibling
        readme = hub.files(repo)["README.md"].decode()
        for other, other_repo in repos.items():
            if other != vid:
                assert f"({hub.url}/{other_repo})" in readme, (vid, other)
        assert "Published without passing the quality gate** (`--force`)" in readme

    second = publish_model(str(base_dir), None, ids, settings, force=True)
    assert [v.changed for v in second.variants] == [False] * 6
    assert hub.commit_requests() == commits, "the second publish committed again"
    assert hub.heads() == heads
    assert json.dumps(hub.collections, sort_keys=True) == collections
    for vid in ids:
        m = rundir.read_variant(vid)
        assert m.target is not None and m.target.repo_id == repos[vid] == m.publish.repo_id and m.target.forced


def test_the_group_size_fallback_reads_the_same_everywhere(moe_run):
    """128 does not divide the experts' 1472 in-features: summary, recipe block, decisions and the applied
    llm-compressor recipe all say 64."""
    hub, base_dir, settings, rundir = moe_run
    publish_model(str(base_dir), None, ["w4a16-gptq"], settings, force=True)
    readme = hub.files("tester/Tiny-MoE-W4A16-GPTQ")["README.md"].decode()
    summary = readme.split("\n# Tiny-MoE-W4A16-GPTQ\n", 1)[1].split("\n## ", 1)[0]
    assert "one scale per group of 64 input channels" in summary and "128" not in summary
    recipe_block = readme.split("as resolved for this model:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    assert "group_size: 64" in recipe_block and "group of 64" in recipe_block and "128 input" not in recipe_block
    assert "| Group size | 64 (recipe asks 128) |" in readme
    assert "group_size: 64" in rundir.read_variant("w4a16-gptq").quantize.llmcompressor_recipe
