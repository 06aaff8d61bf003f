"""config.yaml: the Go tool's keys plus ours, with defaults, validation and a JSON Schema.

Unknown keys are errors that name the nearest known key; bad values name the key and the
expected form. With no config file the built-in defaults from DESIGN.md apply.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from image_builder.duration import EXAMPLE as DURATION_EXAMPLE
from image_builder.duration import format_go_duration, parse_go_duration
from image_builder.errors import ConfigError

JobType = Literal["presubmit", "postsubmit", "merge_group", "workflow_dispatch", "schedule"]
JOB_TYPES: tuple[str, ...] = typing.get_args(JobType)

DEFAULT_REGISTRY = "localhost:5000"
DEFAULT_DEV_REGISTRY = "localhost:5000/dev"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_EXAMPLE}, got {value!r}")
    return parse_go_duration(value)


GoDuration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_go_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^([0-9.]+(ns|us|µs|ms|s|m|h))+$|^0$"}),
]


def _registry_list(value: object) -> object:
    if isinstance(value, str):
        return [value]
    return value


def _no_credentials(value: str) -> str:
    if "@" in value:
        # Never repeat the value: it holds a password.
        raise PydanticCustomError(
            "registry_credentials",
            "a registry name must not carry credentials (user:password@); remove them and put "
            "them in an auth file (REGISTRY_AUTH_FILE or ~/.docker/config.json)",
        )
    return value


def _check_registry(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"expected a registry host and optional path such as ghcr.io/org, got {value!r}"
        )
    _no_credentials(value)
    # The Go tool took registry URLs too; the scheme never decides TLS here (the plain-HTTP rule
    # and insecure-registries do), so it is dropped.
    value = re.sub(r"^https?://", "", value, flags=re.IGNORECASE)
    if "://" in value:
        raise ValueError(
            f"expected a registry host and optional path such as ghcr.io/org, "
            f"without a scheme; got {value!r}"
        )
    value = value.rstrip("/")
    if not value or any(c.isspace() for c in value):
        raise ValueError(
            f"expected a registry host and optional path such as ghcr.io/org, got {value!r}"
        )
    return value


RegistryList = Annotated[
    tuple[Annotated[str, BeforeValidator(_check_registry)], ...],
    Field(min_length=1),
    BeforeValidator(_registry_list),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        # Schemas are built on first use: `image-builder tags` with no config file never needs
        # most of them, and building them all costs more than the rest of start-up.
        defer_build=True,
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
    )


class TagTemplate(_Model):
    """A named tag whose value is a Go-template string, with an optional validation regex."""

    name: str | None = None
    value: str = Field(min_length=1)
    validation: str | None = None

    @field_validator("validation")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"expected a regular expression, got {pattern!r} ({exc})") from exc
        return pattern


CacheRepo = Annotated[
    str, BeforeValidator(lambda v: _no_credentials(v) if isinstance(v, str) else v)
]


class CacheConfig(_Model):
    enabled: bool = False
    cache_repo: CacheRepo | None = None
    dev_cache_repo: CacheRepo | None = Field(
        default=None,
        description="Cache that pull-request and merge-group builds may write; they never "
        "write cache-repo.",
    )
    cache_run_layers: bool = False
    cache_copy_layers: bool = False

    @model_validator(mode="after")
    def _repo_when_enabled(self) -> CacheConfig:
        if self.enabled and not self.cache_repo:
            raise ValueError(
                "cache.enabled is true but cache.cache-repo is not set; name the cache repository"
            )
        return self


class NotarySecret(_Model):
    path: str = Field(
        min_length=1, description="JSON file with certData and privateKeyData (base64 PEM)."
    )
    type: str = "signify"


class NotaryConfig(_Model):
    """The Signify service (``type: notary``), reached over mutual TLS."""

    endpoint: str = Field(pattern=r"^https://\S+$")
    timeout: GoDuration = Field(
        default=timedelta(minutes=5),
        description="Deadline for the whole signing request, retries included.",
    )
    retry_timeout: GoDuration = Field(
        default=timedelta(seconds=10), description="Longest wait between two attempts."
    )
    secret: NotarySecret
    ca_file: str | None = Field(default=None, description="PEM bundle to trust for the service.")
    rotate_endpoint: str | None = Field(default=None, pattern=r"^https://\S+$")


class CosignConfig(_Model):
    """Key-based, cosign-compatible signatures (``type: cosign``)."""

    private_key: str = Field(min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


_SIGNER_CONFIG: dict[str, type[_Model]] = {"notary": NotaryConfig, "cosign": CosignConfig}


def _periodic_is_schedule(value: object) -> object:
    """Prow's ``periodic`` job type, which Go configs list, is a scheduled run."""
    if isinstance(value, (list, tuple)):
        return tuple(dict.fromkeys("schedule" if v == "periodic" else v for v in value))
    return value


