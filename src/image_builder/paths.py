"""Paths the caller names stay inside the checkout, and the Dockerfile and env file inside the
build context, through ``..`` or symlinks alike."""

from __future__ import annotations

from pathlib import Path

from image_builder.errors import InputError

# "-" as a file name: standard input for --config, standard output for --tags-output-file and
# --build-report-path, as docker, cosign and pip read it ("./-" is a file named "-").
STREAM = Path("-")


def checkout_root(checkout: str | None, cwd: Path) -> Path:
    """The checkout the build may read: ``--checkout``, else the git work tree holding the current
    folder, else the current folder."""
    if checkout:
        path = Path(checkout)
        try:
            root = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise InputError(
                f"checkout {checkout!r} does not exist; pass a folder with --checkout"
            ) from None
        if not root.is_dir():
            raise InputError(
                f"checkout {checkout!r} is not a folder; pass a folder with --checkout"
            )
        return root
    here = cwd.resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return here


def context_root(context: str, checkout: Path) -> Path:
    """The build context, resolved: an existing folder inside ``checkout``, named relative to it
    (or to the current folder inside it)."""
    if Path(context).is_absolute():
        raise InputError(
            f"build context {context!r} is an absolute path; pass it relative to the checkout "
            f"{checkout}"
        )
    root = inside(checkout, Path.cwd(), context, "build context", "the checkout")
    if not root.exists():
        raise InputError(
            f"build context {context!r} does not exist; pass an existing folder with --context"
        )
    if not root.is_dir():
        raise InputError(f"build context {context!r} is not a folder; pass a folder with --context")
    return root


def inside(
    root: Path, base: Path, relative: str, what: str, where: str = "the build context"
) -> Path:
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
            f"{what} {relative!r} resolves to {resolved}, outside {where} {root}; keep it inside "
            f"{where}"
        )
    return resolved
