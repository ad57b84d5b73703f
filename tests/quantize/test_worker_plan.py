"""How `bot quantize --workers N` spreads variants over worker processes (pure planning, no quantization)."""

from __future__ import annotations

import pytest

from bot.manifest import VariantManifest
from bot.recipes import BUILTIN_ORDER, load_recipes
from bot.recipes.resolve import resolve
from bot.stages.quantize import plan_workers, recipe_cost

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}


def _pending(ids=BUILTIN_ORDER):
    book = load_recipes(None)
    return [(resolve(book.get(rid), CONFIG), VariantManifest(run_id="r", variant=rid)) for rid in ids]


def test_costs_rank_the_long_recipes_first():
    cost = {r.recipe.id: recipe_cost(r) for r, _ in _pending()}
    assert cost["w4a16-autoround"] > cost["w4a16-awq"] > cost["w4a16-gptq"] >= cost["w8a8-int8"] > cost["fp8-dynamic"]


@pytest.mark.parametrize("workers", [1, 2, 3, 6, 10])
def test_every_variant_lands_in_exactly_one_group(workers):
    groups = plan_workers(_pending(), workers)
    assert len(groups) == min(workers, len(BUILTIN_ORDER))
    ids = [r.recipe.id for g in groups for r, _ in g]
    assert sorted(ids) == sorted(BUILTIN_ORDER)
    for g in groups:  # each group keeps the user's recipe order
        order = [r.recipe.id for r, _ in g]
        assert order == [rid for rid in BUILTIN_ORDER if rid in order]


def test_two_workers_split_the_long_recipes():
    groups = [{r.recipe.id for r, _ in g} for g in plan_workers(_pending(), 2)]
    together = [g for g in groups if {"w4a16-autoround", "w4a16-awq"} <= g]
    assert not together, groups  # the two longest never share a worker when two are available


def test_autoround_cost_follows_its_iterations(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("overrides:\n  w4a16-autoround: {iters: 10}\n")
    short = resolve(load_recipes(f).get("w4a16-autoround"), CONFIG)
    (full, _), = _pending(["w4a16-autoround"])
    assert recipe_cost(short) < recipe_cost(full)


def test_workers_are_capped_by_host_memory():
    from bot.stages.quantize import workers_that_fit

    gb = 10**9
    assert workers_that_fit(1, 16 * gb, 10 * gb) == (1, None)  # one worker always runs (llm-compressor offloads)
    assert workers_that_fit(2, 16 * gb, 125 * gb) == (2, None)
    fit, note = workers_that_fit(4, 16 * gb, 100 * gb)  # 36 GB per worker, 90 GB usable
    assert fit == 2 and "4 quantize workers asked for, 2 used" in note and "36.0 GB" in note
    assert workers_that_fit(3, None, 100 * gb) == (3, None)  # size unknown: as asked
