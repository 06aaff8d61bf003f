"""Azure DevOps (``BUILD_BUILDID`` set): the variables the oci-image-builder pipeline exports."""

from __future__ import annotations

from collections.abc import Mapping

from image_builder.context.model import (
    CIContext,
    PipelineSource,
    check_pr_number,
    check_sha,
)
from image_builder.errors import InputError, UnsupportedEventError
from image_builder.events import JOB_TYPES, job_type_named, rule


def load(env: Mapping[str, str]) -> CIContext:
    owner = _required(env, "REPO_OWNER", "the repository owner, e.g. kyma-project")
    name = _required(env, "REPO_NAME", "the repository name, e.g. test-infra")
    job_type = _required(env, "JOB_TYPE", "one of " + ", ".join(JOB_TYPES))
    kind = job_type_named(job_type)
    if kind is None:
        raise UnsupportedEventError(
            f"JOB_TYPE {job_type!r} is not supported; set it to one of " + ", ".join(JOB_TYPES)
        )
    pull_request = rule(kind).pull_request
    base_sha = check_sha(
        _required(env, "PULL_BASE_SHA", "the base commit SHA"), "PULL_BASE_SHA", short=True
    )
    pr_number = None
    pull_sha = None
    if pull_request:  # read only there, as the Go tool did
        pull_sha = check_sha(env.get("PULL_PULL_SHA"), "PULL_PULL_SHA", short=True)
        pr_number = check_pr_number(
            _required(env, "PULL_NUMBER", "the pull request number"), "PULL_NUMBER"
        )
        if pull_sha is None:
            raise InputError(
                "PULL_PULL_SHA is not set; presubmit jobs need the pull request head SHA"
            )
    commit = pull_sha if pull_request else base_sha
    return CIContext(
        ci="azure",
        event=rule(kind).event,
        job_type=kind,
        repo_owner=owner,
        repo_name=name,
        pr_number=pr_number,
        base_sha=base_sha,
        head_sha=commit,
        commit_sha=commit,
        ref=env.get("BASE_REF") or None,
        base_ref=env.get("BASE_REF") or None,
        # Not BUILD_REPOSITORY_URI: in the trusted pipeline that is the builder's own repository.
        source_url=f"https://github.com/{owner}/{name}",
        pipeline=PipelineSource(
            base_sha=base_sha,
            pull_sha=pull_sha if pr_number else None,
            pull_number=pr_number,
        ),
    )


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise InputError(f"{name} is not set; the Azure DevOps pipeline must export it as {what}")
    return value
