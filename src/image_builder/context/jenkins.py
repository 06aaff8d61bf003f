"""Jenkins (``JENKINS_HOME`` set): the Git plugin's and the multibranch pipeline's variables."""

from __future__ import annotations

from collections.abc import Mapping

from image_builder.context.model import (
    CIContext,
    PipelineSource,
    check_pr_number,
    check_sha,
    repo_from_url,
)
from image_builder.errors import InputError
from image_builder.events import POSTSUBMIT, PRESUBMIT


def load(env: Mapping[str, str]) -> CIContext:
    git_url = env.get("GIT_URL", "").strip()
    if not git_url:
        raise InputError("GIT_URL is not set; check out the repository with the Jenkins Git plugin")
    owner, name, browse = repo_from_url(git_url)
    if owner is None:
        raise InputError(
            "GIT_URL does not name an owner/repository; expected e.g. https://github.com/org/repo.git"
        )
    commit = check_sha(env.get("GIT_COMMIT"), "GIT_COMMIT", short=True)
    change_id = env.get("CHANGE_ID", "").strip()
    if change_id:
        pr_number = check_pr_number(change_id, "CHANGE_ID")
        base_sha = check_sha(env.get("CHANGE_BASE_SHA"), "CHANGE_BASE_SHA", short=True)
        return CIContext(
            ci="jenkins",
            event=PRESUBMIT.event,
            job_type=PRESUBMIT.job_type,
            repo_owner=owner,
            repo_name=name,
            pr_number=pr_number,
            base_sha=base_sha,
            head_sha=commit,
            commit_sha=commit,
            ref=_branch_ref(env.get("CHANGE_BRANCH")),
            base_ref=_branch_ref(env.get("CHANGE_TARGET")),
            source_url=browse,
            # The Go tool sent CHANGE_BRANCH, as it is, as the base ref.
            pipeline=PipelineSource(
                base_sha=base_sha,
                base_ref=env.get("CHANGE_BRANCH") or None,
                pull_sha=commit,
                pull_number=pr_number,
            ),
        )
    return CIContext(
        ci="jenkins",
        event=POSTSUBMIT.event,
        job_type=POSTSUBMIT.job_type,
        repo_owner=owner,
        repo_name=name,
        head_sha=commit,
        commit_sha=commit,
        ref=_branch_ref(env.get("BRANCH_NAME") or env.get("GIT_BRANCH")),
        source_url=browse,
    )


def _branch_ref(branch: str | None) -> str | None:
    if not branch:
        return None
    if branch.startswith("refs/"):
        return branch
    return "refs/heads/" + branch.removeprefix("origin/")
