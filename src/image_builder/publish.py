"""Publishing, content first and tags second.

Phase 1 copies the image once into every repository, by digest: no tag moves. Phase 2 runs only
when every repository holds the digest (unless the config asks for best effort), and points
each tag at it with a manifest PUT of the same bytes. Then each tag is read back: a tag that a
concurrent build has moved since is *superseded*, not failed, and is never reported as ours."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from image_builder import proc
from image_builder.engines import BuiltImage
from image_builder.errors import ImageBuilderError, RuntimeFailure
from image_builder.http import Deadline
from image_builder.oci import Destination, Reference

MAX_CONCURRENT_PUSHES = 8
_GRACE = 5.0  # seconds past the deadline for a stopped skopeo or a timed-out request to end
_READ_BACKS = 3

TagState = Literal["moved", "superseded", "failed", "not-moved"]


@dataclass(frozen=True, kw_only=True)
class Staged:
    """The image exactly as every registry gets it: its top manifest (or index) and digest."""

    source: str  # where the publisher reads it from, e.g. oci:/path:image
    digest: str
    media_type: str
    manifest: bytes
    # For an index: each platform ("linux/arm64") and its manifest's digest, in index order.
    platforms: tuple[tuple[str, str], ...] = ()
    blobs: int = 0  # configs and layers, each counted once

    def summary(self) -> str:
        """``3 blobs, 2 platforms``"""
        count = len(self.platforms) or 1
        return (
            f"{self.blobs} blob{'s' if self.blobs != 1 else ''}, "
            f"{count} platform{'s' if count != 1 else ''}"
        )


class Publisher(Protocol):
    def stage(self, image: BuiltImage, *, deadline: Deadline) -> Staged:
        """Prepare ``image`` for pushing (compressed once), fixing its digest."""
        ...

    def push(self, staged: Staged, destination: Destination, *, deadline: Deadline) -> None:
        """Copy ``staged`` into ``destination``'s repository by digest, moving no tag."""
        ...


class Tags(Protocol):
    """What phase 2 needs from a registry client."""

    def manifest_digest(self, ref: Reference) -> str | None: ...

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> str: ...


@dataclass(frozen=True, kw_only=True)
class TagResult:
    reference: Reference
    state: TagState
    detail: str = ""
    holds: str | None = None  # for a superseded tag: the digest it holds now (None: deleted)


@dataclass(kw_only=True)
class Publication:
    """What publishing did so far; filled as it goes, so a cancelled run still reports it."""

    digest: str | None = None
    platforms: tuple[tuple[str, str], ...] = ()  # of an index: (platform, manifest digest)
    stored: dict[Destination, str | None] = field(default_factory=dict)  # None: holds it
    tags: dict[Reference, TagResult] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = False

    def store(self, destination: Destination, error: str | None) -> None:
        with self._lock:
            if not self._closed:
                self.stored[destination] = error

    def tag(self, result: TagResult) -> None:
        with self._lock:
            if not self._closed:
                self.tags[result.reference] = result

    def close(self) -> None:
        """What is recorded now is the answer: a request still under way after the deadline
        can no longer change it."""
        with self._lock:
            self._closed = True

    def holding(self) -> list[Destination]:
        with self._lock:
            return [d for d, error in self.stored.items() if error is None]


def publish(
    image: BuiltImage,
    destinations: Sequence[Destination],
    publisher: Publisher,
    registry: Tags,
    *,
    atomic: bool,
    deadline: Deadline,
    progress: Callable[[str], None],
    skip: Mapping[Destination, str] | None = None,
) -> Publication:
    """Both phases; never raises for a registry's failure: every destination and tag ends up in
    the publication with what happened to it. The publication is closed on every way out, so a
    request still under way past the deadline cannot change it afterwards. ``skip`` names
    destinations known to refuse the push already (best effort), with why: none is tried."""
    done = Publication()
    skip = skip or {}
    for destination, why in skip.items():
        done.store(destination, why)
    _not_moved(done, list(skip), "this repository did not receive the image")
    lock = threading.Lock()

    def say(line: str) -> None:  # from the pushes' threads: whole lines, one at a time
        with lock:
            progress(line)

    rest = [d for d in destinations if d not in skip]
    try:
        _phases(done, image, rest, publisher, registry, atomic, deadline, say)
    finally:
        done.close()
    return done


