"""Credentials come from the usual auth file: buildah pushes with them and the project's own
registry client answers the registry's basic-auth challenge with them when it confirms the push."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.integration.conftest import (
    REGISTRY_PASSWORD,
    Cli,
    Registry,
    Run,
    auth_file,
    secret,
    skopeo,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.token_server import TokenRequest, TokenServer

PASSWORD = REGISTRY_PASSWORD
PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


def test_push_with_credentials_from_the_auth_file(
    cli: Cli, private_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY a /a\n")
    (ctx / "a").write_text("private\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"registry: {private_registry.address}/private\n")
    args = (
        "build",
        "--name",
        "team/private",
        "--context",
        str(ctx),
        "--config",
        str(config),
        "--tag",
        "p",
        "--platform",
        "linux/amd64",
    )

    good = cli(
        *args,
        env={
            **PUSH,
            "REGISTRY_AUTH_FILE": str(
                auth_file(tmp_path / "good.json", private_registry.address, PASSWORD)
            ),
        },
    )
    assert good.returncode == 0, good.stderr
    assert good.report["pushed"] is True
    assert len(good.report["images_list"]) == 2

    wrong = cli(
        *args,
        env={
            **PUSH,
            "REGISTRY_AUTH_FILE": str(
                auth_file(tmp_path / "bad.json", private_registry.address, "nope")
            ),
        },
    )
    assert wrong.returncode == 1
    assert wrong.report["pushed"] is False
    assert wrong.report["images_list"] == []
    first, second = wrong.report["failed_images"]
    # refused by the check before the build: both tags carry the refusal, nothing was built
    assert first["error"] == second["error"] == wrong.report["error"]
    assert first["error"] == (
        f"registry {private_registry.address} refused the credentials for private/team/private "
        "(401); check REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )
    assert "STEP 1" not in wrong.stderr
    assert "level=fatal" not in wrong.stderr  # no push was tried


# --- token authentication (a Bearer challenge, as GHCR and Docker Hub send) ------------------------

COSIGN_PASSWORD = secret("token-registry-cosign-password-51b7")
_REPOSITORY_PATH = re.compile(r"/v2/(.+?)/(?:manifests|blobs|tags)/")


class WatchingProxy(FaultProxy):
    """Passes every request on to the registry and remembers which credentials came with it.
    The first manifest upload to ``hold_back`` waits a second, so that repository's push ends
    after the others': a client then holds another repository's token when it starts on it."""

    def __init__(self, upstream: str, hold_back: str) -> None:
        super().__init__(upstream)
        self.hold_back = f"/v2/{hold_back}/manifests/"
        self.seen: list[tuple[str, str, str]] = []  # (path, Authorization, User-Agent)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        headers = handler.headers
        self.seen.append(
            (handler.path, headers.get("Authorization", ""), headers.get("User-Agent", ""))
        )
        if handler.command == "PUT" and handler.path.startswith(self.hold_back):
            self.hold_back = "\0"  # only the first
            time.sleep(1)
        super()._handle(handler)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer({"robot": PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def token_registry(token_server: TokenServer, tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "token", token_auth=token_server.write_bundle(tmp_path))
    server.start()
    yield server
    server.stop()


def ours(request: TokenRequest) -> bool:
    """Whether the project's own registry client asked (skopeo pushes; it confirms and signs)."""
    return request.user_agent.startswith("python-httpx/")


