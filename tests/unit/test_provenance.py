from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_builder import base_images
from image_builder.commands.signing import ProvenanceExpectations
from image_builder.config import parse_config
from image_builder.context import CIContext
from image_builder.context.model import Identity
from image_builder.dockerfile import image_uses, parse, platform_args
from image_builder.plan import BuildPlan, make_plan
from image_builder.provenance import (
    BaseImage,
    Provenance,
    StatementError,
    Subject,
    builder_and_run,
    encode,
    identity,
    mismatch,
    purl,
    read,
    secret_build_args,
    statement,
)
from image_builder.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient, sha256_digest
from image_builder.signing import select_provenance, select_signers
from image_builder.tags import Tag
from image_builder.trust import VerifiedClaims
from tests.support.mock_registry import mock_registry
from tests.support.slsa_spec import check_statement

SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
INDEX, AMD, ARM = ("sha256:" + c * 64 for c in "abc")
GOLANG, ALPINE_INDEX, ALPINE_AMD, ALPINE_ARM = ("sha256:" + c * 64 for c in "1234")
BUILDER = "https://dev.azure.com/org/project/_build?definitionId=12"
RUN = "https://dev.azure.com/org/project/_build/results?buildId=345"
STARTED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FINISHED = datetime(2026, 11, 26, 14, 5, 6, tzinfo=timezone(timedelta(hours=2)))  # 12:05:06Z
WORKFLOW = "org/repo/.github/workflows/build.yml@refs/heads/main"

WHO = Identity(
    source_url="https://github.com/org/repo",
    commit=SHA,
    ref="refs/heads/main",
    event="push",
    workflow=WORKFLOW,
    verified=True,
)
BASES = (
    BaseImage(name="docker.io/library/golang:1.22", platform="linux/amd64", digest=GOLANG),
    BaseImage(
        name="docker.io/library/alpine:3.20",
        platform="linux/amd64",
        digest=ALPINE_AMD,
        index=ALPINE_INDEX,
    ),
    BaseImage(
        name="docker.io/library/alpine:3.20",
        platform="linux/arm64",
        digest=ALPINE_ARM,
        index=ALPINE_INDEX,
    ),
    BaseImage(
        name="registry.example/tools/gone:1",
        platform="linux/arm64",
        problem="registry.example/tools/gone:1 does not exist",
    ),
)


def ctx(job_type: str = "postsubmit", **fields: Any) -> CIContext:
    values: dict[str, Any] = {
        "ci": "github",
        "event": "push",
        "job_type": job_type,
        "repo_owner": "org",
        "repo_name": "repo",
        "commit_sha": SHA,
        "ref": "refs/heads/main",
        "source_url": "https://github.com/org/repo",
    }
    return CIContext(**{**values, **fields})


def build_plan() -> BuildPlan:
    return make_plan(
        config=parse_config("registry: prod.example/a\n"),
        ctx=ctx(),
        tags=(Tag(name="default_tag", value="v1"), Tag(name="latest", value="latest")),
        name="team/app",
        context_dir=Path("/ctx"),
        dockerfile=Path("/ctx/build/Dockerfile"),
        platforms=("linux/amd64", "linux/arm64"),
        build_args=[("VERSION", "1.2"), ("NPM_TOKEN", "npm_s3cret")],
        env_file_args={},
        export_tags=False,
        target="final",
        push=True,
        now=STARTED,
        commit_time=None,
    )


def made(who: Identity = WHO, bases: tuple[BaseImage, ...] = BASES) -> dict[str, Any]:
    return statement(
        plan=build_plan(),
        who=who,
        subjects=(
            Subject(digest=INDEX),
            Subject(digest=AMD, platform="linux/amd64"),
            Subject(digest=ARM, platform="linux/arm64"),
        ),
        bases=bases,
        builder_id=BUILDER,
        invocation_id=RUN,
        started=STARTED,
        finished=FINISHED,
        version="2.0.0",
        signers=("release-key",),
        context=".",
        dockerfile="build/Dockerfile",
        withheld=frozenset({"NPM_TOKEN", "NOT_AN_ARG"}),
    )


# --- the statement --------------------------------------------------------------------------------


def test_the_statement_meets_the_in_toto_and_slsa_specifications() -> None:
    assert check_statement(made()) == []
    assert check_statement(json.loads(encode(made()))) == []


NAMED = "pkg:docker/a/team/app?repository_url=prod.example"


def test_the_subjects_are_the_index_then_each_platform() -> None:
    # named by the first repository that holds it, with its registry
    assert made()["subject"] == [
        {"name": NAMED, "digest": {"sha256": "a" * 64}},
        {"name": f"{NAMED}&platform=linux%2Famd64", "digest": {"sha256": "b" * 64}},
        {"name": f"{NAMED}&platform=linux%2Farm64", "digest": {"sha256": "c" * 64}},
    ]


