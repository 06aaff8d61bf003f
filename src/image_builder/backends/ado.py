"""The Azure DevOps backend: trigger the trusted ``oci-image-builder`` pipeline, show the run as
it goes, cancel it when asked to stop or out of time, and bring back the build report it printed.
The only module that talks to Azure DevOps."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from image_builder.config import AdoConfig
from image_builder.context import CIContext
from image_builder.context.model import PipelineSource
from image_builder.errors import InputError, RuntimeFailure
from image_builder.http import (
    RequestUncertain,
    RetriesExhausted,
    RetryableError,
    RetryPolicy,
    retry_after_seconds,
    send_with_retries,
)
from image_builder.reporter import Reporter

log = logging.getLogger(__name__)

API_VERSION = "7.1"
ADO_RESOURCE_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"  # Azure DevOps' app id
DEFAULT_PLATFORMS = "linux/amd64,linux/arm64"
PARAMETER_NAMES = (
    "RepoName",
    "RepoOwner",
    "JobType",
    "PullNumber",
    "PullBaseSHA",
    "BaseRef",
    "PullPullSHA",
    "Name",
    "Dockerfile",
    "Context",
    "ExportTags",
    "BuildArgs",
    "Tags",
    "Platforms",
    "Target",
    "EnvFile",
    "UseGoInternalSAPModules",
    "useRestrictedRegistry",
    "Authorization",
)


# The pipeline variable (secret, settable at queue time) that carries the caller's OIDC token.
TOKEN_VARIABLE = "AUTHORIZATION"  # noqa: S105 (a variable name)


class AdoError(RuntimeFailure):
    pass


class AdoUncertain(AdoError):
    """A request that changes something got no clear answer: it may or may not have happened."""


class _Unreadable(AdoError):
    """A successful answer that is not what the API documents."""


class AdoAuthError(InputError):
    """Azure DevOps refused the credentials: a bad token is bad input."""


# --- template parameters (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdoRequest:
    name: str
    context: str
    dockerfile: str
    tags: tuple[str, ...]  # name=template, as the Go tool's Tags.String() writes them
    build_args: tuple[str, ...]
    platforms: tuple[str, ...]
    target: str | None
    export_tags: bool
    env_file: str | None
    use_go_internal_sap_modules: bool = False
    use_restricted_registry: bool = False


def template_parameters(ctx: CIContext, request: AdoRequest) -> dict[str, str]:
    """The pipeline's parameters, validated before any call: for the same inputs, the same
    parameters the Go tool sent (its repository, job type, PullBaseSHA, BaseRef, PullPullSHA
    and PullNumber per CI system; ``Tags`` as base64 of ``name=template,...``, which the
    trusted pipeline renders itself; the two flags only when set)."""
    if not ctx.repo_owner or not ctx.repo_name:
        raise InputError(
            "the ADO backend needs the repository owner and name from the CI context; run in a "
            "supported CI or a git checkout with an origin remote"
        )
    source = ctx.pipeline or PipelineSource(base_sha=ctx.commit_sha)
    if not source.base_sha:
        raise InputError(f"the {ctx.job_type} build has no commit SHA to send as PullBaseSHA")
    for arg in request.build_args:
        if "," in arg:
            raise InputError(
                f"--build-arg {arg!r} contains ',', which the pipeline's BuildArgs parameter uses to "
                "separate arguments; the ADO backend cannot carry it"
            )
    for tag in request.tags:
        if "," in tag:
            raise InputError(
                f"--tag {tag!r} contains ',', which separates tags in the Tags parameter"
            )
    for flag, value in (
        ("--name", request.name),
        ("--context", request.context),
        ("--dockerfile", request.dockerfile),
        ("--target", request.target or ""),
        ("--env-file", request.env_file or ""),
        *(("--build-arg", arg) for arg in request.build_args),
    ):
        if "$(" in value:
            raise InputError(
                f"{flag} {value!r} contains '$(', which Azure DevOps would expand as a macro; the "
                "trusted pipeline refuses such runs"
            )
    params = {
        "RepoName": ctx.repo_name,
        "RepoOwner": ctx.repo_owner,
        "JobType": ctx.job_type,
        "PullBaseSHA": source.base_sha,
        "Name": request.name,
        "Dockerfile": request.dockerfile,
        "Context": request.context,
        "ExportTags": "true" if request.export_tags else "false",
        "Platforms": ",".join(request.platforms) or DEFAULT_PLATFORMS,
    }
    if source.pull_number is not None:
        if source.pull_sha is None:
            raise InputError("a pull request build needs the pull request's head SHA")
        params["PullNumber"] = str(source.pull_number)
        params["PullPullSHA"] = source.pull_sha
    if source.base_ref:
        params["BaseRef"] = source.base_ref
    if request.build_args:
        params["BuildArgs"] = ",".join(request.build_args)
    if request.tags:
        params["Tags"] = base64.b64encode(",".join(request.tags).encode()).decode()
    if request.target:
        params["Target"] = request.target
    if request.env_file:
        params["EnvFile"] = request.env_file
    if request.use_go_internal_sap_modules:
        params["UseGoInternalSAPModules"] = "true"
    if request.use_restricted_registry:
        params["useRestrictedRegistry"] = "true"
    return params


# --- authentication ---------------------------------------------------------------------------------


class Credentials(Protocol):
    def header(self) -> str:
        """The ``Authorization`` header for the next request."""
        ...

    def renew(self) -> bool:
        """Start over with fresh credentials; false when that cannot change anything."""
        ...

    def close(self) -> None: ...


class PersonalAccessToken:
    def __init__(self, pat: str) -> None:
        self._header = "Basic " + base64.b64encode(f":{pat}".encode()).decode()

    def header(self) -> str:
        return self._header

    def renew(self) -> bool:
        return False

    def close(self) -> None:
        pass


class ServicePrincipal:
    """Entra ID tokens through azure-identity, asked for on every request: its cache hands back
    the token while it is fresh and fetches a new one before it expires (they last about an
    hour, and a run can take longer). ``renew`` drops the cache, for a token Azure DevOps
    refused before its time."""

    def __init__(self, tenant: str, client: str, secret: str, env: Mapping[str, str]) -> None:
        self._args = (tenant, client, secret)
        self._authority = env.get("AZURE_AUTHORITY_HOST")
        self._credential: Any = None

    def header(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            if self._credential is None:
                self._credential = self._new()
            return "Bearer " + str(self._credential.get_token(ADO_RESOURCE_SCOPE).token)
        except ValueError as exc:  # a malformed tenant id or authority, found before any call
            raise InputError(f"the Azure service principal settings are not valid: {exc}") from None
        except ClientAuthenticationError as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            message = f"the Azure service principal could not get a token for Azure DevOps: {first}"
            # Entra ID's own refusals carry an AADSTS code; anything else is the way there.
            if "AADSTS" in str(exc):
                raise AdoAuthError(message) from None
            raise AdoError(message) from None

    def renew(self) -> bool:
        self.close()
        return True

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()
            self._credential = None

    def _new(self) -> Any:
        from azure.identity import ClientSecretCredential

        authority = self._authority
        microsoft = authority is None or authority.rstrip("/").endswith(
            ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn")
        )
        tenant, client, secret = self._args
        return ClientSecretCredential(
            tenant, client, secret, authority=authority, disable_instance_discovery=not microsoft
        )


def credentials(
    *,
    client_id: str | None,
    client_secret: str | None,
    tenant_id: str | None,
    pat: str | None,
    env: Mapping[str, str],
) -> Credentials:
    """A service principal (flags, else ``AZURE_CLIENT_ID``/``_SECRET``/``TENANT_ID``) through
    azure-identity, else a personal access token (``--ado-pat``, ``AZURE_DEVOPS_EXT_PAT``,
    ``ADO_PAT``) as Basic auth with an empty user name."""
    client_id = client_id or env.get("AZURE_CLIENT_ID")
    client_secret = client_secret or env.get("AZURE_CLIENT_SECRET")
    tenant_id = tenant_id or env.get("AZURE_TENANT_ID")
    principal = [client_id, client_secret, tenant_id]
    if all(principal):
        return ServicePrincipal(str(tenant_id), str(client_id), str(client_secret), env)
    pat = pat or env.get("AZURE_DEVOPS_EXT_PAT") or env.get("ADO_PAT")
    if pat:
        return PersonalAccessToken(pat)
    if any(principal):
        missing = [
            n
            for n, v in zip(("client id", "client secret", "tenant id"), principal, strict=True)
            if not v
        ]
        raise InputError(
            f"the Azure service principal is incomplete: {', '.join(missing)} missing; set "
            "--azure-client-id/--azure-client-secret/--azure-tenant-id or AZURE_CLIENT_ID/"
            "AZURE_CLIENT_SECRET/AZURE_TENANT_ID"
        )
    raise InputError(
        "no Azure DevOps credentials: set AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID "
        "(or the --azure-* flags) for a service principal, or AZURE_DEVOPS_EXT_PAT (--ado-pat) for a "
        "personal access token"
    )


# --- what Azure DevOps answers ----------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _Href(_Answer):
    href: str | None = None


class _Links(_Answer):
    web: _Href | None = None


class Run(_Answer):
    """Runs - Run Pipeline and Runs - Get."""

    id: int
    state: str = "unknown"
    result: str | None = None
    links: _Links | None = Field(default=None, alias="_links")
    final_yaml: str | None = Field(default=None, alias="finalYaml")

    @property
    def web_url(self) -> str | None:
        return self.links.web.href if self.links and self.links.web else None


class Build(_Answer):
    """Builds - Get: a run as the build API sees it, with its place in the queue."""

    id: int
    status: str  # notStarted, inProgress, cancelling, completed (postponed, none)
    result: str | None = None  # succeeded, partiallySucceeded, failed, canceled
    queue_position: int | None = Field(default=None, alias="queuePosition")
    links: _Links | None = Field(default=None, alias="_links")

    @property
    def started(self) -> bool:
        return self.status not in ("notStarted", "postponed", "none")


class _LogReference(_Answer):
    id: int


class Record(_Answer):
    """One Timeline record: a stage, phase, job or task (step)."""

    id: str
    parent_id: str | None = Field(default=None, alias="parentId")
    type: str
    name: str = ""
    ref_name: str | None = Field(default=None, alias="refName")
    order: int | None = None
    state: str | None = None  # pending, inProgress, completed
    result: str | None = None
    start_time: str | None = Field(default=None, alias="startTime")
    log: _LogReference | None = None


class _Timeline(_Answer):
    records: list[Record] = []


class _LogEntry(_Answer):
    id: int
    line_count: int = Field(default=0, alias="lineCount")


class _Logs(_Answer):
    value: list[_LogEntry] = []


_A = TypeVar("_A", bound=_Answer)


# --- the REST client -------------------------------------------------------------------------------


class AdoClient:
    """The Azure DevOps REST API 7.1, as the image-builder pipeline needs it. Requests are retried
    by the one rule of :func:`~image_builder.http.send_with_retries`. The run-creating POST is
    not idempotent: it is sent again only when it provably did not reach Azure DevOps (the
    connection was refused) or was turned away with 429, so one request never starts two
    builds. ``Retry-After`` is honoured on every answer, a 200 too (Azure DevOps' delayed mode),
    and a 401 renews the credentials once."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        config: AdoConfig,
        credentials: Credentials,
        stop: threading.Event | None = None,
        on_retry: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base = f"{config.ado_organization_url.rstrip('/')}/{config.ado_project_name}"
        self._pipeline = config.ado_pipeline_id
        self._version = config.ado_pipeline_version
        self._token_as_parameter = config.ado_token_as_parameter
        self._credentials = credentials
        self._clock = clock
        # Waits end early once the user asks to stop: the cancel request must not queue behind a
        # Retry-After or a back-off.
        self._stop = stop or threading.Event()
        self._on_retry = on_retry
        self._not_before = 0.0
        delay = config.ado_retry_strategy.delay.total_seconds()
        self._retry = RetryPolicy(
            attempts=config.ado_retry_strategy.attempts,
            base_delay=delay,
            max_delay=max(delay * 8, delay),
            budget=max(delay * 8, 60.0),
        )

    @property
    def runs_url(self) -> str:
        """Where a person sees the pipeline's runs."""
        return f"{self._base}/_build?definitionId={self._pipeline}"

    def run_pipeline(
        self, parameters: Mapping[str, str], *, token: str, preview_yaml: str | None = None
    ) -> Run:
        """Queue a run (Runs - Run Pipeline). The caller's token travels as a secret variable,
        never as a template parameter: parameters can be read back from the run by anyone who
        can read runs."""
        body: dict[str, Any] = {"templateParameters": dict(parameters)}
        if self._token_as_parameter:
            body["templateParameters"]["Authorization"] = token  # the Go tool's way
        else:
            body["variables"] = {TOKEN_VARIABLE: {"value": token, "isSecret": True}}
        if preview_yaml is not None:
            body["previewRun"] = True
            body["yamlOverride"] = preview_yaml
        query = {} if self._version is None else {"pipelineVersion": str(self._version)}
        path = f"_apis/pipelines/{self._pipeline}/runs"
        try:
            response = self._call("POST", path, params=query, json=body, idempotent=False)
            return self._model(Run, response, "the new run")
        except (AdoUncertain, _Unreadable) as exc:
            raise AdoError(
                f"{exc}; Azure DevOps may have started the run anyway: look for it at "
                f"{self.runs_url} before triggering another"
            ) from None

    def get_build(self, run_id: int) -> Build:
        return self._model(Build, self._call("GET", f"_apis/build/builds/{run_id}"), "the run")

    def timeline(self, run_id: int) -> list[Record]:
        """The run's jobs and steps; none before an agent picked the run up."""
        response = self._call("GET", f"_apis/build/builds/{run_id}/timeline", missing_is_empty=True)
        if response.status_code == 404:
            return []
        return self._model(_Timeline, response, "the run's timeline").records

    def log_lengths(self, run_id: int) -> dict[int, int]:
        """Each log of the run and how many lines it has so far."""
        response = self._call("GET", f"_apis/build/builds/{run_id}/logs")
        return {e.id: e.line_count for e in self._model(_Logs, response, "the log list").value}

    def log_lines(self, run_id: int, log_id: int, first: int | None = None) -> list[str]:
        """The lines of one log from line ``first`` on; all of them without ``first``."""
        response = self._call(
            "GET",
            f"_apis/build/builds/{run_id}/logs/{log_id}",
            params={} if first is None else {"startLine": str(first)},
            headers={"Accept": "text/plain"},
        )
        # Azure DevOps counts lines by "\n" (lineCount); str.splitlines would also break at
        # form feeds and Unicode separators from the build's output, and lines would be skipped.
        lines = response.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [line.removesuffix("\r") for line in lines]

    def cancel(self, run_id: int) -> Build:
        """Builds - Update Build with ``status: cancelling``: the agent stops the job, and the
        jobs that have not started never run."""
        response = self._call(
            "PATCH", f"_apis/build/builds/{run_id}", json={"status": "cancelling"}
        )
        return self._model(Build, response, "the cancelled run")

    # --- plumbing ----------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _model(self, model: type[_A], response: httpx.Response, what: str) -> _A:
        try:
            data = response.json()
        except ValueError:
            raise _Unreadable(
                f"Azure DevOps answered HTTP {response.status_code} with {what} that is not JSON"
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the answer"
            raise _Unreadable(
                f"Azure DevOps answered with {what} in an unexpected form ({where}: {first['msg']})"
            ) from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        idempotent: bool = True,
        missing_is_empty: bool = False,
    ) -> httpx.Response:
        url = f"{self._base}/{path}"
        query = {**(params or {}), "api-version": API_VERSION}

        def exchange() -> httpx.Response:
            wait = self._not_before - self._clock()
            if wait > 0:
                self._stop.wait(wait)
            if not idempotent and self._stop.is_set():
                raise AdoError(f"{method} {path} was not sent: image-builder is stopping")
            response = self._http.request(
                method,
                url,
                params=query,
                json=json,
                headers={"Authorization": self._credentials.header(), **(headers or {})},
            )
            # Azure DevOps' delayed mode sends Retry-After on a 200 too: the next request waits.
            retry_after = retry_after_seconds(response)
            if retry_after is not None:
                self._not_before = self._clock() + retry_after
            return response

        def report(number: int, error: RetryableError, delay: float) -> None:
            if self._on_retry is not None:
                self._on_retry(
                    f"Azure DevOps: {error}; trying again in {delay:.1f}s (try {number + 1})"
                )

        def run() -> httpx.Response:
            return send_with_retries(
                exchange,
                what=f"{method} {path}",
                policy=self._retry,
                idempotent=idempotent,
                sleep=self._wait,
                on_retry=report,
            )

        try:
            response = run()
            if response.status_code == 401 and self._credentials.renew():
                log.info("Azure DevOps answered 401; renewing the credentials once")
                response = run()
        except RequestUncertain as exc:
            raise AdoUncertain(str(exc)) from None
        except RetriesExhausted as exc:
            raise AdoError(
                f"Azure DevOps did not answer: {exc.last} (gave up after retries)"
            ) from None
        status = response.status_code
        if status < 300 and (status == 203 or "html" in response.headers.get("content-type", "")):
            raise _not_json(response)
        if status in (401, 403):
            raise AdoAuthError(
                f"Azure DevOps refused the credentials (HTTP {status}); check the personal access "
                "token or the service principal's access to the project"
            )
        if status == 404 and missing_is_empty:
            return response
        if status >= 300:
            uncertain = not idempotent and (status >= 500 or status == 408)
            raise (AdoUncertain if uncertain else AdoError)(
                f"Azure DevOps answered HTTP {status} to {method} {path}: {_message(response)}"
            )
        return response


def _message(response: httpx.Response) -> str:
    """The ``message`` of an Azure DevOps error answer, else the start of its body."""
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])[:300]
    except ValueError:
        pass
    return _CONTROL.sub(" ", response.text[:300]).strip()


