"""A local fake of the Azure DevOps REST API 7.1, as the oci-image-builder pipeline's callers use
it, and as strict as Azure DevOps where the client could go wrong:

- Runs - Run Pipeline (``POST …/_apis/pipelines/{id}/runs``): the body is checked against the
  7.1 schema (only ``previewRun``, ``resources``, ``stagesToSkip``, ``templateParameters``,
  ``variables``, ``yamlOverride``), the template parameters against the pipeline's own YAML, the
  variables against those settable at queue time; ``pipelineVersion`` comes from the query.
  Every run gets its own id.
- Runs - Get echoes ``templateParameters`` and ``variables`` (secret values left out).
- Builds - Get (status ``notStarted`` with ``queuePosition``, ``inProgress``, ``cancelling``,
  ``completed``), Builds - Update Build (``PATCH`` with ``status: cancelling``).
- Timeline - Get: a Job record per job and a Task record per step, with ADO's own steps
  (Initialize job, Checkout, Finalize Job) among them. Build - Get Build Logs lists every log
  with its ``lineCount``, the job-level logs included (they repeat their steps' lines);
  Get Build Log serves lines ``startLine``..``endLine`` as text, numbered from 1 (or from
  ``first_line``: the documentation does not say).
- A bad credential gets 401, or the HTML sign-in page with 203 or 200 (``bad_auth_status``); bearer
  tokens can be made to expire (``token_lifetime``).

A run advances one tick per Builds - Get or Runs - Get: it waits ``queue_ticks`` in the queue,
then writes ``lines_per_tick`` lines of its steps per tick. ``faults`` answer requests first;
a fault with ``after=True`` lets the request take effect and then answers with the fault (a
504 after the run was accepted), or adds only its headers (``Retry-After`` on a 200).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply

PIPELINE_YAML = Path(__file__).parents[2] / "pipelines" / "azure" / "oci-image-builder.yml"
RUN_BODY_KEYS = frozenset(
    {"previewRun", "resources", "stagesToSkip", "templateParameters", "variables", "yamlOverride"}
)
SIGN_IN_PAGE = (
    "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head>"
    "<body>Sign in to your account</body></html>"
)
START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    status: int | None = None  # None: the normal answer, with ``headers`` added
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False  # let the request take effect first
    method: str | None = None  # only requests with this method
    body: Any = None  # default: {"message": ...}; a str is sent as text/html, as gateways do


@dataclass
class Step:
    job: str
    ref: str
    name: str
    lines: list[str]


def default_steps(report_lines: list[str]) -> list[Step]:
    """The pipeline's jobs and steps as Azure DevOps' timeline shows them."""
    steps = []
    for job, (ref, name, lines) in (
        ("verify", ("claims", "Verify the caller's token", ["verified: org/app at abc123"])),
        ("build", ("build", "Build in the sandbox (no secrets)", ["STEP 1/2: FROM scratch", "built"])),
        ("publish", ("publish", "Verify the layout and push it", report_lines)),
    ):  # fmt: skip
        steps += [
            Step(job, "", "Initialize job", ["Agent name: 'trusted-1'", "Pool: image-builder"]),
            Step(job, "", "Checkout image-builder@main to image-builder", ["Syncing repository"]),
            Step(job, "setup", "Install Image Builder", ["setup: done"]),
            Step(job, ref, name, lines),
            Step(job, "", "Finalize Job", ["Cleaning up task key"]),
        ]
    return steps


@dataclass
class Record:
    id: str
    parent: str | None
    type: str
    name: str
    ref: str
    order: int
    state: str = "pending"
    result: str | None = None
    log: int | None = None
    start: str | None = None
    finish: str | None = None

    def json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id, "parentId": self.parent, "type": self.type, "name": self.name,
            "refName": self.ref, "order": self.order, "state": self.state, "result": self.result,
            "startTime": self.start, "finishTime": self.finish, "attempt": 1,
            "log": None if self.log is None
            else {"id": self.log, "type": "Container", "url": f"{base}/logs/{self.log}"},
        }  # fmt: skip


@dataclass
class FakeRun:
    id: int
    body: dict[str, Any]
    version: int
    steps: list[Step]
    queue_ticks: int
    status: str = "notStarted"
    result: str | None = None
    records: list[Record] = field(default_factory=list)
    logs: dict[int, list[str]] = field(default_factory=dict)
    step: int = 0  # the step being written
    written: int = 0  # its lines written so far
    clock: int = 0  # simulated seconds since the run started
    cancel_requested: bool = False

    @property
    def parameters(self) -> dict[str, str]:
        return dict(self.body.get("templateParameters") or {})


class FakeAdo(FakeServer):
    ORG = "org"
    PROJECT = "project"
    PIPELINE = 17
    FIRST_RUN = 4242
    RUN = FIRST_RUN

    def __init__(
        self,
        authorization: str | Callable[[str], bool],
        *,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.authorization = authorization
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.runs: dict[int, FakeRun] = {}
        self.bad_auth_status = 401
        self.result = "succeeded"
        self.never_finishes = False
        self.queue_ticks = 1
        self.lines_per_tick = 1000
        self.seconds_per_line = 1
        self.log_lines: list[str] = ["starting", "done"]
        self.steps: list[Step] | None = None  # default: default_steps(log_lines)
        self.cancel_ticks = 1  # ticks from a cancel request to the run's end
        self.finish_on_cancel = False  # the run ends as it would have, just before the cancel
        self.first_line = 1  # the number of a log's first line for startLine/endLine
        self.final_yaml = "stages: []\n"
        self.pipeline_version = 3
        self.settable_variables = {"AUTHORIZATION"}
        self.lock = threading.RLock()
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                fake._handle(self, self.rfile.read(length))

            do_PATCH = do_POST

        super().__init__(Handler, tls=tls, port=port)

    # --- for tests -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.ORG}"

    def web_link_of(self, run_id: int) -> str:
        return f"{self.url}/{self.PROJECT}/_build/results?buildId={run_id}"

    @property
    def web_link(self) -> str:
        return self.web_link_of(self.FIRST_RUN)

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

    def of(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # --- routing ---------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        target = urlsplit(handler.path)  # absolute-form too, as a forward proxy sends it
        query = parse_qs(target.query)
        request = Request(
            handler.command, target.path, query, dict(handler.headers), body, time.monotonic()
        )
        with self.lock:
            self.requests.append(request)
            fault = next((f for f in self.faults if f.method in (None, handler.command)), None)
            if fault is not None:
                self.faults.remove(fault)
                if not fault.after:
                    answer, kind = self._fault_body(fault, "fault")
                    reply(handler, fault.status or 500, answer, fault.headers, content_type=kind)
                    return
            status, answer, content_type = self._route(request)
            headers = dict(fault.headers) if fault is not None else {}
            if fault is not None and fault.status is not None:
                status = fault.status
                answer, content_type = self._fault_body(
                    fault, "fault after the request took effect"
                )
        reply(handler, status, answer, headers, content_type=content_type)

    @staticmethod
    def _fault_body(fault: Fault, message: str) -> tuple[Any, str | None]:
        if fault.body is None:
            return {"message": message}, None
        if isinstance(fault.body, str):
            return fault.body, "text/html"
        return fault.body, None

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        if callable(self.authorization):
            return self.authorization(header)
        return header == self.authorization

    def _route(self, request: Request) -> tuple[int, Any, str | None]:
        if not self._authorized(request.headers.get("Authorization")):
            if self.bad_auth_status in (200, 203):
                return self.bad_auth_status, SIGN_IN_PAGE, "text/html; charset=utf-8"
            return 401, {"message": "TF400813: The user is not authorized."}, None
        if request.query.get("api-version") != ["7.1"]:
            return 400, {"message": "api-version 7.1 required"}, None
        base = f"/{self.ORG}/{self.PROJECT}/_apis"
        runs = f"{base}/pipelines/{self.PIPELINE}/runs"
        path, method = request.path, request.method
        if method == "POST" and path == runs:
            return self._create(request)
        if method == "GET" and (m := re.fullmatch(rf"{runs}/(\d+)", path)):
            return self._with_run(int(m.group(1)), lambda r: self._run_json(self._tick(r)))
        if m := re.fullmatch(rf"{base}/build/builds/(\d+)(/.*)?", path):
            run_id, rest = int(m.group(1)), m.group(2) or ""
            if method == "GET" and rest == "":
                return self._with_run(run_id, lambda r: self._build_json(self._tick(r)))
            if method == "PATCH" and rest == "":
                return self._with_run(run_id, lambda r: self._cancel(r, request))
            if method == "GET" and rest == "/timeline":
                return self._with_run(run_id, self._timeline)
            if method == "GET" and rest == "/logs":
                return self._with_run(run_id, self._log_list)
            if method == "GET" and (log := re.fullmatch(r"/logs/(\d+)", rest)):
                return self._with_run(run_id, lambda r: self._log(r, int(log.group(1)), request))
        return 404, {"message": f"no route {method} {path}"}, None

    def _with_run(
        self, run_id: int, action: Callable[[FakeRun], Any]
    ) -> tuple[int, Any, str | None]:
        run = self.runs.get(run_id)
        if run is None:
            return 404, {"message": f"TF401175: build {run_id} not found"}, None
        answer = action(run)
        if isinstance(answer, tuple):
            return answer
        return 200, answer, None

    # --- Runs - Run Pipeline --------------------------------------------------------------------

    def _create(self, request: Request) -> tuple[int, Any, str | None]:
        try:
            body = request.json()
        except ValueError:
            return 400, {"message": "the request body is not JSON"}, None
        if not isinstance(body, dict) or set(body) - RUN_BODY_KEYS:
            unknown = sorted(set(body) - RUN_BODY_KEYS) if isinstance(body, dict) else body
            return 400, {"message": f"RunPipelineParameters has no member(s) {unknown}"}, None
        version = self.pipeline_version
        if "pipelineVersion" in request.query:
            raw = request.query["pipelineVersion"][0]
            if not raw.isdecimal() or not 1 <= int(raw) <= self.pipeline_version:
                return 404, {"message": f"pipeline version {raw} not found"}, None
            version = int(raw)
        parameters = body.get("templateParameters") or {}
        if not isinstance(parameters, dict) or not all(
            isinstance(v, str) for v in parameters.values()
        ):
            return 400, {"message": "templateParameters must map names to strings"}, None
        variables = body.get("variables") or {}
        for name, value in variables.items():
            if name not in self.settable_variables:
                return 400, {"message": f"You can't set variable {name} at queue time"}, None
            if not isinstance(value, dict) or set(value) - {"value", "isSecret"}:
                return 400, {"message": f"variable {name} must be {{value, isSecret}}"}, None
        from tests.support.ado_runner import compile_pipeline

        try:
            compile_pipeline(PIPELINE_YAML, parameters)
        except ValueError as exc:
            return 400, {"message": str(exc), "typeKey": "PipelineValidationException"}, None
        if body.get("previewRun"):
            return 200, {"finalYaml": self.final_yaml, "id": -1, "state": "unknown"}, None
        run_id = self.FIRST_RUN + len(self.runs)
        run = FakeRun(
            id=run_id,
            body=body,
            version=version,
            steps=list(self.steps or default_steps(self.log_lines)),
            queue_ticks=self.queue_ticks,
        )
        self.runs[run_id] = run
        self._records(run)
        return 200, self._run_json(run), None

    # --- the simulation --------------------------------------------------------------------------

    def _records(self, run: FakeRun) -> None:
        jobs: dict[str, Record] = {}
        for number, step in enumerate(run.steps):
            job = jobs.get(step.job)
            if job is None:
                job = Record(f"job-{step.job}", None, "Job", step.job, step.job, len(jobs) + 1)
                jobs[step.job] = job
                run.records.append(job)
            siblings = sum(1 for r in run.records if r.parent == job.id)
            run.records.append(
                Record(f"task-{number}", job.id, "Task", step.name, step.ref, siblings + 1)
            )

    def _stamp(self, run: FakeRun) -> str:
        return (START + timedelta(seconds=run.clock)).isoformat().replace("+00:00", "Z")

    def _tick(self, run: FakeRun) -> FakeRun:
        if run.status == "completed":
            return run
        if run.cancel_requested:
            run.status = "cancelling"
            run.queue_ticks = 0
            self.cancel_ticks -= 1
            if self.cancel_ticks <= 0:
                self._finish(run, "canceled")
            return run
        if run.status == "notStarted":
            if run.queue_ticks > 0:
                run.queue_ticks -= 1
                return run
            run.status = "inProgress"
        budget = self.lines_per_tick
        while budget > 0 and run.step < len(run.steps):
            step = run.steps[run.step]
            task = self._task(run, run.step)
            job = self._job(run, step.job)
            if task.log is None:
                for record in (job, task):
                    if record.log is None:
                        record.log = len(run.logs) + 1
                        run.logs[record.log] = []
                        record.state, record.start = "inProgress", self._stamp(run)
            while budget > 0 and run.written < len(step.lines):
                line = f"{self._stamp(run)} {step.lines[run.written]}"
                assert task.log is not None
                assert job.log is not None
                run.logs[task.log].append(line)
                run.logs[job.log].append(line)
                run.written += 1
                run.clock += self.seconds_per_line
                budget -= 1
            if run.written == len(step.lines):
                last = run.step == len(run.steps) - 1
                task.state, task.finish = "completed", self._stamp(run)
                task.result = self.result if last and self.result != "succeeded" else "succeeded"
                run.step, run.written = run.step + 1, 0
                if run.step == len(run.steps) or run.steps[run.step].job != step.job:
                    job.state, job.finish, job.result = "completed", task.finish, task.result
        if run.step == len(run.steps) and not self.never_finishes:
            self._finish(run, self.result)
        return run

    def _finish(self, run: FakeRun, result: str) -> None:
        run.status, run.result = "completed", result
        for record in run.records:
            if record.state != "completed":
                record.state = "completed"
                record.result = "canceled" if record.log is not None else "skipped"

    def _task(self, run: FakeRun, number: int) -> Record:
        return next(r for r in run.records if r.id == f"task-{number}")

    def _job(self, run: FakeRun, name: str) -> Record:
        return next(r for r in run.records if r.id == f"job-{name}")

    # --- answers ---------------------------------------------------------------------------------

    def _api(self, run: FakeRun) -> str:
        return f"{self.url}/{self.PROJECT}/_apis/build/builds/{run.id}"

    def _run_json(self, run: FakeRun) -> dict[str, Any]:
        state = {"completed": "completed", "cancelling": "canceling"}.get(run.status, "inProgress")
        variables = {
            name: {"isSecret": True} if value.get("isSecret") else {"value": value.get("value")}
            for name, value in (run.body.get("variables") or {}).items()
        }
        answer: dict[str, Any] = {
            "id": run.id,
            "name": f"20261126.{run.id - self.FIRST_RUN + 1}",
            "state": state,
            "url": f"{self.url}/{self.PROJECT}/_apis/pipelines/{self.PIPELINE}/runs/{run.id}",
            "_links": {"web": {"href": self.web_link_of(run.id)}},
            "pipeline": {"id": self.PIPELINE, "name": "oci-image-builder", "revision": run.version},
            "templateParameters": run.parameters,
            "variables": variables,
        }
        if run.result is not None:
            answer["result"] = run.result
        return answer

    def _build_json(self, run: FakeRun) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": run.id,
            "buildNumber": f"20261126.{run.id - self.FIRST_RUN + 1}",
            "status": run.status,
            "queueTime": START.isoformat(),
            "definition": {"id": self.PIPELINE, "name": "oci-image-builder"},
            "url": self._api(run),
            "_links": {"web": {"href": self.web_link_of(run.id)}},
        }
        if run.status == "notStarted":
            answer["queuePosition"] = run.queue_ticks + 1
        else:
            answer["startTime"] = START.isoformat()
        if run.result is not None:
            answer["result"] = run.result
            answer["finishTime"] = self._stamp(run)
        return answer

    def _cancel(self, run: FakeRun, request: Request) -> Any:
        try:
            body = request.json()
        except ValueError:
            return 400, {"message": "the request body is not JSON"}, None
        if body != {"status": "cancelling"}:
            return 400, {"message": f"unsupported build update {body}"}, None
        if self.finish_on_cancel:  # it wrote its last lines just before the cancel came
            budget, self.lines_per_tick = self.lines_per_tick, 1_000_000
            run.queue_ticks = 0
            while run.status != "completed":
                self._tick(run)
            self.lines_per_tick = budget
        if run.status != "completed":
            run.cancel_requested = True
            run.status = "cancelling"
        return self._build_json(run)

    def _timeline(self, run: FakeRun) -> Any:
        if run.status == "notStarted":
            return 404, {"message": f"TF400920: no timeline for build {run.id} yet"}, None
        records = [r.json(self._api(run)) for r in run.records]
        return {"id": "timeline-1", "changeId": run.clock, "records": records}

    def _log_list(self, run: FakeRun) -> Any:
        value = [
            {"id": log_id, "type": "Container", "lineCount": len(lines),
             "url": f"{self._api(run)}/logs/{log_id}"}
            for log_id, lines in sorted(run.logs.items())
        ]  # fmt: skip
        return {"count": len(value), "value": value}

    def _log(self, run: FakeRun, log_id: int, request: Request) -> Any:
        lines = run.logs.get(log_id)
        if lines is None:
            return 404, {"message": f"log {log_id} not found"}, None
        base = self.first_line
        first = int(request.query.get("startLine", [str(base)])[0])
        last = int(request.query.get("endLine", [str(len(lines) - 1 + base)])[0])
        chosen = lines[max(first, base) - base : last - base + 1]
        if "text/plain" in request.headers.get("Accept", ""):
            return 200, "".join(line + "\n" for line in chosen), "text/plain"
        return {"count": len(chosen), "value": chosen}
