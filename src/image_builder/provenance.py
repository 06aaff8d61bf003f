"""SLSA Provenance v1 in an in-toto Statement v1: what the builder says about how it made an image.
Pure: the statement is made from the plan, the identity (from the verified token on the trusted
side), the resolved base images, the pushed digests and the times; nothing here reads the
network or the environment. docs/provenance.md documents every field and the build type."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from image_builder.context.model import Identity
from image_builder.errors import InputError
from image_builder.oci import parse_reference

if TYPE_CHECKING:
    from image_builder.context import CIContext
    from image_builder.plan import BuildPlan
    from image_builder.trust import VerifiedClaims

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = (
    "https://github.com/kyma-project/image-builder/blob/main/docs/provenance.md#build-type-v1"
)
# cosign verify-attestation --type slsaprovenance1 means PREDICATE_TYPE.
COSIGN_TYPE = "slsaprovenance1"
DEFAULT_BUILDER = "urn:image-builder:builder:local"

# Build argument names that hold a secret by convention, as buildkit's SecretsUsedInArgOrEnv
# check reads them (and a few more): a word of the name (split at '_', '-', case changes and
# digits) is one of these.
_SECRET_WORDS = frozenset(
    {"apikey", "auth", "credential", "credentials", "key", "password", "passwd", "pword",
     "pass", "passphrase", "creds", "dsn", "private", "pat", "pwd", "secret", "token"}
)  # fmt: skip
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def identity(ctx: CIContext, claims: VerifiedClaims | None) -> Identity:
    if claims is None:
        return Identity(
            source_url=ctx.source_url,
            commit=ctx.commit_sha,
            ref=ctx.ref,
            event=ctx.event,
        )
    return Identity(
        source_url=f"{_server(claims.issuer)}/{claims.repository}",
        # Only the token's own claims, None where it has none. A pull request's token names its
        # base or merge commit; such builds record the head commit the context names (checked
        # with GitHub when the policy names its API), and are never signed.
        commit=claims.sha if ctx.is_release else ctx.commit_sha,
        ref=claims.ref,
        event=claims.event_name,
        workflow=claims.job_workflow_ref or claims.workflow_ref,
        verified=True,
    )


def _server(issuer: str) -> str:
    """The GitHub server a token's issuer belongs to: github.com for GitHub's issuer (also with
    an enterprise slug), else the issuer's own host (GitHub Enterprise Server). Nothing of the
    caller's context goes into the URL."""
    parts = urlsplit(issuer)
    if parts.hostname == "token.actions.githubusercontent.com":
        return "https://github.com"
    return f"{parts.scheme}://{parts.netloc}"


def builder_and_run(
    configured: str | None, env: Mapping[str, str], fallback_run: str
) -> tuple[str, str]:
    """``(builder id, invocation id)``: the configured builder, else the pipeline, workflow or
    job that runs image-builder; the run's URL, else ``fallback_run``. The CI system sets these
    variables, not the caller."""
    builder, run = DEFAULT_BUILDER, fallback_run
    if env.get("TF_BUILD") and env.get("SYSTEM_COLLECTIONURI") and env.get("SYSTEM_TEAMPROJECT"):
        project = env["SYSTEM_COLLECTIONURI"].rstrip("/") + "/" + quote(env["SYSTEM_TEAMPROJECT"])
        if env.get("SYSTEM_DEFINITIONID"):
            builder = f"{project}/_build?definitionId={env['SYSTEM_DEFINITIONID']}"
        if env.get("BUILD_BUILDID"):
            run = f"{project}/_build/results?buildId={env['BUILD_BUILDID']}"
    elif env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        if env.get("GITHUB_WORKFLOW_REF"):
            builder = f"{server}/{env['GITHUB_WORKFLOW_REF']}"
        if env.get("GITHUB_RUN_ID"):
            run = (
                f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
                f"/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
            )
    elif env.get("JENKINS_URL"):
        builder = env.get("JOB_URL") or builder
        run = env.get("BUILD_URL") or run
    return configured or builder, run


def builder_id(configured: str | None, env: Mapping[str, str]) -> str:
    """The builder id alone (see :func:`builder_and_run`)."""
    return builder_and_run(configured, env, fallback_run="")[0]


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """An image a build stage starts from (or copies from), for one platform, as the trusted side
    resolved it: ``digest`` is that platform's manifest, ``index`` the index the name pointed to
    (for a multi-platform image). Without a digest, ``problem`` says why."""

    name: str  # normalised, e.g. docker.io/library/alpine:3.20
    platform: str
    digest: str | None = None
    index: str | None = None
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class Subject:
    digest: str
    platform: str | None = None  # None: the index, or a single-platform image


