"""An independent checker of the in-toto Statement v1, SLSA Provenance v1 and DSSE envelope
formats, written from their specifications and from nothing in image_builder, so that a test
never checks the code against the code. Each function returns the problems it finds, each
starting with the JSON path it is about (``$.predicate.buildDefinition.buildType: ...``); an
empty list means valid. Unknown fields are accepted, as every one of these specifications asks
consumers to ignore them.

Sources (cited below by section):
- in-toto Attestation Framework v1: spec/v1/statement.md, resource_descriptor.md,
  digest_set.md, field_types.md (github.com/in-toto/attestation).
- SLSA v1.0 Provenance: slsa.dev/spec/v1.0/provenance ("Schema", "Fields").
- DSSE v1: github.com/secure-systems-lab/dsse, envelope.md and protocol.md.
- RFC 3986 section 3 (URI syntax), RFC 3339 section 5.6 (timestamps), RFC 4648 sections 4 and
  5 (base64 and base64url).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"

# RFC 3986 section 3: URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ], with
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); no part of a URI holds a space or a
# control character (section 2: they are never allowed unencoded).
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]*")

# digest_set.md: a DigestSet maps an algorithm to a lower-case hex digest; the lengths follow
# from each algorithm's output size. The git object names ("gitCommit", ...) are SHA-1 (40) or
# SHA-256 (64) hex.
_HEX_LENGTHS: dict[str, tuple[int, ...]] = {
    "sha256": (64,),
    "sha224": (56,),
    "sha384": (96,),
    "sha512": (128,),
    "sha512_224": (56,),
    "sha512_256": (64,),
    "sha3_224": (56,),
    "sha3_256": (64,),
    "sha3_384": (96,),
    "sha3_512": (128,),
    "sha1": (40,),
    "md5": (32,),
    "gitCommit": (40, 64),
    "gitTree": (40, 64),
    "gitBlob": (40, 64),
    "gitTag": (40, 64),
}
_LOWER_HEX = re.compile(r"[0-9a-f]+")

# field_types.md "Timestamp": RFC 3339 (section 5.6 date-time) in UTC, written with "Z".
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")

# RFC 4648 section 4 (standard) and section 5 (URL-safe); DSSE envelope.md allows either.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BASE64URL = re.compile(r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?")


def check_statement(data: Any) -> list[str]:
    """An in-toto Statement v1; when its predicateType is SLSA Provenance v1, its predicate too."""
    if not isinstance(data, dict):
        return ["$: a statement is a JSON object"]
    out: list[str] = []
    # statement.md "_type": REQUIRED, exactly this URI for version 1.
    if data.get("_type") != STATEMENT_TYPE:
        out.append(f"$._type: must be {STATEMENT_TYPE}, got {data.get('_type')!r}")
    # statement.md "subject": REQUIRED, a non-empty list of ResourceDescriptors, each of
    # which MUST have "digest" set; "name" is optional there (a string when present).
    subject = data.get("subject")
    if not isinstance(subject, list) or not subject:
        out.append("$.subject: must be a non-empty list of ResourceDescriptors")
    else:
        for i, entry in enumerate(subject):
            out += _descriptor(entry, f"$.subject[{i}]", subject=True)
    # statement.md "predicateType": REQUIRED, a TypeURI (field_types.md: a URI string).
    out += _uri(data.get("predicateType"), "$.predicateType", required=True)
    # statement.md "predicate": optional object; SLSA provenance needs one (see below).
    predicate = data.get("predicate")
    if "predicate" in data and not isinstance(predicate, dict):
        out.append("$.predicate: must be an object")
    elif data.get("predicateType") == SLSA_PROVENANCE_V1:
        out += _provenance(predicate, "$.predicate")
    return out


def check_envelope(data: Any, *, signed: bool = True) -> list[str]:
    """A DSSE envelope (envelope.md). ``signed``: at least one signature is required, as
    protocol.md's verification accepts no envelope without one."""
    if not isinstance(data, dict):
        return ["$: an envelope is a JSON object"]
    out: list[str] = []
    # envelope.md: "payloadType" a string (protocol.md: any string, usually a media type).
    if not isinstance(data.get("payloadType"), str) or not data["payloadType"]:
        out.append("$.payloadType: must be a non-empty string")
    # envelope.md: "payload" is Base64(SERIALIZED_BODY).
    out += _base64(data.get("payload"), "$.payload")
    signatures = data.get("signatures")
    if not isinstance(signatures, list):
        return [*out, "$.signatures: must be a list"]
    if signed and not signatures:
        out.append("$.signatures: must hold at least one signature")
    for i, entry in enumerate(signatures):
        path = f"$.signatures[{i}]"
        if not isinstance(entry, dict):
            out.append(f"{path}: must be an object")
            continue
        # envelope.md: "keyid" is optional (an unauthenticated hint), a string when present.
        if "keyid" in entry and not isinstance(entry["keyid"], str):
            out.append(f"{path}.keyid: must be a string")
        # envelope.md: "sig" is Base64(SIGNATURE), required.
        out += _base64(entry.get("sig"), f"{path}.sig", non_empty=True)
    return out


# --- SLSA Provenance v1 (slsa.dev/spec/v1.0/provenance) ------------------------------------------


def _provenance(predicate: Any, path: str) -> list[str]:
    if not isinstance(predicate, dict):
        return [f"{path}: SLSA provenance v1 needs a predicate object"]
    out: list[str] = []
    # "Provenance": buildDefinition and runDetails are both REQUIRED.
    definition = predicate.get("buildDefinition")
    if not isinstance(definition, dict):
        out.append(f"{path}.buildDefinition: required object")
    else:
        out += _build_definition(definition, f"{path}.buildDefinition")
    run = predicate.get("runDetails")
    if not isinstance(run, dict):
        out.append(f"{path}.runDetails: required object")
    else:
        out += _run_details(run, f"{path}.runDetails")
    return out


