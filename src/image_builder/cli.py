"""Argument parsing only: build a typed options object, call one function, turn errors into
exit codes. This is the only module that reads ``os.environ``."""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from image_builder import __version__
from image_builder.errors import ImageBuilderError, UsageError
from image_builder.paths import STREAM
from image_builder.reporter import LogHandler, Reporter

if TYPE_CHECKING:
    from image_builder.commands.ado_build import AdoOptions
    from image_builder.commands.build import BuildOptions

PROG = "image-builder"

Handler = Callable[[argparse.Namespace, Mapping[str, str], Reporter], int]


class _Exit(Exception):
    """argparse wants to stop (``--help``, ``--version``); carry its status out of ``main``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Refusals point to the command's own ``--help`` and suggest the nearest command, choice or
    flag; no flag is ever taken from an abbreviation (``--plat``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.also_known: tuple[str, ...] = ()  # flags it takes before translation (the Go tool's)

    def error(self, message: str) -> NoReturn:
        see = f"see '{self.prog} --help'"
        raise UsageError(f"{message} {see}" if message.endswith("?") else f"{message}; {see}")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """An unknown flag is named first: with ``--nmae``, not "--name is required". Whatever is
        left over is refused here, by the (sub)command that does not know it."""
        argv = list(sys.argv[1:] if args is None else args)
        unknown = self._unknown_flag(argv)
        if unknown is not None:
            self.error(self._unrecognized(unknown))
        parsed, extras = super().parse_known_args(argv, namespace)
        if extras:
            self.error(self._unrecognized(extras[0]))
        return parsed, extras

    def _unknown_flag(self, argv: list[str]) -> str | None:
        value_next = False
        for arg in argv:
            if arg == "--":
                return None
            flag = _looks_like_flag(arg)
            if value_next and not flag:
                value_next = False
                continue
            value_next = False
            if not flag:
                if self._subparsers is not None:
                    return None  # the command: its own parser checks the rest
                continue
            name, eq, _ = arg.partition("=")
            action = self._option_string_actions.get(name)
            if action is None and not arg.startswith("--"):
                action = self._option_string_actions.get(arg[:2])  # -qV: argparse splits it
                eq = "=" if action is not None and len(arg) > 2 else eq
            if action is None:
                return arg
            value_next = not eq and action.nargs is None
        return None

    def _unrecognized(self, arg: str) -> str:
        """The flag's name only: a value (``--secret-thing=...``) is never repeated."""
        if not arg.startswith("-") or arg == "-" or _NEGATIVE_NUMBER.fullmatch(arg):
            return f"unrecognized argument {arg}"
        flag = arg.partition("=")[0]
        known = [
            option
            for action in self._actions
            if action.help != argparse.SUPPRESS
            for option in action.option_strings
            if option.startswith("--")
        ]
        close = difflib.get_close_matches(flag, [*known, *self.also_known], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unrecognized argument {flag}{hint}"

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """A command or a choice that does not exist, with the nearest one that does (our words
        on every Python: 3.14's argparse suggests too, in its own)."""
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if isinstance(action, argparse._SubParsersAction):
            message = f"unknown command {value!r}{hint}"
        else:
            name = action.option_strings[0] if action.option_strings else action.dest
            message = f"invalid {name} {value!r} (choose from {', '.join(choices)}){hint}"
        raise argparse.ArgumentError(None, message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")


def _looks_like_flag(arg: str) -> bool:
    """As argparse reads an argument: ``-`` alone, a negative number or text with a space is a
    value."""
    return (
        arg.startswith("-")
        and arg != "-"
        and " " not in arg
        and not _NEGATIVE_NUMBER.fullmatch(arg)
    )


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    *,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
) -> _Parser:
    """A subcommand; every one shows its epilog (the examples) as written."""
    return sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=_formatter
    )


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
    import platform

    from image_builder.commands.build import run_build
    from image_builder.platforms import host_platform

    if backend is None:
        from image_builder.config import load_config

        # As the Go tool did: a config with ado-config builds in Azure DevOps unless told otherwise.
        backend = "ado" if load_config(options.config).ado_config is not None else "local"
    with _stopped_by_signals() as stopped:
        try:
            if backend == "ado":
                from image_builder.commands.ado_build import AdoOptions, run_ado_build

                code = run_ado_build(
                    options,
                    ado or AdoOptions(),
                    env=env,
                    reporter=reporter,
                    now=datetime.now(UTC),
                    stop=stopped.event,
                    why_stopped=stopped.name,
                )
            else:
                code = run_build(
                    options,
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
    from image_builder import embedded_registry

    if args.action == "start":
        state = embedded_registry.start(env, args.address)
        reporter.result(f"registry running on {state.address} (data in {state.data_dir})")
        return 0
    if args.action == "stop":
        stopped = embedded_registry.stop(env)
        reporter.result("registry stopped" if stopped else "registry was not running")
        return 0
    state = embedded_registry.status(env)
    if state.running:
        reporter.result(
            f"registry running on {state.address} (pid {state.pid}, data in {state.data_dir})"
        )
        return 0
    reporter.result("registry not running; start it with: image-builder registry start")
    return 1


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
    )
    if not args.ado_state_output:
        return run_sign(options, env=env, reporter=reporter, euid=os.geteuid())
    code = 1
    try:
        code = run_sign(options, env=env, reporter=reporter, euid=os.geteuid())
    finally:  # the Go tool's output variable, in its exact form
        success = "true" if code == 0 else "false"
        reporter.result(
            f"##vso[task.setvariable variable=signing_success;issecret=false;isoutput=true]{success}"
        )
    return code


