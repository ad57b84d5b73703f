"""GitHubDispatcher with the real PyGithub against a local GitHub-compatible server."""

from __future__ import annotations

from typing import Iterator

import pytest
from fake_github import FakeGitHub

from bot.clients.github import GitHubDispatcher
from bot.errors import GitHubError


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    yield server
    server.stop()


def dispatcher(gh: FakeGitHub, token: str | None = None, repo: str | None = None) -> GitHubDispatcher:
    return GitHubDispatcher(repo or gh.repo, token or gh.token, base_url=gh.url)


def test_dispatch_posts_ref_and_inputs(gh: FakeGitHub) -> None:
    inputs = {"model": "allenai/Olmo-3-7B", "revision": "a" * 40, "recipes": "w4a16-gptq,nvfp4"}
    result = dispatcher(gh).dispatch("publish.yml", ref="main", inputs=inputs)
    assert [(r.method, r.path) for r in gh.requests] == [
        ("POST", "/repos/octo/bot/actions/workflows/publish.yml/dispatches"),
    ]
    body = gh.posts()[0].body
    assert body["ref"] == "main" and body["inputs"] == inputs
    assert gh.posts()[0].headers["Authorization"] == f"token {gh.token}"
    assert (result.run_id, result.inputs) == (99, inputs)


def test_dispatch_without_run_details(gh: FakeGitHub) -> None:
    gh.dispatch_status = 204
    original = gh._dispatch

    def plain(request, body, **kw):  # an API that answers 204 only
        body = {k: v for k, v in body.items() if k != "return_run_details"}
        return original(request, body, **kw)

    gh._dispatch = plain  # type: ignore[method-assign]
    result = dispatcher(gh).dispatch(inputs={"model": "o/m", "revision": "r", "recipes": ""})
    assert result.run_id is None and result.workflow == "publish.yml"


def test_unknown_workflow_names_the_file(gh: FakeGitHub) -> None:
    with pytest.raises(GitHubError) as info:
        dispatcher(gh).dispatch("nope.yml", ref="main", inputs={})
    text = info.value.one_line()
    assert ".github/workflows/nope.yml not found in octo/bot" in text
    assert info.value.exit_code == 7


def test_bad_token_names_the_variable_and_permission(gh: FakeGitHub) -> None:
    wrong = "ghp_" + "wrongtoken0123456789abcdefghijkl"
    with pytest.raises(GitHubError) as info:
        dispatcher(gh, token=wrong).dispatch("publish.yml", ref="main", inputs={"model": "o/m"})
    text = info.value.one_line()
    assert "GITHUB_TOKEN" in text and "401" in text and "actions: write" in text
    assert wrong not in text and gh.token not in text
    assert wrong not in repr(dispatcher(gh, token=wrong))


def test_forbidden_and_bad_ref(gh: FakeGitHub) -> None:
    with pytest.raises(GitHubError, match="ref 'nope'"):
        dispatcher(gh).dispatch("publish.yml", ref="nope", inputs={})
    gh.dispatch_status = 403
    with pytest.raises(GitHubError) as info:
        dispatcher(gh).dispatch("publish.yml", ref="main", inputs={})
    assert "403" in info.value.one_line() and "actions: write" in info.value.one_line()


def test_missing_environment() -> None:
    with pytest.raises(GitHubError, match="GITHUB_REPOSITORY"):
        GitHubDispatcher(environ={"GITHUB_TOKEN": "x"})
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set") as info:
        GitHubDispatcher(environ={"GITHUB_REPOSITORY": "o/n"})
    assert "actions: write" in info.value.one_line()


def test_environment_defaults(gh: FakeGitHub) -> None:
    d = GitHubDispatcher(environ={"GITHUB_REPOSITORY": gh.repo, "GITHUB_TOKEN": gh.token, "GITHUB_API_URL": gh.url})
    assert d.dispatch(inputs={"model": "o/m"}).repo == gh.repo


def test_unreachable_api() -> None:
    d = GitHubDispatcher("o/n", "t0ken-value", base_url="http://127.0.0.1:9", timeout=2)
    with pytest.raises(GitHubError, match="cannot reach the GitHub API"):
        d.dispatch(inputs={})
