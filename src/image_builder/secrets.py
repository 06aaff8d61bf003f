"""Build secrets, as docker/build-push-action users know them: ``--secret id=NAME,src=FILE`` or
``--secret id=NAME,env=VARIABLE``, read by the Dockerfile with ``RUN --mount=type=secret,id=NAME``.

A secret's value is read once, here, and from then on lives only in memory, in one file of the
build's work folder that only the build account can read (see the buildah engine), and in the
build's own storage while a RUN step runs. It is never a build argument, never on a command
line, never in the build's environment, and never printed: the plan shows ids only.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from image_builder.errors import InputError

# buildah names the secret's file in its storage after the id: no separators, no "." or "..".
_ID = re.compile(r"(?!\.+$)[A-Za-z0-9_.-]{1,64}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_SIZE = 500 * 1024  # BuildKit's limit: secrets are credentials, not data
_KEYS = {"id", "src", "source", "env", "type"}
EXAMPLE = "id=npmrc,src=$HOME/.npmrc or id=token,env=TOKEN"


@dataclass(frozen=True, kw_only=True)
class SecretSource:
    """Where a secret comes from: exactly one of ``file`` and ``env``."""

    id: str
    file: Path | None = None
    env: str | None = None
    origin: str  # how the user gave it, for messages: "--secret 'id=a,src=f'"


@dataclass(frozen=True, kw_only=True)
class BuildSecret:
    """A secret to mount into the build. Its value never appears in a repr."""

    id: str
    value: bytes = field(repr=False)

    def masks(self) -> tuple[str, ...]:
        """What to hide in logs: the value and each of its lines (a RUN step may print one),
        longest first so that no part of a longer one is left showing."""
        text = self.value.decode("utf-8", errors="replace").strip()
        parts = {text, *(line.strip() for line in text.splitlines())}
        return tuple(sorted((p for p in parts if p), key=len, reverse=True))


def parse_flag(text: str) -> SecretSource:
    """One ``--secret`` value, checked for form only (nothing is read)."""
    origin = f"--secret {_shown(text)!r}"
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value:
            raise InputError(f"{origin}: expected comma-separated key=value pairs, e.g. {EXAMPLE}")
        if key not in _KEYS:
            raise InputError(
                f"{origin}: unknown key {key!r}; use id, src (or source) and env, e.g. {EXAMPLE}"
            )
        key = "src" if key == "source" else key
        if key in values:
            raise InputError(f"{origin}: {key} is given twice; give it once")
        values[key] = value
    secret_id = values.get("id")
    if secret_id is None:
        raise InputError(
            f"{origin}: no id; add id=NAME, the name that RUN --mount=type=secret,id=NAME uses"
        )
    check_id(secret_id, origin)
    src, env = values.get("src"), values.get("env")
    kind = values.get("type")
    if src is not None and env is not None:
        raise InputError(f"{origin}: give src=FILE or env=VARIABLE, not both")
    if src is None and env is None:
        raise InputError(
            f"{origin}: say where the value comes from: id={secret_id},src=FILE or "
            f"id={secret_id},env=VARIABLE"
        )
    if kind is not None and kind != ("file" if src is not None else "env"):
        raise InputError(
            f"{origin}: type={kind} does not match its source; use type=file with src= and "
            "type=env with env=, or leave type out"
        )
    if env is not None and not _VARIABLE.fullmatch(env):
        raise InputError(
            f"{origin}: {env!r} is not a variable name; use letters, digits and '_', e.g. TOKEN"
        )
    return SecretSource(
        id=secret_id, file=Path(src) if src is not None else None, env=env, origin=origin
    )


def _shown(text: str) -> str:
    """The flag for messages. Someone used to build-push-action's ``secrets: NAME=value`` may
    pass the value itself: anything but a known key's value is hidden."""
    items = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        known = key.strip().lower() in _KEYS
        items.append(f"{key}={value}" if sep and known else f"{key}=***" if sep else "***")
    return ",".join(items)


def check_id(secret_id: str, origin: str) -> None:
    if not _ID.fullmatch(secret_id):
        raise InputError(
            f"{origin}: the id {secret_id!r} may hold only letters, digits, '_', '.' and '-' "
            "(at most 64, not only dots); rename it"
        )


def check_sources(
    sources: Iterable[SecretSource],
    *,
    context: Path,
    protected_files: Iterable[Path],
    protected_env: Iterable[str],
) -> None:
    """Refuse, before anything is read: an id given twice; a file inside the build context
    (the build reads the context without any mount, pull requests included); and
    image-builder's own keys and credentials, which the build account must never reach."""
    seen: dict[str, SecretSource] = {}
    files = [Path(f) for f in protected_files]
    variables = set(protected_env)
    for source in sources:
        if source.id in seen:
            raise InputError(
                f"{source.origin}: the id {source.id} is taken by {seen[source.id].origin}; "
                "give each secret its own id"
            )
        seen[source.id] = source
        if source.env is not None and source.env in variables:
            raise InputError(
                f"{source.origin}: {source.env} holds one of image-builder's own credentials, "
                "which never reach a build; give the build a credential of its own"
            )
        if source.file is None:
            continue
        resolved = source.file.resolve()
        if resolved.is_relative_to(context.resolve()):
            raise InputError(
                f"{source.origin}: {source.file} lies inside the build context, where every "
                "build can read it without a secret mount, pull requests too; keep it outside "
                "the context"
            )
        for protected in files:
            if _same_file(resolved, protected):
                raise InputError(
                    f"{source.origin}: {source.file} is one of image-builder's own keys or "
                    "credential files, which never reach a build; give the build a credential "
                    "of its own"
                )


def _same_file(path: Path, other: Path) -> bool:
    try:
        return path == other.resolve() or os.path.samefile(path, other)
    except OSError:
        return False


def load(source: SecretSource, env: Mapping[str, str]) -> BuildSecret:
    """The secret's value, read now: a file that does not exist or cannot be read, or a
    variable that is unset or empty, is the caller's to fix."""
    if source.file is not None:
        data = _read(source.file, source.origin)
    else:
        value = env.get(source.env or "")
        if not value:
            raise InputError(
                f"{source.origin}: the variable {source.env} is not set or empty; set it, or "
                "take the secret from a file with src="
            )
        data = value.encode()
    if len(data) > MAX_SIZE:
        raise InputError(
            f"{source.origin}: the secret is larger than {MAX_SIZE // 1024} KiB; build secrets "
            "are for credentials, put data in the build context"
        )
    return BuildSecret(id=source.id, value=data)


def _read(path: Path, origin: str) -> bytes:
    try:
        # Non-blocking, so that a FIFO is refused instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(
            f"{origin}: the file {path} does not exist; give the path of the file that holds "
            "the secret"
        ) from None
    except OSError as exc:
        raise InputError(
            f"{origin}: cannot read {path} ({exc.strerror}); make it readable by image-builder"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{origin}: {path} is not a file; give the file with the secret")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(MAX_SIZE + 1)
        except OSError as exc:
            raise InputError(
                f"{origin}: cannot read {path} ({exc.strerror}); make it readable by image-builder"
            ) from None
