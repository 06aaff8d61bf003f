"""Paths the caller names must stay inside the build context, through ``..`` or symlinks alike."""

from __future__ import annotations

from pathlib import Path

from image_builder.errors import InputError


def context_root(context: str) -> Path:
    """The build context, resolved; it must be an existing folder."""
    path = Path(context)
    try:
        root = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(
            f"build context {context!r} does not exist; pass an existing folder with --context"
        ) from None
    if not root.is_dir():
        raise InputError(f"build context {context!r} is not a folder; pass a folder with --context")
    return root


def inside(root: Path, base: Path, relative: str, what: str) -> Path:
    """Resolve ``relative`` against ``base`` and refuse a result that escapes ``root``.

    Symlinks are followed before the check, so a link pointing out of the context is refused
    just like ``../``.
    """
    if "\x00" in relative:
        raise InputError(f"{what} {relative!r} contains a NUL byte")
    candidate = base / relative
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError):
        raise InputError(f"{what} {relative!r} cannot be resolved (a symlink loop?)") from None
    if not resolved.is_relative_to(root):
        raise InputError(
            f"{what} {relative!r} resolves to {resolved}, outside the build context {root}; "
            "keep it inside the context"
        )
    return resolved