def _phases(
    done: Publication,
    image: BuiltImage,
    destinations: Sequence[Destination],
    publisher: Publisher,
    registry: Tags,
    atomic: bool,
    deadline: Deadline,
    progress: Callable[[str], None],
) -> None:
    try:
        staged = publisher.stage(image, deadline=deadline)
    except (ImageBuilderError, OSError) as exc:
        for d in destinations:
            done.store(d, f"not pushed: preparing the image failed: {exc}")
        _not_moved(done, destinations, "the image was not pushed anywhere")
        return
    done.digest = staged.digest
    done.platforms = staged.platforms
    progress(f"phase 1: {staged.digest} into {len(destinations)} repository(ies), no tag moved")

    def store(destination: Destination) -> None:
        try:
            publisher.push(staged, destination, deadline=deadline)
            found = registry.manifest_digest(destination.by_digest(staged.digest))
            if found != staged.digest:
                raise RuntimeFailure(
                    f"pushed {destination.by_digest(staged.digest)}, but the registry "
                    f"{'does not have it' if found is None else 'answers ' + found}"
                )
            done.store(destination, None)
            # One line per repository; the tool's own lines are debug output.
            progress(f"pushed {destination.by_digest(staged.digest)} ({staged.summary()})")
        except ImageBuilderError as exc:
            done.store(destination, str(exc))

    for late in _each(store, destinations, deadline):
        done.store(late, f"no answer from {late.host} within publish-timeout")
    missing = [d for d in destinations if done.stored.get(d) is not None]
    if proc.CHILDREN.stopping:
        _not_moved(done, destinations, "image-builder was stopped before any tag moved")
        return
    if missing and atomic:
        names = ", ".join(d.name for d in missing)
        _not_moved(
            done,
            destinations,
            f"no tag moved: {names} did not receive the image (publish-mode: atomic)",
        )
        return
    _not_moved(done, missing, "this repository did not receive the image")
    holding = done.holding()
    progress(f"phase 2: {sum(len(d.tags) for d in holding)} tag(s) → {staged.digest}")
    for late in _each(lambda d: _move_tags(d, staged, registry, done, deadline), holding, deadline):
        for ref in late.references:
            if ref not in done.tags:
                why = f"no answer from {late.host} within publish-timeout; it may have moved"
                done.tag(TagResult(reference=ref, state="failed", detail=why))


def _move_tags(
    destination: Destination,
    staged: Staged,
    registry: Tags,
    done: Publication,
    deadline: Deadline,
) -> None:
    """Each tag is tried, whatever happened to the one before: a refused tag says nothing about
    the next (a dead registry has failed phase 1 already)."""
    moved = []
    for ref in destination.references:
        if proc.CHILDREN.stopping or deadline.expired:
            why = "image-builder was stopped" if proc.CHILDREN.stopping else "publish-timeout"
            done.tag(TagResult(reference=ref, state="not-moved", detail=f"{why} before it moved"))
            continue
        try:
            registry.put_manifest(ref, staged.manifest, staged.media_type)
            moved.append(ref)
        except ImageBuilderError as exc:
            # The registry may have applied the PUT and lost the answer.
            if _holds(registry, ref) == staged.digest:
                moved.append(ref)
            else:
                done.tag(TagResult(reference=ref, state="failed", detail=str(exc)))
    for ref in moved:
        done.tag(_read_back(registry, ref, staged.digest, deadline))


def _read_back(registry: Tags, ref: Reference, digest: str, deadline: Deadline) -> TagResult:
    """The PUT's answer is the registry's word that the tag held ``digest``; reading it back
    tells whether a concurrent build has moved it since. A registry that replicates may answer
    an older state for a moment, so a different answer is read again before it counts."""
    holds: str | None = None
    for attempt in range(_READ_BACKS):
        if attempt:
            time.sleep(0.5)
        try:
            holds = registry.manifest_digest(ref)
        except ImageBuilderError as exc:
            return TagResult(reference=ref, state="moved", detail=f"not read back: {exc}")
        if holds == digest:
            return TagResult(reference=ref, state="moved")
        if deadline.expired:
            break
    detail = "another build moved it since" if holds else "it was deleted since"
    return TagResult(reference=ref, state="superseded", detail=detail, holds=holds)


def _holds(registry: Tags, ref: Reference) -> str | None:
    try:
        return registry.manifest_digest(ref)
    except ImageBuilderError:
        return None


def _not_moved(done: Publication, destinations: Sequence[Destination], why: str) -> None:
    for d in destinations:
        for ref in d.references:
            done.tag(TagResult(reference=ref, state="not-moved", detail=why))


def _each(
    action: Callable[[Destination], None], destinations: Sequence[Destination], deadline: Deadline
) -> list[Destination]:
    """``action`` for every destination, concurrently (one repository each); returns those
    whose action has not ended a few seconds after ``deadline``. Their threads are abandoned
    (daemon threads): a registry that trickles its answer cannot hold the build."""
    gate = threading.Semaphore(MAX_CONCURRENT_PUSHES)
    errors: list[BaseException] = []

    def run(destination: Destination) -> None:
        with gate:
            try:
                action(destination)
            except BaseException as exc:  # a bug: raised again below, on the main thread
                errors.append(exc)

    threads = {d: threading.Thread(target=run, args=(d,), daemon=True) for d in destinations}
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join(timeout=deadline.remaining() + _GRACE)
    if errors:
        raise errors[0]
    return [d for d, thread in threads.items() if thread.is_alive()]
