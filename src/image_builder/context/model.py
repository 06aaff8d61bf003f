"""The CIContext dataclass and the small helpers every CI parser shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from image_builder.errors import InputError
from image_builder.events import JobRule, JobType, rule

CISystem = Literal["github", "azure", "jenkins", "local"]

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHORT_SHA = re.compile(r"[0-9a-f]{4,40}")
_NULL_SHA = "0" * 40


@dataclass(frozen=True, kw_only=True)
class PipelineSource:
    """The source as the trusted pipeline's parameters describe it (``PullBaseSHA``,
    ``BaseRef``, ``PullPullSHA``, ``PullNumber``), computed per CI system exactly as the Go tool
    computed its git state, so either client can drive either pipeline. ``pull_number`` is set
    whenever the Go tool saw a pull request, which includes merge groups (as 0)."""

    base_sha: str | None
    base_ref: str | None = None
    pull_sha: str | None = None
    pull_number: int | None = None


@dataclass(frozen=True, kw_only=True)
class CIContext:
    """What the CI system says about this build. ``commit_sha`` is the commit being built."""

    ci: CISystem
    event: str
    job_type: JobType
    repo_owner: str | None = None
    repo_name: str | None = None
    pr_number: int | None = None
    base_sha: str | None = None
    head_sha: str | None = None
    commit_sha: str | None = None
    ref: str | None = None
    base_ref: str | None = None
    source_url: str | None = None
    pipeline: PipelineSource | None = None  # None: the commit being built, nothing else
    head_branch: str | None = None  # a pull request's own branch
    default_branch: str | None = None  # the repository's, where the CI system says it
    # A local build whose context is not known to be the commit: why (uncommitted changes, or
    # git could not tell). Never set in CI, which builds a commit.
    dirty: str | None = None

    @property
    def rule(self) -> JobRule:
        return rule(self.job_type)

    @property
    def is_pull_request(self) -> bool:
        return self.rule.pull_request

    @property
    def is_release(self) -> bool:
        return self.rule.release

    @property
    def repository(self) -> str | None:
        """``owner/name`` when both are known."""
        if self.repo_owner and self.repo_name:
            return f"{self.repo_owner}/{self.repo_name}"
        return None


def check_sha(value: str | None, what: str, *, short: bool = False) -> str | None:
    """A commit SHA in lower case, ``None`` for an absent or all-zero one; refuse anything else.
    ``short`` also takes an abbreviated SHA (4 or more hex digits), as the Go tool did for the
    variables of Azure DevOps and Jenkins."""
    if value is None or value == "" or value == _NULL_SHA:
        return None
    sha = value.strip().lower()
    if not (_SHA.fullmatch(sha) or (short and _SHORT_SHA.fullmatch(sha))):
        form = "a commit SHA (4 to 40 hex digits)" if short else "a full 40-character commit SHA"
        raise InputError(f"{what} must be {form}, got {value[:80]!r}")
    return sha


def is_full_sha(sha: str) -> bool:
    return bool(_SHA.fullmatch(sha))


def check_pr_number(value: str, what: str) -> int:
    text = value.strip()
    if not text.isdecimal() or int(text) < 1:
        raise InputError(f"{what} must be a positive pull request number, got {value[:80]!r}")
    return int(text)


def repo_from_url(url: str) -> tuple[str | None, str | None, str | None]:
    """``(owner, name, browsable https URL)`` from a git remote URL, credentials removed.

    Handles ``https://host/org/repo(.git)``, ``ssh://git@host[:port]/org/repo.git`` and the
    scp-like ``git@host:org/repo.git``.
    """
    url = url.strip()
    if "://" not in url and re.match(r"[^@/:\s]+\.[^@/:\s]+/", url):
        url = "https://" + url  # github.com/org/repo.git, as Jenkins jobs may set GIT_URL
    scp = re.fullmatch(r"(?:[^@/\s]+@)?([^:/\s]+):(?!//)(.+)", url)
    if scp and "://" not in url:
        host, path = scp.group(1), scp.group(2)
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return None, None, None
        host = parts.hostname or ""
        if parts.port and parts.scheme in ("http", "https"):
            host = f"{host}:{parts.port}"
        path = parts.path
    segments = [s for s in path.strip("/").split("/") if s]
    if len(segments) < 2 or not host:
        return None, None, None
    owner = segments[-2]
    name = segments[-1].removesuffix(".git")
    if not name:
        return None, None, None
    browse = f"https://{host}/{'/'.join(segments[:-1])}/{name}"
    return owner, name, browse


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Where the build's source comes from and who asked for it. On the trusted side every field
    the token carries comes from the verified token, never from the caller's parameters."""

    source_url: str | None  # https://github.com/owner/name
    commit: str | None
    ref: str | None
    event: str
    workflow: str | None = None  # the calling workflow, owner/repo/path@ref
    verified: bool = False  # taken from a verified OIDC token
