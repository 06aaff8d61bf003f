"""Turn the planned signer names into signers. Keys and secrets are loaded here, before anything
is built, so a missing key or password is refused early."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from image_builder.config import Config
from image_builder.errors import InputError
from image_builder.registry import RegistryClient
from image_builder.signing import Signer


def make_signers(
    config: Config,
    names: Sequence[str],
    *,
    registry: RegistryClient,
    env: Mapping[str, str],
    optional: Mapping[str, str],
    on_retry: Callable[[str], None] | None = None,
) -> dict[str, Signer]:
    defined = {s.name: s for s in config.sign_config.signers}
    signers: dict[str, Signer] = {}
    for name in names:
        signer = defined[name]
        if signer.type == "notary":
            from image_builder.signing.notary import NotarySigner, read_secret

            notary = signer.config
            read_secret(Path(notary.secret.path))  # refuse a missing or malformed secret early
            signers[name] = NotarySigner(name=name, config=notary, on_retry=on_retry)
        else:
            from image_builder.signing.cosign import CosignSigner
            from image_builder.signing.keys import load_private_key

            cosign = signer.config
            try:
                key = load_private_key(
                    Path(cosign.private_key), password_env=cosign.password_env, env=env
                )
            except InputError as exc:
                raise InputError(f"signer {name}: {exc}") from None
            signers[name] = CosignSigner(name=name, key=key, registry=registry, optional=optional)
    return signers


def provenance(repository: str | None, ref: str | None, commit: str | None) -> dict[str, str]:
    """The ``optional`` annotations a cosign signature carries about where the image came from."""
    values = {"repository": repository, "ref": ref, "commit": commit}
    return {key: value for key, value in values.items() if value}
