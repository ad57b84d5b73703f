"""watchlist.yaml schema: valid files, and malformed ones reported as file:line: what (hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ConfigError
from bot.watchlist import DEFAULT_RECIPES, WatchEntry, load_watchlist, recipes_for

ROOT = Path(__file__).resolve().parents[2]


def test_repository_example_loads() -> None:
    wl = load_watchlist(ROOT / "watchlist.yaml")
    authors = {e.author for e in wl.watch}
    assert {"allenai", "Qwen", "meta-llama", "mistralai", "google", "ibm-granite"} <= authors
    settings = wl.settings(environ={})
    assert settings.namespace == "bot-quantized"
    assert wl.entry_for("meta-llama/Llama-3.1-8B-Instruct") is not None
    assert wl.entry_for("Qwen/Qwen3-8B-GGUF") is None


@pytest.mark.parametrize(
    ("text", "line", "needles"),
    [
        pytest.param("watch:\n  - author: allenai\n    inclde: ['x*']\n", 3,
                     ["unknown key 'inclde'", "did you mean 'include'"], id="unknown-key"),
        pytest.param("watch:\n  - author: a\nwatchh: []\n", 3, ["unknown key 'watchh'", "did you mean 'watch'"],
                     id="unknown-top-key"),
        pytest.param("watch:\n  - author: allenai\n    max_params_b: big\n", 3,
                     ["watch[0].max_params_b", "valid number", "'big'"], id="bad-type"),
        pytest.param("watch:\n  - author: a\n  - author: b\n    trust_remote_code: maybe\n", 4,
                     ["watch[1].trust_remote_code", "valid boolean"], id="bad-bool"),
        pytest.param("watch:\n  - author: allenai\n    recipes:\n      - w4a16-gptq\n      - w4a16-gtpq\n", 5,
                     ["unknown recipe 'w4a16-gtpq'", "did you mean 'w4a16-gptq'", "available:"],
                     id="unknown-recipe"),
        pytest.param("watch:\n  - author: allenai\n   include: [\n", 3, ["not valid YAML"], id="yaml-syntax"),
        pytest.param("", 1, ["the watchlist is empty"], id="empty-file"),
        pytest.param("# only a comment\n", 1, ["the watchlist is empty"], id="only-comments"),
        pytest.param("- author: a\n", 1, ["top level must be a mapping"], id="top-level-list"),
        pytest.param("defaults: {}\n", 1, ["missing required key 'watch'"], id="missing-watch"),
        pytest.param("watch: []\n", 1, ["watch", "at least 1"], id="empty-watch"),
        pytest.param("watch:\n  - include: ['x']\n", 2, ["needs `author:` or `models:`"], id="no-target"),
        pytest.param("watch:\n  - author: a\n    author: b\n", 3, ["'author' appears twice"], id="duplicate-key"),
        pytest.param("defaults:\n  namespace: me\n  runs_dirr: x\nwatch:\n  - author: a\n", 3,
                     ["unknown key 'runs_dirr' in defaults", "did you mean 'runs_dir'"], id="defaults-unknown"),
        pytest.param("defaults:\n  validate:\n    limit: many\nwatch:\n  - author: a\n", 3,
                     ["defaults.validate.limit: must be a positive integer or 'all' (got 'many')"],
                     id="defaults-nested-type"),
        pytest.param("defaults:\n  validate:\n    limit: 0\nwatch:\n  - author: a\n", 3,
                     ["defaults.validate.limit: must be a positive integer or 'all' (got 0)"], id="defaults-limit-0"),
        pytest.param("defaults:\n  recipes: [fp8]\nwatch:\n  - author: a\n", 2,
                     ["defaults.recipes[0]", "unknown recipe 'fp8'"], id="defaults-recipe"),
        pytest.param("watch:\n  - author: a\n    repo_name: '{org}/{base_name}'\n", 3,
                     ["unknown placeholder 'org'"], id="repo-name"),
        pytest.param("watch:\n  - author: a\n    min_age_hours: -1\n", 3, ["greater than or equal to 0"],
                     id="negative-age"),
    ],
)
def test_malformed_watchlists(write_yaml, text: str, line: int, needles: list[str]) -> None:
    path = write_yaml(text)
    with pytest.raises(ConfigError) as info:
        load_watchlist(path)
    message = info.value.one_line()
    assert message.startswith(f"{path}:{line}: "), message
    for needle in needles:
        assert needle in message, message
    assert info.value.line == line
    assert info.value.exit_code == 2


def test_several_problems_reports_the_first_and_counts(write_yaml) -> None:
    path = write_yaml("watch:\n  - author: a\n    min_downloads: x\n    private: maybe\n")
    with pytest.raises(ConfigError) as info:
        load_watchlist(path)
    assert info.value.line == 3
    assert "(and 1 more problem)" in info.value.one_line()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="watchlist not found"):
        load_watchlist(tmp_path / "nope.yaml")


def test_entries_cover_and_filter() -> None:
    entry = WatchEntry(author="Qwen", include=["Qwen3-*"], exclude=["*-GGUF", "*-fp8"])
    assert entry.covers("Qwen/Qwen3-8B")
    assert entry.covers("qwen/qwen3-8b")  # the Hub's ids are case-insensitive
    assert not entry.covers("Qwen/Qwen3-8B-GGUF")
    assert not entry.covers("Qwen/Qwen3-8B-FP8")
    assert not entry.covers("Qwen/Qwen2.5-7B")
    assert not entry.covers("other/Qwen3-8B")
    explicit = WatchEntry(author="meta-llama", models=["Llama-3.1-8B", "other/Model"])
    assert explicit.model_ids() == ["meta-llama/Llama-3.1-8B", "other/Model"]
    assert explicit.covers("other/Model") and not explicit.covers("meta-llama/Llama-3.2-1B")


def test_models_without_author_need_org() -> None:
    with pytest.raises(ValueError, match="need `author:`"):
        WatchEntry(models=["Llama-3.1-8B"])


def test_defaults_flow_into_settings_and_env_wins(write_yaml) -> None:
    wl = load_watchlist(write_yaml("defaults:\n  namespace: mine\n  private: true\nwatch:\n  - author: a\n"))
    assert wl.settings(environ={}).namespace == "mine"
    assert wl.settings(environ={"BOT_NAMESPACE": "env"}).namespace == "env"
    assert wl.settings(environ={}, cli={"namespace": "cli"}).namespace == "cli"
    assert wl.settings(environ={}).private is True


def test_entry_is_the_profile_layer_above_defaults_and_below_env_and_cli(write_yaml) -> None:
    wl = load_watchlist(write_yaml(
        "defaults:\n  namespace: ours\n  license_deny: [x]\n  max_params_b: 35\nwatch:\n"
        "  - author: a\n    namespace: theirs\n    private: true\n    trust_remote_code: true\n"
        "    licenses_denied: [y]\n    max_params_b: 8\n    recipes: [nvfp4]\n"))
    s = wl.settings(environ={}, model_id="a/M")
    assert (s.namespace, s.private, s.license_deny, s.max_params_b) == ("theirs", True, ["x", "y"], 8)
    assert s.allows_remote_code("a/M") and not wl.settings(environ={}, model_id="b/M").allows_remote_code("a/M")
    assert wl.settings(environ={}, model_id="b/M").namespace == "ours"  # no entry covers b/M
    # the operator's environment and flags win over the entry (they were patched over by the entry before)
    assert wl.settings(environ={"BOT_NAMESPACE": "env"}, model_id="a/M").namespace == "env"
    assert wl.settings(environ={"BOT_MAX_PARAMS_B": "70"}, model_id="a/M").max_params_b == 70
    assert wl.settings(environ={}, cli={"namespace": "cli", "private": False}, model_id="a/M").namespace == "cli"
    assert wl.settings(environ={}, cli={"private": False}, model_id="a/M").private is False
    entry = wl.entry_for("a/M")
    assert recipes_for(entry, s, DEFAULT_RECIPES) == ("nvfp4",)
    assert recipes_for(WatchEntry(author="a"), s, DEFAULT_RECIPES) == DEFAULT_RECIPES
    assert recipes_for(WatchEntry(author="a"), Settings(recipes=["fp8-dynamic"]), DEFAULT_RECIPES) == ("fp8-dynamic",)


def test_bad_entry_or_env_value_names_where_it_came_from(write_yaml) -> None:
    wl = load_watchlist(write_yaml("watch:\n  - author: a\n"))
    with pytest.raises(ConfigError) as err:
        wl.settings(environ={"BOT_VALIDATE__LIMIT": "0"})
    assert str(err.value).startswith("BOT_VALIDATE__LIMIT: must be a positive integer or 'all' (got 0)")
    with pytest.raises(ConfigError, match=r"^BOT_HUB_RETRIES: Input should be greater than or equal to 1 \(got 0\)"):
        wl.settings(environ={"BOT_HUB_RETRIES": "0"})
