"""The CLI's output outside a terminal: real `bot` processes with stdout/stderr piped.

Ids whole, `recipes --show` is YAML that parses back to the recipe, tables keep every cell's full text (markdown
off a terminal, folded rich columns on one), no Python dict reprs, no progress bar left behind."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from bot.cli._progress import QuantizeDisplay
from bot.recipes import BUILTIN_ORDER, load_recipes

ROOT = Path(__file__).resolve().parent.parent
EXTRA_RECIPES = ROOT / "tests" / "reliability" / "recipes.yaml"  # adds the data-free w8a16-rtn
DICT_REPR = re.compile(r"\{'[^']*': ")
FAST_SPEED = {"BOT_VALIDATE__MAX_NEW_TOKENS": "16", **{f"BOT_VALIDATE__SPEED__{k}": v for k, v in {
    "BATCH1_INPUT_LEN": "16", "BATCH1_OUTPUT_LEN": "16", "BATCH1_RUNS": "1", "BATCHED_INPUT_LEN": "16",
    "BATCHED_OUTPUT_LEN": "16", "BATCHED_NUM_PROMPTS": "4"}.items()}, "BOT_VALIDATE__FIDELITY__TOKENS": "1024"}
BAR = re.compile(r"[━█▏▎▍▌▋▊▉]|\r|\x1b\[")


def bot(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "HF_TOKEN", "TTY_", "FORCE_"))}
    base.update(PYTHONPATH=str(ROOT), HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "COLUMNS"):  # the local Hub target is HTTP; rich's default width
        base.pop(name, None)  # rich's default width (80) off a terminal: the width that cut the ids
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env=base, capture_output=True, text=True,
                          timeout=timeout)


def md_rows(out: str) -> list[list[str]]:
    """The cells of every markdown table row (header and separator rows included)."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in out.splitlines()
            if line.startswith("|")]


def test_recipes_list_keeps_every_id_and_cell_whole():
    p = bot("recipes")
    assert p.returncode == 0, p.stderr
    rows = md_rows(p.stdout)
    assert rows[0][:4] == ["id", "repo suffix", "scheme", "algorithm"]
    book = load_recipes(None)
    assert [r[0] for r in rows[2:]] == list(BUILTIN_ORDER)
    for row in rows[2:]:
        recipe = book.get(row[0])
        assert row[1:4] == [recipe.suffix, recipe.scheme, recipe.algorithm]
    assert "…" not in p.stdout and not DICT_REPR.search(p.stdout)


