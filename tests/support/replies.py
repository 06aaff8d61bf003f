"""The one way the local fakes answer an HTTP request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: object = b"",
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str | None = None,
) -> None:
    """Send ``body`` (bytes, str, or anything JSON-able) with a Content-Length."""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
        content_type = content_type or "text/plain"
    else:
        data = json.dumps(body).encode()
        content_type = content_type or "application/json"
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
