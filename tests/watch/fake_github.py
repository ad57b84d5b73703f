"""A GitHub-API-compatible werkzeug app (the few endpoints a workflow dispatch uses), on a thread, port 0."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    token: str = "ghs_" + "faketoken0123456789abcdefghij"
    repo: str = "octo/bot"
    workflows: dict[str, int] = field(default_factory=lambda: {"publish.yml": 4242})
    dispatch_status: int = 204
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._map = Map([
            Rule("/repos/<owner>/<name>", endpoint="repo"),
            Rule("/repos/<owner>/<name>/actions/workflows/<workflow>", endpoint="workflow"),
            Rule("/repos/<owner>/<name>/actions/workflows/<workflow>/dispatches", endpoint="dispatch",
                 methods=["POST"]),
        ])

    def _json(self, data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, content_type="application/json")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_json(silent=True)
        self.requests.append(Recorded(request.method, request.full_path.rstrip("?"), dict(request.headers), body))
        auth = request.headers.get("Authorization", "")
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            response = self._json({"message": "Bad credentials", "status": "401"}, 401)
            return response(environ, start_response)
        adapter = self._map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException:  # NotFound, MethodNotAllowed
            return self._json({"message": "Not Found"}, 404)(environ, start_response)
        response = getattr(self, f"_{endpoint}")(request, body, **args)
        return response(environ, start_response)

    def _repo_ok(self, owner: str, name: str) -> bool:
        return f"{owner}/{name}" == self.repo

    def _repo(self, request: Request, body: Any, owner: str, name: str) -> Response:
        if not self._repo_ok(owner, name):
            return self._json({"message": "Not Found"}, 404)
        return self._json({"id": 1, "full_name": self.repo, "url": f"{self.url}/repos/{self.repo}"})

    def _workflow(self, request: Request, body: Any, owner: str, name: str, workflow: str) -> Response:
        wid = self.workflows.get(workflow) if self._repo_ok(owner, name) else None
        if wid is None:
            return self._json({"message": "Not Found", "status": "404"}, 404)
        return self._json({
            "id": wid, "name": workflow.split(".")[0], "path": f".github/workflows/{workflow}", "state": "active",
            "url": f"{self.url}/repos/{self.repo}/actions/workflows/{wid}",
            "html_url": f"{self.url}/{self.repo}/actions/workflows/{workflow}",
        })

    def _dispatch(self, request: Request, body: Any, owner: str, name: str, workflow: str) -> Response:
        known = self.workflows.get(workflow) or (int(workflow) if workflow.isdigit() else None)
        if not self._repo_ok(owner, name) or known not in self.workflows.values():
            return self._json({"message": "Not Found", "status": "404"}, 404)
        if self.dispatch_status == 403:
            return self._json({"message": "Resource not accessible by integration"}, 403)
        if self.dispatch_status == 422 or not isinstance(body, dict) or body.get("ref") not in ("main", "dev"):
            return self._json({"message": "No ref found for: " + str((body or {}).get("ref"))}, 422)
        if body.get("return_run_details"):
            return self._json({"workflow_run_id": 99, "run_url": f"{self.url}/repos/{self.repo}/actions/runs/99",
                               "html_url": f"{self.url}/{self.repo}/actions/runs/99"}, 200)
        return Response(status=204)

    # ---------------------------------------------------------------- server

    def start(self) -> "FakeGitHub":
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]
