"""The event table: the one place that says what each kind of build may do.

A CI event maps to a job type; the job type decides the default tag, the registries, whether the
build is signed and gets build secrets, and which cache it writes. Everything else asks this
table instead of comparing job-type strings.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

JobType = Literal["presubmit", "postsubmit", "merge_group", "workflow_dispatch", "schedule"]
JOB_TYPES: tuple[JobType, ...] = typing.get_args(JobType)
# Other names configs use: Prow's periodic jobs are scheduled runs.
JOB_TYPE_ALIASES: MappingProxyType[str, JobType] = MappingProxyType({"periodic": "schedule"})


@dataclass(frozen=True, kw_only=True)
class JobRule:
    """What a build of one job type does.

    ``release`` builds (push, schedule, manual run) go to ``registry``, are signed, may get
    build secrets and write the release cache. The others build a pull request's code, which
    anyone can propose: they go to ``dev-registry``, unsigned, without secrets, writing only the
    dev cache, and never move release-only tags such as ``latest``."""

    job_type: JobType
    event: str  # the event that stands for it where the CI system has no events of its own
    default_tag_key: Literal["default-pr-tag", "default-merge-group-tag", "default-commit-tag"]
    release: bool
    pull_request: bool = False  # additional-pr-tag and .PRNumber apply

    @property
    def registry_key(self) -> str:
        return "registry" if self.release else "dev-registry"

    @property
    def signed(self) -> bool:
        return self.release

    @property
    def gets_secrets(self) -> bool:
        """By default; ``secrets-for-presubmits`` extends it to the others."""
        return self.release

    @property
    def cache_key(self) -> str:
        """The cache this build writes (every build reads ``cache-repo``)."""
        return "cache-repo" if self.release else "dev-cache-repo"


JOBS: MappingProxyType[JobType, JobRule] = MappingProxyType(
    {
        rule.job_type: rule
        for rule in (
            JobRule(
                job_type="presubmit",
                event="pull_request",
                default_tag_key="default-pr-tag",
                release=False,
                pull_request=True,
            ),
            JobRule(
                job_type="merge_group",
                event="merge_group",
                default_tag_key="default-merge-group-tag",
                release=False,
            ),
            JobRule(
                job_type="postsubmit",
                event="push",
                default_tag_key="default-commit-tag",
                release=True,
            ),
            JobRule(
                job_type="schedule",
                event="schedule",
                default_tag_key="default-commit-tag",
                release=True,
            ),
            JobRule(
                job_type="workflow_dispatch",
                event="workflow_dispatch",
                default_tag_key="default-commit-tag",
                release=True,
            ),
        )
    }
)

# GitHub's events and the job type each one is.
EVENTS: MappingProxyType[str, JobType] = MappingProxyType(
    {
        "push": "postsubmit",
        "pull_request_target": "presubmit",
        "pull_request": "presubmit",
        "merge_group": "merge_group",
        "workflow_dispatch": "workflow_dispatch",
        "schedule": "schedule",
    }
)

PRESUBMIT = JOBS["presubmit"]
POSTSUBMIT = JOBS["postsubmit"]
MERGE_GROUP = JOBS["merge_group"]


def rule(job_type: JobType) -> JobRule:
    return JOBS[job_type]


def job_type_named(text: str) -> JobType | None:
    """``text`` as a job type, or ``None`` when it is none."""
    return next((j for j in JOB_TYPES if j == text), None)
