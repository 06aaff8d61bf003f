"""OCI names, decided once: registry hosts, repositories, references, where an image goes, and
the one rule for which registries are reached over plain HTTP. Pure: no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from image_builder.errors import InputError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# The distribution spec's repository grammar: lower-case components joined by "/".
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_PATH = re.compile(rf"{COMPONENT.pattern}(?:/{COMPONENT.pattern})*")
# A registry host as the distribution reference grammar has it: DNS labels or a bracketed IPv6
# address, and an optional port.
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


def split_host(host_port: str) -> tuple[str, int | None]:
    """``(host, port)`` of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``. A bare IPv6
    address (``::1``) has no port."""
    if host_port.startswith("["):
        host, _, rest = host_port[1:].partition("]")
        port = rest.removeprefix(":")
        if rest and (not rest.startswith(":") or not port.isdecimal()):
            return host_port, None  # malformed: matches no address
        return host, int(port) if port else None
    if host_port.count(":") == 1:
        host, _, port = host_port.partition(":")
        return (host, int(port)) if port.isdecimal() else (host_port, None)
    return host_port, None


def is_loopback(host_port: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1, in any of the forms :func:`split_host` reads."""
    host, _ = split_host(host_port)
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def plain_http(host: str, insecure: Iterable[str]) -> bool:
    """The one rule: a registry host is reached over plain HTTP when it is loopback, or when the
    config's ``insecure-registries`` names it (as ``host[:port]``, or with a path after it)."""
    return is_loopback(host) or host in {entry.split("/", 1)[0] for entry in insecure}


@dataclass(frozen=True, kw_only=True)
class Reference:
    """``host/repository`` plus a tag or a digest."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``host/repository``, the identity signatures name."""
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(host=self.host, repository=self.repository, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(host=self.host, repository=self.repository, tag=tag)

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"


def parse_reference(text: str, *, default_tag: str | None = "latest") -> Reference:
    """``host[:port]/path/name[:tag][@sha256:...]`` as docker reads it: the first part is a
    registry host when it has a ``.`` or ``:``, is ``localhost``, or has upper-case letters;
    otherwise (and for ``index.docker.io``) the image is on Docker Hub, where a one-part name is
    under ``library/``. For what a user types (``sign``, ``verify``, base images); the plan
    never goes through text. ``default_tag`` is the tag of a reference that names neither."""
    original = text
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise InputError(
                f"image reference {original!r} has a malformed digest; expected sha256:<64 hex>"
            )
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not TAG.fullmatch(tag):
            raise InputError(f"image reference {original!r} has an invalid tag {tag!r}")
    first, slash, rest = text.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        host, path = first, rest
    else:
        host, path = "docker.io", text
    if host == "index.docker.io":
        host = "docker.io"
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not _HOST.fullmatch(host) or not _PATH.fullmatch(path):
        raise InputError(
            f"image reference {original!r} is not a valid OCI reference, e.g. ghcr.io/org/app:tag"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(host=host, repository=path, tag=tag, digest=digest)


@dataclass(frozen=True, kw_only=True)
class Registry:
    """A configured registry: ``host[:port]`` with an optional path under it, and whether it is
    reached over plain HTTP."""

    host: str
    path: str
    plain_http: bool

    @classmethod
    def parse(cls, text: str, insecure: Iterable[str]) -> Registry:
        host, _, path = text.strip("/").partition("/")
        return cls(host=host, path=path, plain_http=plain_http(host, insecure))

    def __str__(self) -> str:
        return f"{self.host}/{self.path}" if self.path else self.host


@dataclass(frozen=True, kw_only=True)
class Destination:
    """One repository an image goes to, with the tags it gets there."""

    registry: Registry
    repository: str  # the path on the registry's host, e.g. prod/team/app
    tags: tuple[str, ...]

    @property
    def name(self) -> str:
        """``host/repository``"""
        return f"{self.registry.host}/{self.repository}"

    @property
    def host(self) -> str:
        return self.registry.host

    def at(self, tag: str) -> Reference:
        return Reference(host=self.registry.host, repository=self.repository, tag=tag)

    def by_digest(self, digest: str) -> Reference:
        return Reference(host=self.registry.host, repository=self.repository, digest=digest)

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(self.at(tag) for tag in self.tags)


def destination(registry: Registry, name: str, tags: Iterable[str]) -> Destination:
    repository = f"{registry.path}/{name}" if registry.path else name
    return Destination(registry=registry, repository=repository, tags=tuple(tags))
