"""GitHub Actions' OIDC token service on the runner: request a token, summarize its claims. The
only module that talks to the runner's token service."""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from image_builder.errors import InputError, RuntimeFailure
from image_builder.http import Deadline, RetriesExhausted, RetryPolicy, send_with_retries

PERMISSION_HINT = (
    "the calling workflow needs `permissions: id-token: write` (on the job or the workflow) for "
    "GitHub to issue OIDC tokens"
)


class _TokenAnswer(BaseModel):
    """The token service's answer; other members are ignored."""

    model_config = ConfigDict(defer_build=True)
    value: StrictStr


def request_oidc_token(
    audience: str, env: Mapping[str, str], *, http: httpx.Client | None = None
) -> str:
    """Ask the runner's token service for a token with ``audience``."""
    url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        missing = "ACTIONS_ID_TOKEN_REQUEST_URL" if not url else "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
        raise InputError(f"{missing} is not set: {PERMISSION_HINT}")
    client = http or httpx.Client(trust_env=False)
    request_url = httpx.URL(url).copy_merge_params({"audience": audience})
    ends = Deadline(15.0)  # for every try together
    try:
        response = send_with_retries(
            lambda: client.get(
                request_url,
                headers={"Authorization": f"Bearer {bearer}"},
                timeout=max(ends.remaining(), 0.001),
            ),
            what="GET the runner's token service",
            policy=RetryPolicy(attempts=3, budget=15.0),
            deadline=ends,
        )
    except RetriesExhausted as exc:
        if exc.last.response is None:
            why = exc.last.cause.__class__.__name__ if exc.last.cause else exc.last.reason
            raise RuntimeFailure(f"the runner's token service cannot be reached: {why}") from None
        response = exc.last.response
    if response.status_code != 200:
        raise RuntimeFailure(
            f"the runner's token service answered HTTP {response.status_code}; {PERMISSION_HINT}"
        )
    try:
        token = _TokenAnswer.model_validate_json(response.content).value
    except ValidationError:
        raise RuntimeFailure("the runner's token service answered without a token value") from None
    if token.count(".") != 2:
        raise RuntimeFailure("the runner's token service returned something that is not a JWT")
    return token


def claims_summary(token: str) -> str:
    """The token's non-secret identity claims, for logs (the token itself is never shown)."""
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    keep = ("iss", "aud", "repository", "event_name", "ref", "job_workflow_ref")
    return json.dumps({k: claims.get(k) for k in keep})
