"""Machine outputs are written whole or not at all: a temporary file, then ``os.replace``."""

from __future__ import annotations

import os
from pathlib import Path

from image_builder.errors import InputError


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """``mode``: the file's permissions (default: mkstemp's 0600, only this account reads)."""
    import tempfile  # not at import: `image-builder tags` mostly prints, and start-up counts (P5)

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
