"""GitHub Actions: ``GITHUB_EVENT_NAME``, the payload at ``GITHUB_EVENT_PATH``, ``GITHUB_SHA``, ``GITHUB_REF``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from image_builder.context.model import CIContext, PipelineSource, check_sha
from image_builder.errors import InputError, UnsupportedEventError
from image_builder.events import EVENTS, MERGE_GROUP, rule
from image_builder.validation import describe_validation_error

SUPPORTED_EVENTS = tuple(EVENTS)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class _Owner(_Payload):
    login: str


class _Repository(_Payload):
    name: str
    owner: _Owner
    html_url: str | None = None
    default_branch: str | None = None


class _Event(_Payload):
    repository: _Repository


class _PullRequestRef(_Payload):
    sha: str
    ref: str


class _PullRequest(_Payload):
    head: _PullRequestRef
    base: _PullRequestRef


class _PullRequestEvent(_Event):
    number: int
    pull_request: _PullRequest


class _Commit(_Payload):
    id: str


class _PushEvent(_Event):
    ref: str
    before: str | None = None
    deleted: bool = False
    head_commit: _Commit | None


class _MergeGroup(_Payload):
    head_sha: str
    head_ref: str
    base_sha: str
    base_ref: str


class _MergeGroupEvent(_Event):
    merge_group: _MergeGroup


def load(env: Mapping[str, str]) -> CIContext:
    event = env.get("GITHUB_EVENT_NAME", "")
    if not event:
        raise InputError(
            "GITHUB_EVENT_NAME is not set; run inside GitHub Actions or unset GITHUB_ACTIONS"
        )
    if event not in SUPPORTED_EVENTS:
        raise UnsupportedEventError(
            f"GitHub event {event!r} is not supported; trigger the workflow on one of: "
            + ", ".join(SUPPORTED_EVENTS)
        )
    payload_path = env.get("GITHUB_EVENT_PATH", "")
    if not payload_path:
        raise InputError("GITHUB_EVENT_PATH is not set; it must point to the event payload JSON")
    return parse_event(event, _read_payload(Path(payload_path)), env)


def _read_payload(path: Path) -> object:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the GitHub event payload at {path}: {exc.strerror}"
        ) from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"the GitHub event payload at {path} is not valid JSON: {exc}") from None


def parse_event(event: str, payload: object, env: Mapping[str, str]) -> CIContext:
    """Turn one event payload into a CIContext. ``env`` supplies ``GITHUB_SHA`` and ``GITHUB_REF``."""
    github_sha = env.get("GITHUB_SHA") or None
    github_ref = env.get("GITHUB_REF") or None
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    job = rule(EVENTS[event])
    try:
        if job.pull_request:
            pr = _PullRequestEvent.model_validate(payload)
            head = check_sha(pr.pull_request.head.sha, "pull_request.head.sha")
            base = check_sha(pr.pull_request.base.sha, "pull_request.base.sha")
            number = _positive(pr.number, "number")
            return CIContext(
                ci="github",
                event=event,
                job_type=job.job_type,
                pr_number=number,
                base_sha=base,
                head_sha=head,
                commit_sha=head,
                ref=github_ref,
                base_ref=_branch_ref(pr.pull_request.base.ref),
                head_branch=pr.pull_request.head.ref,
                pipeline=PipelineSource(base_sha=base, pull_sha=head, pull_number=number),
                **_repo(pr, server),
            )
        if job is MERGE_GROUP:  # pull requests' code, merged into the queue's branch
            mg = _MergeGroupEvent.model_validate(payload)
            head = check_sha(mg.merge_group.head_sha, "merge_group.head_sha")
            return CIContext(
                ci="github",
                event=event,
                job_type=job.job_type,
                base_sha=check_sha(mg.merge_group.base_sha, "merge_group.base_sha"),
                head_sha=head,
                commit_sha=head,
                ref=mg.merge_group.head_ref,
                base_ref=mg.merge_group.base_ref,
                # As the Go tool: GITHUB_SHA and GITHUB_REF (the queue's commit and branch), the
                # head commit as the pull SHA, and pull request number 0.
                pipeline=PipelineSource(
                    base_sha=check_sha(github_sha, "GITHUB_SHA") or head,
                    base_ref=github_ref or mg.merge_group.head_ref,
                    pull_sha=head,
                    pull_number=0,
                ),
                **_repo(mg, server),
            )
        if event == "push":
            push = _PushEvent.model_validate(payload)
            if push.head_commit is None:
                why = "the push deleted the ref" if push.deleted else "the push has no head commit"
                raise UnsupportedEventError(
                    f"push event for {push.ref} has head_commit: null ({why}); there is nothing to "
                    "build, so skip this job when github.event.deleted is true"
                )
            head = check_sha(push.head_commit.id, "head_commit.id")
            return CIContext(
                ci="github",
                event=event,
                job_type=job.job_type,
                base_sha=check_sha(push.before, "before"),
                head_sha=head,
                commit_sha=head,
                ref=push.ref,
                pipeline=PipelineSource(base_sha=head),
                **_repo(push, server),
            )
        # workflow_dispatch and schedule build the commit GitHub checked out: GITHUB_SHA.
        plain = _Event.model_validate(payload)
        if github_sha is None:
            raise InputError(f"GITHUB_SHA is not set; GitHub sets it for {event} events")
        sha = check_sha(github_sha, "GITHUB_SHA")
        return CIContext(
            ci="github",
            event=event,
            job_type=job.job_type,
            head_sha=sha,
            commit_sha=sha,
            ref=github_ref,
            pipeline=PipelineSource(base_sha=sha, base_ref=github_ref),
            **_repo(plain, server),
        )
    except ValidationError as exc:
        raise InputError(
            f"the GitHub {event} payload is missing what Image Builder needs: "
            f"{describe_validation_error(exc, _Event)}"
        ) from None


def _positive(number: int, what: str) -> int:
    if number < 1:
        raise InputError(f"{what} must be a positive pull request number, got {number}")
    return number


def _branch_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


class _RepoFields(TypedDict):
    repo_owner: str
    repo_name: str
    source_url: str
    default_branch: str | None


def _repo(event: _Event, server: str) -> _RepoFields:
    repo = event.repository
    return {
        "repo_owner": repo.owner.login,
        "repo_name": repo.name,
        "source_url": repo.html_url or f"{server}/{repo.owner.login}/{repo.name}",
        "default_branch": repo.default_branch or None,
    }
