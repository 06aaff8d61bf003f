"""The Azure DevOps backend: trigger the trusted ``oci-image-builder`` pipeline, follow the run,
and bring back the build report it printed. The only module that talks to Azure DevOps."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from image_builder.config import AdoConfig
from image_builder.context import CIContext
from image_builder.errors import InputError, RuntimeFailure
from image_builder.http import RETRY_STATUSES, RetryableError, RetryPolicy, retry_after_seconds

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
)


# The pipeline variable (secret, settable at queue time) that carries the caller's OIDC token.
TOKEN_VARIABLE = "AUTHORIZATION"  # noqa: S105 (a variable name)


class AdoError(RuntimeFailure):
    pass


class AdoAuthError(InputError):
    """Azure DevOps refused the credentials: a bad token is bad input."""


# --- template parameters (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdoRequest:
    name: str
    context: str
    dockerfile: str
    tags: tuple[str, ...]
    build_args: tuple[str, ...]
    platforms: tuple[str, ...]
    target: str | None
    export_tags: bool
    env_file: str | None


def template_parameters(ctx: CIContext, request: AdoRequest) -> dict[str, str]:
    """The pipeline's parameters, validated before any call. ``Tags`` carries the caller's tag
    templates (base64 of ``name=value,...``); the trusted pipeline renders them itself."""
    if not ctx.repo_owner or not ctx.repo_name:
        raise InputError(
            "the ADO backend needs the repository owner and name from the CI context; run in a "
            "supported CI or a git checkout with an origin remote"
        )
    commit = ctx.commit_sha
    base = ctx.base_sha if ctx.job_type == "presubmit" else commit
    if not base:
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
    params = {
        "RepoName": ctx.repo_name,
        "RepoOwner": ctx.repo_owner,
        "JobType": ctx.job_type,
        "PullBaseSHA": base,
        "Name": request.name,
        "Dockerfile": request.dockerfile,
        "Context": request.context,
        "ExportTags": "true" if request.export_tags else "false",
        "Platforms": ",".join(request.platforms) or DEFAULT_PLATFORMS,
    }
    if ctx.job_type == "presubmit":
        if ctx.pr_number is None or not commit:
            raise InputError("a presubmit build needs the pull request number and head SHA")
        params["PullNumber"] = str(ctx.pr_number)
        params["PullPullSHA"] = commit
    if ctx.base_ref or ctx.ref:
        params["BaseRef"] = str(ctx.base_ref or ctx.ref)
    if request.build_args:
        params["BuildArgs"] = ",".join(request.build_args)
    if request.tags:
        params["Tags"] = base64.b64encode(",".join(request.tags).encode()).decode()
    if request.target:
        params["Target"] = request.target
    if request.env_file:
        params["EnvFile"] = request.env_file
    return params


# --- authentication ---------------------------------------------------------------------------------


def auth_header(
    *,
    client_id: str | None,
    client_secret: str | None,
    tenant_id: str | None,
    pat: str | None,
    env: Mapping[str, str],
) -> str:
    """A service principal (flags, else ``AZURE_CLIENT_ID``/``_SECRET``/``TENANT_ID``) through
    azure-identity, else a personal access token (``--ado-pat``, ``AZURE_DEVOPS_EXT_PAT``,
    ``ADO_PAT``) as Basic auth with an empty user name."""
    client_id = client_id or env.get("AZURE_CLIENT_ID")
    client_secret = client_secret or env.get("AZURE_CLIENT_SECRET")
    tenant_id = tenant_id or env.get("AZURE_TENANT_ID")
    principal = [client_id, client_secret, tenant_id]
    if all(principal):
        return "Bearer " + _service_principal_token(
            str(tenant_id), str(client_id), str(client_secret), env
        )
    pat = pat or env.get("AZURE_DEVOPS_EXT_PAT") or env.get("ADO_PAT")
    if pat:
        return "Basic " + base64.b64encode(f":{pat}".encode()).decode()
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


def _service_principal_token(tenant: str, client: str, secret: str, env: Mapping[str, str]) -> str:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    authority = env.get("AZURE_AUTHORITY_HOST")
    microsoft = authority is None or authority.rstrip("/").endswith(
        ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn")
    )
    credential = ClientSecretCredential(
        tenant,
        client,
        secret,
        authority=authority,
        disable_instance_discovery=not microsoft,
    )
    try:
        return str(credential.get_token(ADO_RESOURCE_SCOPE).token)
    except ClientAuthenticationError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise AdoAuthError(
            f"the Azure service principal could not get a token for Azure DevOps: {first}"
        ) from None
    finally:
        credential.close()


# --- the REST client -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Run:
    id: int
    state: str
    result: str | None
    web_url: str | None
    final_yaml: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        try:
            links = data.get("_links") or {}
            web = (links.get("web") or {}).get("href")
            return cls(
                id=int(data["id"]),
                state=str(data.get("state", "unknown")),
                result=str(data["result"]) if data.get("result") else None,
                web_url=str(web) if web else None,
                final_yaml=str(data["finalYaml"]) if data.get("finalYaml") else None,
            )
        except (KeyError, TypeError, ValueError):
            raise AdoError("Azure DevOps answered with a run that has no id") from None


class AdoClient:
    def __init__(self, *, http: httpx.Client, config: AdoConfig, authorization: str) -> None:
        self._http = http
        self._base = f"{config.ado_organization_url.rstrip('/')}/{config.ado_project_name}"
        self._pipeline = config.ado_pipeline_id
        self._version = config.ado_pipeline_version
        self._authorization = authorization
        delay = config.ado_retry_strategy.delay.total_seconds()
        self._retry = RetryPolicy(
            attempts=config.ado_retry_strategy.attempts,
            base_delay=delay,
            max_delay=max(delay * 8, delay),
            budget=config.ado_timeout.total_seconds(),
        )

    def run_pipeline(
        self, parameters: Mapping[str, str], *, token: str, preview_yaml: str | None = None
    ) -> Run:
        """Queue a run. The caller's token travels as a secret variable, never as a template
        parameter: parameters can be read back from the run by anyone who can read runs."""
        body: dict[str, Any] = {
            "templateParameters": dict(parameters),
            "variables": {TOKEN_VARIABLE: {"value": token, "isSecret": True}},
        }
        if self._version is not None:
            body["pipeline"] = {"version": self._version}
        if preview_yaml is not None:
            body["previewRun"] = True
            body["yamlOverride"] = preview_yaml
        response = self._call("POST", f"_apis/pipelines/{self._pipeline}/runs", json=body)
        return Run.from_json(response.json())

    def get_run(self, run_id: int) -> Run:
        response = self._call("GET", f"_apis/pipelines/{self._pipeline}/runs/{run_id}")
        return Run.from_json(response.json())

    def logs(self, run_id: int) -> str:
        """Every log of the run's build, in order, as one text."""
        listing = self._call("GET", f"_apis/build/builds/{run_id}/logs").json()
        entries = sorted(listing.get("value") or [], key=lambda e: int(e.get("id", 0)))
        texts = []
        for entry in entries:
            response = self._call(
                "GET",
                f"_apis/build/builds/{run_id}/logs/{int(entry['id'])}",
                headers={"Accept": "text/plain"},
            )
            texts.append(response.text)
        return "\n".join(texts)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self._base}/{path}"
        headers = {"Authorization": self._authorization, **kwargs.pop("headers", {})}

        def attempt() -> httpx.Response:
            try:
                response = self._http.request(
                    method, url, params={"api-version": API_VERSION}, headers=headers, **kwargs
                )
            except httpx.TransportError as exc:
                raise RetryableError(f"{method} {path}: {exc.__class__.__name__}") from exc
            if response.status_code in RETRY_STATUSES:
                raise RetryableError(
                    f"{method} {path} answered HTTP {response.status_code}",
                    retry_after=retry_after_seconds(response),
                )
            return response

        try:
            response = self._retry.run(attempt)
        except RetryableError as exc:
            raise AdoError(f"Azure DevOps did not answer: {exc} (gave up after retries)") from None
        if response.status_code in (401, 403):
            raise AdoAuthError(
                f"Azure DevOps refused the credentials (HTTP {response.status_code}); check the "
                "personal access token or the service principal's access to the project"
            )
        if response.status_code >= 300:
            detail = response.text[:300].strip()
            raise AdoError(
                f"Azure DevOps answered HTTP {response.status_code} to {method} {path}: {detail}"
            )
        return response


def follow(
    client: AdoClient,
    run: Run,
    *,
    refresh: float,
    timeout: float,
    on_state: Callable[[Run], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Run:
    """Poll until the run is completed, or fail after ``timeout`` seconds."""
    deadline = clock() + timeout
    last_state = None
    while run.state != "completed":
        if clock() >= deadline:
            raise AdoError(
                f"the ADO run {run.id} did not complete within {int(timeout)}s; it may still be "
                f"running: {run.web_url or 'see Azure DevOps'}"
            )
        sleep(min(refresh, max(0.0, deadline - clock())))
        run = client.get_run(run.id)
        if on_state is not None and run.state != last_state:
            on_state(run)
        last_state = run.state
    return run


# Any control character (a carriage return too) would end the value and start a line, and with
# it, perhaps, a logging command of whoever chose the value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def vso_variables(values: Mapping[str, str]) -> Sequence[str]:
    """``##vso[task.setvariable]`` lines for an Azure DevOps step's outputs."""
    return [
        f"##vso[task.setvariable variable={name};isOutput=true]{_CONTROL.sub(' ', value)}"
        for name, value in values.items()
    ]


def parameters_json(params: Mapping[str, str]) -> str:
    return json.dumps(dict(params), indent=2, sort_keys=True)
