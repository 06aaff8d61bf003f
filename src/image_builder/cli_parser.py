"""The command line's grammar: every command and flag, its help and its examples. Refusals name
the nearest command, choice or flag; the handler of each command is named by
``set_defaults(handler=...)`` and run by :mod:`image_builder.cli`."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from image_builder import __version__
from image_builder.errors import UsageError
from image_builder.go_flags import GO_FLAGS

PROG = "image-builder"


class ParserExit(Exception):
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
        raise ParserExit(status)


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


# --- examples ---------------------------------------------------------------------------------

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


# --- commands and flags ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Trusted OCI image builds: tags from the CI event, push, sign, report.",
        epilog=MAIN_EPILOG,
        formatter_class=_formatter,
    )
    parser.also_known = tuple(f"--{flag}" for flag in sorted(GO_FLAGS))
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
    build.set_defaults(handler="build")

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
    github.set_defaults(handler="github")

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
    registry.set_defaults(handler="registry")

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
    sign.set_defaults(handler="sign")

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
    verify_token.set_defaults(handler="verify-token")

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
    verify.set_defaults(handler="verify")

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
    keygen.set_defaults(handler="keygen")

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
    signify.set_defaults(handler="signify")

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
    tags.set_defaults(handler="tags")

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
    schema.set_defaults(handler="config schema")
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
    validate.set_defaults(handler="config validate")
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
