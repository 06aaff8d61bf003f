"""config.yaml: the Go tool's keys plus ours, with defaults, validation and a JSON Schema.

Unknown keys are errors that name the nearest known key; bad values name the key and the
expected form. With no config file the built-in defaults from DESIGN.md apply.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

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

from image_builder import validation
from image_builder.duration import EXAMPLE as DURATION_EXAMPLE
from image_builder.duration import format_go_duration, parse_go_duration
from image_builder.errors import ConfigError
from image_builder.events import JOB_TYPE_ALIASES, JobType
from image_builder.paths import STREAM
from image_builder.validation import Expected, Problem, dotted

DEFAULT_REGISTRY = "localhost:5000"
DEFAULT_DEV_REGISTRY = "localhost:5000/dev"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_HTTPS_URL = r"^https://\S+$"
_HTTP_URL = r"^https?://\S+$"
_ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_MOUNT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_USER_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
# What each pattern asks for, in words: messages say this instead of showing the regex.
_PATTERN_WORDS: dict[
    str, tuple[str, str]
] = {  # pattern: (what, its form if the name says too little)
    _HTTPS_URL: ("an https:// URL", ""),
    _HTTP_URL: ("an https:// (or http://) URL", ""),
    _ENV_NAME_PATTERN: (
        "an environment variable name",
        "letters, digits and _, not starting with a digit",
    ),
    _MOUNT_ID_PATTERN: ("an id", "1 to 64 letters, digits, '.', '_' or '-'"),
    _USER_NAME_PATTERN: (
        "a user name",
        "at most 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'",
    ),
    r"^[^\s]+$": ("a value without spaces", ""),
}


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
    Expected("a registry host such as ghcr.io/org, or a list of them"),
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

    name: str | None = Field(
        default=None,
        description="The tag's name; with export-tags it becomes the build argument TAG_<name>. "
        "Default: derived from the value (v{{ .ShortSHA }} gives vShortSHA).",
        examples=["default_tag"],
    )
    value: str = Field(
        min_length=1,
        description='Go-template string over .CommitSHA, .ShortSHA, .PRNumber, .Date and .Env "NAME".',
        examples=["v{{ .Date }}-{{ .ShortSHA }}"],
    )
    validation: str | None = Field(
        default=None,
        description="Regular expression the rendered value must match as a whole.",
        examples=["^(v[0-9]{8}-[0-9a-f]{8})$"],
    )

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
    """A layer cache in a registry, which every build reads and release builds write."""

    enabled: bool = Field(
        default=False, description="Use the layer cache; needs cache-repo.", examples=[True]
    )
    cache_repo: CacheRepo | None = Field(
        default=None,
        description="Repository of cached layers: every build reads it, release builds write it.",
        examples=["europe-docker.pkg.dev/my-project/cache/cache"],
    )
    dev_cache_repo: CacheRepo | None = Field(
        default=None,
        description="Cache that pull-request and merge-group builds may write; they never "
        "write cache-repo.",
        examples=["europe-docker.pkg.dev/my-project/dev/cache"],
    )
    cache_run_layers: bool = Field(
        default=False,
        description="Go tool key (kaniko's --cache-run-layers), accepted so its configs load; "
        "buildah caches every layer when the cache is enabled.",
        examples=[True],
    )
    cache_copy_layers: bool = Field(
        default=False,
        description="Go tool key (kaniko's --cache-copy-layers), accepted so its configs load; "
        "buildah caches every layer when the cache is enabled.",
        examples=[False],
    )

    @model_validator(mode="after")
    def _repo_when_enabled(self) -> CacheConfig:
        if self.enabled and not self.cache_repo:
            raise ValueError(
                "cache.enabled is true but cache.cache-repo is not set; name the cache repository"
            )
        return self


class NotarySecret(_Model):
    """The client certificate and key a notary signer presents to the Signify service."""

    path: str = Field(
        min_length=1,
        description="JSON file with certData and privateKeyData (base64 PEM).",
        examples=["/secret/secret.json"],
    )
    type: str = Field(
        default="signify",
        description="The secret file's format; signify is the only one.",
        examples=["signify"],
    )


class NotaryConfig(_Model):
    """The Signify service (``type: notary``), reached over mutual TLS."""

    endpoint: str = Field(
        pattern=_HTTPS_URL,
        description="The Signify service's signing URL.",
        examples=["https://signing.example.com/signingsvc/sign"],
    )
    timeout: GoDuration = Field(
        default=timedelta(minutes=5),
        description="Deadline for the whole signing request, retries included.",
        examples=["5m"],
    )
    retry_timeout: GoDuration = Field(
        default=timedelta(seconds=10),
        description="Longest wait between two attempts.",
        examples=["10s"],
    )
    secret: NotarySecret = Field(
        description="Where the client certificate and key for mutual TLS are.",
        examples=[{"path": "/secret/secret.json", "type": "signify"}],
    )
    ca_file: str | None = Field(
        default=None,
        description="PEM bundle to trust for the service.",
        examples=["/etc/ssl/certs/signify-ca.pem"],
    )
    rotate_endpoint: str | None = Field(
        default=None,
        pattern=_HTTPS_URL,
        description="The Signify URL that renews the client certificate "
        "(image-builder signify rotate).",
        examples=["https://signing.example.com/signingsvc/rotate"],
    )


class CosignConfig(_Model):
    """Key-based, cosign-compatible signatures (``type: cosign``)."""

    private_key: str = Field(
        min_length=1,
        description="The encrypted private key file (made by image-builder keygen).",
        examples=["/secret/cosign.key"],
    )
    password_env: str | None = Field(
        default=None,
        pattern=_ENV_NAME_PATTERN,
        description="Variable holding the key's password.",
        examples=["COSIGN_PASSWORD"],
    )


def _periodic_is_schedule(value: object) -> object:
    """Prow's ``periodic`` job type, which Go configs list, is a scheduled run."""
    if isinstance(value, (list, tuple)):
        return tuple(dict.fromkeys(JOB_TYPE_ALIASES.get(v, v) for v in value))
    return value


