"""The base images a build pulls, resolved by the trusted side to the digest of each platform's
manifest: for provenance, and to check against what the build recorded."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from image_builder import wire
from image_builder.dockerfile import BadReference, image_uses, normalise, parse, platform_args
from image_builder.errors import ImageBuilderError
from image_builder.oci import parse_reference
from image_builder.provenance import BaseImage
from image_builder.registry import Manifest, RegistryClient, Unreachable

# buildah writes these on the image it commits, naming the final stage's base.
BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"


def resolve(
    registry: RegistryClient,
    dockerfile: str,
    *,
    build_args: Mapping[str, str],
    platforms: Sequence[str],
    host_platform: str,
    withheld: Collection[str] = (),
) -> list[BaseImage]:
    """Every image each platform's build pulls (FROM, COPY --from, RUN --mount from=), each by
    the digest of the manifest for the platform it is pulled for. An image that cannot be
    resolved is kept with the reason, never dropped. At most ``registry.max_entries`` names
    are asked for: the Dockerfile is the caller's, and each name is a request from here.
    ``withheld`` build arguments stay unset: their values reach no name, request or message."""
    build_args = {k: v for k, v in build_args.items() if k not in withheld}
    instructions = parse(dockerfile)
    manifests: dict[str, Manifest | str] = {}  # name → manifest, or why not
    out: list[BaseImage] = []
    for platform in platforms:
        automatic = platform_args(platform, host_platform)
        for use in image_uses(instructions, build_args, automatic):
            wanted = use.platform or platform
            if use.reference is None:
                out.append(BaseImage(name=use.shown, platform=wanted, problem=use.problem))
                continue
            if use.reference not in manifests:
                manifests[use.reference] = (
                    _fetch(registry, use.reference)
                    if len(manifests) < registry.max_entries
                    else f"not resolved: the Dockerfile names more than {registry.max_entries} images"
                )
            found = manifests[use.reference]
            if isinstance(found, str):
                out.append(BaseImage(name=use.reference, platform=wanted, problem=found))
                continue
            out.append(_for_platform(registry, use.reference, found, wanted))
    return list(dict.fromkeys(out))


def _fetch(registry: RegistryClient, name: str) -> Manifest | str:
    """The manifest, or why not in the builder's own words: a registry's answer is not echoed
    into the log or the statement (the Dockerfile chooses the registry)."""
    try:
        return registry.get_manifest(parse_reference(name))
    except Unreachable as exc:
        return str(exc)
    except ImageBuilderError as exc:
        if str(exc).endswith("does not exist"):
            return f"{name} does not exist"
        return f"the registry of {name} answered with an error"


def _for_platform(
    registry: RegistryClient, name: str, manifest: Manifest, platform: str
) -> BaseImage:
    if not manifest.is_index:
        return BaseImage(name=name, platform=platform, digest=manifest.digest)
    try:
        entries = manifest.entries(registry.max_entries)
    except ImageBuilderError as exc:
        return BaseImage(name=name, platform=platform, problem=str(exc))
    for entry in entries:
        if entry.platform is not None and _matches(entry.platform, platform):
            return BaseImage(
                name=name, platform=platform, digest=entry.digest, index=manifest.digest
            )
    return BaseImage(
        name=name, platform=platform, problem=f"its index {manifest.digest} has no {platform}"
    )


def _matches(entry: wire.Platform, platform: str) -> bool:
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    if entry.os != os_name or entry.architecture != arch:
        return False
    return not variant or entry.variant in (variant, None)


def check_final(
    bases: Sequence[BaseImage], recorded: Mapping[str, tuple[str | None, str | None]]
) -> str | None:
    """Whether the base each platform's image records is one the trusted side resolved;
    otherwise why not (a tag moved while the build ran, say). ``recorded`` maps each platform to
    buildah's (base name, base digest) annotations. Any platform's resolution counts, since a
    stage may pull another platform's image (FROM --platform=$BUILDPLATFORM). A base named as
    one the trusted side could not resolve has nothing to compare with: the statement records
    it unresolved."""
    resolved = {b.digest for b in bases if b.digest}
    unresolved = {b.name for b in bases if b.problem}
    for platform, (name, digest) in recorded.items():
        if digest is None or digest in resolved:
            continue  # from scratch (or an earlier stage's result), or as resolved
        if name is not None and _normal(name) in unresolved:
            continue
        named = ", ".join(sorted(resolved)) or "none"
        return (
            f"the {platform} image was built on {digest}, which is not a base image the "
            f"builder resolved for this build ({named}); a tag moved during the build: "
            "build again"
        )
    return None


def _normal(name: str) -> str:
    try:
        return normalise(name)
    except BadReference:
        return name