def _not_json(response: httpx.Response) -> AdoAuthError:
    """Azure DevOps serves its sign-in page, with 203 or 200, to credentials it does not accept."""
    return AdoAuthError(
        f"Azure DevOps answered with a sign-in page instead of JSON (HTTP "
        f"{response.status_code}): the personal access token is wrong or expired, or the service "
        "principal has no access to the organization; check the credentials and their scope "
        "(Build: read & execute)"
    )


# --- following a run --------------------------------------------------------------------------------

# The steps whose log may hold the build report: the publish step prints it, the sign step prints
# it again with what it signed. Only these count: the build step runs the caller's code.
REPORT_STEPS = ("publish", "sign")
# Steps the agent adds to every job; their lines say nothing about the build.
_AGENT_STEPS = re.compile(r"^(Initialize job|Finalize Job|Checkout |Post-job: |Pre-job: )")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ?")


@dataclass(frozen=True, kw_only=True)
class Limits:
    refresh: float
    queue: float
    run: float
    cancel: float
    # After a signal the process has seconds to live (GitHub Actions kills it about 10s after its
    # SIGINT), so the wait for the run to stop is short and the outcome is written in time.
    on_signal: float = 5.0

    @classmethod
    def from_config(cls, config: AdoConfig) -> Limits:
        return cls(
            refresh=config.ado_refresh_interval.total_seconds(),
            queue=config.ado_queue_timeout.total_seconds(),
            run=config.ado_timeout.total_seconds(),
            cancel=config.ado_cancel_timeout.total_seconds(),
            on_signal=min(5.0, config.ado_cancel_timeout.total_seconds()),
        )