def test_the_build_type_is_the_documented_one() -> None:
    # Verifiers pin it: a change is a new build type, never an edit.
    assert made()["predicate"]["buildDefinition"]["buildType"] == (
        "https://github.com/kyma-project/image-builder/blob/main/docs/provenance.md#build-type-v1"
    )


def test_the_external_parameters_say_what_was_asked_for() -> None:
    assert made()["predicate"]["buildDefinition"]["externalParameters"] == {
        "source": {
            "repository": "https://github.com/org/repo",
            "ref": "refs/heads/main",
            "commit": SHA,
        },
        "event": "push",
        "image": "team/app",
        "dockerfile": "build/Dockerfile",
        "context": ".",
        "target": "final",
        "platforms": ["linux/amd64", "linux/arm64"],
        "buildArgs": {"VERSION": "1.2"},
        "secretBuildArgs": ["NPM_TOKEN"],  # only those the build got
        "tags": ["v1", "latest"],
        "envFile": None,
        "buildSecrets": [],
        "restrictedRegistries": [],
        "workflow": WORKFLOW,
    }


def test_a_withheld_value_appears_nowhere_in_the_statement() -> None:
    assert b"npm_s3cret" not in encode(made())


def test_the_workflow_is_recorded_only_when_known() -> None:
    external = made(replace(WHO, workflow=None))["predicate"]["buildDefinition"]
    assert "workflow" not in external["externalParameters"]


def test_the_internal_parameters() -> None:
    assert made()["predicate"]["buildDefinition"]["internalParameters"] == {
        "imageBuilderVersion": "2.0.0",
        "signers": ["release-key"],
        "identityFromToken": True,
    }


def test_the_resolved_dependencies_are_the_commit_then_each_base() -> None:
    assert made()["predicate"]["buildDefinition"]["resolvedDependencies"] == [
        {"uri": f"git+https://github.com/org/repo@{SHA}", "digest": {"gitCommit": SHA}},
        {
            "name": "docker.io/library/golang:1.22",
            "uri": "pkg:docker/library/golang@1.22?repository_url=docker.io&platform=linux%2Famd64",
            "digest": {"sha256": "1" * 64},
            "annotations": {"platform": "linux/amd64"},
        },
        {
            "name": "docker.io/library/alpine:3.20",
            "uri": "pkg:docker/library/alpine@3.20?repository_url=docker.io&platform=linux%2Famd64",
            "digest": {"sha256": "3" * 64},
            "annotations": {"platform": "linux/amd64", "index": ALPINE_INDEX},
        },
        {
            "name": "docker.io/library/alpine:3.20",
            "uri": "pkg:docker/library/alpine@3.20?repository_url=docker.io&platform=linux%2Farm64",
            "digest": {"sha256": "4" * 64},
            "annotations": {"platform": "linux/arm64", "index": ALPINE_INDEX},
        },
        {
            "name": "registry.example/tools/gone:1",
            "uri": "pkg:docker/tools/gone@1?repository_url=registry.example&platform=linux%2Farm64",
            "annotations": {
                "platform": "linux/arm64",
                "unresolved": "registry.example/tools/gone:1 does not exist",
            },
        },
    ]


def test_without_a_source_url_the_commit_is_no_dependency() -> None:
    definition = made(replace(WHO, source_url=None))["predicate"]["buildDefinition"]
    assert [d["name"] for d in definition["resolvedDependencies"]] == [b.name for b in BASES]


def test_the_run_details_name_the_builder_and_the_times_in_utc() -> None:
    assert made()["predicate"]["runDetails"] == {
        "builder": {"id": BUILDER, "version": {"image-builder": "2.0.0"}},
        "metadata": {
            "invocationId": RUN,
            "startedOn": "2026-11-26T12:00:00Z",
            "finishedOn": "2026-11-26T12:05:06Z",
        },
    }


@pytest.mark.parametrize(
    ("tag", "platform", "host", "expected"),
    [
        (None, None, None, "pkg:docker/team/app"),
        ("1.0", None, "ghcr.io", "pkg:docker/team/app@1.0?repository_url=ghcr.io"),
        ("a+b", "linux/arm/v7", None, "pkg:docker/team/app@a%2Bb?platform=linux%2Farm%2Fv7"),
    ],
)
def test_purl(tag: str | None, platform: str | None, host: str | None, expected: str) -> None:
    assert purl("team/app", host=host, tag=tag, platform=platform) == expected


# --- the checker can fail ------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdecimal() else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdecimal() else last] = value

    return edit


