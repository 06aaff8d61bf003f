"""The one error hierarchy. Each error carries its exit code and a message that says how to fix it.

Exit codes: 2 for anything the caller can fix by changing their input (flags, config, payloads,
tokens, paths, templates) or for an unsupported situation; 1 for a runtime failure.
"""

from __future__ import annotations


class ImageBuilderError(Exception):
    """Base of every error this tool reports. ``str(err)`` is the one-line message for the user."""

    exit_code: int = 1


class InputError(ImageBuilderError):
    """Bad input from the caller: a flag, a path, a payload, an env file."""

    exit_code = 2


class TrustError(InputError):
    """The caller's token is not trusted. The message says which rule failed; it never holds the
    token."""


class UsageError(InputError):
    """Command-line usage that cannot be parsed."""


class ConfigError(InputError):
    """config.yaml cannot be read, parsed or validated."""


class TemplateError(InputError):
    """A tag template uses something outside the supported Go-template subset, or fails to render."""


class TagError(InputError):
    """A tag is malformed, fails its validation, or breaks the OCI tag grammar."""


class UnsupportedEventError(InputError):
    """The CI event is one Image Builder cannot build for."""


class ToolMissingError(ImageBuilderError):
    """A required external program is not installed."""


class RuntimeFailure(ImageBuilderError):
    """Something failed while doing the work (a build, a push, a request)."""
