"""GitHub's REST API, for one question the token cannot answer: which commit is pull request
``n``'s head? (A ``pull_request_target`` token names the base branch, not the pull request.)"""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from image_builder.errors import RuntimeFailure, TrustError


class _Repo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    full_name: str


class _Branch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sha: str
    repo: _Repo | None = None


class _PullRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    number: int
    head: _Branch
    base: _Branch


def check_head(
    api: str, *, repository: str, number: int | None, commit: str | None, token: str | None
) -> None:
    """Refuse unless pull request ``number`` of ``repository`` has ``commit`` as its head."""
    if number is None or not commit:
        raise TrustError(
            "a pull-request build needs its number and head commit to be checked against GitHub"
        )
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{api}/repos/{repository}/pulls/{number}"
    from image_builder.http import (
        Deadline,
        RetriesExhausted,
        RetryPolicy,
        send_with_retries,
        tls_context,
    )

    ends = Deadline(10.0)  # for every try together
    try:
        with httpx.Client(verify=tls_context(), trust_env=False) as client:
            response = send_with_retries(
                lambda: client.get(url, headers=headers, timeout=max(ends.remaining(), 0.001)),
                what=f"GET {url}",
                policy=RetryPolicy(attempts=3, budget=10.0),
                deadline=ends,
            )
    except RetriesExhausted as exc:
        raise RuntimeFailure(
            f"cannot ask {api} for pull request {number}: {exc.last.reason}"
        ) from None
    except httpx.HTTPError as exc:
        raise RuntimeFailure(f"cannot ask {api} for pull request {number}: {exc}") from None
    if response.status_code == 404:
        raise TrustError(f"pull request {number} does not exist in {repository}")
    if response.status_code != 200:
        raise RuntimeFailure(
            f"{api} answered {response.status_code} for pull request {number} of "
            f"{repository}; check github-api-token-env"
        )
    try:
        pull = _PullRequest.model_validate_json(response.content)
    except ValidationError:
        raise RuntimeFailure(
            f"{api} sent something other than a pull request for {number}"
        ) from None
    base = pull.base.repo.full_name if pull.base.repo else None
    if pull.number != number or (base or "").lower() != repository.lower():
        raise TrustError(f"{api} answered for another pull request than {number}")
    if pull.head.sha != commit:
        raise TrustError(
            f"pull request {number}'s head is {pull.head.sha}, but the build is for commit {commit}"
        )