_DELETE = object()
_DEFINITION = "predicate.buildDefinition"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            _set("_type", "https://in-toto.io/Statement/v0.1"),
            "$._type: must be https://in-toto.io/Statement/v1, got "
            "'https://in-toto.io/Statement/v0.1'",
        ),
        (_set("subject", []), "$.subject: must be a non-empty list of ResourceDescriptors"),
        (_set("subject.0.digest", _DELETE), "$.subject[0].digest: required for every subject"),
        (
            _set("subject.1.digest", {"sha256": "sha256:" + "b" * 64}),
            "$.subject[1].digest.sha256: must be lower-case hex",
        ),
        (
            _set("subject.1.digest", {"sha256": "B" * 64}),
            "$.subject[1].digest.sha256: must be lower-case hex",
        ),
        (
            _set("subject.1.digest", {"sha256": "b" * 63}),
            "$.subject[1].digest.sha256: must be 64 hex digits, got 63",
        ),
        (_set("subject.1.digest", {}), "$.subject[1].digest: a DigestSet is a non-empty object"),
        (_set("predicateType", "slsa provenance"), "$.predicateType: must be a URI"),
        (
            _set(f"{_DEFINITION}.buildType", _DELETE),
            "$.predicate.buildDefinition.buildType: must be a URI (RFC 3986), got 'None'",
        ),
        (
            _set(f"{_DEFINITION}.externalParameters", _DELETE),
            "$.predicate.buildDefinition.externalParameters: required object",
        ),
        (
            _set(f"{_DEFINITION}.internalParameters", []),
            "$.predicate.buildDefinition.internalParameters: must be an object",
        ),
        (
            _set(f"{_DEFINITION}.resolvedDependencies.0.digest", {"gitCommit": SHA[:39]}),
            "$.predicate.buildDefinition.resolvedDependencies[0].digest.gitCommit: must be "
            "40 or 64 hex digits, got 39",
        ),
        (
            _set(f"{_DEFINITION}.resolvedDependencies.0", {"name": "x"}),
            "$.predicate.buildDefinition.resolvedDependencies[0]: needs at least one of uri",
        ),
        (
            _set(f"{_DEFINITION}.resolvedDependencies.1.annotations", ["linux/amd64"]),
            "$.predicate.buildDefinition.resolvedDependencies[1].annotations: must be an object",
        ),
        (
            _set(f"{_DEFINITION}.resolvedDependencies.1.uri", "docker.io/library/golang"),
            "$.predicate.buildDefinition.resolvedDependencies[1].uri: must be a URI",
        ),
        (_set("predicate.runDetails", _DELETE), "$.predicate.runDetails: required object"),
        (
            _set("predicate.runDetails.builder.id", "my builder"),
            "$.predicate.runDetails.builder.id: must be a URI",
        ),
        (
            _set("predicate.runDetails.builder.version", {"image-builder": 2}),
            "$.predicate.runDetails.builder.version: must map strings to strings",
        ),
        (
            _set("predicate.runDetails.metadata.startedOn", "2026-11-26 12:00:00"),
            "$.predicate.runDetails.metadata.startedOn: must be an RFC 3339 timestamp",
        ),
        (
            _set("predicate.runDetails.metadata.finishedOn", "2026-11-26T14:05:06+02:00"),
            "$.predicate.runDetails.metadata.finishedOn: must be an RFC 3339 timestamp",
        ),
        (
            _set("predicate.runDetails.metadata.finishedOn", "2026-13-26T12:05:06Z"),
            "$.predicate.runDetails.metadata.finishedOn: must be an RFC 3339 timestamp",
        ),
        (
            _set("predicate.runDetails.byproducts", [{}]),
            "$.predicate.runDetails.byproducts[0]: needs at least one of uri, digest",
        ),
    ],
)
def test_the_spec_checker_catches_a_broken_statement(
    edit: Callable[[dict[str, Any]], None], problem: str
) -> None:
    broken = copy.deepcopy(made())
    edit(broken)
    found = check_statement(broken)
    assert len(found) == 1, found
    assert found[0].startswith(problem)


# --- identity ------------------------------------------------------------------------------------


def claims(**fields: Any) -> VerifiedClaims:
    values: dict[str, Any] = {
        "issuer": "https://token.actions.githubusercontent.com",
        "repository": "org/repo",
        "repository_owner": "org",
        "repository_owner_id": 7,
        "event_name": "push",
        "job_workflow_ref": "org/shared/.github/workflows/image.yml@refs/tags/v1",
        "workflow_ref": WORKFLOW,
        "ref": "refs/heads/main",
        "sha": SHA,
        "signing_allowed": True,
        "signing_reason": "refs/heads/main is a signing ref",
    }
    return VerifiedClaims(**{**values, **fields})


def test_the_identity_comes_from_the_token_whatever_the_context_says() -> None:
    other = ctx(
        event="pull_request",
        repo_owner="fork",
        commit_sha="f" * 40,
        ref="refs/heads/evil",
        source_url="https://github.com/fork/repo",
    )
    assert identity(other, claims()) == Identity(
        source_url="https://github.com/org/repo",
        commit=SHA,
        ref="refs/heads/main",
        event="push",
        workflow="org/shared/.github/workflows/image.yml@refs/tags/v1",
        verified=True,
    )


