"""``image-builder config schema|validate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from image_builder.paths import STREAM
from image_builder.reporter import Reporter


def run_schema(*, reporter: Reporter) -> int:
    """The JSON Schema of config.yaml; the command has no options."""
    from image_builder.config import config_schema

    reporter.result(config_schema())
    return 0


@dataclass(frozen=True, kw_only=True)
class ValidateOptions:
    config: Path  # ``-``: standard input
    shown_as: str  # the path as given, for the verdict


def run_validate(options: ValidateOptions, *, reporter: Reporter) -> int:
    from image_builder.config import load_config

    for notice in load_config(options.config).notices:
        reporter.warning(notice)
    reporter.result(f"{'<stdin>' if options.config == STREAM else options.shown_as}: valid")
    return 0
