"""No CI: the git checkout around the build context, read from ``.git`` without running git."""

from __future__ import annotations

import re
from pathlib import Path

from image_builder.context.model import CIContext, check_sha, repo_from_url
from image_builder.errors import InputError
from image_builder.events import POSTSUBMIT

_REMOTE_ORIGIN = re.compile(r'\s*\[\s*remote\s+"origin"\s*\]\s*')
_SECTION = re.compile(r"\s*\[")
_URL = re.compile(r"\s*url\s*=\s*(.+?)\s*")


def load(context_dir: Path) -> CIContext:
    """A push build of HEAD. Fields stay ``None`` where the checkout cannot tell. Whether the
    tree is clean is asked of git later (:func:`image_builder.git.uncommitted_changes`)."""
    git = find_git_dir(context_dir)
    if git is None:
        return CIContext(ci="local", event=POSTSUBMIT.event, job_type=POSTSUBMIT.job_type)
    git_dir, common_dir = git
    ref, sha = _head(git_dir, common_dir)
    owner, name, browse = _origin(common_dir)
    return CIContext(
        ci="local",
        event=POSTSUBMIT.event,
        job_type=POSTSUBMIT.job_type,
        repo_owner=owner,
        repo_name=name,
        head_sha=sha,
        commit_sha=sha,
        ref=ref,
        source_url=browse,
        default_branch=_origin_head(common_dir),
    )


def find_git_dir(start: Path) -> tuple[Path, Path] | None:
    """``(git dir, common dir)`` of the checkout containing ``start``; worktrees are followed."""
    try:
        here = start.resolve()
    except OSError:
        return None
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git, dot_git
        if dot_git.is_file():
            text = _read(dot_git) or ""
            if text.startswith("gitdir:"):
                git_dir = (folder / text.removeprefix("gitdir:").strip()).resolve()
                common = _read(git_dir / "commondir")
                common_dir = (git_dir / common.strip()).resolve() if common else git_dir
                return git_dir, common_dir
    return None


def _head(git_dir: Path, common_dir: Path) -> tuple[str | None, str | None]:
    head = (_read(git_dir / "HEAD") or "").strip()
    if not head.startswith("ref:"):
        return None, _sha_or_none(head)
    ref = head.removeprefix("ref:").strip()
    for folder in (git_dir, common_dir):
        loose = _read(folder / ref)
        if loose is not None:
            return ref, _sha_or_none(loose.strip())
    packed = _read(common_dir / "packed-refs") or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref:
            return ref, _sha_or_none(sha)
    return ref, None  # an unborn branch: no commit yet


def _origin(common_dir: Path) -> tuple[str | None, str | None, str | None]:
    in_origin = False
    for line in (_read(common_dir / "config") or "").splitlines():
        if _REMOTE_ORIGIN.fullmatch(line):
            in_origin = True
        elif _SECTION.match(line):
            in_origin = False
        elif in_origin and (m := _URL.fullmatch(line)):
            return repo_from_url(m.group(1))
    return None, None, None


def _origin_head(common_dir: Path) -> str | None:
    """The remote's default branch, as ``git clone`` recorded it in ``refs/remotes/origin/HEAD``."""
    head = (_read(common_dir / "refs/remotes/origin/HEAD") or "").strip()
    prefix = "ref: refs/remotes/origin/"
    return head.removeprefix(prefix) or None if head.startswith(prefix) else None


def _sha_or_none(text: str) -> str | None:
    try:
        return check_sha(text, "HEAD")
    except InputError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