def secret_build_args(
    build_args: Sequence[tuple[str, str]],
    *,
    from_environment: Sequence[str] = (),
    secret_values: Sequence[str] = (),
    declared: Sequence[str] = (),
) -> frozenset[str]:
    """The build arguments whose values never go into provenance: declared secret in config,
    taken from the environment, holding a build secret's value, or named like a secret."""
    out = set(declared) | set(from_environment)
    for name, value in build_args:
        words = {w.lower() for w in _WORD.findall(name)}
        if words & _SECRET_WORDS or any(s and s in value for s in secret_values):
            out.add(name)
    return frozenset(out)


def statement(
    *,
    plan: BuildPlan,
    who: Identity,
    subjects: Sequence[Subject],
    bases: Sequence[BaseImage],
    builder_id: str,
    invocation_id: str,
    started: datetime,
    finished: datetime,
    version: str,
    signers: Sequence[str],
    context: str,
    dockerfile: str,
    withheld: frozenset[str] = frozenset(),
    env_file: str | None = None,
) -> dict[str, Any]:
    """The in-toto statement for ``subjects`` (the pushed index first, then each platform)."""
    source: dict[str, Any] = {"repository": who.source_url, "ref": who.ref, "commit": who.commit}
    external: dict[str, Any] = {
        "source": source,
        "event": who.event,
        "image": plan.name,
        "dockerfile": dockerfile,
        "context": context,
        "target": plan.target,
        "platforms": list(plan.platforms),
        "buildArgs": {k: v for k, v in plan.build_args if k not in withheld},
        "secretBuildArgs": sorted(withheld & {k for k, _ in plan.build_args}),
        "tags": list(dict.fromkeys(t.value for t in plan.tags)),
        "envFile": env_file,
        "buildSecrets": [secret.id for secret in plan.secrets],  # ids only, never values
        "restrictedRegistries": list(plan.restricted_registries),
    }
    if who.workflow:
        external["workflow"] = who.workflow
    dependencies: list[dict[str, Any]] = []
    if who.source_url and who.commit:
        dependencies.append(
            {
                "uri": f"git+{who.source_url}@{who.commit}",
                "digest": {"gitCommit": who.commit},
            }
        )
    dependencies.extend(_base(b) for b in bases)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [_subject(plan, s) for s in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {
                    "imageBuilderVersion": version,
                    "signers": list(signers),
                    "identityFromToken": who.verified,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"image-builder": version}},
                "metadata": {
                    "invocationId": invocation_id,
                    "startedOn": rfc3339(started),
                    "finishedOn": rfc3339(finished),
                },
            },
        },
    }


def encode(data: Mapping[str, Any]) -> bytes:
    """The statement as signed: compact JSON, keys in the order written."""
    return json.dumps(data, separators=(",", ":")).encode()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def purl(
    repository: str, *, host: str | None = None, tag: str | None = None, platform: str | None = None
) -> str:
    """A package URL for an image (``pkg:docker/<repository>[@tag]``), with its registry and its
    platform as qualifiers when given."""
    text = f"pkg:docker/{repository}" + (f"@{quote(tag, safe='')}" if tag else "")
    qualifiers = [("repository_url", host), ("platform", platform)]
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in qualifiers if v)
    return f"{text}?{query}" if query else text


def _subject(plan: BuildPlan, subject: Subject) -> dict[str, Any]:
    """Named by the first repository that holds it (every repository holds the same digest)."""
    first = plan.destinations[0] if plan.destinations else None
    repository = first.repository if first else plan.name
    host = first.registry.host if first else None
    return {
        "name": purl(repository, host=host, platform=subject.platform),
        "digest": {"sha256": subject.digest.removeprefix("sha256:")},
    }


def _base(base: BaseImage) -> dict[str, Any]:
    try:
        ref = parse_reference(base.name)
    except InputError:  # named only by the Dockerfile's text (FROM oci:..., FROM $UNSET)
        uri = "data:," + quote(base.name, safe="")
    else:
        uri = purl(ref.repository, host=ref.host, tag=ref.tag, platform=base.platform)
    entry: dict[str, Any] = {"name": base.name, "uri": uri}
    annotations = {"platform": base.platform}
    if base.digest:
        entry["digest"] = {"sha256": base.digest.removeprefix("sha256:")}
        if base.index:
            annotations["index"] = base.index
    else:
        annotations["unresolved"] = base.problem or "unknown"
    entry["annotations"] = annotations
    return entry


