"""The base images a build pulls, resolved by the trusted side to the digest of each platform's
manifest: for provenance, and to check against what the build recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from image_builder.dockerfile import image_uses, parse, platform_args
from image_builder.errors import ImageBuilderError
from image_builder.oci import parse_reference
from image_builder.provenance import BaseImage
from image_builder.registry import Manifest, RegistryClient

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
) -> list[BaseImage]:
    """Every image each platform's build pulls (FROM, COPY --from, RUN --mount from=), each by
    the digest of the manifest for the platform it is pulled for. An image that cannot be
    resolved is kept with the reason, never dropped."""
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
                manifests[use.reference] = _fetch(registry, use.reference)
            found = manifests[use.reference]
            if isinstance(found, str):
                out.append(BaseImage(name=use.reference, platform=wanted, problem=found))
                continue
            out.append(_for_platform(registry, use.reference, found, wanted))
    return list(dict.fromkeys(out))


def _fetch(registry: RegistryClient, name: str) -> Manifest | str:
    try:
        return registry.get_manifest(parse_reference(name))
    except ImageBuilderError as exc:
        return str(exc)


def _for_platform(
    registry: RegistryClient, name: str, manifest: Manifest, platform: str
) -> BaseImage:
    if not manifest.is_index:
        return BaseImage(name=name, platform=platform, digest=manifest.digest)
    try:
        children = manifest.children(registry.max_entries)
    except ImageBuilderError as exc:
        return BaseImage(name=name, platform=platform, problem=str(exc))
    for digest, _, entry in children:
        if _matches(entry, platform):
            return BaseImage(name=name, platform=platform, digest=digest, index=manifest.digest)
    return BaseImage(
        name=name, platform=platform, problem=f"its index {manifest.digest} has no {platform}"
    )


def _matches(entry: Mapping[str, object], platform: str) -> bool:
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    if entry.get("os") != os_name or entry.get("architecture") != arch:
        return False
    return not variant or entry.get("variant") in (variant, None)


def check_final(bases: Sequence[BaseImage], recorded: Mapping[str, str | None]) -> str | None:
    """Whether the base each platform's image records (``recorded``: platform → buildah's
    base-digest annotation) is one the trusted side resolved for that platform; otherwise why
    not (a tag moved while the build ran, say). Any platform's resolution counts, since a stage
    may pull another platform's image (FROM --platform=$BUILDPLATFORM). With a base the trusted
    side could not resolve there is nothing to compare with: that base is recorded unresolved."""
    if any(b.problem for b in bases):
        return None  # an unresolved base may be the one recorded; the statement says so
    resolved = {b.digest for b in bases if b.digest}
    for platform, digest in recorded.items():
        if digest is None:
            continue  # the final stage starts from scratch, or from an earlier stage's result
        if digest not in resolved:
            named = ", ".join(sorted(resolved)) or "none"
            return (
                f"the {platform} image was built on {digest}, which is not a base image the "
                f"builder resolved for this build ({named}); a tag moved during the build: "
                "build again"
            )
    return None
