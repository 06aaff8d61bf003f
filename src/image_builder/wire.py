"""Registry JSON as small models: OCI descriptors, image manifests and indexes, and cosign's
signature manifests, layer annotations and simple-signing payload; and :func:`parse`, which reads
any such model (the OIDC documents in :mod:`trust` too) with a one-line message.

Whoever can push to a repository writes these documents, so they are read as untrusted input.
The keys the code reads are checked for presence and type; other keys are kept (registries and
tools add their own). A problem is one line that names the field and never repeats its value.
Importing this module builds no schema (``defer_build``): it is off the path of
``image-builder tags`` anyway, which never reads a registry.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from image_builder.errors import RuntimeFailure
from image_builder.validation import dotted

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"

M = TypeVar("M", bound=BaseModel)


class WireError(RuntimeFailure):
    """A registry document without the shape the code reads. ``str()`` is one line naming the
    field; ``kind`` is pydantic's error type (``too_many`` for a list over the cap) and ``loc``
    where in the document the problem is."""

    def __init__(self, message: str, *, kind: str, loc: tuple[Any, ...], detail: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.loc = loc
        self.detail = detail  # what is wrong, without saying where: "has no size"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


Digest = Annotated[StrictStr, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
Annotations = Annotated[dict[StrictStr, StrictStr], BeforeValidator(_none_is_empty)]


def _capped(value: object, info: ValidationInfo, name: str | None = None) -> object:
    """A list longer than the context's ``max_entries`` is refused before any entry is read."""
    limit = (info.context or {}).get("max_entries")
    if isinstance(value, list) and isinstance(limit, int) and len(value) > limit:
        raise PydanticCustomError(
            "too_many",
            "lists {count} {name}, more than max-manifest-entries ({limit})",
            {"count": len(value), "name": name or info.field_name, "limit": limit},
        )
    return value


class Platform(_Wire):
    os: StrictStr
    architecture: StrictStr
    variant: StrictStr | None = None

    def __str__(self) -> str:
        """``os/architecture[/variant]``"""
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


class Layer(_Wire):
    """Anything that names a blob by its digest. A signature manifest's layer of this shape only
    is kept as it came, whether or not this tool can read it (another tool's layer may lack what
    ours have)."""

    digest: Digest

    def document(self) -> dict[str, Any]:
        """As JSON again, with only the keys it came with (a layer written back is unchanged)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Descriptor(Layer):
    """What a manifest or index says of another blob or manifest."""

    media_type: StrictStr = Field(alias="mediaType")
    size: Annotated[StrictInt, Field(ge=0)]
    annotations: Annotations = Field(default_factory=dict)
    platform: Platform | None = None


Entries = Annotated[tuple[Descriptor, ...], BeforeValidator(_capped)]


class ImageManifest(_Wire):
    config: Descriptor
    layers: Entries
    annotations: Annotations = Field(default_factory=dict)


class ImageIndex(_Wire):
    manifests: Entries


class SignatureManifest(_Wire):
    """cosign's ``sha256-<hex>.sig`` (or ``.att``) manifest, as read before a layer is added or a
    signature is checked. ``layers``: those that are descriptors, the only ones read. ``kept``:
    every layer that names a blob by a valid digest, in order, written back unchanged when a
    layer is added. Any other entry is dropped, not refused: anyone who can push can plant one,
    and it must neither stop signing nor be written back (it names nothing, and a registry would
    refuse it)."""

    layers: tuple[Descriptor, ...] = ()
    kept: tuple[Layer, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _sort_layers(cls, data: object, info: ValidationInfo) -> object:
        if not isinstance(data, dict):
            return data
        value = data.get("layers")
        if value is None:
            return {**data, "layers": (), "kept": ()}
        if not isinstance(value, list):
            return data  # refused as not a list
        _capped(value, info, name="layers")
        layers: list[Descriptor] = []
        kept: list[Layer] = []
        for entry in value:
            try:
                layers.append(Descriptor.model_validate(entry))
                kept.append(layers[-1])
            except ValidationError:
                try:
                    kept.append(Layer.model_validate(entry))
                except ValidationError:
                    continue
        return {**data, "layers": layers, "kept": kept}


class SignatureAnnotations(_Wire):
    """The annotations cosign puts on a signature layer."""

    signature: StrictStr = Field(alias=SIGNATURE_ANNOTATION)  # base64 of the DER signature


class _Identity(_Wire):
    docker_reference: StrictStr = Field(alias="docker-reference")


class _Image(_Wire):
    docker_manifest_digest: StrictStr = Field(alias="docker-manifest-digest")


class _Critical(_Wire):
    identity: _Identity
    image: _Image
    type: StrictStr


class SimpleSigning(_Wire):
    """The payload a cosign signature signs: which image (by digest) under which name."""

    critical: _Critical
    optional: dict[str, Any] | None = None

    @property
    def digest(self) -> str:
        return self.critical.image.docker_manifest_digest

    @property
    def identity(self) -> str:
        return self.critical.identity.docker_reference


def parse(model: type[M], document: object, *, what: str, max_entries: int | None = None) -> M:
    """``document`` (parsed JSON, or JSON bytes) as ``model``; a :class:`WireError` whose message
    names the field, in sentences about ``what`` ("the manifest's layers[0] has no digest").
    Lists past ``max_entries`` are refused before their entries are read."""
    context = {"max_entries": max_entries}
    try:
        if isinstance(document, bytes):
            return model.model_validate_json(document, context=context)
        return model.model_validate(document, context=context)
    except ValidationError as exc:
        raise _problem(exc.errors(include_url=False)[0], what) from None


def _problem(error: ErrorDetails, what: str) -> WireError:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing" and loc:
        subject, detail = loc[:-1], f"has no {dotted(loc[-1:])}"
    elif kind == "too_many":  # the message names the list: "lists 65 manifests, ..."
        subject, detail = loc[:-1], _detail(error)
    elif "annotations" in loc[:-1]:  # the key is the registry's, not ours to show
        subject, detail = loc[: loc.index("annotations") + 1], f"has a value that {_detail(error)}"
    else:
        subject, detail = loc, _detail(error)
    where = f"{what}'s {dotted(subject)}" if what and subject else what or dotted(subject)
    message = f"{where} {detail}" if where else detail
    return WireError(message, kind=kind, loc=loc, detail=detail)


def _detail(error: ErrorDetails) -> str:
    """What is wrong with a value, without the value: the registry chose it."""
    kind = error["type"]
    if kind == "too_many":
        return str(error["msg"])
    if kind == "json_invalid":
        return "is not JSON"
    if kind in ("string_type", "string_unicode"):
        return "is not a string"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "is not a whole number"
    if kind == "greater_than_equal":
        return "is negative"
    if kind == "string_pattern_mismatch":
        return "is not a sha256 digest"
    if kind in ("list_type", "tuple_type"):
        return "is not a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "is not a JSON object"
    return "is malformed"