class _Signer(_Model):
    """What every signer has, whatever its type."""

    name: str = Field(
        min_length=1,
        description="The name enabled-signers refers to.",
        examples=["signify-prod"],
    )
    job_type: Annotated[tuple[JobType, ...] | None, BeforeValidator(_periodic_is_schedule)] = Field(
        default=None,
        description="Job types this signer runs for; default: every release build. Prow's "
        "'periodic' means schedule.",
        examples=[["postsubmit", "schedule"]],
    )


class NotarySignerConfig(_Signer):
    """A signer that asks the Signify service (``type: notary``)."""

    type: Literal["notary"] = Field(
        description="notary: the Signify service; cosign: a key file.", examples=["notary"]
    )
    config: NotaryConfig = Field(
        description="The Signify service's settings (endpoint, secret, timeout, ...).",
        examples=[
            {
                "endpoint": "https://signing.example.com/signingsvc/sign",
                "secret": {"path": "/secret/secret.json", "type": "signify"},
            }
        ],
    )


class CosignSignerConfig(_Signer):
    """A signer with a cosign-compatible key file (``type: cosign``)."""

    type: Literal["cosign"] = Field(
        description="cosign: a key file; notary: the Signify service.", examples=["cosign"]
    )
    config: CosignConfig = Field(
        description="The key and where its password is (private-key, password-env).",
        examples=[{"private-key": "/secret/cosign.key", "password-env": "COSIGN_PASSWORD"}],
    )


# One signer: its type decides which settings its config takes, checked once, when the file is
# read.
SignerConfig = Annotated[NotarySignerConfig | CosignSignerConfig, Field(discriminator="type")]


class SignConfig(_Model):
    """Which signers exist, and which repositories they sign for."""

    enabled_signers: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Per repository (org/repo), or '*' for all: the names of the signers that "
        "sign its release builds.",
        examples=[{"*": ["signify-prod"], "my-org/my-repo": ["cosign-release"]}],
    )
    signers: tuple[SignerConfig, ...] = Field(
        default=(),
        description="The signers enabled-signers can name.",
        examples=[
            [
                {
                    "name": "signify-prod",
                    "type": "notary",
                    "job-type": ["postsubmit"],
                    "config": {
                        "endpoint": "https://signing.example.com/signingsvc/sign",
                        "secret": {"path": "/secret/secret.json"},
                    },
                }
            ]
        ],
    )

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


