"""skopeo: the only module that runs it. The publishing side copies the verified OCI layout to a
registry, keeping its digest. It reads the registry credentials (the auth file); it never runs
anything from the repository being built."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from image_builder import proc
from image_builder.engines import BuiltImage
from image_builder.errors import RuntimeFailure
from image_builder.http import RetryableError, RetryPolicy

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_FATAL = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)"')
# What skopeo prints for a push the registry refused for good (401, 403, a bad manifest).
_FINAL_PUSH_ERROR = re.compile(
    r"unauthorized|authentication required|denied|manifest invalid|status code.{0,30}40[13]", re.I
)


class SkopeoPublisher:
    def __init__(
        self,
        *,
        env: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
        retries: int = 2,
    ) -> None:
        self._env = dict(env)
        self._on_line = on_line
        self._retries = retries

    def push(self, image: BuiltImage, reference: str, *, plain_http: bool) -> str:
        """Copy ``image`` to ``reference``, compressing its layers; returns the digest the copy
        itself reported. Compression is deterministic, so every reference gets one digest, which
        the report checks."""
        proc.which("skopeo")
        digest_dir = Path(tempfile.mkdtemp(prefix="image-builder-digest-"))
        digest_file = digest_dir / "digest"
        args = [
            "skopeo",
            "copy",
            "--all",
            "--retry-times",
            str(self._retries),
        ]
        if plain_http:
            args.append("--dest-tls-verify=false")
        args += ["--digestfile", str(digest_file), image.layout.source, f"docker://{reference}"]
        # skopeo retries blob transfers itself; a failed manifest upload is worth a second go
        # too, so the whole copy is retried.
        policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=4.0, budget=120.0)
        prefix = f"[{reference}] "

        def attempt() -> None:
            emit = self._on_line
            try:
                proc.run(
                    args,
                    env=self._env,
                    on_line=(lambda line: emit(prefix + line)) if emit else None,
                    what=f"push to {reference}",
                )
            except RuntimeFailure as exc:
                message = _plain(str(exc), reference)
                if _FINAL_PUSH_ERROR.search(message):
                    # refused credentials or content: another try changes nothing
                    raise RuntimeFailure(message) from None
                raise RetryableError(message) from exc

        try:
            try:
                policy.run(attempt)
            except RetryableError as exc:
                raise RuntimeFailure(str(exc)) from None
            try:
                digest = digest_file.read_text().strip()
            except OSError:
                raise RuntimeFailure(
                    f"push to {reference} reported success but wrote no digest"
                ) from None
        finally:
            shutil.rmtree(digest_dir, ignore_errors=True)
        if not _DIGEST.fullmatch(digest):
            raise RuntimeFailure(
                f"push to {reference} reported an unexpected digest {digest[:80]!r}"
            )
        return digest


def _plain(message: str, reference: str) -> str:
    """skopeo's fatal log line, as its message alone."""
    found = _FATAL.search(message)
    if found is None:
        return message
    text = found.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return f"push to {reference} failed: {text}"