class SignerConfig(_Model):
    name: str = Field(min_length=1)
    type: Literal["notary", "cosign"]
    config: dict[str, Any] = Field(default_factory=dict)
    job_type: Annotated[tuple[JobType, ...] | None, BeforeValidator(_periodic_is_schedule)] = Field(
        default=None,
        description="Job types this signer runs for; default: every release build. Prow's "
        "'periodic' means schedule.",
    )

    @model_validator(mode="after")
    def _config_fits_the_type(self) -> SignerConfig:
        model = _SIGNER_CONFIG[self.type]
        try:
            model.model_validate(self.config)
        except ValidationError as exc:
            raise ValueError(
                f"config of {self.type} signer {self.name!r}: {describe_validation_error(exc, model)}"
            ) from None
        return self

    def notary(self) -> NotaryConfig:
        return NotaryConfig.model_validate(self.config)

    def cosign(self) -> CosignConfig:
        return CosignConfig.model_validate(self.config)


class SignConfig(_Model):
    enabled_signers: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    signers: tuple[SignerConfig, ...] = ()

    @model_validator(mode="after")
    def _enabled_signers_exist(self) -> SignConfig:
        defined = [s.name for s in self.signers]
        for repo, names in self.enabled_signers.items():
            for name in names:
                if name not in defined:
                    known = ", ".join(defined) or "none"
                    raise ValueError(
                        f"enabled-signers[{repo!r}] names {name!r}, which no entry under "
                        f"sign-config.signers defines (defined: {known})"
                    )
        return self


class AdoRetryStrategy(_Model):
    attempts: int = Field(default=3, ge=1)
    delay: GoDuration = timedelta(seconds=5)