def _cmd_verify(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import ProvenanceExpectations, run_verify

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
    return run_verify(
        args.image,
        Path(args.key),
        config_path=_path(args.config),
        env=env,
        reporter=reporter,
        expect=expect,
        as_json=args.json,
    )


def _cmd_keygen(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import run_keygen

    return run_keygen(Path(args.output_key_prefix), args.password_env, env=env, reporter=reporter)


def _cmd_signify(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from datetime import timedelta

    from image_builder.commands.signing import run_cert_status, run_rotate

    now = datetime.now(UTC)
    if args.action == "cert-status":
        if args.warn_days < 0:
            raise UsageError("--warn-days must be zero or more")
        return run_cert_status(
            _path(args.config),
            args.signer,
            timedelta(days=args.warn_days),
            now=now,
            reporter=reporter,
        )
    return run_rotate(_path(args.config), args.signer, now=now, reporter=reporter)


def _cmd_verify_token(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.commands.signing import run_verify_token

    return run_verify_token(
        args.token,
        _path(args.config),
        env=env,
        reporter=reporter,
        ado_outputs=args.ado_outputs,
        name=args.name or None,
    )


def _cmd_github(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder import github_actions

    if args.action == "oidc-token":
        token = github_actions.request_oidc_token(args.audience, env)
        reporter.mask(token)
        if not env.get("GITHUB_OUTPUT"):
            raise UsageError("GITHUB_OUTPUT is not set: run this inside a GitHub Actions step")
        github_actions.write_output(Path(env["GITHUB_OUTPUT"]), args.output, token)
        reporter.result(
            f"OIDC token written to output '{args.output}': {github_actions.claims_summary(token)}"
        )
        return 0
    options, ado, backend = github_actions.action_options(env)
    reporter.mask(ado.client_secret or "")
    return _run_build_options(options, backend, ado, env, reporter)


def _cmd_config_schema(args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.config import config_schema

    reporter.result(config_schema())
    return 0


def _cmd_config_validate(
    args: argparse.Namespace, env: Mapping[str, str], reporter: Reporter
) -> int:
    from image_builder.config import load_config

    path = _path(args.config) or Path(args.config)  # "./-" is a file named "-"
    for notice in load_config(path).notices:
        reporter.warning(notice)
    reporter.result(f"{'<stdin>' if path == STREAM else args.config}: valid")
    return 0


def _config_from_stdin(args: argparse.Namespace, stack: ExitStack) -> None:
    """``--config -``: standard input is read once, here, into a private file that every later
    reader of the config reads (``build`` reads it to choose the backend, then to build).
    ``config validate`` reads it itself, once."""
    if getattr(args, "config", None) != "-" or args.handler is _cmd_config_validate:
        return
    import tempfile

    from image_builder.config import read_stdin

    text = read_stdin()
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="image-builder-")))
    path = folder / "config-from-stdin.yaml"
    path.write_text(text, encoding="utf-8")
    args.config = str(path)


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


# --- parser -----------------------------------------------------------------------------------

TAGS_EPILOG = """\
examples:
  # tags for the current event (GitHub Actions, Azure DevOps, Jenkins or a local checkout)
  image-builder tags --config config.yaml --tag latest --tag 'release=v{{ .Date }}'

  # the Go tool's spelling still works
  image-builder --parse-tags-only --name app --config config.yaml --tag latest

prints a JSON list such as [{"name": "default_tag", "value": "v20261126-1a2b3c4d"}, ...]
with the event's default tag first.
"""

CONFIG_EPILOG = """\
examples:
  image-builder config schema > image-builder.schema.json
  image-builder config validate --config config.yaml
"""

BUILD_EPILOG = """\
examples:
  # build for two platforms, push to the registries of this CI event, print the report
  image-builder build --name team/app --context . --dockerfile Dockerfile \\
      --platform linux/amd64,linux/arm64 --tag latest --build-arg VERSION=1.2 --export-tags

  # see what would happen, without building
  image-builder build --name team/app --dry-run

  # stdout carries the report's JSON alone; steps and errors stay on stderr
  image-builder build --name team/app --json > report.json

The build report is printed between ---IMAGE BUILD REPORT--- and ---END OF IMAGE BUILD REPORT---;
with --json (or --build-report-path -) stdout carries the report's JSON alone, without them.
Exit codes: 0 built and pushed everywhere, 1 the build or a push failed, 2 bad input.
"""

SIGN_EPILOG = """\
examples:
  image-builder sign --config config.yaml --repo org/app --images-to-sign ghcr.io/org/app:v1
  image-builder --sign-only --images-to-sign ghcr.io/org/app:v1,ghcr.io/org/app:v2   # Go spelling
"""

VERIFY_EPILOG = """\
examples:
  image-builder verify ghcr.io/org/app:v1 --key cosign.pub
  image-builder verify ghcr.io/org/app@sha256:... --key cosign.pub
  image-builder verify ghcr.io/org/app:v1 --key cosign.pub --provenance \
      --source-repo org/app --ref refs/heads/main \
      --builder-id https://dev.azure.com/org/project/_build?definitionId=12

Exit code 0 only when the image and every platform manifest verify; otherwise the failures are
named: no signature, wrong key, payload for another digest, malformed payload. With
--provenance each manifest also needs a SLSA provenance statement signed by the same key, about
this image, that matches every --source-repo, --ref, --builder-id and --workflow given
(docs/provenance.md).
"""

CALLER_CHECK_EPILOG = """\
examples:
  image-builder verify-token --config config.yaml --token "$TOKEN"
  AUTHORIZATION="$TOKEN" image-builder verify-token --config config.yaml

prints {"issuer": ..., "repository": ..., "job_workflow_ref": ..., "event_name": ..., "ref": ...,
"sha": ...}; a rejected token exits 2 with the rule that failed.
"""

KEYGEN_EPILOG = """\
example:
  COSIGN_PASSWORD=... image-builder keygen --output-key-prefix release
"""

SIGNIFY_EPILOG = """\
examples:
  image-builder signify cert-status --config config.yaml    # exit 1 within 2 days of expiry
  image-builder signify rotate --config config.yaml
"""

GITHUB_EPILOG = """\
examples:
  image-builder github oidc-token --audience image-builder      # in a job with id-token: write
  IB_INPUT_NAME=team/app IB_INPUT_TAGS=$'latest\\nv1' image-builder github action
"""

REGISTRY_EPILOG = """\
examples:
  image-builder registry start            # 127.0.0.1:5000, data under ~/.local/share/image-builder
  image-builder registry status
  image-builder registry stop
"""

MAIN_EPILOG = """\
examples:
  image-builder build --name team/app --tag latest
  image-builder tags --config config.yaml --tag latest
  image-builder registry start
  image-builder config schema

Add --debug to any command for a traceback on errors.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Trusted OCI image builds: tags from the CI event, push, sign, report.",
        epilog=MAIN_EPILOG,
        formatter_class=_formatter,
    )
    parser.also_known = tuple(f"--{flag}" for flag in sorted(_GO_BOOL | _GO_VALUE))
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    _add_log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    build = _command(
        sub,
        "build",
        help="build the image with buildah, push it to every registry, and report",
        description="Build a Dockerfile into OCI images, tag them from the CI event, push them "
        "to every configured registry and report exactly what was pushed.",
        epilog=BUILD_EPILOG,
    )
    build.add_argument("--name", required=True, help="image name, e.g. test-infra/ginkgo")
    _add_tag_options(build)
    build.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="build argument; repeatable",
    )
    build.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH",
        help="target platform(s), repeatable or comma-separated (default: config, else the host's)",
    )
    build.add_argument(
        "--target", metavar="STAGE", help="build this stage of a multi-stage Dockerfile"
    )
    build.add_argument(
        "--export-tags", action="store_true", help="pass every tag as build argument TAG_<name>"
    )
    build.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=NAME,src=FILE|env=VAR",
        help="build secret for RUN --mount=type=secret,id=NAME; repeatable. Never a build "
        "argument, never stored in the image; pull-request builds get none unless config allows",
    )
    build.add_argument(
        "--use-restricted-registry",
        action="store_true",
        help="base images only from config's restricted-registries; others are refused",
    )
    build.add_argument(
        "--use-go-internal-sap-modules",
        action="store_true",
        help="mount config's go-internal-sap-modules credential as a build secret",
    )
    build.add_argument(
        "--tags-output-file",
        metavar="PATH",
        help="also write the tags as JSON to this file (-: stdout)",
    )
    build.add_argument(
        "--repo",
        metavar="ORG/REPO",
        help="repository for choosing signers (default: the CI context's)",
    )
    _add_token_option(build)
    build.add_argument(
        "--backend",
        choices=("local", "ado"),
        help="build here (local) or in the trusted Azure DevOps pipeline (ado); default: ado when "
        "config.yaml has ado-config, else local",
    )
    ado = build.add_argument_group("Azure DevOps backend")
    ado.add_argument(
        "--azure-client-id", metavar="ID", help="service principal (default: $AZURE_CLIENT_ID)"
    )
    ado.add_argument(
        "--azure-client-secret",
        metavar="SECRET",
        help="prefer $AZURE_CLIENT_SECRET: flags are visible to other processes",
    )
    ado.add_argument("--azure-tenant-id", metavar="ID", help="default: $AZURE_TENANT_ID")
    ado.add_argument(
        "--ado-pat", metavar="PAT", help="personal access token (default: $AZURE_DEVOPS_EXT_PAT)"
    )
    ado.add_argument(
        "--ado-preview-run", action="store_true", help="ask ADO for the final YAML only"
    )
    ado.add_argument(
        "--ado-preview-run-yaml-path", metavar="FILE", help="pipeline YAML for the preview run"
    )
    build.add_argument(
        "--dry-run", action="store_true", help="print the plan (ADO: the parameters) and stop"
    )
    build.add_argument("--no-push", action="store_true", help="build only; push nothing")
    build.add_argument(
        "--build-report-path",
        metavar="PATH",
        help="also write the report here; - prints its JSON alone on stdout, without the marker "
        "lines (as --json)",
    )
    build.add_argument(
        "--json",
        action="store_true",
        help="stdout carries only the report's JSON (with --dry-run: the plan's); diagnostics "
        "stay on stderr",
    )
    build.add_argument(
        "--layout-out",
        metavar="DIR",
        help="build stage only: build in the sandbox and write the image as an OCI layout to DIR; "
        "verifies no token, pushes and signs nothing",
    )
    build.add_argument(
        "--from-layout",
        metavar="DIR",
        help="publish stage: build nothing, verify the OCI layout in DIR (from --layout-out) and "
        "push it",
    )
    build.add_argument(
        "--no-sign",
        action="store_true",
        help="push without signing; sign later with `image-builder sign --from-report`",
    )
    _add_log_options(build)
    build.set_defaults(handler=_cmd_build)

    github = _command(
        sub,
        "github",
        help="GitHub Actions helpers: the OIDC token, the composite action's build",
        description="oidc-token: request an OIDC token from the runner, mask it and write it to a "
        "step output. action: run the build from the composite action's IB_INPUT_* variables.",
        epilog=GITHUB_EPILOG,
    )
    github.add_argument("action", choices=("oidc-token", "action"))
    github.add_argument(
        "--audience", default="image-builder", help="token audience (default: image-builder)"
    )
    github.add_argument(
        "--output", default="token", metavar="NAME", help="step output name (default: token)"
    )
    github.set_defaults(handler=_cmd_github)

    registry = _command(
        sub,
        "registry",
        help="run a local Distribution registry on loopback (the embedded default)",
        description="Start, stop or check the embedded registry the default config pushes to.",
        epilog=REGISTRY_EPILOG,
    )
    registry.add_argument("action", choices=("start", "stop", "status"))
    registry.add_argument(
        "--address",
        default="127.0.0.1:5000",
        help="loopback host:port to listen on (default: 127.0.0.1:5000)",
    )
    registry.set_defaults(handler=_cmd_registry)

    sign = _command(
        sub,
        "sign",
        help="sign images built elsewhere (sign-only mode)",
        description="Resolve each reference to its digest once and sign that digest with every "
        "signer that runs for this repository and job type.",
        epilog=SIGN_EPILOG,
    )
    sign.add_argument(
        "--images-to-sign",
        action="append",
        default=[],
        metavar="REF[,REF...]",
        help="image references to sign; repeatable or comma-separated",
    )
    sign.add_argument(
        "--from-report",
        metavar="PATH",
        help="sign the references and digest of a build report (from `build --no-sign`), and "
        "print the report with what was signed",
    )
    sign.add_argument(
        "--build-report-path",
        metavar="PATH",
        help="with --from-report: also write the report here (-: stdout only, where it is "
        "printed anyway)",
    )
    sign.add_argument("--config", metavar="PATH", help="config.yaml with sign-config")
    sign.add_argument("--repo", metavar="ORG/REPO", help="repository for choosing signers")
    _add_token_option(sign)
    sign.add_argument(
        "--ado-state-output",
        action="store_true",
        help="set the Azure DevOps output variable signing_success to true or false",
    )
    _add_log_options(sign)
    sign.set_defaults(handler=_cmd_sign)

    verify_token = _command(
        sub,
        "verify-token",
        help="check an OIDC token against the config's trust policy",
        description="Verify the caller's OIDC token against the trust section of config.yaml and "
        "print the verified claims. Exit 0 only when the token is trusted.",
        epilog=CALLER_CHECK_EPILOG,
    )
    verify_token.add_argument("--token", metavar="JWT", help="the token (default: $AUTHORIZATION)")
    verify_token.add_argument(
        "--config", required=True, metavar="PATH", help="config.yaml with trust"
    )
    verify_token.add_argument(
        "--name",
        metavar="NAME",
        help="also check that the token may build and sign this image name",
    )
    verify_token.add_argument(
        "--ado-outputs",
        action="store_true",
        help="in the trusted Azure DevOps pipeline: check the token against the run's parameters "
        "and set the verified repository, commit, job type and signing decision as output "
        "variables",
    )
    verify_token.set_defaults(handler=_cmd_verify_token)

    verify = _command(
        sub,
        "verify",
        help="check cosign signatures of an image (and each platform manifest) against a key",
        description="Resolve IMAGE to its digest and check that the digest, and for an index every "
        "platform manifest, has a signature that verifies with the public key.",
        epilog=VERIFY_EPILOG,
    )
    verify.add_argument("image", metavar="IMAGE", help="image reference, by tag or digest")
    verify.add_argument("--key", required=True, metavar="PUB", help="PEM public key (cosign.pub)")
    verify.add_argument("--config", metavar="PATH", help="config.yaml (for insecure-registries)")
    verify.add_argument(
        "--provenance",
        action="store_true",
        help="also check the SLSA provenance attestation of the image and each platform manifest",
    )
    verify.add_argument(
        "--source-repo",
        metavar="REPO",
        help="provenance: built from this repository (org/repo or URL)",
    )
    verify.add_argument(
        "--ref", metavar="REF", help="provenance: built from this ref (refs/heads/main, or main)"
    )
    verify.add_argument(
        "--builder-id",
        metavar="URI",
        help="provenance: built by this builder (runDetails.builder.id)",
    )
    verify.add_argument(
        "--workflow",
        metavar="REF",
        help="provenance: asked for by this workflow (org/repo/.github/workflows/f.yml[@ref])",
    )
    verify.add_argument(
        "--json", action="store_true", help="print the result as JSON (with --provenance)"
    )
    verify.set_defaults(handler=_cmd_verify)

    keygen = _command(
        sub,
        "keygen",
        help="write a new cosign-compatible key pair",
        description="Write <prefix>.key (cosign's encrypted format) and <prefix>.pub.",
        epilog=KEYGEN_EPILOG,
    )
    keygen.add_argument(
        "--output-key-prefix", default="cosign", metavar="PREFIX", help="default: cosign"
    )
    keygen.add_argument(
        "--password-env",
        default="COSIGN_PASSWORD",
        metavar="VARIABLE",
        help="variable holding the new key's password (default: COSIGN_PASSWORD)",
    )
    keygen.set_defaults(handler=_cmd_keygen)

    signify = _command(
        sub,
        "signify",
        help="the Signify client certificate: status and rotation",
        description="Check or rotate the client certificate of a notary (Signify) signer.",
        epilog=SIGNIFY_EPILOG,
    )
    signify.add_argument("action", choices=("cert-status", "rotate"))
    signify.add_argument("--config", metavar="PATH", help="config.yaml with the notary signer")
    signify.add_argument(
        "--signer", metavar="NAME", help="which notary signer, if there are several"
    )
    signify.add_argument(
        "--warn-days",
        type=int,
        default=2,
        metavar="DAYS",
        help="cert-status fails this close to expiry (default 2)",
    )
    signify.set_defaults(handler=_cmd_signify)

    tags = _command(
        sub,
        "tags",
        help="compute the image tags for this CI event and print them as JSON",
        description="Compute the tags for this CI event (the Go tool's --parse-tags-only).",
        epilog=TAGS_EPILOG,
    )
    _add_tag_options(tags)
    tags.add_argument(
        "--tags-output-file",
        metavar="PATH",
        help="also write the JSON list to this file (-: stdout only, where it is printed anyway)",
    )
    tags.add_argument("--name", help=argparse.SUPPRESS)  # accepted from the Go tool's callers
    _add_log_options(tags)
    tags.set_defaults(handler=_cmd_tags)

    config = _command(
        sub,
        "config",
        help="config.yaml helpers: JSON Schema, validation",
        description="Work with config.yaml.",
        epilog=CONFIG_EPILOG,
    )
    config_sub = config.add_subparsers(
        dest="config_command", metavar="ACTION", parser_class=_Parser
    )
    config_sub.required = True
    schema = _command(
        config_sub,
        "schema",
        help="print the JSON Schema of config.yaml, for editors",
        epilog="example:\n  image-builder config schema > image-builder.schema.json\n",
    )
    schema.set_defaults(handler=_cmd_config_schema)
    validate = _command(
        config_sub,
        "validate",
        help="check a config.yaml and report every problem",
        description="Check a config.yaml. Prints '<path>: valid' on stdout, or every problem on "
        "stderr and exits with 2.",
        epilog="examples:\n  image-builder config validate --config config.yaml\n"
        "  generate-config | image-builder config validate --config -\n",
    )
    validate.add_argument(
        "--config", required=True, metavar="PATH", help="config.yaml to check; - reads stdin"
    )
    validate.set_defaults(handler=_cmd_config_validate)
    return parser


def _add_log_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--silent``, ``--quiet`` and ``--log-dir``, before or after the command."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="only warnings, errors and results: no steps, notices or tools' output on the "
        "terminal (--log-dir still gets them)",
    )
    parser.add_argument(
        "--silent",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="keep tools' output (buildah, the remote run's log) off the terminal; steps, "
        "errors and the report still show",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        default=None if top else argparse.SUPPRESS,
        help="also write every log line, secrets masked, to DIR/image-builder.log",
    )


def _add_token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--oidc-token",
        metavar="JWT",
        help="the caller's OIDC token, required when config.yaml has a trust section "
        "(default: $AUTHORIZATION)",
    )


def _add_tag_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="config.yaml (default: built-in defaults, local registry)"
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="[NAME=]VALUE",
        help="extra tag, a Go-template string; repeatable. Without NAME it is derived from VALUE",
    )
    parser.add_argument(
        "--tag-base64",
        metavar="B64",
        help="base64 of comma-separated tags, as the Go tool sent them",
    )
    parser.add_argument(
        "--env-file", metavar="PATH", help="KEY=value file, relative to the Dockerfile's folder"
    )
    parser.add_argument(
        "--context",
        default=".",
        metavar="DIR",
        help="build context, relative to the current folder and inside the checkout (default: .)",
    )
    parser.add_argument(
        "--checkout",
        metavar="DIR",
        help="the checkout the build may read; context, Dockerfile and env file stay inside it "
        "(default: the git work tree holding the current folder, else the current folder)",
    )
    parser.add_argument(
        "--dockerfile",
        default="Dockerfile",
        metavar="PATH",
        help="Dockerfile, relative to the context (default: Dockerfile)",
    )


# --- the Go tool's spellings ------------------------------------------------------------------

# Every flag of the Go tool at HEAD (kyma-project/test-infra cmd/image-builder), by kind.
_GO_BOOL = {
    "silent",
    "debug",
    "dry-run",
    "export-tags",
    "sign-only",
    "ado-preview-run",
    "parse-tags-only",
    "use-go-internal-sap-modules",
    "ado-state-output",
    "use-restricted-registry",
}
_GO_VALUE = {
    "config",
    "context",
    "name",
    "dockerfile",
    "log-dir",
    "repo",
    "tag",
    "tag-base64",
    "build-arg",
    "platform",
    "images-to-sign",
    "ado-preview-run-yaml-path",
    "oidc-token",
    "azure-client-id",
    "azure-client-secret",
    "azure-tenant-id",
    "tags-output-file",
    "build-report-path",
    "target",
    "azure-access-token",  # an older Go flag
}
_GO_RENAMED = {"azure-access-token": "ado-pat"}
_GLOBAL = {"silent", "log-dir"}  # --debug never gets here: main() takes it out first
# What each mode reads; the Go tool accepted, and ignored, every other flag in that mode.
_MODE_FLAGS = {
    "tags": {"config", "context", "name", "dockerfile", "tag", "tag-base64", "tags-output-file"},
    "sign": {"images-to-sign", "config", "repo", "oidc-token", "ado-state-output"},
    # --ado-state-output: the Go tool set its variable in sign-only mode only.
    "build": (_GO_BOOL | _GO_VALUE)
    - {"sign-only", "parse-tags-only", "images-to-sign", "ado-state-output"},
}
_GO_TRUE = ("1", "t", "true")
_GO_FALSE = ("0", "f", "false")
GO_CONFIG_PATH = "/config/image-builder-config.yaml"  # the Go tool's default --config
GO_TAGS_OUTPUT_FILE = "/generated-tags.json"  # the Go tool's default --tags-output-file


def _ours(argv: Sequence[str]) -> bool:
    """Our own spelling with the global flags first: ``--silent --log-dir L build ...``."""
    rest = list(argv)
    while (rest and rest[0] in ("--silent", "-q", "--quiet", "--log-dir")) or (
        rest and rest[0].startswith("--log-dir=")
    ):
        rest = rest[2:] if rest[0] == "--log-dir" else rest[1:]
    return bool(rest) and not rest[0].startswith("-")


def _go_flag(token: str) -> bool:
    """``-flag``, ``--flag``, ``-flag=value`` or ``--flag=value`` for a flag of the Go tool."""
    name = token.removeprefix("-").removeprefix("-").partition("=")[0]
    return token.startswith("-") and name in _GO_BOOL | _GO_VALUE


def translate_legacy_argv(
    argv: Sequence[str], *, exists: Callable[[str], bool] = os.path.exists
) -> list[str]:
    """Turn a Go-tool command line (``-tag x``, ``--export-tags=false``, ``--parse-tags-only``)
    into ours, with the Go tool's meaning: the mode comes from ``--parse-tags-only`` or
    ``--sign-only``, flags another mode reads are accepted and ignored, and the Go defaults for
    ``--config`` and (in parse-tags-only mode) ``--tags-output-file`` apply.

    Only a command line whose first flag is the Go tool's is one: any other (``-V``, a typo such
    as ``--nmae``) is ours, for our parser to run or to name the flag it does not know."""
    if not argv or not _go_flag(argv[0]) or _ours(argv):
        return list(argv)
    flags: list[tuple[str, str | None]] = []  # (name, value); None for a true bool
    rest: list[str] = []
    command = "build"
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token.startswith("-") and not token.startswith("--") and len(token) > 2:
            token = "-" + token  # Go's flag package takes -flag as well as --flag
        name, has_value, value = (
            token[2:].partition("=") if token.startswith("--") else ("", "", "")
        )
        if name in _GO_BOOL:
            if has_value and value.lower() not in _GO_TRUE + _GO_FALSE:
                raise UsageError(f"--{name}={value}: a Go boolean flag takes true or false")
            if has_value and value.lower() in _GO_FALSE:
                continue
            if name == "sign-only" or (name == "parse-tags-only" and command != "sign"):
                command = "tags" if name == "parse-tags-only" else "sign"  # Go: sign-only wins
            else:
                flags.append((name, None))
        elif name in _GO_VALUE:
            if not has_value:
                if not tokens:
                    raise UsageError(f"--{name} needs a value; see '{PROG} --help'")
                value = tokens.pop(0)
            flags.append((_GO_RENAMED.get(name, name), value))
        else:
            rest.append(token)  # one of ours (or a mistake argparse will name)
    given = {name for name, _ in flags}
    if "config" not in given and exists(GO_CONFIG_PATH):
        flags.append(("config", GO_CONFIG_PATH))
    if command == "tags" and "tags-output-file" not in given:
        flags.append(("tags-output-file", GO_TAGS_OUTPUT_FILE))
    wanted = _MODE_FLAGS[command] | {_GO_RENAMED.get(n, n) for n in _MODE_FLAGS[command]}
    front: list[str] = []
    out: list[str] = []
    for name, flag_value in flags:
        token = f"--{name}" if flag_value is None else f"--{name}={flag_value}"
        if name in _GLOBAL:
            front.append(token)
        elif name in wanted:
            out.append(token)
    return [*front, command, *out, *rest]


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


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # pydantic scans every installed distribution for plugins on import (~10 ms of start-up);
    # Image Builder uses none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    env: Mapping[str, str] = dict(os.environ)
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
        handler: Handler = args.handler
        with ExitStack() as stack:
            _config_from_stdin(args, stack)
            return handler(args, env, reporter)
    except _Exit as stop:
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
            from image_builder.commands.build import why_unwritable

            where = Path(exc.filename) if exc.filename else Path.cwd()
            reporter.error(f"cannot write {where}: {why_unwritable(where, exc)}; free space, rerun")
            return 1
        reporter.error(
            f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report the traceback"
        )
        return 1