class ProvenanceConfig(_Model):
    """SLSA v1 provenance, signed by the cosign signers of release builds (docs/provenance.md)."""

    enabled: bool = Field(
        default=True,
        description="Attach signed provenance to every release build that a cosign signer signs.",
        examples=[True],
    )
    builder_id: str | None = Field(
        default=None,
        min_length=1,
        description="runDetails.builder.id: the URI of this trusted builder, which verifiers "
        "pin with --builder-id. Default: the Azure DevOps pipeline definition, the GitHub "
        "workflow, or the Jenkins job that runs image-builder, else "
        "urn:image-builder:builder:local.",
        examples=["https://dev.azure.com/my-org/my-project/_build?definitionId=12"],
    )
    secret_build_args: tuple[str, ...] = Field(
        default=(),
        description="Build arguments whose values never go into provenance (names only). "
        "Arguments named like secrets (TOKEN, PASSWORD, KEY, ...), taken from the environment, "
        "or holding a build secret's value are left out too.",
        examples=[["NPM_TOKEN"]],
    )
    presubmits: Literal["none", "unsigned"] = Field(
        default="none",
        description="Pull-request and merge-group builds: no provenance, or an unsigned "
        "statement (no key signs those builds).",
        examples=["unsigned"],
    )


class AdoRetryStrategy(_Model):
    """How often to retry a failed Azure DevOps API request."""

    attempts: int = Field(
        default=3, ge=1, description="Attempts in all, the first included.", examples=[3]
    )
    delay: GoDuration = Field(
        default=timedelta(seconds=5), description="Wait between two attempts.", examples=["5s"]
    )


class AdoConfig(_Model):
    """The Azure DevOps pipeline that builds in the trusted place (the ado backend)."""

    ado_organization_url: str = Field(
        pattern=_HTTP_URL,
        description="The Azure DevOps organization's URL.",
        examples=["https://dev.azure.com/my-org"],
    )
    ado_project_name: str = Field(
        min_length=1, description="The project that holds the pipeline.", examples=["my-project"]
    )
    ado_pipeline_id: int = Field(
        ge=1, description="The pipeline's numeric id (definitionId).", examples=[14902]
    )
    ado_pipeline_version: int | None = Field(
        default=None,
        ge=1,
        description="The pipeline's revision to run; default: the latest.",
        examples=[2],
    )
    ado_retry_strategy: AdoRetryStrategy = Field(
        default_factory=AdoRetryStrategy.model_construct,
        description="Retries of failed API requests.",
        examples=[{"attempts": 3, "delay": "5s"}],
    )
    ado_refresh_interval: GoDuration = Field(
        default=timedelta(seconds=30),
        description="How often to read the run's state and its new log lines.",
        examples=["15s"],
    )
    ado_queue_timeout: GoDuration = Field(
        default=timedelta(minutes=30),
        description="How long a run may wait for an agent; then it is cancelled.",
        examples=["30m"],
    )
    ado_timeout: GoDuration = Field(
        default=timedelta(minutes=60),
        description="How long a run may take once an agent started it; then it is cancelled.",
        examples=["1h"],
    )
    ado_cancel_timeout: GoDuration = Field(
        default=timedelta(minutes=2),
        description="How long to wait for a cancelled run to stop before leaving it.",
        examples=["2m"],
    )
    ado_token_as_parameter: bool = Field(
        default=False,
        description="Send the caller's OIDC token as the Authorization template parameter, as "
        "the Go tool did, for pipelines that expect it there. Default: a secret variable "
        "(template parameters can be read back from the run by anyone who can read runs).",
        examples=[False],
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
        pattern=_MOUNT_ID_PATTERN,
        description="The secret's id in RUN --mount=type=secret,id=... (default: netrc).",
        examples=["netrc"],
    )
    file: str | None = Field(
        default=None,
        description="File holding the credential.",
        examples=["/secret/go-modules.netrc"],
    )
    env: str | None = Field(
        default=None,
        pattern=_ENV_NAME_PATTERN,
        description="Variable holding the credential (instead of file).",
        examples=["GO_MODULES_NETRC"],
    )

    @model_validator(mode="after")
    def _one_source(self) -> GoModulesSecret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env: where the credential is")
        return self


