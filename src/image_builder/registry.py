"""Talking to OCI registries (the distribution API). Only this module opens registry URLs."""

from __future__ import annotations

import urllib.error
import urllib.request


def ping(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``base_url`` answers the distribution API's ``/v2/`` check (200 or 401)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v2/", timeout=timeout) as response:  # noqa: S310 - our own http(s) URL
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, OSError, ValueError):
        return False
