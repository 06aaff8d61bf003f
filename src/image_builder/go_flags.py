"""The Go tool's command lines (``-tag x``, ``--export-tags=false``, ``--parse-tags-only``),
translated into ours before parsing, with the Go tool's meaning."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from image_builder.errors import UsageError

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
GO_FLAGS = frozenset(_GO_BOOL | _GO_VALUE)
_GO_RENAMED = {"azure-access-token": "ado-pat"}
_GLOBAL = {"silent", "log-dir"}  # --debug never gets here: main() takes it out first
# What each mode reads; the Go tool accepted, and ignored, every other flag in that mode.
_MODE_FLAGS: dict[str, frozenset[str]] = {
    "tags": frozenset(
        {"config", "context", "name", "dockerfile", "tag", "tag-base64", "tags-output-file"}
    ),
    "sign": frozenset({"images-to-sign", "config", "repo", "oidc-token", "ado-state-output"}),
    # --ado-state-output: the Go tool set its variable in sign-only mode only.
    "build": GO_FLAGS - {"sign-only", "parse-tags-only", "images-to-sign", "ado-state-output"},
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
    return token.startswith("-") and name in GO_FLAGS


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
                    raise UsageError(f"--{name} needs a value; see 'image-builder --help'")
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
