"""A local fake of GitHub's REST API, for one endpoint: ``GET /repos/{owner}/{repo}/pulls/{n}``
(https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request), answering with the documented
shape's fields that matter: ``number``, ``state``, ``head`` and ``base`` with ``sha``, ``ref`` and
``repo.full_name``. Requests are recorded with their Authorization header."""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply


class FakeGitHub(FakeServer):
    def __init__(self) -> None:
        # (repository, number) -> head sha
        self.pulls: dict[tuple[str, int], str] = {}
        self.requests: list[tuple[str, str | None]] = []
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Authorization")))
                match = re.fullmatch(r"/repos/([^/]+/[^/]+)/pulls/([0-9]+)", self.path)
                head = fake.pulls.get((match[1], int(match[2]))) if match else None
                if match is None or head is None:
                    reply(self, 404, {"message": "Not Found", "status": "404"})
                    return
                repository, number = match[1], int(match[2])
                reply(
                    self,
                    200,
                    {
                        "url": f"{fake.base_url}{self.path}",
                        "number": number,
                        "state": "open",
                        "head": {
                            "ref": "feature",
                            "sha": head,
                            "repo": {"full_name": f"fork/{repository.split('/')[1]}"},
                        },
                        "base": {
                            "ref": "main",
                            "sha": "0" * 40,
                            "repo": {"full_name": repository},
                        },
                    },
                )

        super().__init__(Handler)
