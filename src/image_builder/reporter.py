"""All user-facing output goes through one CI-aware reporter.

Results go to stdout, diagnostics to stderr. On GitHub Actions errors become ``::error::`` and
steps become ``::group::``; on Azure DevOps errors become ``##vso[task.logissue]``. Colour is used
on a TTY, or anywhere with ``FORCE_COLOR``, and never with ``NO_COLOR`` (each only when set and not
empty, as no-color.org and force-color.org have it). ``log-format: json`` turns diagnostics into
JSON lines. Library code logs through :mod:`logging`; :class:`LogHandler` gives those records the
reporter's own form.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

_RED, _YELLOW, _BOLD, _DIM, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


# What a CI agent would act on in a log line: Azure DevOps' logging commands and formatting
# (honoured anywhere in a line), GitHub's workflow commands (at the start of a line), and this
# tool's report markers, which callers parse out of logs.
_AZURE_COMMAND = re.compile(r"##(vso)?\[", re.IGNORECASE)
_LINE_START_COMMAND = re.compile(r"^\s*(::|##|---(END OF )?IMAGE BUILD REPORT---)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def inert(text: str) -> str:
    """``text`` with nothing a CI agent would act on: ``##vso[`` and ``##[`` are broken apart
    wherever they occur, and a line that starts like a command or a report marker is prefixed."""
    text = _AZURE_COMMAND.sub(lambda m: m.group(0)[:-1] + " [", text)
    # Both runners also end a line at a lone carriage return.
    return "\n".join(
        "| " + line if _LINE_START_COMMAND.match(line) else line for line in _LINE_BREAK.split(text)
    )


def _gh_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Reporter:
    def __init__(
        self,
        *,
        out: TextIO,
        err: TextIO,
        env: Mapping[str, str],
        log_format: str = "text",
    ) -> None:
        self._out = out
        self._err = err
        self.github = env.get("GITHUB_ACTIONS") == "true"
        self.azure = env.get("TF_BUILD") == "True" or bool(env.get("BUILD_BUILDID"))
        self.json = log_format == "json"
        self.color = not self.json and _wants_color(env, err)
        self._masked: set[str] = set()
        self.silent = False  # the Go tool's --silent: tool output goes to the log file only
        self.quiet = False  # --quiet: warnings, errors and results only (and all in the log file)
        self.verbose = False  # --debug: tools' detail lines on the terminal too
        self._log: TextIO | None = None  # the Go tool's --log-dir: a copy of every log line

    def with_format(self, log_format: str) -> Reporter:
        """The same streams with a log format read from config.yaml."""
        clone = Reporter(out=self._out, err=self._err, env={}, log_format=log_format)
        clone.github, clone.azure, clone._masked = self.github, self.azure, self._masked
        clone.color = self.color and log_format != "json"
        clone.silent, clone.quiet, clone._log = self.silent, self.quiet, self._log
        clone.verbose = self.verbose
        return clone

    def keep_log(self, log: TextIO | None, *, silent: bool) -> TextIO | None:
        """Copy every log line to ``log`` (secrets masked); with ``silent``, tools' output
        (buildah, remote run logs) goes there only, not to stderr. Returns the previous log."""
        previous, self._log, self.silent = self._log, log, silent
        return previous

    def result(self, text: str) -> None:
        """A machine-readable result, on stdout (a registered secret never, not even there)."""
        self._out.write(self._hide(text) + "\n")
        self._out.flush()

    def mask(self, secret: str) -> None:
        """Ask GitHub to hide ``secret`` in every later log line. The runner consumes this
        directive; it is the only place the value is ever written."""
        if not secret or secret in self._masked:
            return
        lines = [line for line in _LINE_BREAK.split(secret) if line.strip()]
        self._masked.update([secret, *lines])
        if self.github:  # the runner reads one line per directive: one directive per line
            for line in dict.fromkeys(lines):
                self._err.write(f"::add-mask::{line}\n")
            self._err.flush()

    def stream(self, line: str) -> None:
        """A line of a tool's output as it arrives. It may come from the repository being built
        (a RUN step), so it is made inert first: it can never drive the CI agent or fake a
        report."""
        quiet = self.silent or self.quiet
        if self.json:  # a JSON line is still a line to the agent, which acts on ##vso[ anywhere
            self._json("info", inert(line), event="output", quiet=quiet)
        else:
            self._line(inert(line), quiet=quiet)

    def detail(self, line: str) -> None:
        """A tool's line too fine for the terminal (skopeo's per-blob progress): always in the
        ``--log-dir`` file, on stderr with ``--debug`` only. Made inert as :meth:`stream` does."""
        quiet = not self.verbose or self.silent
        if self.json:
            self._json("debug", inert(line), event="output", quiet=quiet)
        else:
            self._line(inert(line), quiet=quiet)

    def info(self, message: str) -> None:
        self._emit("info", inert(message), "", "", quiet=self.quiet)

    def debug(self, message: str) -> None:
        """A library's debug record, shown only when ``--debug`` turned them on."""
        self._emit("debug", f"debug: {inert(message)}", _DIM, _RESET)

    def warning(self, message: str) -> None:
        message = inert(message)
        if self.github and not self.json:
            self._line(f"::warning::{_gh_escape(message)}")
        elif self.azure and not self.json:
            self._line(f"##vso[task.logissue type=warning]{message}")
        else:
            self._emit("warning", f"warning: {message}", _YELLOW, _RESET)

    def error(self, message: str) -> None:
        message = inert(message)
        if self.github and not self.json:
            self._line(f"::error::{_gh_escape(message)}")
        elif self.azure and not self.json:
            self._line(f"##vso[task.logissue type=error]{message}")
        else:
            self._emit("error", f"error: {message}", _RED, _RESET)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """A titled step; its elapsed time is printed at the end, as a group in GitHub's log."""
        start = time.monotonic()
        quiet = self.quiet
        if self.json:
            self._json("info", title, event="step-start", quiet=quiet)
        elif self.github:
            self._line(f"::group::{title}", quiet=quiet)
        else:
            self._line(f"{_BOLD}==> {title}{_RESET}" if self.color else f"==> {title}", quiet=quiet)
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - start
            status = "done" if ok else "failed"
            if self.json:
                self._json(
                    "info",
                    title,
                    event="step-end",
                    status=status,
                    seconds=round(elapsed, 3),
                    quiet=quiet,
                )
            else:
                if self.github:
                    self._line("::endgroup::", quiet=quiet)
                tail = f"<== {title}: {status} in {elapsed:.1f}s"
                self._line(f"{_DIM}{tail}{_RESET}" if self.color else tail, quiet=quiet)

    def _emit(self, level: str, message: str, on: str, off: str, *, quiet: bool = False) -> None:
        if self.json:
            self._json(level, message.removeprefix(f"{level}: "), quiet=quiet)
        else:
            self._line(f"{on}{message}{off}" if self.color and on else message, quiet=quiet)

    def _json(self, level: str, message: str, *, quiet: bool = False, **fields: object) -> None:
        # Masked before encoding: JSON escapes quotes and non-ASCII, and the mask would miss.
        record = {"level": level, "msg": self._hide(message), **fields}
        self._line(json.dumps(record, sort_keys=True), quiet=quiet)

    def _hide(self, text: str) -> str:
        # Longest first, so a value is replaced whole before any of its lines.
        for secret in sorted(self._masked, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _line(self, text: str, *, quiet: bool = False) -> None:
        text = self._hide(text)
        if self._log is not None:
            self._log.write(text + "\n")
            self._log.flush()
        if not quiet:
            self._err.write(text + "\n")
            self._err.flush()


def _wants_color(env: Mapping[str, str], err: TextIO) -> bool:
    """no-color.org: ``NO_COLOR`` set and not empty turns colour off, and wins. force-color.org:
    ``FORCE_COLOR`` set and not empty (whatever its value) turns it on without a TTY."""
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    return env.get("TERM") != "dumb" and err.isatty()


class LogHandler(logging.Handler):
    """Records that library code logs through :mod:`logging`, in the reporter's form: a warning
    reads ``warning: ...`` (``::warning::`` on GitHub), never with a logger's name."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self._reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR:
            self._reporter.error(message)
        elif record.levelno >= logging.WARNING:
            self._reporter.warning(message)
        else:  # only with --debug: which library said it helps there
            self._reporter.debug(f"{record.name}: {message}")