class AdoConfig(_Model):
    ado_organization_url: str = Field(pattern=r"^https?://\S+$")
    ado_project_name: str = Field(min_length=1)
    ado_pipeline_id: int = Field(ge=1)
    ado_pipeline_version: int | None = Field(default=None, ge=1)
    ado_retry_strategy: AdoRetryStrategy = Field(default_factory=AdoRetryStrategy.model_construct)
    ado_refresh_interval: GoDuration = Field(
        default=timedelta(seconds=30),
        description="How often to read the run's state and its new log lines.",
    )
    ado_queue_timeout: GoDuration = Field(
        default=timedelta(minutes=30),
        description="How long a run may wait for an agent; then it is cancelled.",
    )
    ado_timeout: GoDuration = Field(
        default=timedelta(minutes=60),
        description="How long a run may take once an agent started it; then it is cancelled.",
    )
    ado_cancel_timeout: GoDuration = Field(
        default=timedelta(minutes=2),
        description="How long to wait for a cancelled run to stop before leaving it.",
    )
    ado_token_as_parameter: bool = Field(
        default=False,
        description="Send the caller's OIDC token as the Authorization template parameter, as "
        "the Go tool did, for pipelines that expect it there. Default: a secret variable "
        "(template parameters can be read back from the run by anyone who can read runs).",
    )

    @field_validator("ado_refresh_interval", "ado_queue_timeout", "ado_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class GoModulesSecret(_Model):
    """The credential ``--use-go-internal-sap-modules`` mounts into the build as a build secret
    (``RUN --mount=type=secret,id=<id>``): never a build argument, never stored in the image."""

    id: str = Field(
        default="netrc",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The secret's id in RUN --mount=type=secret,id=... (default: netrc).",
    )
    file: str | None = Field(default=None, description="File holding the credential.")
    env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Variable holding the credential (instead of file).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> GoModulesSecret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env: where the credential is")
        return self


class RepositoryOwner(_Model):
    name: str = Field(min_length=1)
    id: int = Field(
        ge=1, description="The numeric account id: stops renamed or resurrected accounts."
    )


def _issuer_url(value: str, what: str = "issuer") -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    host = parts.hostname or ""
    loopback = host == "localhost" or host.startswith("127.") or host == "::1"
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(
            f"expected an https:// {what} URL (http only for loopback test servers), got {value!r}"
        )
    return value


class TrustedIssuer(_Model):
    """One OIDC issuer allowed to trigger builds, and the policy its tokens must satisfy."""

    issuer: Annotated[str, BeforeValidator(lambda v: _issuer_url(v) if isinstance(v, str) else v)]
    audience: str = Field(min_length=1)
    jwks_uri: str | None = Field(default=None, description="Default: found through OIDC discovery.")
    job_workflow_refs: tuple[str, ...] | Literal["any"] = Field(
        description="Exact job_workflow_ref values, or 'any' for issuers that do not send the claim."
    )
    repository_owners: tuple[RepositoryOwner, ...] = Field(min_length=1)
    events: tuple[str, ...] = Field(min_length=1)
    signing_refs: tuple[str, ...] | None = Field(
        default=None,
        description="Refs whose builds may be signed: exact refs, or anchored patterns where '*' "
        "matches within one part of the ref and '**' any number of parts.",
    )
    max_token_age: GoDuration = timedelta(minutes=10)
    image_namespaces: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Per repository (owner/name) or owner: the image names its tokens may build "
        "and sign, e.g. {kyma-project/test-infra: [test-infra/*]}. Default: image names whose "
        "first part is the repository's name.",
    )
    github_api: str | None = Field(
        default=None,
        description="GitHub REST API URL (e.g. https://api.github.com): pull-request builds are "
        "checked against the pull request's head commit there before they build.",
    )
    github_api_token_env: str | None = Field(
        default=None, description="Variable holding a token for github-api (private repositories)."
    )

    @field_validator("signing_refs")
    @classmethod
    def _anchored_refs(cls, refs: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for ref in refs or ():
            if not ref.startswith("refs/") or ".." in ref or "//" in ref or ref.endswith("/"):
                raise ValueError(
                    f"expected a full ref such as refs/heads/main or refs/tags/v*, without '..' "
                    f"or '//'; got {ref!r}"
                )
        return refs

    @field_validator("image_namespaces")
    @classmethod
    def _namespace_keys(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key, patterns in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", key):
                raise ValueError(f"expected a repository (owner/name) or an owner, got {key!r}")
            for pattern in patterns:
                if not re.fullmatch(r"[a-z0-9*][a-z0-9._*-]*(/[a-z0-9*][a-z0-9._*-]*)*", pattern):
                    raise ValueError(
                        f"expected image name patterns such as test-infra/* or team/**, got "
                        f"{pattern!r} for {key}"
                    )
        return value

    @field_validator("github_api")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        return None if value is None else _issuer_url(value, "GitHub API").rstrip("/")

    def namespaces_of(self, repository: str) -> tuple[str, ...]:
        """The image-name patterns a token of ``repository`` may build and sign."""
        owner, _, name = repository.partition("/")
        keys = {key.lower(): patterns for key, patterns in self.image_namespaces.items()}
        for key in (repository.lower(), owner.lower()):
            if key in keys:
                return keys[key]
        return (name.lower(), f"{name.lower()}/**")

    @model_validator(mode="before")
    @classmethod
    def _explicit_workflow_refs(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "job-workflow-refs" not in data
            and "job_workflow_refs" not in data
        ):
            raise ValueError(
                "job-workflow-refs is required: list the trusted reusable-workflow refs, or write "
                "'job-workflow-refs: any' for an issuer that does not send that claim"
            )
        return data


DEFAULT_COMMIT_TAG = TagTemplate.model_construct(
    name="default_tag",
    value="v{{ .Date }}-{{ .ShortSHA }}",
    validation=r"^(v[0-9]{8}-[0-9a-f]{8})$",
)
DEFAULT_PR_TAG = TagTemplate.model_construct(
    name="default_tag", value="PR-{{ .PRNumber }}", validation=r"^(PR-[0-9]+)$"
)
DEFAULT_MERGE_GROUP_TAG = TagTemplate.model_construct(
    name="default_tag", value="MG-{{ .ShortSHA }}", validation=r"^(MG-[0-9a-f]{8})$"
)


class Config(_Model):
    """The whole config.yaml. Every key is optional; defaults follow DESIGN.md."""

    model_config = ConfigDict(title="Image Builder config.yaml")

    registry: RegistryList = (DEFAULT_REGISTRY,)
    dev_registry: RegistryList | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig.model_construct)
    default_commit_tag: TagTemplate = DEFAULT_COMMIT_TAG
    default_pr_tag: TagTemplate = DEFAULT_PR_TAG
    default_merge_group_tag: TagTemplate = DEFAULT_MERGE_GROUP_TAG
    additional_pr_tag: TagTemplate | None = None
    tag_template: TagTemplate | None = Field(
        default=None,
        description="Older Go tool key; used as default-commit-tag when that key is absent.",
    )
    tag_template_env: tuple[str, ...] = Field(
        default=(),
        description="Environment variables that tag templates may read with .Env, "
        "besides the env file's entries.",
    )
    platforms: tuple[str, ...] = Field(
        default=(),
        description="Default platforms, e.g. [linux/amd64, linux/arm64]; default: the host's.",
    )
    insecure_registries: tuple[str, ...] = Field(
        default=(),
        description="Registries reached over plain HTTP besides loopback ones (host[:port]).",
    )
    storage_driver: Literal["overlay", "vfs"] | None = Field(
        default=None,
        description="buildah storage driver; default: what storage.conf says, else overlay "
        "unless the storage sits on overlayfs or already uses vfs.",
    )
    build_user: str = Field(
        default="ib-sandbox",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="The unprivileged account that runs the Dockerfile's steps when image-builder "
        "runs as root (made by scripts/setup, with a subuid range). It must own nothing secret.",
    )
    log_format: Literal["color", "text", "json"] = Field(
        default="text",
        description="text, color (text with colour on a terminal) or json (one JSON object per "
        "line). Other values, which the Go tool ignored, mean text with a warning.",
    )
    restricted_registries: tuple[str, ...] = Field(
        default=(),
        description="With --use-restricted-registry, every base image (each FROM, COPY --from and "
        "RUN --mount from=, after build arguments) must come from one of these registries "
        "(host[/path] prefixes, e.g. cgr.dev/sap.com); anything else is refused before building "
        "and blocked at pull time.",
    )
    go_internal_sap_modules: GoModulesSecret | None = Field(
        default=None,
        description="The credential --use-go-internal-sap-modules mounts as a build secret "
        "(release builds only, unless secrets-for-presubmits).",
    )
    secrets_for_presubmits: bool = Field(
        default=False,
        description="Give build secrets (--secret, go-internal-sap-modules) to pull-request and "
        "merge-group builds too. Off by default: their Dockerfile steps come from the pull "
        "request.",
    )
    reproducible: bool = False
    sign_config: SignConfig = Field(default_factory=SignConfig.model_construct)
    ado_config: AdoConfig | None = None
    trust: tuple[TrustedIssuer, ...] = Field(
        default=(),
        description="Trusted OIDC issuers. When set, build and sign require a verified token.",
    )
    seen_tokens: str | None = Field(
        default=None,
        description="File that records used token ids (jti), so a token builds once and signs "
        "once. Default: /var/lib/image-builder/seen-tokens.json as root, else under "
        "$XDG_STATE_HOME. Point agents that share tokens at one shared file.",
    )
    publish_mode: Literal["atomic", "best-effort"] = Field(
        default="atomic",
        description="atomic: tags move only once every registry holds the image, so a registry "
        "that is down leaves every tag where it was. best-effort: tags move in every registry "
        "that received it.",
    )
    publish_timeout: GoDuration = Field(
        default=timedelta(minutes=3),
        description="Publishing (both phases, every registry) ends by then; a registry that "
        "stops answering fails the build with a report. Raise it for images that take longer "
        "to upload.",
    )
    build_timeout: GoDuration = Field(
        default=timedelta(hours=2),
        description="The build (buildah, every platform, and the wait for a free build "
        "account) is stopped after this long.",
    )
    lock_timeout: GoDuration = Field(
        default=timedelta(minutes=5),
        description="How long to wait for buildah's storage lock when another process holds "
        "it (waiting for a free build account is bounded by build-timeout).",
    )
    max_manifest_entries: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="At most this many entries in an index, or signatures and attestations in a "
        "list, read from a registry.",
    )

    _notices: tuple[str, ...] = PrivateAttr(default=())

    @property
    def notices(self) -> tuple[str, ...]:
        """What loading the file ignored or changed, to show as warnings."""
        return self._notices

    @field_validator("restricted_registries")
    @classmethod
    def _registry_prefixes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_registry(v) for v in values)

    @field_validator("publish_timeout", "build_timeout", "lock_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("expected a positive duration such as 90s or 3m")
        return value

    @field_validator("tag_template_env")
    @classmethod
    def _env_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"expected environment variable names such as BUILD_ID, got {name!r}"
                )
        return names

    @model_validator(mode="before")
    @classmethod
    def _legacy_tag_template(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tag-template" in data and "default-commit-tag" not in data:
            data = {**data, "default-commit-tag": data["tag-template"]}
        return data

    @property
    def dev_registries(self) -> tuple[str, ...]:
        """Where pull-request and merge-group images go: ``dev-registry``; with the embedded
        default registry, its own dev path; otherwise none (such builds are refused)."""
        if self.dev_registry:
            return self.dev_registry
        if self.registry == (DEFAULT_REGISTRY,):
            return (DEFAULT_DEV_REGISTRY,)
        return ()


def load_config(path: Path | None) -> Config:
    """Read and validate config.yaml; ``None`` gives the built-in defaults."""
    if path is None:
        return Config.model_construct()  # the defaults are known to be valid
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; pass an existing --config path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "config.yaml") -> Config:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: {problem}{where}; fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}"
        )
    notices: list[str] = []
    data = _go_leniency(data, notices, source)
    while True:
        try:
            config = Config.model_validate(data)
            break
        except ValidationError as exc:
            ignored = _ignorable_keys(exc)
            if not ignored:
                raise ConfigError(f"{source}: {describe_validation_error(exc, Config)}") from None
            for loc in ignored:
                data = _without(data, loc)
                notices.append(
                    f"{source}: key '{_dotted(loc)}' means nothing to Image Builder; ignoring it "
                    "(as the Go tool did)"
                )
    config._notices = tuple(notices)
    return config