class RepositoryOwner(_Model):
    """A GitHub account (organization or user) whose repositories may trigger builds."""

    name: str = Field(
        min_length=1,
        description="The account's login, as the token's repository_owner claim says.",
        examples=["my-org"],
    )
    id: int = Field(
        ge=1,
        description="The numeric account id (repository_owner_id): stops renamed or "
        "resurrected accounts.",
        examples=[12345678],
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

    issuer: Annotated[
        str, BeforeValidator(lambda v: _issuer_url(v) if isinstance(v, str) else v)
    ] = Field(
        description="The token's iss claim: an https URL.",
        examples=["https://token.actions.githubusercontent.com"],
    )
    audience: str = Field(
        min_length=1,
        description="The token's aud claim must be exactly this.",
        examples=["image-builder"],
    )
    jwks_uri: str | None = Field(
        default=None,
        description="Where the issuer's signing keys are. Default: found through OIDC discovery.",
        examples=["https://token.actions.githubusercontent.com/.well-known/jwks"],
    )
    job_workflow_refs: Annotated[
        tuple[str, ...] | Literal["any"],
        Expected(
            "a list of workflow refs such as "
            "[my-org/my-repo/.github/workflows/build.yml@refs/heads/main], or 'any'"
        ),
    ] = Field(
        description="Exact job_workflow_ref values, or 'any' for issuers that do not send the claim.",
        examples=[["my-org/my-repo/.github/workflows/build.yml@refs/heads/main"]],
    )
    repository_owners: tuple[RepositoryOwner, ...] = Field(
        min_length=1,
        description="The accounts whose repositories may use this issuer's tokens.",
        examples=[[{"name": "my-org", "id": 12345678}]],
    )
    events: tuple[str, ...] = Field(
        min_length=1,
        description="The token's event_name claim must be one of these.",
        examples=[["push", "pull_request_target", "merge_group"]],
    )
    signing_refs: tuple[str, ...] | None = Field(
        default=None,
        description="Refs whose builds may be signed: exact refs, or anchored patterns where '*' "
        "matches within one part of the ref and '**' any number of parts.",
        examples=[["refs/heads/main", "refs/tags/v*"]],
    )
    max_token_age: GoDuration = Field(
        default=timedelta(minutes=10),
        description="Tokens issued longer ago than this are refused.",
        examples=["10m"],
    )
    image_namespaces: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Per repository (owner/name) or owner: the image names its tokens may build "
        "and sign, e.g. {kyma-project/test-infra: [test-infra/*]}. Default: image names whose "
        "first part is the repository's name.",
        examples=[{"kyma-project/test-infra": ["test-infra/*"], "my-org": ["team/**"]}],
    )
    github_api: str | None = Field(
        default=None,
        description="GitHub REST API URL (e.g. https://api.github.com): pull-request builds are "
        "checked against the pull request's head commit there before they build.",
        examples=["https://api.github.com"],
    )
    github_api_token_env: str | None = Field(
        default=None,
        description="Variable holding a token for github-api (private repositories).",
        examples=["GITHUB_API_TOKEN"],
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
DEFAULT_SEMVER_TAGS = ("{{ .Version }}", "{{ .Major }}.{{ .Minor }}", "{{ .Major }}")


class Config(_Model):
    """The whole config.yaml. Every key is optional; defaults follow DESIGN.md."""

    model_config = ConfigDict(title="Image Builder config.yaml")

    registry: RegistryList = Field(
        default=(DEFAULT_REGISTRY,),
        description="Where release builds (push, schedule, manual run) push: a registry host "
        "and optional path, or a list of them; every tag goes to each. Default: localhost:5000.",
        examples=[["ghcr.io/my-org", "europe-docker.pkg.dev/proj/images"]],
    )
    dev_registry: RegistryList | None = Field(
        default=None,
        description="Where pull-request and merge-group builds push; it must not be a release "
        "registry. Without it such builds are refused (except with the default local registry).",
        examples=["europe-docker.pkg.dev/proj/dev"],
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig.model_construct,
        description="A layer cache in a registry. Default: no cache.",
        examples=[{"enabled": True, "cache-repo": "europe-docker.pkg.dev/proj/cache/cache"}],
    )
    default_commit_tag: TagTemplate = Field(
        default=DEFAULT_COMMIT_TAG,
        description="The tag every release build (push, schedule, manual run) gets.",
        examples=[
            {
                "name": "default_tag",
                "value": "v{{ .Date }}-{{ .ShortSHA }}",
                "validation": "^(v[0-9]{8}-[0-9a-f]{8})$",
            }
        ],
    )
    default_pr_tag: TagTemplate = Field(
        default=DEFAULT_PR_TAG,
        description="The tag every pull-request build gets.",
        examples=[
            {"name": "default_tag", "value": "PR-{{ .PRNumber }}", "validation": "^(PR-[0-9]+)$"}
        ],
    )
    default_merge_group_tag: TagTemplate = Field(
        default=DEFAULT_MERGE_GROUP_TAG,
        description="The tag every merge-group (merge queue) build gets.",
        examples=[{"name": "default_tag", "value": "MG-{{ .ShortSHA }}"}],
    )
    additional_pr_tag: TagTemplate | None = Field(
        default=None,
        description="A second tag for pull-request builds, besides default-pr-tag.",
        examples=[{"name": "pr_commit", "value": "PR-{{ .PRNumber }}-{{ .ShortSHA }}"}],
    )
    semver_tags: tuple[str, ...] = Field(
        default=DEFAULT_SEMVER_TAGS,
        description="Tags a version tag (refs/tags/v1.2.3 or 1.2.3) adds, as docker/metadata-"
        "action's type=semver: templates over .Version, .Major, .Minor and .Patch. A "
        "pre-release (v1.3.0-rc.1) gets only the templates that use .Version. [] adds none.",
        examples=[["{{ .Version }}", "{{ .Major }}.{{ .Minor }}", "{{ .Major }}"]],
    )
    release_only_tags: tuple[str, ...] = Field(
        default=(),
        description="Tags (by name or value) that, like latest, are applied only to release "
        "builds (push, schedule, manual run) of the default branch and of version tags; on "
        "other builds they are dropped with a notice. latest always is.",
        examples=[["stable", "edge"]],
    )
    default_branch: str | None = Field(
        default=None,
        pattern=r"^[^\s]+$",
        description="The branch whose release builds get release-only tags such as latest. "
        "Default: the CI system's (GitHub's event payload, a checkout's origin/HEAD), else main.",
        examples=["main"],
    )
    tag_template: TagTemplate | None = Field(
        default=None,
        description="Older Go tool key; used as default-commit-tag when that key is absent.",
        examples=[{"name": "default_tag", "value": "v{{ .Date }}-{{ .ShortSHA }}"}],
    )
    tag_template_env: tuple[str, ...] = Field(
        default=(),
        description="Environment variables that tag templates may read with .Env, "
        "besides the env file's entries.",
        examples=[["BUILD_ID", "RELEASE_CHANNEL"]],
    )
    platforms: tuple[str, ...] = Field(
        default=(),
        description="Default platforms, e.g. [linux/amd64, linux/arm64]; default: the host's.",
        examples=[["linux/amd64", "linux/arm64"]],
    )
    insecure_registries: tuple[str, ...] = Field(
        default=(),
        description="Registries reached over plain HTTP besides loopback ones (host[:port]).",
        examples=[["registry.internal:5000"]],
    )
    storage_driver: Literal["overlay", "vfs"] | None = Field(
        default=None,
        description="buildah storage driver; default: what storage.conf says, else overlay "
        "unless the storage sits on overlayfs or already uses vfs.",
        examples=["vfs"],
    )
    build_user: str = Field(
        default="ib-sandbox",
        pattern=_USER_NAME_PATTERN,
        description="The unprivileged account that runs the Dockerfile's steps when image-builder "
        "runs as root (made by scripts/setup, with a subuid range). It must own nothing secret.",
        examples=["ib-sandbox"],
    )
    log_format: Literal["color", "text", "json"] = Field(
        default="text",
        description="text, color (text with colour on a terminal) or json (one JSON object per "
        "line). Other values, which the Go tool ignored, mean text with a warning.",
        examples=["json"],
    )
    restricted_registries: tuple[str, ...] = Field(
        default=(),
        description="With --use-restricted-registry, every base image (each FROM, COPY --from and "
        "RUN --mount from=, after build arguments) must come from one of these registries "
        "(host[/path] prefixes, e.g. cgr.dev/sap.com); anything else is refused before building "
        "and blocked at pull time.",
        examples=[["cgr.dev/sap.com", "europe-docker.pkg.dev/proj/base-images"]],
    )
    go_internal_sap_modules: GoModulesSecret | None = Field(
        default=None,
        description="The credential --use-go-internal-sap-modules mounts as a build secret "
        "(release builds only, unless secrets-for-presubmits).",
        examples=[{"id": "netrc", "file": "/secret/go-modules.netrc"}],
    )
    secrets_for_presubmits: bool = Field(
        default=False,
        description="Give build secrets (--secret, go-internal-sap-modules) to pull-request and "
        "merge-group builds too. Off by default: their Dockerfile steps come from the pull "
        "request.",
        examples=[False],
    )
    provenance: ProvenanceConfig = Field(
        default_factory=ProvenanceConfig.model_construct,
        description="Signed SLSA v1 provenance for release builds (docs/provenance.md).",
        examples=[{"builder-id": "https://dev.azure.com/my-org/my-project/_build?definitionId=12"}],
    )
    reproducible: bool = Field(
        default=False,
        description="Stamp the image with the commit's time instead of the build's, so that "
        "rebuilding a commit gives the same image; needs a git checkout or SOURCE_DATE_EPOCH.",
        examples=[True],
    )
    sign_config: SignConfig = Field(
        default_factory=SignConfig.model_construct,
        description="Signers, and which repositories' release images each signs. Pull-request "
        "and merge-group builds are never signed. Default: no signing.",
        examples=[
            {
                "enabled-signers": {"*": ["signify-prod"]},
                "signers": [
                    {
                        "name": "signify-prod",
                        "type": "notary",
                        "config": {
                            "endpoint": "https://signing.example.com/signingsvc/sign",
                            "secret": {"path": "/secret/secret.json"},
                        },
                    }
                ],
            }
        ],
    )
    ado_config: AdoConfig | None = Field(
        default=None,
        description="The Azure DevOps pipeline to build in; with it, build runs there unless "
        "--backend says otherwise.",
        examples=[
            {
                "ado-organization-url": "https://dev.azure.com/my-org",
                "ado-project-name": "my-project",
                "ado-pipeline-id": 14902,
            }
        ],
    )
    trust: tuple[TrustedIssuer, ...] = Field(
        default=(),
        description="Trusted OIDC issuers. When set, build and sign require a verified token.",
        examples=[
            [
                {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "audience": "image-builder",
                    "job-workflow-refs": [
                        "my-org/my-repo/.github/workflows/build.yml@refs/heads/main"
                    ],
                    "repository-owners": [{"name": "my-org", "id": 12345678}],
                    "events": ["push", "pull_request_target"],
                }
            ]
        ],
    )
    seen_tokens: str | None = Field(
        default=None,
        description="File that records used token ids (jti), so a token builds once and signs "
        "once. Default: /var/lib/image-builder/seen-tokens.json as root, else under "
        "$XDG_STATE_HOME. Point agents that share tokens at one shared file.",
        examples=["/shared/image-builder/seen-tokens.json"],
    )
    publish_mode: Literal["atomic", "best-effort"] = Field(
        default="atomic",
        description="atomic: tags move only once every registry holds the image, so a registry "
        "that is down leaves every tag where it was. best-effort: tags move in every registry "
        "that received it.",
        examples=["best-effort"],
    )
    publish_timeout: GoDuration = Field(
        default=timedelta(minutes=3),
        description="Publishing (both phases, every registry) ends by then; a registry that "
        "stops answering fails the build with a report. Raise it for images that take longer "
        "to upload.",
        examples=["10m"],
    )
    build_timeout: GoDuration = Field(
        default=timedelta(hours=2),
        description="The build (buildah, every platform, and the wait for a free build "
        "account) is stopped after this long.",
        examples=["2h30m"],
    )
    lock_timeout: GoDuration = Field(
        default=timedelta(minutes=5),
        description="How long to wait for buildah's storage lock when another process holds "
        "it (waiting for a free build account is bounded by build-timeout).",
        examples=["5m"],
    )
    max_manifest_entries: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="At most this many entries in an index, or signatures and attestations in a "
        "list, read from a registry.",
        examples=[64],
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


def read_stdin() -> str:
    """The config piped into ``--config -``: refused when empty rather than taken for the
    defaults, since standard input can be read only once."""
    try:
        text = sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config from standard input: {exc}") from None
    if not text.strip():
        raise ConfigError(
            "standard input holds no config (it is empty, or was read already); "
            "pipe config.yaml into --config -"
        )
    return text


def load_config(path: Path | None) -> Config:
    """Read and validate config.yaml; ``None`` gives the built-in defaults, ``-`` reads stdin."""
    if path is None:
        return Config.model_construct()  # the defaults are known to be valid
    if path == STREAM:
        return parse_config(read_stdin(), source="<stdin>")
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
    """Validate ``text``. A ConfigError names every problem: ``<source>: <problem>`` for one,
    else a first line ``<source> has N problems:`` and one ``  - <problem>`` line each, in the
    order of the file."""
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
                raise ConfigError(_config_problems(exc, data, text, source)) from None
            for loc in ignored:
                data = _without(data, loc)
                notices.append(
                    f"{source}: key '{dotted(loc)}' means nothing to Image Builder; ignoring it "
                    "(as the Go tool did)"
                )
    config._notices = tuple(notices)
    return config


def _config_problems(exc: ValidationError, data: dict[str, Any], text: str, source: str) -> str:
    problems = validation.problems(exc.errors(include_url=False), Config, patterns=_PATTERN_WORDS)
    if "tag-template" in data and "default-commit-tag" not in data:
        # default-commit-tag is a copy of tag-template here: its problems are already there.
        copies = [p for p in problems if p.loc[:1] == ("default-commit-tag",)]
        if len(copies) < len(problems):
            problems = [p for p in problems if p not in copies]
    problems = _in_file_order(problems, text)
    if len(problems) == 1:
        return f"{source}: {problems[0].text}"
    return f"{source} has {len(problems)} problems:" + "".join(f"\n  - {p.text}" for p in problems)


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
    insecure = [e for e in _as_list(data.get("insecure-registries")) if isinstance(e, str)]
    for key in ("registry", "dev-registry"):
        for value in _as_list(data.get(key)):
            if not isinstance(value, str) or not value.lower().startswith("http://"):
                continue
            host = value[len("http://") :].split("/", 1)[0]
            if not plain_http(host, insecure):
                notices.append(
                    f"{source}: {key} {value!r}: the scheme is dropped and {host} is reached over HTTPS; "
                    "list it in insecure-registries for plain HTTP"
                )
    return data


def _as_list(value: object) -> list[object]:
    """The entries of a key that takes a value or a list of them (whatever the file holds)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _ignorable_keys(exc: ValidationError) -> list[tuple[Any, ...]]:
    """Unknown keys the Go tool would have ignored (it ignored every unknown key): all of them,
    except likely typos of a known key and anything under ``trust`` or a signer's ``config``,
    which stay errors. Each as a location in the file (without the branch tags of unions)."""
    out: list[tuple[Any, ...]] = []
    for error in exc.errors(include_url=False):
        loc = validation.clean_loc(Config, tuple(error["loc"]))
        if error["type"] != "extra_forbidden" or not loc or _strict(loc):
            continue
        known = validation.known_keys(Config, tuple(error["loc"])[:-1])
        if not difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.8):
            out.append(loc)
    return out


def _strict(loc: tuple[Any, ...]) -> bool:
    """Whether ``loc`` is where a key the reader misses could weaken a check: the trust policy,
    a signer's settings. Nothing the Go tool read lives there."""
    return loc[:1] == ("trust",) or (
        loc[:2] == ("sign-config", "signers") and loc[3:4] == ("config",)
    )


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


def _in_file_order(problems: list[Problem], text: str) -> list[Problem]:
    """``problems`` sorted by where their keys are in ``text`` (a problem without a place in the
    file, such as a missing key, sits where its parent is)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return problems
    if root is None:
        return problems

    def place(loc: tuple[Any, ...]) -> tuple[int, int]:
        node: yaml.Node = root
        mark = node.start_mark
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                pairs = [
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ]
                if not pairs:  # a missing key: after the keys that are there (a typo of it)
                    mark = node.end_mark
                    break
                mark, node = pairs[-1][0].start_mark, pairs[-1][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return (mark.line, mark.column)

    return sorted(problems, key=lambda p: place(p.loc))