def build_to(
    cli: Cli, tmp_path: Path, base_image: str, registries: str, auth: Path, extra: str = ""
) -> Run:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY a /a\n")
    (ctx / "a").write_text("behind a token service\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"registry: [{registries}]\n{extra}")
    return cli(
        "build", "--name", "team/app", "--context", str(ctx), "--config", str(config),
        "--tag", "t1", "--platform", "linux/amd64",
        env={**PUSH, "REGISTRY_AUTH_FILE": str(auth), "COSIGN_PASSWORD": COSIGN_PASSWORD},
    )  # fmt: skip


def digest_with(auth: Path, ref: str) -> str | None:
    done = skopeo(
        "inspect", "--tls-verify=false", "--authfile", str(auth), "--format", "{{.Digest}}",
        f"docker://{ref}",
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def test_push_through_a_token_authenticated_registry(
    cli: Cli,
    token_server: TokenServer,
    token_registry: Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    auth = auth_file(tmp_path / "auth.json", token_registry.address, PASSWORD)

    run = build_to(cli, tmp_path, base_image, f"{token_registry.address}/tok", auth)

    assert run.returncode == 0, run.stderr
    report = run.report
    assert report["pushed"] is True
    refs = report["images_list"]
    assert len(refs) == 2  # t1 and the default tag
    assert f"{token_registry.address}/tok/team/app:t1" in refs
    for ref in refs:
        assert digest_with(auth, ref) == report["digest"]
    anonymous = tmp_path / "anonymous.json"
    anonymous.write_text('{"auths": {}}')
    assert digest_with(anonymous, refs[0]) is None  # the registry does check the token
    assert token_server.requests[-1].user is None
    assert token_server.requests[-1].repositories == {"tok/team/app"}
    assert token_server.requests[-1].granted == ()
    repository = "tok/team/app"
    assert any(
        request.user == "robot" and request.allows(repository, "pull", "push")
        for request in token_server.issued
    ), token_server.requests
    # The project's own client confirmed the push with a token of its own for this repository.
    assert any(
        ours(request) and request.repositories == {repository} for request in token_server.issued
    )
    assert all(request.status == 200 for request in token_server.requests)


def test_scopes_are_per_repository(
    cli: Cli,
    token_server: TokenServer,
    token_registry: Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    """Two repositories on one registry: every token a client presents (skopeo pushing, the
    project's client confirming) grants the repository it is presented to. A client reusing one
    repository's token for the other fails here even if it recovers from the registry's 401."""
    proxy = WatchingProxy(token_registry.address, hold_back="b/team/app").start()
    try:
        auth = auth_file(tmp_path / "auth.json", proxy.address, PASSWORD)
        run = build_to(cli, tmp_path, base_image, f"{proxy.address}/a, {proxy.address}/b", auth)
    finally:
        proxy.stop()

    assert run.returncode == 0, run.stderr
    assert run.report["pushed"] is True
    assert len(run.report["images_list"]) == 4
    repositories = {"a/team/app", "b/team/app"}
    presented: set[tuple[str, bool]] = set()
    for path, authorization, agent in proxy.seen:
        match = _REPOSITORY_PATH.match(path)
        if match is None or match[1] not in repositories or not authorization:
            continue  # a free loopback port may still hear from another test session
        issued = token_server.presented(authorization)
        assert issued is not None, f"{path}: a token the token service never issued"
        assert issued.allows(match[1]), f"{path}: presented a token for {issued.granted}"
        presented.add((match[1], agent.startswith("python-httpx/")))
    assert presented == {(repo, by_us) for repo in repositories for by_us in (True, False)}
    # The project's client asks for each repository's tokens on their own, each scope once.
    asked = [request for request in token_server.requests if ours(request)]
    assert [len(request.repositories) for request in asked] == [1] * len(asked)
    assert set().union(*(request.repositories for request in asked)) == repositories
    scopes = [request.scopes for request in asked]
    assert len(scopes) == len(set(scopes)), scopes


def test_wrong_password_is_a_clear_failure(
    cli: Cli,
    token_server: TokenServer,
    token_registry: Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    wrong = secret("not-the-token-password-07c4")
    auth = auth_file(tmp_path / "auth.json", token_registry.address, wrong)

    run = build_to(cli, tmp_path, base_image, f"{token_registry.address}/tok", auth)

    assert run.returncode == 1
    report = run.report
    assert report["pushed"] is False
    assert report["images_list"] == []
    first, second = report["failed_images"]
    assert first["error"] == (
        f"registry {token_registry.address} refused the credentials for tok/team/app (401); "
        "check REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )
    assert second["error"] == first["error"]
    assert "STEP 1" not in run.stderr  # found before the build
    assert token_server.issued == []
    assert 0 < len(token_server.requests) < 10, token_server.requests  # no retry storm
    assert wrong not in run.stdout + run.stderr


def test_cosign_signs_through_a_token_authenticated_registry(
    cli: Cli,
    token_server: TokenServer,
    token_registry: Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    keys = cli(
        "keygen", "--output-key-prefix", str(tmp_path / "release"),
        env={"COSIGN_PASSWORD": COSIGN_PASSWORD},
    )  # fmt: skip
    assert keys.returncode == 0, keys.stderr
    paths = json.loads(keys.stdout)
    secret(Path(paths["private_key"]).read_text().splitlines()[1])
    signer = (
        "sign-config:\n  enabled-signers:\n    '*': [release-key]\n  signers:\n"
        "    - name: release-key\n      type: cosign\n"
        f"      config: {{private-key: {paths['private_key']}, password-env: COSIGN_PASSWORD}}\n"
    )
    auth = auth_file(tmp_path / "auth.json", token_registry.address, PASSWORD)

    run = build_to(cli, tmp_path, base_image, f"{token_registry.address}/tok", auth, signer)

    assert run.returncode == 0, run.stderr
    assert run.report["signed"] is True
    assert run.report["signed_by"] == ["release-key"]
    ref = f"{token_registry.address}/tok/team/app:t1"
    checked = cli(
        "verify", ref, "--key", paths["public_key"], env={"REGISTRY_AUTH_FILE": str(auth)}
    )
    assert checked.returncode == 0, checked.stderr
    assert all(result["verified"] for result in json.loads(checked.stdout))
    signature = f"{ref.rsplit(':', 1)[0]}:{run.report['digest'].replace(':', '-')}.sig"
    assert digest_with(auth, signature) is not None
    # The project's own client uploaded the signature with a push token for the repository.
    assert any(
        ours(request) and request.allows("tok/team/app", "pull", "push")
        for request in token_server.issued
    ), token_server.requests


def test_a_robot_without_push_rights_is_refused(cli: Cli, base_image: str, tmp_path: Path) -> None:
    server = TokenServer({"robot": PASSWORD}, allow=lambda user, repository: ("pull",)).start()
    registry = Registry(tmp_path / "token", token_auth=server.write_bundle(tmp_path))
    try:
        registry.start()
        auth = auth_file(tmp_path / "auth.json", registry.address, PASSWORD)
        run = build_to(cli, tmp_path, base_image, f"{registry.address}/tok", auth)
    finally:
        registry.stop()
        server.stop()

    assert run.returncode == 1
    assert run.report["pushed"] is False
    first = run.report["failed_images"][0]["error"]
    assert first == (
        f"registry {registry.address} does not let these credentials push to tok/team/app (401 "
        "insufficient_scope); ask for push rights to tok/team/app, or check REGISTRY_AUTH_FILE "
        "or ~/.docker/config.json"
    )
    assert "STEP 1" not in run.stderr  # found before the build
    assert server.issued  # the login worked; the token simply grants no push
    assert not any(request.allows("tok/team/app", "push") for request in server.issued)
    assert len(server.requests) < 10, server.requests
