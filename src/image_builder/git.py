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


def unclean(checkout: Path, context: Path, env: Mapping[str, str]) -> str | None:
    """Why the build context is not known to be the commit, or ``None`` when it is: files under
    ``context`` that differ from HEAD (modified, staged, deleted, or new and not ignored: COPY
    takes them), or git failing to tell. A folder whose ``.git`` has no index (nothing was ever
    checked out into it) is not judged.

    git's own ownership rule applies (``sudo`` keeps the invoking user's checkouts readable): a
    checkout's ``.git/config`` could otherwise run a command of another user's choosing through
    ``core.fsmonitor``, so that is off, and status takes no lock and writes no index."""
    from image_builder.context.local import find_git_dir

    git = find_git_dir(context)
    if git is None or not (git[0] / "index").is_file():
        return None
    argv = ["git", "--no-optional-locks", "-c", "core.fsmonitor=false", "-C", str(checkout)]
    try:
        result = proc.run(
            [*argv, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", str(context)],
            env=env,
            check=False,
        )
    except ImageBuilderError as exc:
        return f"git cannot tell whether the build context is clean ({exc})"
    if result.returncode != 0:
        lines = [line.strip() for line in result.output.splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith("fatal:")]
        why = (fatal or lines or [f"exit {result.returncode}"])[0][:200]
        return f"git cannot tell whether the build context is clean ({why})"
    changed = [entry for entry in result.output.split("\0") if entry]
    return "the build context has uncommitted changes" if changed else None
