"""An HTTP proxy in front of the real Distribution registry that injects faults: a dropped
connection in the middle of a blob upload, bursts of 503, 429 with Retry-After, delays, and
dying after N requests. Requests pass through unchanged otherwise (the Host header is kept, so
the registry's Location headers point back at the proxy)."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler


@dataclass
class Faults:
    burst_503: int = 0  # answer this many requests with 503 first
    burst_429: int = 0  # then this many with 429 and Retry-After
    deny: bool = False  # refuse every request with 403 DENIED, for good
    retry_after: str = "1"
    delay: float = 0.0  # seconds added to every request
    drop_uploads: int = 0  # cut this many blob uploads off half-way
    die_after: int | None = None  # after this many requests, drop every connection
    only_path: str = ""  # faults apply only to paths containing this text
    # Reads (GET, HEAD) of paths ending so wait until that many PUTs to them went through (at
    # most 60 s): every writer's read-back then comes after every write.
    hold_reads: tuple[str, int] | None = None
    puts_done: int = 0
    seen: int = 0
    log: list[str] = field(default_factory=list)


class FaultProxy(FakeServer):
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults = Faults()
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_GET
            do_PUT = do_GET
            do_POST = do_GET
            do_PATCH = do_GET
            do_DELETE = do_GET

        super().__init__(Handler)

    def reset(self) -> None:
        self.faults = Faults()

    # --- the proxying --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        faults = self.faults
        applies = faults.only_path in handler.path
        with self._lock:
            faults.seen += 1
            number = faults.seen
        if faults.die_after is not None and number > faults.die_after:
            faults.log.append(f"dead {handler.command} {handler.path}")
            handler.close_connection = True
            handler.connection.close()
            return
        if faults.delay:
            time.sleep(faults.delay)
            faults.log.append(f"delay {handler.command} {handler.path}")
        body = self._read_body(handler)
        if applies and faults.deny:
            faults.log.append(f"403 {handler.command} {handler.path}")
            self._reply(handler, 403, {}, b'{"errors":[{"code":"DENIED","message":"injected"}]}')
            return
        if applies and faults.burst_503 > 0:
            faults.burst_503 -= 1
            faults.log.append(f"503 {handler.command} {handler.path}")
            self._reply(
                handler, 503, {}, b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
            )
            return
        if applies and faults.burst_429 > 0:
            faults.burst_429 -= 1
            faults.log.append(f"429 {handler.command} {handler.path}")
            self._reply(
                handler,
                429,
                {"Retry-After": faults.retry_after},
                b'{"errors":[{"code":"TOOMANYREQUESTS","message":"injected"}]}',
            )
            return
        upload = (
            "/blobs/uploads/" in handler.path
            and handler.command in ("PATCH", "PUT")
            and len(body) > 64
        )
        if applies and upload and faults.drop_uploads > 0:
            faults.drop_uploads -= 1
            faults.log.append(f"drop {handler.command} {handler.path} after {len(body) // 2} bytes")
            handler.close_connection = True
            handler.connection.close()
            return
        held = faults.hold_reads is not None and handler.path.endswith(faults.hold_reads[0])
        if held and faults.hold_reads is not None and handler.command in ("GET", "HEAD"):
            deadline = time.monotonic() + 60
            while faults.puts_done < faults.hold_reads[1] and time.monotonic() < deadline:
                time.sleep(0.05)
        self._forward(handler, body)
        if held and handler.command == "PUT":
            with self._lock:
                faults.puts_done += 1

    def _read_body(self, handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            return b"".join(chunks)
        length = int(handler.headers.get("Content-Length", "0") or 0)
        return handler.rfile.read(length) if length else b""

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() not in ("transfer-encoding", "connection", "content-length")
        }
        if body or handler.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            connection.request(handler.command, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out = {
                k: v
                for k, v in response.getheaders()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")
            }
            self._reply(
                handler,
                response.status,
                out,
                data,
                head=handler.command == "HEAD",
                length=response.getheader("Content-Length"),
            )
        finally:
            connection.close()

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        head: bool = False,
        length: str | None = None,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header(
            "Content-Length", length if head and length is not None else str(len(body))
        )
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