def _go_leniency(data: dict[str, Any], notices: list[str], source: str) -> dict[str, Any]:
    """Values the Go tool took without a word: other log formats, registry URLs over http."""
    from image_builder.oci import plain_http

    data = dict(data)
    log_format = data.get("log-format")
    if isinstance(log_format, str) and log_format not in ("color", "text", "json"):
        notices.append(
            f"{source}: log-format {log_format!r} is not color, text or json; using text"
        )
        data["log-format"] = "text"
    insecure = [e for e in data.get("insecure-registries") or () if isinstance(e, str)]
    for key in ("registry", "dev-registry"):
        values = data.get(key)
        for value in [values] if isinstance(values, str) else values or ():
            if not isinstance(value, str) or not value.lower().startswith("http://"):
                continue
            host = value[len("http://") :].split("/", 1)[0]
            if not plain_http(host, insecure):
                notices.append(
                    f"{source}: {key} {value!r}: the scheme is dropped and {host} is reached over HTTPS; "
                    "list it in insecure-registries for plain HTTP"
                )
    return data


def _ignorable_keys(exc: ValidationError) -> list[tuple[Any, ...]]:
    """Unknown keys the Go tool would have ignored (it ignored every unknown key): all of them,
    except likely typos of a known key and anything under ``trust``, which stay errors."""
    out: list[tuple[Any, ...]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] != "extra_forbidden" or not loc or loc[0] == "trust":
            continue
        known = _known_keys(Config, loc[:-1])
        if difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.8):
            return []  # a typo: report it, and everything else with it
        out.append(loc)
    return out