def _build_definition(definition: dict[str, Any], path: str) -> list[str]:
    # "BuildDefinition": buildType (TypeURI) and externalParameters (object) REQUIRED;
    # internalParameters (object) and resolvedDependencies (ResourceDescriptor list) optional.
    out = _uri(definition.get("buildType"), f"{path}.buildType", required=True)
    if not isinstance(definition.get("externalParameters"), dict):
        out.append(f"{path}.externalParameters: required object")
    if "internalParameters" in definition and not isinstance(
        definition["internalParameters"], dict
    ):
        out.append(f"{path}.internalParameters: must be an object")
    out += _descriptors(definition, "resolvedDependencies", path)
    return out


def _run_details(run: dict[str, Any], path: str) -> list[str]:
    # "RunDetails": builder REQUIRED; metadata and byproducts optional.
    out: list[str] = []
    builder = run.get("builder")
    if not isinstance(builder, dict):
        out.append(f"{path}.builder: required object")
    else:
        # "Builder": id (TypeURI) REQUIRED; version a map of string to string;
        # builderDependencies a list of ResourceDescriptors.
        out += _uri(builder.get("id"), f"{path}.builder.id", required=True)
        version = builder.get("version")
        if "version" in builder and not (
            isinstance(version, dict) and all(isinstance(v, str) for v in version.values())
        ):
            out.append(f"{path}.builder.version: must map strings to strings")
        out += _descriptors(builder, "builderDependencies", f"{path}.builder")
    if "metadata" in run:
        metadata = run["metadata"]
        if not isinstance(metadata, dict):
            out.append(f"{path}.metadata: must be an object")
        else:
            # "BuildMetadata": invocationId a string; startedOn and finishedOn Timestamps.
            if "invocationId" in metadata and not isinstance(metadata["invocationId"], str):
                out.append(f"{path}.metadata.invocationId: must be a string")
            for field in ("startedOn", "finishedOn"):
                if field in metadata:
                    out += _timestamp(metadata[field], f"{path}.metadata.{field}")
    out += _descriptors(run, "byproducts", path)
    return out


# --- in-toto field types -------------------------------------------------------------------------


def _descriptors(parent: dict[str, Any], field: str, path: str) -> list[str]:
    if field not in parent:
        return []
    values = parent[field]
    if not isinstance(values, list):
        return [f"{path}.{field}: must be a list of ResourceDescriptors"]
    return [p for i, v in enumerate(values) for p in _descriptor(v, f"{path}.{field}[{i}]")]


def _descriptor(value: Any, path: str, *, subject: bool = False) -> list[str]:
    """resource_descriptor.md: every field optional, but at least one of uri, digest and
    content; uri and downloadLocation are ResourceURIs, name and mediaType strings, content
    base64 bytes, annotations an object. A ``subject`` MUST have a digest (statement.md)."""
    if not isinstance(value, dict):
        return [f"{path}: a ResourceDescriptor is an object"]
    out: list[str] = []
    if subject and "digest" not in value:
        out.append(f"{path}.digest: required for every subject")
    elif not any(k in value for k in ("uri", "digest", "content")):
        out.append(f"{path}: needs at least one of uri, digest and content")
    for field in ("uri", "downloadLocation"):
        if field in value:
            out += _uri(value[field], f"{path}.{field}", required=True)
    for field in ("name", "mediaType"):
        if field in value and not isinstance(value[field], str):
            out.append(f"{path}.{field}: must be a string")
    if "digest" in value:
        out += _digest_set(value["digest"], f"{path}.digest")
    if "content" in value:
        out += _base64(value["content"], f"{path}.content")
    if "annotations" in value and not isinstance(value["annotations"], dict):
        out.append(f"{path}.annotations: must be an object")
    return out


def _digest_set(value: Any, path: str) -> list[str]:
    if not isinstance(value, dict) or not value:
        return [f"{path}: a DigestSet is a non-empty object of algorithm to digest"]
    out: list[str] = []
    for algorithm, digest in value.items():
        where = f"{path}.{algorithm}"
        if not isinstance(digest, str) or not digest:
            out.append(f"{where}: must be a non-empty string")
            continue
        lengths = _HEX_LENGTHS.get(algorithm)
        if lengths is None:
            continue  # digest_set.md allows other algorithms, in their own encoding
        if not _LOWER_HEX.fullmatch(digest):
            out.append(f"{where}: must be lower-case hex, got {digest[:80]!r}")
        elif len(digest) not in lengths:
            wanted = " or ".join(str(n) for n in lengths)
            out.append(f"{where}: must be {wanted} hex digits, got {len(digest)}")
    return out


def _uri(value: Any, path: str, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, str) or not _URI.fullmatch(value):
        return [f"{path}: must be a URI (RFC 3986), got {str(value)[:80]!r}"]
    return []


def _timestamp(value: Any, path: str) -> list[str]:
    problem = [f"{path}: must be an RFC 3339 timestamp in UTC ('Z'), got {str(value)[:80]!r}"]
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return problem
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # well-formed but no such moment, e.g. month 13
        return problem
    return []


def _base64(value: Any, path: str, *, non_empty: bool = False) -> list[str]:
    if not isinstance(value, str) or (non_empty and not value):
        return [f"{path}: must be a{' non-empty' if non_empty else ''} base64 string"]
    if _BASE64.fullmatch(value) or _BASE64URL.fullmatch(value):
        return []
    return [f"{path}: must be base64 (RFC 4648 section 4 or 5)"]
