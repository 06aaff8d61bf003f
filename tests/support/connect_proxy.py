"""A forward proxy for HTTPS, as on a self-hosted runner behind a corporate proxy: it answers
``CONNECT host:port`` by opening a tunnel to that address and relaying bytes both ways, and
remembers which addresses it tunnelled to. Anything but CONNECT gets 405."""

from __future__ import annotations

import select
import socket
from http.server import BaseHTTPRequestHandler

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply


class ConnectProxy(FakeServer):
    def __init__(self) -> None:
        self.tunnels: list[str] = []
        proxy = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_CONNECT(self) -> None:
                proxy.tunnels.append(self.path)
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                except OSError:
                    reply(self, 502, b"")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                _relay(self.connection, upstream)

            def do_GET(self) -> None:
                reply(self, 405, b"")

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.base_url


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    with upstream:
        sockets = [client, upstream]
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)
