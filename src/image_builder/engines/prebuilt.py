"""An engine that builds nothing: the publishing stage of a split pipeline takes the OCI layout
that a separate build job produced. That job ran the repository's code, so its layout is hostile
data; it is verified and copied exactly as a local sandbox's would be."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from image_builder import layout, workdirs
from image_builder.engines import BuiltImage
from image_builder.errors import InputError
from image_builder.plan import BuildPlan


class PrebuiltEngine:
    def __init__(self, source: Path) -> None:
        self._source = source
        self._work: workdirs.WorkDir | None = None

    def build(self, plan: BuildPlan) -> BuiltImage:
        if not (self._source / "index.json").is_file():
            raise InputError(
                f"--from-layout {self._source} holds no OCI layout (no index.json); pass the "
                "folder that `build --layout-out` wrote"
            )
        self._work = workdirs.create(Path(tempfile.gettempdir()))
        image = layout.take(self._source, self._work.path / "image", plan.platforms)
        return BuiltImage(layout=image, platforms=plan.platforms)

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        raise InputError("--from-layout publishes; it cannot be combined with --no-push")

    def cleanup(self, image: BuiltImage | None) -> None:
        del image
        if self._work is not None:
            shutil.rmtree(self._work.path, ignore_errors=True)
            self._work.release()
            self._work = None
