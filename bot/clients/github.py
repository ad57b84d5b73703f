"""GitHub Actions: dispatch `publish.yml` for one model (PyGithub; one POST per dispatch).

The token comes from GITHUB_TOKEN and never appears in messages; errors name the workflow file, the
token variable and the permission it needs (`actions: write`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import requests
from github import Auth, Github, GithubException

from bot.errors import GitHubError
from bot.secrets import redact

DEFAULT_API = "https://api.github.com"
PERMISSION_HINT = "give GITHUB_TOKEN the `actions: write` permission (workflow `permissions:` or the token's scopes)"


@dataclass(frozen=True)
class DispatchResult:
    repo: str
    workflow: str
    ref: str
    inputs: dict[str, str] = field(default_factory=dict)
    run_id: int | None = None  # when GitHub returns the run (newer API); else None
    run_url: str | None = None


class GitHubDispatcher:
    """Dispatches workflows of one repository. `repo` and `token` default to GITHUB_REPOSITORY and GITHUB_TOKEN."""

    def __init__(self, repo: str | None = None, token: str | None = None, base_url: str | None = None,
                 *, timeout: int = 30, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        repo = repo or env.get("GITHUB_REPOSITORY")
        if not repo or repo.count("/") != 1:
            raise GitHubError("GITHUB_REPOSITORY is not set to owner/name",
                              hint="Actions sets it; locally export GITHUB_REPOSITORY=owner/name")
        token = token or env.get("GITHUB_TOKEN")
        if not token:
            raise GitHubError("GITHUB_TOKEN is not set",
                              hint="in a workflow pass `GITHUB_TOKEN: ${{ github.token }}`; " + PERMISSION_HINT)
        self.repo = repo
        self.base_url = (base_url or env.get("GITHUB_API_URL") or DEFAULT_API).rstrip("/")
        self._token = token
        # lazy: no GET of the repository or the workflow; the dispatch POST names the workflow file itself
        self._gh = Github(base_url=self.base_url, auth=Auth.Token(token), timeout=timeout, retry=None,
                          seconds_between_requests=None, seconds_between_writes=None, lazy=True)

    def __repr__(self) -> str:
        return f"GitHubDispatcher(repo={self.repo!r}, base_url={self.base_url!r})"

    def dispatch(self, workflow: str = "publish.yml", ref: str = "main",
                 inputs: Mapping[str, str] | None = None) -> DispatchResult:
        """POST a workflow_dispatch event. Inputs are sent as strings (GitHub's workflow_dispatch contract)."""
        values = {k: str(v) for k, v in (inputs or {}).items()}
        try:
            wf = self._gh.get_repo(self.repo).get_workflow(workflow)
            out: Any = wf.create_dispatch(ref, values, throw=True, return_run_details=True)
        except GithubException as exc:
            raise self._error(exc, workflow, ref) from None
        except requests.RequestException as exc:
            raise GitHubError(f"cannot reach the GitHub API at {self.base_url}: {type(exc).__name__}",
                              hint="check the network, or GITHUB_API_URL") from None
        run_id = getattr(out, "id", None) if out is not True else None
        run_url = getattr(out, "html_url", None) if out is not True else None
        return DispatchResult(self.repo, workflow, ref, values, run_id, run_url)

    def _error(self, exc: GithubException, workflow: str, ref: str) -> GitHubError:
        status = exc.status
        data = exc.data if isinstance(exc.data, dict) else {}
        detail = redact(str(data.get("message") or exc.message or "")).strip()
        suffix = f": {detail}" if detail else ""
        if status == 401:
            return GitHubError(f"GitHub rejected GITHUB_TOKEN (401{suffix})",
                               hint="set GITHUB_TOKEN to a valid token; " + PERMISSION_HINT)
        if status == 403:
            return GitHubError(f"GITHUB_TOKEN may not dispatch workflows in {self.repo} (403{suffix})",
                               hint=PERMISSION_HINT)
        if status == 404:
            return GitHubError(
                f"workflow .github/workflows/{workflow} not found in {self.repo} (404)",
                hint=f"check that {workflow} exists on the default branch and that GITHUB_REPOSITORY is right "
                     "(a token without access to the repository also gets 404)",
            )
        if status == 422:
            return GitHubError(f"GitHub refused to dispatch {workflow} on ref '{ref}' (422{suffix})",
                               hint=f"check that the ref exists and that {workflow} declares "
                                    "`on: workflow_dispatch` with the inputs model, revision and recipes")
        return GitHubError(f"GitHub API error {status} dispatching {workflow} in {self.repo}{suffix}",
                           hint="retry later; see https://www.githubstatus.com")
