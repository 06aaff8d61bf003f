"""A local fake of the Azure DevOps REST API (7.1) for the oci-image-builder pipeline: run
creation, run state, and the build log list and contents with ADO-style timestamps.

It checks the Authorization header, records requests, and can be told to answer 401, 429 with
Retry-After or 5xx bursts, to fail or cancel the run, to never finish it, or to log no report."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.replies import LocalServer, QuietHandler, reply


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeAdo(LocalServer):
    ORG = "org"
    PROJECT = "project"
    PIPELINE = 17
    RUN = 4242

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization
        self.requests: list[Request] = []
        self.faults: list[Fault] = []  # answered, one per request, before anything else
        self.polls_until_done = 2
        self.result = "succeeded"
        self.never_finishes = False
        self.log_lines: list[str] = ["starting", "done"]
        self.final_yaml = "stages: []\n"
        self._polls = 0
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                fake._handle(self, self.rfile.read(length))

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.ORG}"

    @property
    def web_link(self) -> str:
        return f"{self.url}/{self.PROJECT}/_build/results?buildId={self.RUN}"

    def config_yaml(self, **extra: str) -> str:
        lines = [
            "ado-config:",
            f"  ado-organization-url: {self.url}",
            f"  ado-project-name: {self.PROJECT}",
            f"  ado-pipeline-id: {self.PIPELINE}",
            "  ado-refresh-interval: 50ms",
            "  ado-retry-strategy: {attempts: 4, delay: 50ms}",
        ] + [f"  {k}: {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    def runs_created(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    # --- routing ------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        path, _, query = handler.path.partition("?")
        self.requests.append(Request(handler.command, path, query, dict(handler.headers), body))
        if self.faults:
            fault = self.faults.pop(0)
            reply(handler, fault.status, {"message": "fault"}, fault.headers)
            return
        if handler.headers.get("Authorization") != self.authorization:
            reply(handler, 401, {"message": "TF400813: not authorized"})
            return
        if "api-version=7.1" not in query:
            reply(handler, 400, {"message": "api-version 7.1 required"})
            return
        base = f"/{self.ORG}/{self.PROJECT}/_apis"
        if handler.command == "POST" and path == f"{base}/pipelines/{self.PIPELINE}/runs":
            request = json.loads(body)
            run = self._run("inProgress", None)
            if request.get("previewRun"):
                run["finalYaml"] = self.final_yaml
            reply(handler, 200, run)
        elif (
            handler.command == "GET" and path == f"{base}/pipelines/{self.PIPELINE}/runs/{self.RUN}"
        ):
            self._polls += 1
            done = not self.never_finishes and self._polls >= self.polls_until_done
            reply(
                handler,
                200,
                self._run("completed" if done else "inProgress", self.result if done else None),
            )
        elif handler.command == "GET" and path == f"{base}/build/builds/{self.RUN}/logs":
            logs = [
                {"id": 1, "type": "Container", "lineCount": 2},
                {"id": 2, "type": "Container", "lineCount": len(self.log_lines)},
            ]
            reply(handler, 200, {"count": len(logs), "value": logs})
        elif handler.command == "GET" and (
            m := re.fullmatch(rf"{base}/build/builds/{self.RUN}/logs/(\d+)", path)
        ):
            lines = (
                ["Pool: image-builder-trusted", "Agent: trusted-1"]
                if m.group(1) == "1"
                else self.log_lines
            )
            text = "".join(
                f"2026-11-26T10:00:{i % 60:02d}.1234567Z {line}\n" for i, line in enumerate(lines)
            )
            reply(handler, 200, text)
        else:
            reply(handler, 404, {"message": f"no route {handler.command} {path}"})

    def _run(self, state: str, result: str | None) -> dict[str, Any]:
        run: dict[str, Any] = {
            "id": self.RUN,
            "name": "20261126.1",
            "state": state,
            "url": f"{self.url}/{self.PROJECT}/_apis/pipelines/{self.PIPELINE}/runs/{self.RUN}",
            "_links": {"web": {"href": self.web_link}},
            "pipeline": {"id": self.PIPELINE, "name": "oci-image-builder"},
        }
        if result is not None:
            run["result"] = result
        return run
