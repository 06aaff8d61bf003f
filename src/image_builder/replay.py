"""One use per token: a file of the token ids (``jti``) already used, each kept until its token
expires (plus the verifier's leeway), under an exclusive lock.

A token builds once and signs once: ``build`` takes the uses ``build`` (and ``sign`` when it
signs), ``sign`` takes ``sign``. Agents that share tokens must share the file (or the run id must
bind the token); see docs/security.md."""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from image_builder.atomic import write_atomic
from image_builder.errors import InputError, RuntimeFailure, TrustError
from image_builder.trust import LEEWAY_SECONDS, VerifiedClaims


def default_path(env: Mapping[str, str], euid: int) -> Path:
    if euid == 0:
        return Path("/var/lib/image-builder/seen-tokens.json")
    state = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME") or "~").expanduser() / ".local/state"
    )
    return Path(state) / "image-builder" / "seen-tokens.json"


class SeenTokens:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock

    def consume(self, claims: VerifiedClaims, uses: Sequence[str]) -> None:
        """Record ``uses`` of this token, or refuse if any of them happened before."""
        if not claims.jti:
            raise TrustError(
                "token rejected: it has no jti claim, so its single use cannot be enforced"
            )
        keys = [f"{claims.issuer} {claims.jti} {use}" for use in uses]
        now = self._clock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self._path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                seen = {k: v for k, v in self._read().items() if v + LEEWAY_SECONDS >= now}
                used = [k.rsplit(" ", 1)[1] for k in keys if k in seen]
                if used:
                    raise TrustError(
                        f"token rejected: it was already used to {' and '.join(used)} (a token "
                        "authorizes one build and one signing); start a new run for a new token"
                    )
                seen.update(dict.fromkeys(keys, float(claims.expires_at)))
                write_atomic(self._path, json.dumps(seen))
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot record the token's use in {self._path}: {exc.strerror}; set seen-tokens "
                "in the config to a writable file"
            ) from None

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise InputError(
                f"{self._path} is not a seen-tokens file; remove it or point seen-tokens elsewhere"
            ) from None
        if not isinstance(data, dict):
            return {}
        return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}