def test_the_calling_workflow_serves_when_there_is_no_reusable_one() -> None:
    assert identity(ctx(), claims(job_workflow_ref=None)).workflow == WORKFLOW


def test_the_source_url_comes_from_the_tokens_issuer_never_from_the_context() -> None:
    forged = ctx(source_url="https://evil.example/org/repo")
    assert identity(forged, claims()).source_url == "https://github.com/org/repo"
    slug = claims(issuer="https://token.actions.githubusercontent.com/my-enterprise")
    assert identity(forged, slug).source_url == "https://github.com/org/repo"
    server = claims(issuer="https://ghe.example/_services/token")
    assert identity(forged, server).source_url == "https://ghe.example/org/repo"


def test_without_claims_the_identity_comes_from_the_context() -> None:
    assert identity(ctx(event="schedule"), None) == Identity(
        source_url="https://github.com/org/repo",
        commit=SHA,
        ref="refs/heads/main",
        event="schedule",
        workflow=None,
        verified=False,
    )


# --- secret build arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "withheld"),
    [
        ("NPM_TOKEN", True),
        ("apiKey", True),
        ("DB_PASSWORD", True),
        ("GITHUB_PAT", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("authToken", True),
        ("PUBLIC_URL", False),
        ("VERSION", False),
        # Words, not substrings: these hold no secret word of their own.
        ("KEYBOARD", False),
        ("AUTHOR", False),
        ("PATH", False),
        ("MYTOKEN", False),
    ],
)
def test_build_args_named_like_secrets_are_withheld(name: str, withheld: bool) -> None:
    assert (name in secret_build_args([(name, "plain")])) is withheld


def test_a_value_holding_a_build_secret_is_withheld() -> None:
    args = [("REGISTRY_URL", "https://ci:hunter2@npm.example"), ("MODE", "release")]
    assert secret_build_args(args, secret_values=["hunter2", ""]) == {"REGISTRY_URL"}


def test_args_from_the_environment_and_declared_ones_are_withheld() -> None:
    args = [("FROM_ENV", "x"), ("DECLARED", "y"), ("MODE", "z")]
    found = secret_build_args(args, from_environment=["FROM_ENV"], declared=["DECLARED"])
    assert found == {"FROM_ENV", "DECLARED"}


# --- builder and run ------------------------------------------------------------------------------


AZURE = {
    "TF_BUILD": "True",
    "SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/",
    "SYSTEM_TEAMPROJECT": "My Project",
    "SYSTEM_DEFINITIONID": "12",
    "BUILD_BUILDID": "345",
}
GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "org/repo",
    "GITHUB_WORKFLOW_REF": WORKFLOW,
    "GITHUB_RUN_ID": "99",
    "GITHUB_RUN_ATTEMPT": "2",
}
JENKINS = {
    "JENKINS_URL": "https://ci.example/",
    "JOB_URL": "https://ci.example/job/app/",
    "BUILD_URL": "https://ci.example/job/app/7/",
}


@pytest.mark.parametrize(
    ("env", "builder", "run"),
    [
        (
            AZURE,
            "https://dev.azure.com/org/My%20Project/_build?definitionId=12",
            "https://dev.azure.com/org/My%20Project/_build/results?buildId=345",
        ),
        (
            GITHUB,
            f"https://github.com/{WORKFLOW}",
            "https://github.com/org/repo/actions/runs/99/attempts/2",
        ),
        (
            {**GITHUB, "GITHUB_SERVER_URL": "https://ghe.example/"},
            f"https://ghe.example/{WORKFLOW}",
            "https://ghe.example/org/repo/actions/runs/99/attempts/2",
        ),
        (JENKINS, "https://ci.example/job/app/", "https://ci.example/job/app/7/"),
        ({}, "urn:image-builder:builder:local", "urn:uuid:fallback"),
        ({"TF_BUILD": "True"}, "urn:image-builder:builder:local", "urn:uuid:fallback"),
    ],
    ids=["azure", "github", "github-enterprise", "jenkins", "nothing", "azure-incomplete"],
)
def test_builder_and_run_from_the_ci_system(env: dict[str, str], builder: str, run: str) -> None:
    assert builder_and_run(None, env, "urn:uuid:fallback") == (builder, run)


def test_a_configured_builder_id_wins_and_the_run_still_comes_from_ci() -> None:
    assert builder_and_run(BUILDER, AZURE, "urn:uuid:fallback") == (
        BUILDER,
        "https://dev.azure.com/org/My%20Project/_build/results?buildId=345",
    )


# --- reading --------------------------------------------------------------------------------------


