"""Steps that ``build``, ``sign`` and ``verify`` share: spending the caller's token, and the
registry client with the config's rules. (The trust gate itself is
:func:`image_builder.trust.verify_caller`.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.config import Config

if TYPE_CHECKING:
    from image_builder.registry import RegistryClient
    from image_builder.trust import VerifiedClaims


def registry_client(
    config: Config, env: Mapping[str, str], *, anonymous: bool = False
) -> RegistryClient:
    """The registry client for every command: plain HTTP only by the one rule in :mod:`oci`;
    ``anonymous``: without credentials."""
    from image_builder.oci import plain_http
    from image_builder.registry import make_client

    insecure = config.insecure_registries
    return make_client(
        env,
        plain_http=lambda host: plain_http(host, insecure),
        max_entries=config.max_manifest_entries,
        anonymous=anonymous,
    )


def consume_token(
    config: Config, claims: VerifiedClaims, uses: Sequence[str], env: Mapping[str, str], euid: int
) -> None:
    """Spend the token: it builds once and signs once."""
    from image_builder.replay import SeenTokens, default_path

    path = Path(config.seen_tokens) if config.seen_tokens else default_path(env, euid)
    SeenTokens(path).consume(claims, uses)
