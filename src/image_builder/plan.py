"""The build plan: what will be built, from what, and where it will go. Pure: no subprocess, no
network, no environment except the mappings passed in."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from image_builder.config import Config
from image_builder.context import CIContext
from image_builder.context.model import Identity
from image_builder.errors import InputError
from image_builder.events import JobType, rule
from image_builder.oci import (
    COMPONENT,
    Destination,
    Reference,
    Registry,
    destination,
    plain_http,
)
from image_builder.secrets import BuildSecret
from image_builder.signing import ProvenanceChoice, SignerChoice, select_provenance, select_signers
from image_builder.tags import DroppedTag, Tag, dirty_notice, tag_values

_MAX_NAME = 255
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class CachePlan:
    """buildah ``--layers`` with a remote cache: read ``cache_from``, write ``cache_to`` (if any)."""

    cache_from: str
    cache_to: str | None


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    name: str
    context_dir: Path
    dockerfile: Path
    target: str | None
    platforms: tuple[str, ...]
    build_args: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    tags: tuple[Tag, ...]
    destinations: tuple[Destination, ...]  # one per registry, each with every tag
    push: bool
    cache: CachePlan | None
    timestamp: int | None
    plain_http_hosts: tuple[str, ...]  # destinations and caches reached over plain HTTP
    job_type: JobType
    repository: str | None
    commit_sha: str | None
    ref: str | None = None
    signers: tuple[SignerChoice, ...] = ()
    provenance: ProvenanceChoice | None = None
    # Whose source this is, as provenance records it: from the verified token on the trusted
    # side (set by commands.build.prepare), else from the CI context.
    who: Identity | None = None
    # Mounted with RUN --mount=type=secret,id=...; their values go to the build only, never to
    # JSON or a repr.
    secrets: tuple[BuildSecret, ...] = ()
    withheld_secrets: tuple[str, ...] = ()  # ids a pull-request build does not get
    # --use-restricted-registry: base images only from under these prefixes (empty: any).
    restricted_registries: tuple[str, ...] = ()
    dropped_tags: tuple[DroppedTag, ...] = ()  # release-only tags this build may not move
    dirty: str | None = None  # why the context is not known to be the commit (local builds)

    @property
    def notices(self) -> tuple[str, ...]:
        """What the user should know before anything runs."""
        dirty = [dirty_notice(self.dirty, self.commit_sha)] if self.dirty else []
        return (*dirty, *(d.notice() for d in self.dropped_tags))

    @property
    def running_signers(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signers if s.runs)

    @property
    def registries(self) -> tuple[Registry, ...]:
        return tuple(d.registry for d in self.destinations)

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every registry, then every tag, in plan order."""
        return tuple(ref for d in self.destinations for ref in d.references)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["destinations"] = [
            {
                "registry": str(d.registry),
                "repository": d.name,
                "tags": list(d.tags),
                "plain_http": d.registry.plain_http,
            }
            for d in self.destinations
        ]
        data["registries"] = [str(r) for r in self.registries]
        data["references"] = [str(r) for r in self.references]
        data["context_dir"] = str(self.context_dir)
        data["dockerfile"] = str(self.dockerfile)
        # Names only: a build argument's value may be a secret (NPM_TOKEN=...).
        data["build_args"] = [key for key, _ in self.build_args]
        data["labels"] = dict(self.labels)
        # Each tag with the rule that made it; the dropped ones with the reason.
        data["tags"] = [{**t.to_json(), "rule": t.rule} for t in self.tags]
        data["dropped_tags"] = [
            {**d.tag.to_json(), "rule": d.tag.rule, "reason": d.reason} for d in self.dropped_tags
        ]
        data["signers"] = [asdict(s) for s in self.signers]
        data["provenance"] = asdict(self.provenance) if self.provenance else None
        # Ids only, like build arguments: the values are the point of a secret.
        data["secrets"] = [s.id for s in self.secrets]
        data["withheld_secrets"] = list(self.withheld_secrets)
        data["restricted_registries"] = list(self.restricted_registries)
        return data


_PUBLIC_REGISTRIES = (
    "docker.io",
    "ghcr.io",
    "gcr.io",
    "quay.io",
    "registry.k8s.io",
    "public.ecr.aws",
)
_PUBLIC_SUFFIXES = (".docker.io", ".gcr.io", ".pkg.dev", ".azurecr.io", ".amazonaws.com")