def _without(data: Any, loc: tuple[Any, ...]) -> Any:
    """A copy of ``data`` without the key at ``loc``."""
    if not loc:
        return data
    head, rest = loc[0], loc[1:]
    if isinstance(data, dict):
        if not rest:
            return {k: v for k, v in data.items() if k != head}
        return {k: (_without(v, rest) if k == head else v) for k, v in data.items()}
    if isinstance(data, list) and isinstance(head, int) and 0 <= head < len(data):
        return [_without(v, rest) if i == head else v for i, v in enumerate(data)]
    return data


def config_schema() -> str:
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=False)


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first problem pydantic found, naming the key and the expected form."""
    # An unknown key usually explains the "required" error next to it (a typo), so it goes first.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    key = _dotted(loc)
    if first["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        parent = _dotted(loc[:-1])
        hint = (
            f"did you mean '{_dotted((*loc[:-1], guess[0]))}'?"
            if guess
            else f"known keys{' under ' + repr(parent) if parent else ''}: {', '.join(known)}"
        )
        return f"unknown key '{key}'; {hint}{more}"
    message = str(first["msg"])
    message = message.removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"'{key}' is required{more}"
    got = first.get("input")
    quiet = (
        "got" in message or isinstance(got, (dict, list)) or first["type"] == "registry_credentials"
    )
    shown = "" if quiet else f" (got {_short(got)})"
    where = f"'{key}': " if key else ""
    return f"{where}{_lower_first(message)}{shown}{more}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # Keys come from the user's file: escape control characters so the message stays one line.
            out += ("." if out else "") + str(part).encode("unicode_escape").decode("ascii")
    return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    target: Any = model
    for part in loc:
        target = _step(target, part)
        if target is None:
            return []
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [field.alias or name for name, field in target.model_fields.items()]
    return []


def _step(annotation: Any, part: Any) -> Any:
    """Follow one element of a pydantic error location through type annotations."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (field.alias, name):
                return _unwrap(field.annotation)
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple) and args:
        return _unwrap(args[0])
    if origin in (dict, Mapping) and len(args) == 2:
        return _unwrap(args[1])
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if inner is not type(None):
                return inner
    return annotation
