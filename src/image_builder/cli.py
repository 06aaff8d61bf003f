"""The entry point: parse the arguments (:mod:`cli_parser`, after :mod:`go_flags` translated the
Go tool's spellings), build the command's typed options, call one function, turn errors into exit
codes. The only module that reads ``os.environ``: ``main`` when given no environment, and the
console entry, the only one that changes it. (Below it, httpx reads Azure DevOps' proxy and
``tempfile`` reads ``TMPDIR`` from the process.)"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.cli_parser import ParserExit, build_parser
from image_builder.errors import ImageBuilderError, UsageError
from image_builder.go_flags import translate_legacy_argv
from image_builder.paths import STREAM
from image_builder.reporter import LogHandler, Reporter

if TYPE_CHECKING:
    from image_builder.commands.ado_build import AdoOptions
    from image_builder.commands.build import BuildOptions

Handler = Callable[[argparse.Namespace, Mapping[str, str], Reporter], int]


# --- commands ---------------------------------------------------------------------------------


def _cmd_tags(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.tags import TagsOptions, run_tags

    options = TagsOptions(
        config=_path(args.config),
        tags=_values(args.tag, "--tag"),
        tag_base64=args.tag_base64 or None,
        env_file=args.env_file or None,
        context=args.context,
        dockerfile=args.dockerfile,
        checkout=args.checkout or None,
        tags_output_file=_path(args.tags_output_file),
    )
    reporter.result(run_tags(options, env=env, now=datetime.now(UTC), warn=reporter.warning))
    return 0


def _cmd_build(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.ado_build import AdoOptions
    from image_builder.commands.build import BuildOptions

    report_path = _report_to_stdout(args)
    options = BuildOptions(
        name=args.name,
        context=args.context,
        dockerfile=args.dockerfile,
        checkout=args.checkout or None,
        config=_path(args.config),
        layout_out=_path(args.layout_out),
        from_layout=_path(args.from_layout),
        no_sign=args.no_sign,
        tags=_values(args.tag, "--tag"),
        tag_base64=args.tag_base64 or None,
        build_args=_values(args.build_arg, "--build-arg"),
        env_file=args.env_file or None,
        platforms=_values(args.platform, "--platform"),
        target=args.target or None,
        export_tags=args.export_tags,
        repo=args.repo or None,
        oidc_token=args.oidc_token or None,
        dry_run=args.dry_run,
        no_push=args.no_push,
        build_report_path=report_path,
        secrets=_values(args.secret, "--secret"),
        use_restricted_registry=args.use_restricted_registry,
        use_go_internal_sap_modules=args.use_go_internal_sap_modules,
        tags_output_file=_path(args.tags_output_file),
    )
    ado = AdoOptions(
        client_id=args.azure_client_id,
        client_secret=args.azure_client_secret,
        tenant_id=args.azure_tenant_id,
        pat=args.ado_pat,
        preview=args.ado_preview_run,
        preview_yaml=_path(args.ado_preview_run_yaml_path),
    )
    return _run_build_options(options, args.backend, ado, env, reporter)


def _report_to_stdout(args: argparse.Namespace) -> Path | None:
    """``--json`` is ``--build-report-path -``: stdout carries the report's JSON and nothing
    else, so nothing else may be sent there."""
    report_path = _path(args.build_report_path)
    if args.json:
        if report_path not in (None, STREAM):
            raise UsageError(
                "--json prints the report on stdout, --build-report-path writes it to a file: "
                "pass one of them"
            )
        report_path = STREAM
    if report_path == STREAM and _path(args.tags_output_file) == STREAM:
        flag = "--json" if args.json else "--build-report-path -"
        raise UsageError(
            f"{flag} keeps stdout for the report's JSON; write the tags to a file with "
            "--tags-output-file PATH"
        )
    return report_path


def _run_build_options(
    options: BuildOptions,
    backend: str | None,
    ado: AdoOptions | None,
    env: Mapping[str, str],
    reporter: Reporter,
) -> int:
    """Load the config once, choose the backend from it and the flag, and build there."""
    import platform

    from image_builder.commands.build import run_build
    from image_builder.config import load_config
    from image_builder.platforms import host_platform

    config = load_config(options.config)
    if backend is None:
        # As the Go tool did: a config with ado-config builds in Azure DevOps unless told otherwise.
        backend = "ado" if config.ado_config is not None else "local"
    with _stopped_by_signals() as stopped:
        try:
            if backend == "ado":
                from image_builder.commands.ado_build import AdoOptions, run_ado_build

                code = run_ado_build(
                    options,
                    ado or AdoOptions(),
                    config=config,
                    env=env,
                    reporter=reporter,
                    now=datetime.now(UTC),
                    stop=stopped.event,
                    why_stopped=stopped.name,
                )
            else:
                code = run_build(
                    options,
                    config=config,
                    env=env,
                    reporter=reporter,
                    now=datetime.now(UTC),
                    host_platform=host_platform(platform.machine()),
                    euid=os.geteuid(),
                )
        except ImageBuilderError as exc:
            if not stopped:
                raise
            reporter.error(str(exc))
            code = 1
    if stopped:
        reporter.error(f"stopped by {stopped.name()}")
        return 128 + stopped.signals[0]
    return code


class _Stopped:
    """The signals a command received, and an event set by the first one."""

    def __init__(self) -> None:
        import threading

        self.signals: list[int] = []
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return bool(self.signals)

    def name(self) -> str:
        return signal.Signals(self.signals[0]).name if self.signals else "nothing"


@contextmanager
def _stopped_by_signals() -> Iterator[_Stopped]:
    """SIGTERM and SIGINT stop the build's child processes (and cancel a remote run); the build
    then unwinds, cleans up and reports what it did, marked Cancelled. The same signal again
    exits at once; another one (a CI runner's SIGTERM after its SIGINT) does not, so the report
    is still written.

    The handler only sets flags and events: it runs on the main thread between two bytecodes,
    possibly while that thread holds a lock, so a watcher thread does the stopping."""
    import threading

    from image_builder import proc

    stopped = _Stopped()
    wake = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del frame
        if stopped.signals:
            if signum == stopped.signals[0]:
                raise SystemExit(128 + signum)
            return
        stopped.signals.append(signum)
        proc.CHILDREN.reason = signal.Signals(signum).name
        proc.CHILDREN.stopping = True  # nothing new starts from here on
        stopped.event.set()
        wake.set()

    def watch() -> None:
        wake.wait()
        if stopped.signals:
            proc.CHILDREN.stop_all(stopped.name())

    watcher = threading.Thread(target=watch, name="signal-watcher", daemon=True)
    watcher.start()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wake.set()


def _cmd_registry(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.registry import RegistryOptions, run_registry

    options = RegistryOptions(action=args.action, address=args.address)
    return run_registry(options, env=env, reporter=reporter)


def _cmd_sign(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import SignOptions, run_sign

    images = tuple(
        i.strip() for value in args.images_to_sign for i in value.split(",") if i.strip()
    )
    report_path = _path(args.build_report_path)
    options = SignOptions(
        images=images,
        config=_path(args.config),
        repo=args.repo or None,
        oidc_token=args.oidc_token or None,
        from_report=_path(args.from_report),
        # "-": stdout, where the signed report is printed (between its markers) anyway
        build_report_path=None if report_path == STREAM else report_path,
        ado_state_output=args.ado_state_output,
    )
    return run_sign(options, env=env, reporter=reporter, euid=os.geteuid())


def _cmd_verify(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import ProvenanceExpectations, VerifyOptions, run_verify

    pins = {
        "--source-repo": args.source_repo,
        "--ref": args.ref,
        "--builder-id": args.builder_id,
        "--workflow": args.workflow,
    }
    given = [flag for flag, value in pins.items() if value is not None]
    if given and not args.provenance:
        raise UsageError(f"{', '.join(given)} check provenance: add --provenance")
    expect = (
        ProvenanceExpectations(
            source_repo=args.source_repo,
            ref=args.ref,
            builder_id=args.builder_id,
            workflow=args.workflow,
        )
        if args.provenance
        else None
    )
    options = VerifyOptions(
        image=args.image,
        key=Path(args.key),
        config=_path(args.config),
        expect=expect,
        as_json=args.json,
    )
    return run_verify(options, env=env, reporter=reporter)


def _cmd_keygen(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import KeygenOptions, run_keygen

    options = KeygenOptions(prefix=Path(args.output_key_prefix), password_env=args.password_env)
    return run_keygen(options, env=env, reporter=reporter)


def _cmd_signify(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from datetime import timedelta

    from image_builder.commands.signing import (
        CertStatusOptions,
        RotateOptions,
        run_cert_status,
        run_rotate,
    )

    now = datetime.now(UTC)
    if args.action == "cert-status":
        if args.warn_days < 0:
            raise UsageError("--warn-days must be zero or more")
        status = CertStatusOptions(
            config=_path(args.config), signer=args.signer, warn=timedelta(days=args.warn_days)
        )
        return run_cert_status(status, now=now, reporter=reporter)
    rotate = RotateOptions(config=_path(args.config), signer=args.signer)
    return run_rotate(rotate, now=now, reporter=reporter)


def _cmd_verify_token(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import VerifyTokenOptions, run_verify_token

    options = VerifyTokenOptions(
        config=_path(args.config),
        token=args.token,
        name=args.name or None,
        ado_outputs=args.ado_outputs,
    )
    return run_verify_token(options, env=env, reporter=reporter)


def _cmd_github(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.github import OidcTokenOptions, action_build, run_oidc_token

    if args.action == "oidc-token":
        options = OidcTokenOptions(audience=args.audience, output=args.output)
        return run_oidc_token(options, env=env, reporter=reporter)
    action = action_build(env)
    reporter.mask(action.ado.client_secret or "")
    return _run_build_options(action.options, action.backend, action.ado, env, reporter)


def _cmd_config_schema(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.config import run_schema

    return run_schema(reporter=reporter)


def _cmd_config_validate(
    args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter
) -> int:
    from image_builder.commands.config import ValidateOptions, run_validate

    # "./-" is a file named "-"
    options = ValidateOptions(config=_path(args.config) or Path(args.config), shown_as=args.config)
    return run_validate(options, reporter=reporter)


def _values(values: list[object], flag: str) -> tuple[str, ...]:
    """argparse hands back a list instead of a string for a value like ``--tag=--``."""
    out = []
    for value in values:
        if not isinstance(value, str):
            raise UsageError(f"argument {flag}: {value!r} is not a value; pass {flag}=VALUE")
        out.append(value)
    return tuple(out)


def _path(value: str | None) -> Path | None:
    """``-`` passes through for the command to read as stdin or stdout; ``./-`` is a file."""
    if not value:
        return None
    path = Path(value)
    return Path.cwd() / path if path == STREAM and value != "-" else path


HANDLERS: dict[str, Handler] = {
    "build": _cmd_build,
    "config schema": _cmd_config_schema,
    "config validate": _cmd_config_validate,
    "github": _cmd_github,
    "keygen": _cmd_keygen,
    "registry": _cmd_registry,
    "sign": _cmd_sign,
    "signify": _cmd_signify,
    "tags": _cmd_tags,
    "verify": _cmd_verify,
    "verify-token": _cmd_verify_token,
}


# --- entry point ------------------------------------------------------------------------------

# Flags that carry a secret, kept for the Go tool's command lines: any process can read them.
_SECRET_FLAGS = (
    ("oidc_token", "--oidc-token", "AUTHORIZATION"),
    ("token", "--token", "AUTHORIZATION"),
    ("ado_pat", "--ado-pat", "AZURE_DEVOPS_EXT_PAT"),
    ("azure_client_secret", "--azure-client-secret", "AZURE_CLIENT_SECRET"),
)


def _warn_secret_flags(args: argparse.Namespace, reporter: Reporter) -> None:
    for attr, flag, variable in _SECRET_FLAGS:
        value = getattr(args, attr, None)
        if value:
            reporter.mask(value)
            reporter.warning(
                f"{flag} shows the secret to every process on this machine (ps); pass it in "
                f"the {variable} variable instead"
            )


def _keep_log(args: argparse.Namespace, reporter: Reporter) -> None:
    """``--log-dir``: every log line also goes to ``<dir>/image-builder.log``; ``--silent``:
    tools' output goes there only."""
    log = None
    if args.log_dir:
        path = Path(args.log_dir) / "image-builder.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write the log to --log-dir {args.log_dir}: {exc.strerror}; pass a "
                "writable folder"
            ) from None
    reporter.keep_log(log, silent=args.silent)
    reporter.quiet = args.quiet