def test_recipes_table_on_a_narrow_terminal_wraps_and_never_cuts():
    p = bot("recipes", env={"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "70", "NO_COLOR": "1"})
    assert p.returncode == 0, p.stderr
    assert "│" in p.stdout and "…" not in p.stdout  # a rich table, folded rather than ellipsised
    columns: dict[int, str] = {}  # each column's text, its lines joined: a folded cell's pieces are contiguous
    for line in p.stdout.splitlines():
        if line.startswith("│"):
            for i, cell in enumerate(line.split("│")[1:-1]):
                columns[i] = columns.get(i, "") + re.sub(r"\s", "", cell)
    for recipe in load_recipes(None):
        assert recipe.id in columns[0] and recipe.suffix in columns[1]
        assert re.sub(r"\s", "", recipe.algorithm) in columns[3]


@pytest.mark.parametrize("recipe_id", [*BUILTIN_ORDER, "w8a16-rtn"])
def test_show_prints_yaml_that_parses_back_to_the_recipe(recipe_id):
    p = bot("recipes", "--show", recipe_id, "--recipes-file", str(EXTRA_RECIPES))
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout) == load_recipes(EXTRA_RECIPES).get(recipe_id).model_dump(mode="json")


def test_quantize_display_estimates_from_costs_and_layers():
    """The ETA arithmetic on a scripted clock: expected = cost x seconds per cost unit measured in this run;
    inside a recipe, the layers done give the time left. Off a terminal every line is plain."""
    now = [0.0]
    buf = io.StringIO()
    target = Console(file=buf, force_terminal=False, width=80)
    with QuantizeDisplay(target=target, interval_s=30, clock=lambda: now[0]) as display:
        display({"event": "begin", "variants": ["a", "b"]})
        display({"event": "plan", "costs": {"a": 1.0, "b": 3.0}, "workers": 1})
        display({"event": "start", "variant": "a"})
        now[0] = 100.0
        display({"event": "end", "variant": "a", "status": "done"})
        display({"event": "start", "variant": "b"})
        assert display.expected("b") == pytest.approx(300.0)
        for index in (1, 2, 3):  # subgraph 1 starts at once, 2 after 20 s, 3 after 40 s (of 5)
            now[0] = 100.0 + 20.0 * (index - 1)
            display({"event": "layer", "variant": "b", "index": index, "total": 5})
        assert display.left("b") == pytest.approx(40.0 / 2 * 3)
        for index, at in ((1, 160.0), (2, 170.0)):  # a second pass over the layers (SmoothQuant, then GPTQ)
            now[0] = at
            display({"event": "layer", "variant": "b", "index": index, "total": 5})
        assert display.left("b") == pytest.approx(10.0 / 1 * 4)  # this pass's rate, not the recipe's elapsed time
        assert "b layer 2/5 (pass 2), 1m10s in, ~40s left" in display.describe()
        now[0] = 200.0
        display({"event": "end", "variant": "b", "status": "done"})
    lines = buf.getvalue().splitlines()
    assert any("a: started (no estimate" in line for line in lines)
    assert any(line.endswith("a: done in 1m40s") for line in lines)
    assert any("b: started (expected ~5m00s, ETA " in line for line in lines)
    layer_lines = [line for line in lines if "layer " in line]
    assert len(layer_lines) == 3 and "b layer 1/5" in layer_lines[0]  # the first at once, then at most every 30 s
    assert "b layer 3/5, 40s in, ~1m00s left" in layer_lines[1]
    assert "b layer 2/5 (pass 2), 1m10s in, ~40s left" in layer_lines[2]
    assert lines[-1].endswith("b: done in 1m40s (expected ~5m00s)")
    assert not BAR.search(buf.getvalue())


@pytest.fixture(scope="module")
def published(tiny_llama, tmp_path_factory):
    """`bot publish` of the tiny Llama (two data-free recipes) to the local target, piped; the gate set out of
    reach for one of them (w8a16-rtn), so the table carries its reason."""
    runs = tmp_path_factory.mktemp("cli-output") / "runs"
    env = {"BOT_GATE__MIN_RECOVERY": json.dumps({"fp8-dynamic": 0, "w8a16-rtn": 1000}),
           "BOT_GATE__REQUIRE_GENERATION": "false",  # random weights repeat themselves; the gate is not under test
           "HF_HOME": str(runs.parent / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **FAST_SPEED}
    p = bot("publish", str(tiny_llama), "-r", "fp8-dynamic", "-r", "w8a16-rtn", "--recipes-file", str(EXTRA_RECIPES),
            "--tasks", "bot_mc_facts", "--limit", "5", "--runs-dir", str(runs), "--target", "local", "--device", "cpu",
            env=env)
    return p, runs, env


def test_publish_prints_whole_reasons_stage_lines_and_no_stale_bar(published):
    p, runs, _env = published
    assert p.returncode in (0, 5), p.stderr  # 5: nothing published (a random tiny model may miss the gate)
    (run,) = [d for d in runs.iterdir() if d.is_dir() and "@" in d.name]
    manifest = json.loads((run / "w8a16-rtn" / "manifest.json").read_text())
    reasons = manifest["validate"]["gate"]["reasons"]
    assert reasons and not manifest["validate"]["gate"]["passed"]
    rows = {r[0]: r for r in md_rows(p.stdout)}
    assert rows["w8a16-rtn"][1] == "rejected" and all(r in rows["w8a16-rtn"][4] for r in reasons)
    assert len(rows["w8a16-rtn"][4]) > 90  # the table used to cut it at 90 characters
    assert rows["fp8-dynamic"][1] in ("published", "rejected")
    for text in (p.stdout, p.stderr):
        assert not DICT_REPR.search(text), text
        assert not BAR.search(text), text
    for stage in ("quantize", "validate", "card", "publish"):
        assert f"stage: {stage}" in p.stderr
    assert "fp8-dynamic: started" in p.stderr and "w8a16-rtn: done in" in p.stderr
    assert "validate: backend hf on cpu" in p.stderr and "base: done" in p.stderr
    last_stage = p.stderr.rindex("stage: publish")
    assert not re.search(r"\[\d+/\d+\]", p.stderr[last_stage:])  # no quantize or validate status after its stage


def test_status_and_validate_tables_keep_the_full_reason(published):
    _p, runs, env = published
    (run,) = [d for d in runs.iterdir() if d.is_dir() and "@" in d.name]
    reasons = json.loads((run / "w8a16-rtn" / "manifest.json").read_text())["validate"]["gate"]["reasons"]
    s = bot("status", "--runs-dir", str(runs), env=env)
    assert s.returncode == 0, s.stderr
    rows = {r[2]: r for r in md_rows(s.stdout)}
    assert rows["w8a16-rtn"][3] == "rejected" and all(r in rows["w8a16-rtn"][5] for r in reasons)
    v = bot("validate", str(run), "--recipes-file", str(EXTRA_RECIPES), "--tasks", "bot_mc_facts", "--limit", "5",
            "--device", "cpu", env=env)
    assert v.returncode == 0, v.stderr
    rows = {r[0]: r for r in md_rows(v.stdout)}
    assert rows["w8a16-rtn"][1] == "rejected" and "fp8-dynamic" in rows
    assert all(r in v.stdout for r in reasons)
    for text in (s.stdout, v.stdout, v.stderr):
        assert not DICT_REPR.search(text) and not BAR.search(text) and "…" not in text
