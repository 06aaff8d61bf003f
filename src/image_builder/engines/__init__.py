"""Build engines. Engines that can stand in for each other share the :class:`Engine` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from image_builder.layout import LayoutImage
from image_builder.plan import BuildPlan


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """What a build hands to the publishing side: a verified OCI layout, read as data."""

    layout: LayoutImage
    platforms: tuple[str, ...]


class Engine(Protocol):
    def build(self, plan: BuildPlan) -> BuiltImage:
        """Build every platform of ``plan`` once, in the sandbox; raise an ImageBuilderError on
        failure."""
        ...

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        """Name ``image`` in local storage with ``references`` (for ``--no-push``)."""
        ...

    def cleanup(self, image: BuiltImage | None) -> None:
        """Remove local artefacts of a build; never raises."""
        ...