_DEBUG = re.compile(r"--?debug(=(1|t|T|true|TRUE|True))?")


def console() -> int:
    """The ``image-builder`` console script and ``python -m image_builder``: this process's
    arguments and environment."""
    # pydantic scans every installed distribution for plugins on import (~10 ms of start-up);
    # Image Builder uses none. It reads the switch from os.environ, so only the process's own
    # entry sets it there; main() leaves os.environ alone.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    return main()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one command line; ``None``: this process's arguments, or its environment."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if env is None else env)
    debug = any(_DEBUG.fullmatch(a) for a in args_in)
    args_in = [a for a in args_in if not _DEBUG.fullmatch(a)]
    if not debug:
        logging.getLogger("azure").setLevel(logging.ERROR)  # its warnings repeat our one-line error
    reporter = Reporter(out=sys.stdout, err=sys.stderr, env=env)
    reporter.verbose = debug
    # Library records in the reporter's form (`warning: ...`, `::warning::`), for this run only.
    root, handler = logging.getLogger(), LogHandler(reporter)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        return _run(args_in, env, reporter, debug)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        log = reporter.keep_log(None, silent=False)
        if log is not None:
            log.close()


def _run(args_in: list[str], env: Mapping[str, str], reporter: Reporter, debug: bool) -> int:
    try:
        args = build_parser().parse_args(translate_legacy_argv(args_in))
        _keep_log(args, reporter)
        _warn_secret_flags(args, reporter)
        handler = HANDLERS[args.handler]
        return handler(args, env, reporter)
    except ParserExit as stop:
        return stop.status
    except ImageBuilderError as exc:
        if debug:
            traceback.print_exc()
        reporter.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        reporter.error("interrupted")
        return 130
    except Exception as exc:  # a bug: say so in one line, unless --debug asks for the traceback
        if debug:
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            from image_builder.commands.outputs import why_unwritable

            where = Path(exc.filename) if exc.filename else Path.cwd()
            reporter.error(f"cannot write {where}: {why_unwritable(where, exc)}; free space, rerun")
            return 1
        reporter.error(
            f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report the traceback"
        )
        return 1