def validate_name(name: str, registries: Sequence[str] = ()) -> str:
    """The repository path alone: the registry comes from config.yaml and the tag from --tag, so
    a docker-style reference (``host/team/app:1.0``) is refused with the flags that say it.

    docker takes any first part with a '.' for a registry host, but a name such as
    ``my.team/app`` is a valid repository path that the Go tool built: a dotted first part is a
    host only when it is one of ``registries`` (config's), a well-known public registry, or the
    name carries a tag or digest too."""
    if not name:
        raise InputError("--name is required: the image name, e.g. test-infra/ginkgo")
    path, _, digest = name.partition("@")
    first, slash, rest = path.partition("/")
    tagged = ":" in rest.rsplit("/", 1)[-1]
    hosts = {r.split("/", 1)[0] for r in registries}
    dotted_host = "." in first and (
        first in hosts
        or first in _PUBLIC_REGISTRIES
        or first.endswith(_PUBLIC_SUFFIXES)
        or tagged
        or bool(digest)
    )
    is_host = slash and (first == "localhost" or ":" in first or first in hosts or dotted_host)
    host = first if is_host else ""
    repository, tag = (rest if host else path), ""
    if ":" in repository.rsplit("/", 1)[-1]:
        repository, tag = repository.rsplit(":", 1)
    fixed = repository.lower() if _repository_ok(repository.lower()) else "team/app"
    fix = f"--name {fixed}" + (f" --tag {tag}" if tag else "")
    if digest:
        raise InputError(f"image names carry no digest: the build makes it; pass {fix}")
    if host:
        raise InputError(
            f"the registry comes from config.yaml (registry / dev-registry); pass {fix}"
        )
    if tag:
        raise InputError(f"image names carry no tag: pass {fix}")
    if name != name.lower() and _repository_ok(name.lower()):
        raise InputError(f"image name {name!r} has upper-case letters; use lower case: {fix}")
    if not _repository_ok(name):
        raise InputError(
            f"image name {name!r} is not a valid OCI repository name: use lower-case letters, "
            "digits and single separators (. _ __ -) in '/'-separated parts, e.g. team/app"
        )
    return name


def _repository_ok(path: str) -> bool:
    return ".." not in path and all(COMPONENT.fullmatch(c) for c in path.split("/"))


def parse_build_args(
    values: Sequence[str],
    env: Mapping[str, str],
    *,
    trusted_side: bool = False,
    why: str = "with a trust policy, build arguments never come from this machine's environment",
) -> list[tuple[str, str]]:
    """``K=V`` pairs; a bare ``K`` takes its value from the environment, as docker build does,
    except on the trusted side, whose environment holds secrets that no caller may ask for."""
    out: list[tuple[str, str]] = []
    for value in values:
        key, sep, val = value.partition("=")
        if not _ARG_NAME.fullmatch(key):
            raise InputError(
                f"--build-arg {value!r}: expected KEY=value with KEY made of letters, digits and '_'"
            )
        if not sep:
            if trusted_side:
                raise InputError(f"--build-arg {key} has no value; {why}: pass {key}=value")
            if key not in env:
                raise InputError(
                    f"--build-arg {key} has no value and {key} is not set; use {key}=value"
                )
            val = env[key]
        out.append((key, val))
    return out