def test_read_gives_back_what_the_statement_says() -> None:
    assert read(encode(made())) == Provenance(
        subjects=(INDEX, AMD, ARM),
        builder_id=BUILDER,
        build_type=made()["predicate"]["buildDefinition"]["buildType"],
        repository="https://github.com/org/repo",
        commit=SHA,
        ref="refs/heads/main",
        event="push",
        workflow=WORKFLOW,
        image="team/app",
        invocation_id=RUN,
        started="2026-11-26T12:00:00Z",
        finished="2026-11-26T12:05:06Z",
        bases=(
            f"docker.io/library/golang:1.22@{GOLANG} (linux/amd64)",
            f"docker.io/library/alpine:3.20@{ALPINE_AMD} (linux/amd64)",
            f"docker.io/library/alpine:3.20@{ALPINE_ARM} (linux/arm64)",
        ),
        identity_from_token=True,
    )


_LACKS = "the statement lacks a field SLSA provenance v1 requires"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("_type", "https://in-toto.io/Statement/v0.1"),
            "_type is 'https://in-toto.io/Statement/v0.1', not https://in-toto.io/Statement/v1",
        ),
        (
            _set("predicateType", "https://slsa.dev/provenance/v0.2"),
            "predicateType is 'https://slsa.dev/provenance/v0.2', not https://slsa.dev/provenance/v1",
        ),
        (_set("predicate.runDetails.builder.id", _DELETE), _LACKS),
        (_set("predicate.runDetails.builder.id", ""), _LACKS),
        (_set(f"{_DEFINITION}.buildType", _DELETE), _LACKS),
        (
            _set("subject.1.digest", {"sha256": "B" * 64}),
            "a subject's sha256 digest is not 64 lower-case hex digits",
        ),
        (
            _set("subject.1.digest", {"sha256": "sha256:" + "b" * 64}),
            "a subject's sha256 digest is not 64 lower-case hex digits",
        ),
        (_set("subject.1.digest", {"sha512": "b" * 128}), _LACKS),
        (_set("subject", []), "the statement has no subject"),
    ],
)
def test_read_refuses_what_is_not_this_builders_provenance(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    broken = copy.deepcopy(made())
    edit(broken)
    with pytest.raises(StatementError) as caught:
        read(encode(broken))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("payload", "message"), [(b"{", "the statement is not JSON"), (b"[]", _LACKS)]
)
def test_read_refuses_what_is_not_a_statement(payload: bytes, message: str) -> None:
    with pytest.raises(StatementError) as caught:
        read(payload)
    assert str(caught.value) == message


def test_a_statement_of_this_build_matches_whatever_the_subject_order() -> None:
    assert mismatch(made(), digests=[ARM, INDEX, AMD], who=WHO) is None


def test_a_statement_of_other_subjects_does_not_match() -> None:
    assert mismatch(made(), digests=[INDEX, AMD], who=None) == (
        f"names other subjects ({INDEX}, {AMD}, {ARM}) than the report"
    )


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (
            replace(WHO, source_url="https://github.com/org/other"),
            "records the repository https://github.com/org/repo, but the token says "
            "https://github.com/org/other",
        ),
        (
            replace(WHO, commit="f" * 40),
            f"records the commit {SHA}, but the token says {'f' * 40}",
        ),
        (
            replace(WHO, ref="refs/heads/dev"),
            "records the ref refs/heads/main, but the token says refs/heads/dev",
        ),
    ],
)
def test_a_statement_of_another_source_does_not_match(who: Identity, message: str) -> None:
    assert mismatch(made(), digests=[INDEX, AMD, ARM], who=who) == message
    assert mismatch(made(), digests=[INDEX, AMD, ARM], who=None) is None


def test_an_invalid_statement_does_not_match() -> None:
    broken = {**made(), "predicateType": "x"}
    assert mismatch(broken, digests=[INDEX, AMD, ARM], who=None) == (
        "is not valid: predicateType is 'x', not https://slsa.dev/provenance/v1"
    )


# --- verify --provenance expectations -----------------------------------------------------------

FOUND = read(encode(made()))


@pytest.mark.parametrize(
    "expect",
    [
        ProvenanceExpectations(source_repo="org/repo"),
        ProvenanceExpectations(source_repo="Org/Repo.git"),
        ProvenanceExpectations(source_repo="https://GitHub.com/org/repo.git"),
        ProvenanceExpectations(source_repo="https://github.com/org/repo/"),
        ProvenanceExpectations(ref="main"),
        ProvenanceExpectations(ref="refs/heads/main"),
        ProvenanceExpectations(builder_id=BUILDER),
        ProvenanceExpectations(workflow=WORKFLOW),
        ProvenanceExpectations(workflow="org/repo/.github/workflows/build.yml"),
    ],
)
def test_expectations_that_the_provenance_meets(expect: ProvenanceExpectations) -> None:
    assert expect.problems(FOUND) == []


def test_a_ref_name_matches_a_tag_too() -> None:
    tagged = replace(FOUND, ref="refs/tags/main")
    assert ProvenanceExpectations(ref="main").problems(tagged) == []


