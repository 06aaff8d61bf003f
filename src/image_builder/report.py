"""The build report: what was built, pushed and signed, exactly. Printed between marker lines so a
caller can parse it out of remote logs, and written atomically on request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from image_builder.atomic import write_atomic
from image_builder.errors import RuntimeFailure

BEGIN = "---IMAGE BUILD REPORT---"
END = "---END OF IMAGE BUILD REPORT---"
REPORT_VERSION = 1

# Markers count only alone on their line: tool output is streamed with such lines made inert.
_BLOCK = re.compile(
    "^" + re.escape(BEGIN) + r"$\n(.*?)\n^" + re.escape(END) + "$", re.DOTALL | re.MULTILINE
)
_AZURE_COMMAND = re.compile(r"##(vso)?\[", re.IGNORECASE)
# Remote logs (Azure DevOps) prefix every line with a timestamp.
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z\s", re.MULTILINE)


class FailedImage(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    image: str
    error: str


class SupersededImage(BaseModel):
    """A tag this build moved, which another build has moved since."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    image: str
    digest: str | None  # what the tag holds now; None when it was deleted


class SigningError(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    signer: str
    error: str


class PlatformDigest(BaseModel):
    """One platform of the pushed image, and its manifest's digest."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    platform: str  # e.g. linux/arm64
    digest: str


class SignerInfo(BaseModel):
    """A signer the build ran (or was to run), and its kind: cosign or notary."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    name: str
    type: str


class AttestationRef(BaseModel):
    """A provenance attestation stored for the pushed image: the repository@digest it is about,
    the ``.att`` tag that holds it, and the signer that signed it (None: unsigned)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    image: str  # repository@sha256:...
    reference: str  # repository:sha256-<hex>.att
    signer: str | None


class BuildReport(BaseModel):
    """``pushed`` is true only when every repository received the image and every tag was
    pointed at it. ``images_list`` names exactly the tags that hold it when the build ends; a
    tag that a concurrent build moved since is in ``superseded_images`` instead, with the digest
    it holds now. ``stored_in`` names every repository that holds the digest, tagged or not.
    ``signed`` is true only when every chosen signer signed every digest; ``signed_by`` and
    ``signing_errors`` say which did and which not; ``signers`` names every signer planned to
    run, with its type. ``manifests`` gives each platform's manifest digest of the pushed image,
    only when ``digest`` is given. ``provenance`` is the SLSA statement made for the pushed
    image (release builds), and ``attestations`` each place it was stored, signed, once it was.
    ``status`` is Succeeded, Failed or
    Cancelled (SIGTERM or SIGINT). Fields after the Go tool's are added, never renamed, so
    older readers ignore them."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    version: int = REPORT_VERSION
    status: str  # "Succeeded" or "Failed"
    pushed: bool
    signed: bool
    image_name: str
    images_list: list[str] = Field(default_factory=list)
    digest: str | None = None
    tags: list[str] = Field(default_factory=list)
    repository_path: str = ""
    architectures: list[str] = Field(default_factory=list)
    platforms: list[str] = Field(default_factory=list)
    failed_images: list[FailedImage] = Field(default_factory=list)
    superseded_images: list[SupersededImage] = Field(default_factory=list)
    stored_in: list[str] = Field(default_factory=list)  # repository@digest
    publish_mode: str | None = None
    signed_by: list[str] = Field(default_factory=list)
    signing_errors: list[SigningError] = Field(default_factory=list)
    error: str | None = None
    manifests: list[PlatformDigest] = Field(default_factory=list)  # of what the registry holds
    signers: list[SignerInfo] = Field(default_factory=list)  # those planned to run
    provenance: dict[str, Any] | None = None  # the in-toto statement, before it is signed
    attestations: list[AttestationRef] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json()

    def block(self) -> str:
        """The report between its marker lines. Text in it may come from a build (an error
        message), so a ``[`` that Azure DevOps would read as a logging command is written as the
        JSON escape ``\\u005b``: the same JSON, inert in a log."""
        text = _AZURE_COMMAND.sub(lambda m: m.group(0)[:-1] + "\\u005b", self.to_json())
        return f"{BEGIN}\n{text}\n{END}"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json() + "\n")


def parse_from_logs(logs: str) -> BuildReport:
    """The last report found between the marker lines in ``logs``."""
    cleaned = _TIMESTAMP.sub("", logs)
    blocks = _BLOCK.findall(cleaned)
    if not blocks:
        raise RuntimeFailure("no build report between the marker lines in the logs")
    try:
        return BuildReport.model_validate(json.loads(blocks[-1]))
    except (ValueError, ValidationError) as exc:
        raise RuntimeFailure(f"the build report in the logs is not valid: {exc}") from None