def make_plan(
    *,
    config: Config,
    ctx: CIContext,
    tags: Sequence[Tag],
    dropped_tags: Sequence[DroppedTag] = (),
    name: str,
    context_dir: Path,
    dockerfile: Path,
    platforms: tuple[str, ...],
    build_args: Sequence[tuple[str, str]],
    env_file_args: Mapping[str, str],
    export_tags: bool,
    target: str | None,
    push: bool,
    now: datetime,
    commit_time: datetime | None,
    repo_override: str | None = None,
    signing_block: str | None = None,
    secrets: Sequence[BuildSecret] = (),
    withheld_secrets: Sequence[str] = (),
    restricted_registries: Sequence[str] = (),
) -> BuildPlan:
    """Everything the backend needs, decided up front. ``secrets`` are those the build gets
    (see :func:`gives_secrets`), ``withheld_secrets`` the ids it does not."""
    validate_name(name, (*config.registry, *config.dev_registries))
    registries = (
        release_registries(config, name) if ctx.is_release else dev_registries(config, ctx.job_type)
    )
    destinations = []
    for text in registries:
        if len(f"{text}/{name}") > _MAX_NAME:
            raise InputError(
                f"{text}/{name} is longer than {_MAX_NAME} characters; use a shorter --name"
            )
        registry = Registry.parse(text, config.insecure_registries)
        destinations.append(destination(registry, name, tag_values(tags)))

    args: dict[str, str] = {}
    for key, value in build_args:
        args[key] = value
    for key, value in env_file_args.items():
        args.setdefault(key, value)
    if export_tags:
        for tag in tags:
            args.setdefault(f"TAG_{tag.name}", tag.value)

    if config.reproducible and commit_time is None:
        raise InputError(
            "reproducible: true needs the commit time: build inside a git checkout that has the "
            "commit, or set SOURCE_DATE_EPOCH"
        )
    created = commit_time if config.reproducible and commit_time is not None else now
    labels: dict[str, str] = {"org.opencontainers.image.created": _rfc3339(created)}
    if ctx.source_url:
        labels["org.opencontainers.image.source"] = ctx.source_url
    if ctx.commit_sha:
        labels["org.opencontainers.image.revision"] = ctx.commit_sha

    cache = None
    if config.cache.enabled and config.cache.cache_repo:
        writes = {
            "cache-repo": config.cache.cache_repo,
            "dev-cache-repo": config.cache.dev_cache_repo,
        }
        cache = CachePlan(cache_from=config.cache.cache_repo, cache_to=writes[ctx.rule.cache_key])
    involved = [d.host for d in destinations]
    for repo in (cache.cache_from, cache.cache_to) if cache else ():
        if repo:
            involved.append(repo.split("/", 1)[0])
    signers = (
        select_signers(config, ctx, repo_override or ctx.repository, blocked=signing_block)
        if push
        else ()
    )
    return BuildPlan(
        name=name,
        context_dir=context_dir,
        dockerfile=dockerfile,
        target=target,
        platforms=platforms,
        build_args=tuple(args.items()),
        labels=tuple(labels.items()),
        tags=tuple(tags),
        destinations=tuple(destinations),
        push=push,
        cache=cache,
        timestamp=int(created.timestamp()) if config.reproducible else None,
        plain_http_hosts=tuple(
            dict.fromkeys(h for h in involved if plain_http(h, config.insecure_registries))
        ),
        job_type=ctx.job_type,
        repository=repo_override or ctx.repository,
        commit_sha=ctx.commit_sha,
        ref=ctx.ref,
        signers=signers,
        provenance=select_provenance(config, ctx, signers, push=push),
        secrets=tuple(secrets),
        withheld_secrets=tuple(withheld_secrets),
        restricted_registries=tuple(restricted_registries),
        dropped_tags=tuple(dropped_tags),
        dirty=ctx.dirty,
    )


def gives_secrets(config: Config, job_type: JobType) -> bool:
    """Build secrets go to release builds. A pull request's or merge group's Dockerfile comes
    from the pull request, whose author could print or ship any secret, so those builds get
    none unless the config says ``secrets-for-presubmits: true``."""
    return rule(job_type).gets_secrets or config.secrets_for_presubmits


def dev_registries(config: Config, job_type: JobType) -> tuple[str, ...]:
    """Where a pull-request or merge-group image may go: never where release images live."""
    registries = config.dev_registries
    if not registries:
        raise InputError(
            f"a {job_type} build needs dev-registry in the config: pull-request and merge-group "
            f"images never go to the release registry ({', '.join(config.registry)})"
        )
    for dev in registries:
        for release in config.registry:
            if release == dev or release.startswith(dev + "/"):
                raise InputError(
                    f"dev-registry {dev} holds the release registry {release}: a {job_type} "
                    "image would land where release images live; give dev-registry its own "
                    "path, e.g. <host>/dev"
                )
    return registries


def in_dev_registry(config: Config, repository: str) -> str | None:
    """The dev registry that holds ``repository`` (``host/path/name``), if any."""
    return next((d for d in config.dev_registries if repository.startswith(d + "/")), None)


def release_registries(config: Config, name: str) -> tuple[str, ...]:
    """A release image never lands inside a dev registry (the default's dev path sits under its
    release registry, so a release image named dev/... would be a pull request's image)."""
    for registry in config.registry:
        dev = in_dev_registry(config, f"{registry}/{name}")
        if dev is not None:
            raise InputError(
                f"image {name!r} would land in the dev registry {dev} as {registry}/{name}; "
                "choose a name outside it"
            )
    return config.registry


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