@pytest.mark.parametrize(
    ("expect", "problem"),
    [
        (
            ProvenanceExpectations(source_repo="other/repo"),
            "built from https://github.com/org/repo, not other/repo",
        ),
        (
            ProvenanceExpectations(source_repo="g/repo"),  # a suffix, not a path part
            "built from https://github.com/org/repo, not g/repo",
        ),
        (
            ProvenanceExpectations(source_repo="https://github.com/org/repo2"),
            "built from https://github.com/org/repo, not https://github.com/org/repo2",
        ),
        (
            ProvenanceExpectations(ref="refs/tags/main"),
            "built from the ref refs/heads/main, not refs/tags/main",
        ),
        (ProvenanceExpectations(ref="mai"), "built from the ref refs/heads/main, not mai"),
        (
            ProvenanceExpectations(builder_id=BUILDER + "3"),
            f"built by {BUILDER}, not {BUILDER}3",
        ),
        (
            ProvenanceExpectations(workflow="org/repo/.github/workflows/build.yml@refs/heads/dev"),
            f"asked for by the workflow {WORKFLOW}, not "
            "org/repo/.github/workflows/build.yml@refs/heads/dev",
        ),
        (
            ProvenanceExpectations(workflow="org/repo/.github/workflows/build"),
            f"asked for by the workflow {WORKFLOW}, not org/repo/.github/workflows/build",
        ),
    ],
)
def test_expectations_that_the_provenance_does_not_meet(
    expect: ProvenanceExpectations, problem: str
) -> None:
    assert expect.problems(FOUND) == [problem]


def test_an_unrecorded_field_never_meets_an_expectation() -> None:
    bare = replace(FOUND, repository=None, ref=None, workflow=None)
    expect = ProvenanceExpectations(source_repo="org/repo", ref="main", workflow=WORKFLOW)
    assert expect.problems(bare) == [
        "built from None, not org/repo",
        "built from the ref None, not main",
        f"asked for by the workflow None, not {WORKFLOW}",
    ]


# --- which builds get provenance ------------------------------------------------------------------

SIGNERS = """
registry: prod.example
dev-registry: dev.example
sign-config:
  enabled-signers:
    '*': [{enabled}]
  signers:
    - {{name: release-key, type: cosign, config: {{private-key: k.pem}}}}
    - name: signify
      type: notary
      config: {{endpoint: 'https://signify.example/sign', secret: {{path: s.json}}}}
"""


def choose(
    job_type: str = "postsubmit",
    *,
    enabled: str = "release-key, signify",
    extra: str = "",
    push: bool = True,
    dirty: str | None = None,
) -> tuple[bool, tuple[str, ...], str]:
    config = parse_config(SIGNERS.format(enabled=enabled) + extra)
    context = ctx(job_type, dirty=dirty)
    signers = select_signers(config, context, "org/repo")
    choice = select_provenance(config, context, signers, push=push)
    return choice.runs, choice.signed_by, choice.reason


def test_a_release_build_is_signed_by_its_running_cosign_signers() -> None:
    assert choose() == (True, ("release-key",), "signed by release-key, as release builds are")


def test_a_release_build_signed_by_a_notary_only_gets_none() -> None:
    assert choose(enabled="signify") == (
        False,
        (),
        "no cosign signer signs this build (release-key: not enabled under '*' or 'org/repo')",
    )


def test_a_release_build_without_any_cosign_signer_gets_none() -> None:
    notary_only = SIGNERS.format(enabled="signify").replace(
        "    - {name: release-key, type: cosign, config: {private-key: k.pem}}\n", ""
    )
    config = parse_config(notary_only)
    choice = select_provenance(config, ctx(), select_signers(config, ctx(), "org/repo"), push=True)
    assert [s.type for s in config.sign_config.signers] == ["notary"]
    assert (choice.runs, choice.reason) == (
        False,
        "no cosign signer signs this build (no cosign signer is configured)",
    )


@pytest.mark.parametrize("job_type", ["presubmit", "merge_group"])
def test_a_pull_request_build_gets_none_by_default(job_type: str) -> None:
    assert choose(job_type) == (
        False,
        (),
        f"{job_type} builds get none (provenance.presubmits: unsigned gives them an unsigned "
        "statement)",
    )


def test_a_pull_request_build_gets_an_unsigned_statement_when_asked() -> None:
    assert choose("presubmit", extra="provenance: {presubmits: unsigned}\n") == (
        True,
        (),
        "unsigned: provenance.presubmits is unsigned for presubmit builds",
    )


def test_no_push_means_no_provenance() -> None:
    assert choose(push=False) == (False, (), "--no-push: nothing is pushed")


def test_provenance_can_be_switched_off() -> None:
    assert choose(extra="provenance: {enabled: false}\n") == (
        False,
        (),
        "provenance.enabled is false",
    )


