"""skopeo: the only module that runs it. The publishing side copies the verified OCI layout to a
registry, keeping its digest. It reads the registry credentials (the auth file); it never runs
anything from the repository being built."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from image_builder import proc
from image_builder.engines import BuiltImage
from image_builder.errors import RuntimeFailure
from image_builder.http import Deadline, RetryableError, RetryPolicy
from image_builder.layout import REF_NAME
from image_builder.oci import DIGEST, Destination
from image_builder.publish import Staged

_RETRY_BUDGET = 120.0  # seconds of whole-copy retries, within the publish deadline
_FATAL = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)"')
# What skopeo and buildah print for a push refused for good (400-403, 405, a bad manifest or
# name); 404 (an upload session a load balancer lost), 408 and 429 are worth another try.
_FINAL_PUSH_ERROR = re.compile(
    r"unauthorized|authentication required|denied|forbidden|manifest invalid|name invalid"
    r"|status ?code.{0,40}\b40[0-35]\b",
    re.I,
)


class SkopeoPublisher:
    """Phase 1 of :mod:`image_builder.publish`: compress the verified layout once, then copy it
    into each repository by digest. skopeo never moves a tag here."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
        on_detail: Callable[[str], None] | None = None,
        retries: int = 2,
    ) -> None:
        self._env = dict(env)
        self._on_line = on_line
        self._on_detail = on_detail  # skopeo's own lines, too fine for the terminal
        self._retries = retries

    def stage(self, image: BuiltImage, *, deadline: Deadline) -> Staged:
        """The image as every registry gets it, byte for byte. The build compresses its layers
        already; a layout that holds uncompressed ones (``--from-layout``) is compressed once,
        into a layout next to it."""
        proc.which("skopeo")
        staged = _staged(image.layout.path, image.layout.source)
        if _compressed(image.layout.path, staged):
            return staged
        target = image.layout.path.parent / "publish"
        shutil.rmtree(target, ignore_errors=True)
        dest = f"oci:{target}:{REF_NAME}"
        proc.run(
            ["skopeo", "copy", "--all", "--dest-compress", image.layout.source, dest],
            env=self._env,
            what="compressing the image for the push",
            timeout=deadline.remaining(),
        )
        return _staged(target, dest)

    def push(self, staged: Staged, destination: Destination, *, deadline: Deadline) -> None:
        """Copy ``staged`` to ``destination@digest``; the registry must keep the digest."""
        reference = destination.by_digest(staged.digest)
        args = [
            "skopeo",
            "copy",
            "--all",
            "--preserve-digests",
            "--retry-times",
            str(self._retries),
        ]
        if destination.registry.plain_http:
            args.append("--dest-tls-verify=false")
        args += [staged.source, f"docker://{reference}"]
        # skopeo retries blob transfers itself; a failed manifest upload is worth another go too,
        # so the whole copy is retried while the deadline allows.
        policy = RetryPolicy(attempts=None, base_delay=1.0, max_delay=8.0, budget=_RETRY_BUDGET)
        prefix = f"[{destination.name}] "

        def detail(line: str) -> None:
            # skopeo's per-blob lines, repeated for every repository: for the log file and
            # --debug. Publishing says one line per repository; a failure quotes skopeo's words.
            if self._on_detail is not None:
                self._on_detail(prefix + line)

        def retrying(_: int, error: RetryableError, delay: float) -> None:
            if self._on_line is not None:
                self._on_line(f"{prefix}{error}; trying again in {delay:.0f} s")

        def attempt() -> None:
            try:
                proc.run(
                    args,
                    env=self._env,
                    on_line=detail,
                    what=f"push to {destination.name}",
                    timeout=deadline.remaining(),
                )
            except (proc.Timeout, proc.Cancelled):
                raise
            except RuntimeFailure as exc:
                message = _plain(str(exc), destination.name)
                if permanent(message):
                    raise RuntimeFailure(message) from None  # another try changes nothing
                raise RetryableError(message) from exc

        try:
            policy.run(attempt, deadline=deadline, on_retry=retrying)
        except RetryableError as exc:
            raise RuntimeFailure(f"{exc} (gave up after retries)") from None


def permanent(message: str) -> bool:
    """Whether a failed push was refused for good (credentials, permissions, content), as
    skopeo and buildah word it: retrying changes nothing."""
    return _FINAL_PUSH_ERROR.search(message) is not None


def _compressed(path: Path, staged: Staged) -> bool:
    """Whether every layer of every image in the (verified) layout is compressed."""
    manifests = [staged.manifest]
    top = json.loads(staged.manifest)
    for child in top.get("manifests", []) if isinstance(top, dict) else []:
        blob = path / "blobs" / "sha256" / str(child.get("digest", "")).removeprefix("sha256:")
        manifests.append(blob.read_bytes())
    for data in manifests:
        doc = json.loads(data)
        for layer in doc.get("layers", []) if isinstance(doc, dict) else []:
            kind = str(layer.get("mediaType", ""))
            if not kind.endswith(("+gzip", "+zstd", ".tar.gzip")):
                return False
    return True


def _staged(path: Path, source: str) -> Staged:
    """The top manifest of the layout skopeo (run by image-builder) just wrote."""
    try:
        index = json.loads((path / "index.json").read_text())
        top = index["manifests"][0]
        digest, media_type = str(top["digest"]), str(top["mediaType"])
        if not DIGEST.fullmatch(digest):
            raise ValueError(digest)
        data = (path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeFailure(f"the compressed image in {path} is unreadable: {exc}") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise RuntimeFailure(f"the compressed image in {path} does not match its digest")
    platforms, blobs = _contents(path, data)
    return Staged(
        source=source,
        digest=digest,
        media_type=media_type,
        manifest=data,
        platforms=platforms,
        blobs=blobs,
    )


def _contents(path: Path, top: bytes) -> tuple[tuple[tuple[str, str], ...], int]:
    """Of the (verified) layout's top manifest: each platform of an index with its manifest's
    digest, and how many distinct blobs (configs, layers) the image has."""
    try:
        doc = json.loads(top)
        platforms: list[tuple[str, str]] = []
        manifests = [doc]
        for child in doc.get("manifests", []):
            digest = str(child["digest"])
            if not DIGEST.fullmatch(digest):
                raise ValueError(digest)
            fields = child.get("platform") or {}
            parts = (fields.get("os"), fields.get("architecture"), fields.get("variant"))
            platforms.append(("/".join(str(p) for p in parts if p), digest))
            blob = path / "blobs" / "sha256" / digest.removeprefix("sha256:")
            manifests.append(json.loads(blob.read_bytes()))
        blobs = {
            str(entry["digest"])
            for manifest in manifests
            for entry in [manifest.get("config"), *manifest.get("layers", [])]
            if isinstance(entry, dict)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RuntimeFailure(f"the compressed image in {path} is unreadable: {exc}") from None
    return tuple(platforms), len(blobs)


def _plain(message: str, where: str) -> str:
    """skopeo's fatal log line, as its message alone."""
    found = _FATAL.search(message)
    if found is None:
        return message
    text = found.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return f"push to {where} failed: {text}"
