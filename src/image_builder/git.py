"""git: the only module that runs it. Used for the commit time of reproducible builds and to
tell whether a local build's tree holds uncommitted changes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from image_builder import proc
from image_builder.errors import ImageBuilderError, InputError


def commit_time(repo_dir: Path, sha: str | None, env: Mapping[str, str]) -> datetime | None:
    """``SOURCE_DATE_EPOCH`` if set, else the committer time of ``sha`` (or HEAD) in ``repo_dir``."""
    epoch = env.get("SOURCE_DATE_EPOCH")
    if epoch:
        if not epoch.isdecimal():
            raise InputError(
                f"SOURCE_DATE_EPOCH must be whole seconds since 1970, got {epoch[:40]!r}"
            )
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    try:
        result = proc.run(
            [
                "git",
                "-c",
                "safe.directory=*",
                "-C",
                str(repo_dir),
                "show",
                "-s",
                "--format=%ct",
                sha or "HEAD",
            ],
            env=env,
            check=False,
        )
    except ImageBuilderError:
        return None
    text = result.output.strip()
    if result.returncode != 0 or not text.isdecimal():
        return None
    return datetime.fromtimestamp(int(text), tz=UTC)


def uncommitted_changes(checkout: Path, context: Path, env: Mapping[str, str]) -> list[str] | None:
    """Files under ``context`` that differ from HEAD: modified, staged, deleted, or new and not
    ignored (they can reach the image through COPY). ``None`` when git cannot tell, which
    includes a checkout without an index (nothing was ever checked out into it)."""
    from image_builder.context.local import find_git_dir

    git = find_git_dir(context)
    if git is None or not (git[0] / "index").is_file():
        return None
    try:
        result = proc.run(
            [
                "git",
                "-c",
                "safe.directory=*",
                "-C",
                str(checkout),
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--",
                str(context),
            ],
            env=env,
            check=False,
        )
    except ImageBuilderError:
        return None
    if result.returncode != 0:
        return None
    return [entry[3:] for entry in result.output.split("\0") if len(entry) > 3]
