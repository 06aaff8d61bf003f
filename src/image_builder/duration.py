"""Go-style durations (``5s``, ``1m30s``, ``250ms``), as the Go tool's config files write them."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
EXAMPLE = "a Go duration such as 5s, 1m30s or 250ms"


def parse_go_duration(text: str) -> timedelta:
    """Parse a non-negative Go duration. Raises ``ValueError`` naming the expected form."""
    s = text.strip()
    if s == "0":
        return timedelta(0)
    pos = 0
    total_ns = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"expected {EXAMPLE}, got {text!r}")
        total_ns += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f"expected {EXAMPLE}, got an empty string")
    return timedelta(microseconds=total_ns / 1000)


def format_go_duration(value: timedelta) -> str:
    """Render a duration the way Go's ``time.Duration.String`` would for whole units."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"
