"""The one way the local fakes answer an HTTP request (they run on
:class:`tests.support.fake_server.FakeServer`)."""

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


class QuietHandler:
    """Mixed into a fake's request handler: no access log in the test output, and no Nagle
    delay (headers and body leave in two writes; with Nagle's algorithm and the client's delayed
    ACK, every answer on a kept-alive connection would wait tens of milliseconds)."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass
