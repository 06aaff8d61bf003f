"""Where a build's outcome goes: the report on stdout (between its markers, or its JSON alone), in
its file, as GitHub outputs and in the step summary; and, for every write that fails, why."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.errors import InputError, RuntimeFailure
from image_builder.paths import STREAM

if TYPE_CHECKING:
    from image_builder.report import BuildReport
    from image_builder.reporter import Reporter


def publish_report(
    report: BuildReport | None,
    *,
    report_path: Path | None,
    env: Mapping[str, str],
    reporter: Reporter,
    extra_outputs: Mapping[str, str] | None = None,
    link: str | None = None,
) -> None:
    """The report on stdout between its markers, in the report file, and as CI outputs; with
    ``--build-report-path -`` (``--json``) its JSON alone on stdout, and no file.
    ``extra_outputs`` (e.g. ``adoResult``) go to GitHub outputs even when there is no report."""
    from image_builder import ci_output
    from image_builder.report import BEGIN, END

    values: dict[str, str] = {}
    failures = []
    if report is not None and report_path == STREAM:
        # The block's own JSON line: inert in a CI log as well.
        reporter.result(report.block().removeprefix(f"{BEGIN}\n").removesuffix(f"\n{END}"))
        values.update(ci_output.github_outputs(report))
    elif report is not None:
        reporter.result(report.block())
        if report_path is not None:
            try:
                report.write(report_path)
            except OSError as exc:
                failures.append(write_error("the build report", report_path, exc))
        values.update(ci_output.github_outputs(report))
    values.update(extra_outputs or {})
    if env.get("GITHUB_OUTPUT") and values:
        try:
            ci_output.append(Path(env["GITHUB_OUTPUT"]), ci_output.format_outputs(values))
        except OSError as exc:
            failures.append(write_error("the GitHub outputs", Path(env["GITHUB_OUTPUT"]), exc))
    if env.get("GITHUB_STEP_SUMMARY") and (report is not None or link):
        summary = Path(env["GITHUB_STEP_SUMMARY"])
        try:
            ci_output.append(summary, ci_output.step_summary(report, link=link))
        except OSError as exc:
            failures.append(write_error("the step summary", summary, exc))
    if failures:
        # Everything else was written; the build's own outcome is in the report printed above.
        raise RuntimeFailure("; ".join(failures))


def write_error(what: str, path: Path, exc: OSError) -> str:
    return f"cannot write {what} to {path}: {why_unwritable(path, exc)}"


def why_unwritable(path: Path, exc: OSError) -> str:
    """Why a write failed, naming the disk when it is full or read-only."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk mounted at {_mount_of(path)} is full"
    if exc.errno == errno.EROFS:
        return f"the disk mounted at {_mount_of(path)} is read-only"
    return str(exc.strerror or exc)


_REPORT_ROOM = 64 * 1024


def check_writable(path: Path, flag: str) -> None:
    """Refuse before any work when ``path`` cannot be written (atomically, through a temporary
    file next to it), so that the build's report is never lost after a push. ``-`` is stdout."""
    import tempfile

    if path == STREAM:
        return
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name, e.g. {path}/report.json")
    if not folder.is_dir():
        raise InputError(f"{flag} {path}: the folder {folder} does not exist; create it first")
    try:
        with tempfile.NamedTemporaryFile(
            dir=folder, prefix=f".{path.name}.", suffix=".check"
        ) as probe:
            probe.write(bytes(_REPORT_ROOM))  # room for the report, or the disk is full
            probe.flush()
    except OSError as exc:
        raise InputError(
            f"{flag} {path} cannot be written: {why_unwritable(path, exc)}; choose a writable place"
        ) from None


def _mount_of(path: Path) -> Path:
    """The mount point of the filesystem that holds ``path``."""
    import os

    current = path if path.exists() else path.parent
    current = current.resolve()
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current
