"""Build engines. Engines that can stand in for each other share the :class:`Engine` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from image_builder.plan import BuildPlan


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """What a build left in local storage: one image, or a manifest list of per-platform images."""

    local_name: str
    is_list: bool
    platforms: tuple[str, ...]


class Engine(Protocol):
    def build(self, plan: BuildPlan) -> BuiltImage:
        """Build every platform of ``plan`` once; raise an ImageBuilderError on failure."""
        ...

    def push(self, image: BuiltImage, reference: str, *, plain_http: bool) -> str:
        """Push ``image`` to ``reference`` and return the digest the push itself reported."""
        ...

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        """Name ``image`` in local storage with ``references`` (for ``--no-push``)."""
        ...

    def cleanup(self, image: BuiltImage | None) -> None:
        """Remove local artefacts of a build; never raises."""
        ...