DIRTY = "the context has uncommitted changes"


def test_a_dirty_pull_request_build_gets_no_unsigned_statement() -> None:
    runs, signed_by, _ = choose(
        "presubmit", extra="provenance: {presubmits: unsigned}\n", dirty=DIRTY
    )
    assert (runs, signed_by) == (False, ())


def test_a_dirty_pull_request_build_is_told_why() -> None:
    _, _, reason = choose("presubmit", extra="provenance: {presubmits: unsigned}\n", dirty=DIRTY)
    assert DIRTY in reason


def test_a_dirty_release_build_gets_none_and_says_why() -> None:
    assert choose(dirty=DIRTY) == (
        False,
        (),
        f"no cosign signer signs this build (release-key: enabled under '*', but {DIRTY})",
    )


# --- base images ---------------------------------------------------------------------------------


ALPINE_NAME = "docker.io/library/alpine:3.20"
Recorded = dict[str, tuple[str | None, str | None]]


def test_the_final_base_is_one_the_builder_resolved() -> None:
    recorded: Recorded = {
        "linux/amd64": (ALPINE_NAME, ALPINE_AMD),
        "linux/arm64": (ALPINE_NAME, ALPINE_ARM),
    }
    assert base_images.check_final(BASES, recorded) is None


def test_a_platform_built_from_scratch_records_no_base() -> None:
    assert base_images.check_final(BASES, {"linux/amd64": (None, None)}) is None


def test_a_base_that_moved_during_the_build_is_named() -> None:
    moved = "sha256:" + "9" * 64
    recorded: Recorded = {
        "linux/amd64": (ALPINE_NAME, ALPINE_AMD),
        "linux/arm64": (ALPINE_NAME, moved),
    }
    resolved = ", ".join(sorted([GOLANG, ALPINE_AMD, ALPINE_ARM]))
    expected = (
        f"the linux/arm64 image was built on {moved}, which is not a base image the builder "
        f"resolved for this build ({resolved}); a tag moved during the build: build again"
    )
    assert base_images.check_final(BASES[:-1], recorded) == expected
    # an unresolved base elsewhere in the Dockerfile (an unused stage, say) does not hide it
    assert base_images.check_final(BASES, recorded) == expected


def test_nothing_resolved_is_said_so() -> None:
    assert base_images.check_final((), {"linux/arm64": ("alpine", GOLANG)}) == (
        f"the linux/arm64 image was built on {GOLANG}, which is not a base image the builder "
        "resolved for this build (none); a tag moved during the build: build again"
    )


def test_a_final_base_the_builder_could_not_resolve_has_nothing_to_compare_with() -> None:
    # the statement records that base unresolved; buildah may name it without docker.io/
    moved = "sha256:" + "9" * 64
    recorded: Recorded = {"linux/arm64": ("registry.example/tools/gone:1", moved)}
    assert base_images.check_final(BASES, recorded) is None


def test_from_platform_names_the_platform_pulled() -> None:
    dockerfile = parse(
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n"
        "FROM --platform=linux/s390x busybox AS tools\n"
        "FROM alpine:3.20\n"
    )
    uses = image_uses(dockerfile, {}, platform_args("linux/arm64", "linux/amd64"))
    assert [(u.reference, u.platform) for u in uses] == [
        ("docker.io/library/golang:1.22", "linux/amd64"),
        ("docker.io/library/busybox", "linux/s390x"),
        ("docker.io/library/alpine:3.20", None),
    ]


def test_from_platform_takes_a_declared_global_arg() -> None:
    dockerfile = parse("ARG TOOLS=linux/riscv64\nFROM --platform=${TOOLS} golang:1.22\n")
    (use,) = image_uses(dockerfile, {}, platform_args("linux/arm64", "linux/amd64"))
    assert use.platform == "linux/riscv64"


def index(*platforms: tuple[str, str]) -> bytes:
    entries = []
    for digest, platform in platforms:
        os_name, arch, *variant = platform.split("/")
        shape = {
            "os": os_name,
            "architecture": arch,
            **({"variant": variant[0]} if variant else {}),
        }
        entries.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": 500, "platform": shape}
        )
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


ARM_V6, ARM_V7, GO_AMD, GO_ARM64 = ("sha256:" + c * 64 for c in "5678")
ALPINE = index((ALPINE_AMD, "linux/amd64"), (ARM_V6, "linux/arm/v6"), (ARM_V7, "linux/arm/v7"))
GOLANG_INDEX = index((GO_AMD, "linux/amd64"), (GO_ARM64, "linux/arm64/v8"))
SINGLE = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()


