"""The env file: ``KEY=value`` lines next to the Dockerfile. It is data from the repository being
built: its entries become build arguments with the file's values, never the environment's."""

from __future__ import annotations

import re
from pathlib import Path

from image_builder.errors import InputError
from image_builder.paths import inside

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_env_file(text: str, *, source: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines. Blank lines and ``#`` comments are skipped; an optional
    ``export`` prefix and one pair of matching quotes around the value are removed."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise InputError(
                f"{source}:{number}: expected KEY=value with KEY made of letters, digits and '_', "
                f"got {raw.strip()[:60]!r}"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries[key] = value
    return entries


def read_env_file(root: Path, dockerfile: Path, env_file: str) -> dict[str, str]:
    """Read ``env_file``, relative to the Dockerfile's folder and confined to the context ``root``."""
    path = inside(root, dockerfile.parent, env_file, "--env-file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"--env-file {env_file!r} does not exist at {path}; the path is relative to the "
            "Dockerfile's folder"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read --env-file {env_file!r}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--env-file {env_file!r} is not UTF-8 text") from None
    return parse_env_file(text, source=env_file)