def mismatch(
    data: Mapping[str, Any],
    *,
    digests: Sequence[str],
    who: Identity | None,
    builder_id: str | None = None,
) -> str | None:
    """Why a statement handed over by a publishing stage is not this build's: other subjects
    than ``digests``, another builder than ``builder_id``, or (on the trusted side) another
    source, event or workflow than the verified token's."""
    try:
        found = read(encode(data))
    except StatementError as exc:
        return f"is not valid: {exc}"
    if set(found.subjects) != set(digests):
        return f"names other subjects ({', '.join(found.subjects)}) than the report"
    if who is not None:
        for field, recorded, verified in (
            ("repository", found.repository, who.source_url),
            ("commit", found.commit, who.commit),
            ("ref", found.ref, who.ref),
            ("event", found.event, who.event),
            ("workflow", found.workflow, who.workflow),
            ("identityFromToken", found.identity_from_token, who.verified),
        ):
            if recorded != verified:
                return f"records the {field} {recorded}, but the token says {verified}"
    if builder_id is not None and found.builder_id != builder_id:
        return f"records the builder {found.builder_id}, but this builder is {builder_id}"
    return None


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """The fields of a statement that a verifier checks and shows."""

    subjects: tuple[str, ...]  # sha256:<hex>
    builder_id: str
    build_type: str
    repository: str | None
    commit: str | None
    ref: str | None
    event: str | None
    workflow: str | None
    image: str | None
    invocation_id: str | None
    started: str | None
    finished: str | None
    bases: tuple[str, ...]  # name@digest (platform)
    identity_from_token: bool = False

    def with_image(self, repository: str) -> bool:
        """Whether ``repository`` (``host/path``) is where this statement's image goes: its
        path is the image name, under a registry path or not."""
        path = repository.split("/", 1)[1] if "/" in repository else repository
        return bool(self.image) and (path == self.image or path.endswith(f"/{self.image}"))

    def to_json(self) -> dict[str, Any]:
        return {
            "builder_id": self.builder_id,
            "build_type": self.build_type,
            "source_repository": self.repository,
            "commit": self.commit,
            "ref": self.ref,
            "event": self.event,
            "workflow": self.workflow,
            "image": self.image,
            "invocation_id": self.invocation_id,
            "started_on": self.started,
            "finished_on": self.finished,
            "base_images": list(self.bases),
            "subjects": list(self.subjects),
            "identity_from_token": self.identity_from_token,
        }


class StatementError(ValueError):
    """A statement that is not SLSA v1 provenance of this builder's build type."""


def read(payload: bytes) -> Provenance:
    """Parse a signed statement, refusing anything not shaped as this module writes it."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise StatementError("the statement is not JSON") from None
    try:
        if data["_type"] != STATEMENT_TYPE:
            raise StatementError(f"_type is {str(data['_type'])[:80]!r}, not {STATEMENT_TYPE}")
        if data["predicateType"] != PREDICATE_TYPE:
            raise StatementError(
                f"predicateType is {str(data['predicateType'])[:80]!r}, not {PREDICATE_TYPE}"
            )
        subjects = tuple(_digest_of(s) for s in data["subject"])
        definition = data["predicate"]["buildDefinition"]
        run = data["predicate"]["runDetails"]
        external = definition["externalParameters"]
        source = external["source"]
        metadata = run.get("metadata") or {}
        bases = tuple(
            f"{d.get('name')}@sha256:{d['digest']['sha256']} ({d['annotations']['platform']})"
            for d in definition.get("resolvedDependencies") or ()
            if isinstance(d, dict) and "name" in d and "sha256" in (d.get("digest") or {})
        )
        found = Provenance(
            subjects=subjects,
            builder_id=_text(run["builder"]["id"]),
            build_type=_text(definition["buildType"]),
            repository=_optional(source.get("repository")),
            commit=_optional(source.get("commit")),
            ref=_optional(source.get("ref")),
            event=_optional(external.get("event")),
            workflow=_optional(external.get("workflow")),
            image=_optional(external.get("image")),
            invocation_id=_optional(metadata.get("invocationId")),
            started=_optional(metadata.get("startedOn")),
            finished=_optional(metadata.get("finishedOn")),
            bases=bases,
            identity_from_token=(definition.get("internalParameters") or {}).get(
                "identityFromToken"
            )
            is True,
        )
    except (KeyError, TypeError, AttributeError):
        raise StatementError("the statement lacks a field SLSA provenance v1 requires") from None
    if not subjects:
        raise StatementError("the statement has no subject")
    return found


def _digest_of(subject: Any) -> str:
    value = subject["digest"]["sha256"]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise StatementError("a subject's sha256 digest is not 64 lower-case hex digits")
    return f"sha256:{value}"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError
    return value


def _optional(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError
    return value