def registry(seen: list[str]) -> RegistryClient:
    """A registry with an index for alpine and golang and one single-platform image; every
    request's host and path go to ``seen``."""
    answers = {
        "/v2/library/alpine/manifests/3.20": (ALPINE, OCI_INDEX),
        "/v2/library/golang/manifests/1.22": (GOLANG_INDEX, OCI_INDEX),
        "/v2/tools/single/manifests/1": (SINGLE, OCI_MANIFEST),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.path not in answers:
            return httpx.Response(404, json={"errors": []})
        body, media_type = answers[request.url.path]
        return httpx.Response(200, content=body, headers={"content-type": media_type})

    return mock_registry(answer)


DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN go build -o /app .
FROM alpine:3.20
COPY --from=build /app /app
COPY --from=registry.example/tools/single:1 /x /x
COPY --from=registry.example/tools/gone:1 /y /y
"""


def base(name: str, platform: str, **fields: Any) -> BaseImage:
    return BaseImage(name=f"docker.io/library/{name}", platform=platform, **fields)


def test_resolve_pins_every_base_for_the_platform_it_is_pulled_for() -> None:
    seen: list[str] = []
    found = base_images.resolve(
        registry(seen),
        DOCKERFILE,
        build_args={},
        platforms=("linux/amd64", "linux/arm/v7"),
        host_platform="linux/arm64",
    )
    golang, alpine = sha256_digest(GOLANG_INDEX), sha256_digest(ALPINE)
    single, gone = "registry.example/tools/single:1", "registry.example/tools/gone:1"
    missing = f"{gone} does not exist"
    assert found == [
        # Pulled for the build platform (linux/arm64 matches the index's arm64/v8), once.
        base("golang:1.22", "linux/arm64", digest=GO_ARM64, index=golang),
        base("alpine:3.20", "linux/amd64", digest=ALPINE_AMD, index=alpine),
        BaseImage(name=single, platform="linux/amd64", digest=sha256_digest(SINGLE)),
        BaseImage(name=gone, platform="linux/amd64", problem=missing),
        # v7, not the v6 listed first.
        base("alpine:3.20", "linux/arm/v7", digest=ARM_V7, index=alpine),
        BaseImage(name=single, platform="linux/arm/v7", digest=sha256_digest(SINGLE)),
        BaseImage(name=gone, platform="linux/arm/v7", problem=missing),
    ]
    assert len(seen) == len(set(seen)) == 4  # each name is read once, whatever the platforms


def test_resolve_keeps_a_platform_the_index_lacks_with_the_reason() -> None:
    (found,) = base_images.resolve(
        registry([]),
        "FROM alpine:3.20\n",
        build_args={},
        platforms=("linux/s390x",),
        host_platform="linux/amd64",
    )
    assert found == BaseImage(
        name="docker.io/library/alpine:3.20",
        platform="linux/s390x",
        problem=f"its index {sha256_digest(ALPINE)} has no linux/s390x",
    )


def test_resolve_keeps_an_image_it_cannot_name_with_the_reason() -> None:
    (found,) = base_images.resolve(
        registry([]),
        "ARG BASE\nFROM ${BASE}\n",
        build_args={},
        platforms=("linux/amd64",),
        host_platform="linux/amd64",
    )
    assert found.digest is None
    assert (
        found.problem
        == "BASE has no value; give it a default (ARG BASE=...) or pass --build-arg BASE=..."
    )


def test_a_base_only_the_dockerfile_names_is_recorded_unresolved() -> None:
    # buildah builds FROM oci:<path> (no registry involved); the statement must still be made.
    bases = base_images.resolve(
        registry([]),
        "FROM oci:/layout\n",
        build_args={},
        platforms=("linux/amd64",),
        host_platform="linux/amd64",
    )
    made_with = made(bases=tuple(bases))
    (dependency,) = made_with["predicate"]["buildDefinition"]["resolvedDependencies"][1:]
    assert "digest" not in dependency
    assert dependency["annotations"]["unresolved"] == bases[0].problem
    assert check_statement(made_with) == []


def test_a_short_repository_name_means_github_com() -> None:
    elsewhere = replace(FOUND, repository="https://evil.example/org/repo")
    assert ProvenanceExpectations(source_repo="org/repo").problems(elsewhere) == [
        "built from https://evil.example/org/repo, not org/repo"
    ]
    wanted = ProvenanceExpectations(source_repo="https://evil.example/org/repo")
    assert wanted.problems(elsewhere) == []


@pytest.mark.parametrize("name", ["npm_token2", "NPM_TOKEN2", "token2", "db_password1"])
def test_digits_do_not_hide_a_secret_word(name: str) -> None:
    assert secret_build_args([(name, "v")]) == {name}


def test_a_pull_requests_commit_is_the_head_the_context_names_not_the_tokens() -> None:
    # A pull request's token carries its base (or merge) commit; the build is of the head.
    head = "e" * 40
    pull = ctx("presubmit", event="pull_request_target", commit_sha=head)
    assert identity(pull, claims(event_name="pull_request_target")).commit == head
