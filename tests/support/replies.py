"""The one way the local fakes answer an HTTP request, and the loopback server they run on."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


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


class LocalServer:
    """A threaded HTTP server on a free loopback port; a fake subclasses it with its handler."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