@dataclass(frozen=True, kw_only=True)
class Followed:
    build: Build
    report_log: str  # the report steps' lines, in order
    cancelled: str | None = None  # why this client cancelled the run
    stopped: bool = True  # false when a cancelled run had not stopped in time


class Follower:
    """Follows one run until it completes: its place in the queue, its steps as they start and
    end, and their new log lines at every refresh (one log per step; the job-level logs repeat
    them and are never read). ``stop`` set (a signal) or a time limit cancels the run."""

    def __init__(
        self,
        client: AdoClient,
        run: Run,
        *,
        limits: Limits,
        reporter: Reporter,
        stop: threading.Event,
        why_stopped: Callable[[], str],
        redact: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client, self._run, self._limits = client, run, limits
        self._reporter, self._stop, self._why_stopped = reporter, stop, why_stopped
        self._redact, self._clock = redact, clock
        self._shown: dict[int, int] = {}  # log id -> lines shown
        self._last: dict[int, str] = {}  # log id -> the last line shown, as Azure DevOps sent it
        self._states: dict[str, str] = {}  # task record id -> the state announced
        self._report: dict[str, list[str]] = {}  # report step's ref name -> its lines

    def follow(self) -> Followed:
        queued = self._clock()
        started: float | None = None
        last: tuple[str, int | None] | None = None
        while True:
            if self._stop.is_set():
                return self._cancel(f"stopped by {self._why_stopped()}", self._limits.on_signal)
            build = self._client.get_build(self._run.id)
            if (build.status, build.queue_position) != last and build.status != "completed":
                self._announce(build)
            last = (build.status, build.queue_position)
            if build.started:
                started = self._clock() if started is None else started
                self._tail()
            if build.status == "completed":
                self._announce(build)  # after the run's last lines
                return Followed(build=build, report_log=self._report_log())
            now = self._clock()
            if started is None:
                left = queued + self._limits.queue - now
                reason = f"it did not start within ado-queue-timeout ({_span(self._limits.queue)})"
            else:
                left = started + self._limits.run - now
                reason = f"it did not finish within ado-timeout ({_span(self._limits.run)})"
            if left <= 0:
                return self._cancel(reason, self._limits.cancel)
            self._stop.wait(min(self._limits.refresh, left))

    def _announce(self, build: Build) -> None:
        name = f"ADO run {build.id}"
        if build.status == "notStarted":
            where = f" at position {build.queue_position}" if build.queue_position else ""
            self._reporter.info(f"{name}: waiting for an agent{where}")
        elif build.status == "completed":
            self._reporter.info(f"{name}: completed ({build.result or 'no result'})")
        else:
            self._reporter.info(f"{name}: {_words(build.status)}")

    def _tail(self) -> None:
        """Show what is new; a failure here costs lines on screen, never the run."""
        try:
            self._tail_once()
        except AdoError as exc:
            self._reporter.warning(f"could not read the run's logs this time: {exc}")

    def _tail_once(self) -> None:
        records = self._client.timeline(self._run.id)
        if not records:
            return
        jobs = {r.id: r for r in records if r.type == "Job"}
        tasks = [r for r in records if r.type == "Task" and r.parent_id in jobs]
        tasks.sort(
            key=lambda t: (
                jobs[str(t.parent_id)].start_time or "~",
                jobs[str(t.parent_id)].order or 0,
                t.order or 0,
            )
        )
        lengths: dict[int, int] | None = None
        for task in tasks:
            if _AGENT_STEPS.match(task.name) or task.state not in ("inProgress", "completed"):
                continue
            job = jobs[str(task.parent_id)]
            if task.id not in self._states:
                self._states[task.id] = "inProgress"
                if task.result != "skipped":
                    self._reporter.info(f"[{job.name}] {task.name}: started")
            if task.log is not None:
                if lengths is None:
                    lengths = self._client.log_lengths(self._run.id)
                self._new_lines(job, task, task.log.id, lengths.get(task.log.id, 0))
            if task.state == "completed" and self._states[task.id] != "completed":
                self._states[task.id] = "completed"
                self._reporter.info(f"[{job.name}] {task.name}: {task.result or 'done'}")

    def _new_lines(self, job: Record, task: Record, log_id: int, length: int) -> None:
        shown = self._shown.get(log_id, 0)
        if length <= shown:
            return
        if shown == 0:
            lines = self._client.log_lines(self._run.id, log_id)
        else:
            # The documentation does not say whether lines count from 0 or from 1. Asking from
            # ``shown`` returns the last line shown again (from 1) or the first new one (from
            # 0); a repeat of the last line, timestamp and all, is dropped. Either way no line
            # is lost or shown twice.
            lines = self._client.log_lines(self._run.id, log_id, shown)
            if lines and lines[0] == self._last.get(log_id):
                lines = lines[1:]
        if lines:
            self._last[log_id] = lines[-1]
        self._shown[log_id] = shown + len(lines)
        # The report counts only from the publish step of the publish job and the sign step of
        # the sign job; no other step's output is ever believed.
        reports = task.ref_name in REPORT_STEPS and job.ref_name == task.ref_name
        for raw in lines:
            line = self._redact(_TIMESTAMP.sub("", raw))
            self._reporter.stream(f"[{job.name}] {line}")
            if reports:
                self._report.setdefault(str(task.ref_name), []).append(line)

    def _report_log(self) -> str:
        return "\n".join(line for ref in REPORT_STEPS for line in self._report.get(ref, []))

    def _cancel(self, reason: str, wait: float) -> Followed:
        """Cancel the run, show what it still logs while it stops (up to ``wait`` seconds), and
        say whether it stopped. A run that had finished first is reported as it finished."""
        name = f"ADO run {self._run.id}"
        self._reporter.warning(f"cancelling {name}: {reason}")
        build = self._client.cancel(self._run.id)
        end = self._clock() + wait
        while build.status != "completed" and self._clock() < end:
            time.sleep(min(self._limits.refresh, 2.0, max(0.0, end - self._clock())))
            build = self._client.get_build(self._run.id)
            if build.started:
                self._tail()
        if build.status == "completed":
            self._tail()
            self._announce(build)
            if build.result != "canceled":
                self._reporter.warning(f"{name} had finished before it could be cancelled")
                return Followed(build=build, report_log=self._report_log())
        return Followed(
            build=build,
            report_log=self._report_log(),
            cancelled=reason,
            stopped=build.status == "completed",
        )


def _words(status: str) -> str:
    return {"inProgress": "running", "cancelling": "cancelling"}.get(status, status)


def _span(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# Any control character (a carriage return too) would end the value and start a line, and with
# it, perhaps, a logging command of whoever chose the value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parameters_json(params: Mapping[str, str]) -> str:
    return json.dumps(dict(params), indent=2, sort_keys=True)
