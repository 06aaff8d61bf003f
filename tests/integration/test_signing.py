"""Signing against the real registry and a local fake of the Signify service."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.integration.conftest import (
    Cli,
    Registry,
    Run,
    inspect_raw,
    keygen,
    secret,
    skopeo,
)
from tests.support.fake_signify import FakeSignify, Reply
from tests.support.pki import CA, write_signify_secret

PASSWORD = secret("correct horse battery staple")
PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}
PR = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "pull_request_target",
    "GITHUB_EVENT_PATH": str(EVENTS / "pull_request_target.synchronize.json"),
}


@pytest.fixture(scope="session")
def ca() -> CA:
    return CA()


@pytest.fixture
def signify(ca: CA, tmp_path: Path) -> Iterator[FakeSignify]:
    folder = tmp_path / "signify"
    folder.mkdir()
    server = FakeSignify(ca, folder).start()
    yield server
    server.stop()


def context(tmp_path: Path, base_image: str, marker: str) -> Path:
    root = tmp_path / f"ctx-{marker}"
    root.mkdir()
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY marker /marker\n")
    (root / "marker").write_text(marker + "\n")
    return root


def cosign_config(
    tmp_path: Path, registry: Registry, key: Path, *, name: str = "release-key"
) -> str:
    path = tmp_path / f"config-{name}.yaml"
    path.write_text(
        f"registry: {registry.address}/signed\ndev-registry: {registry.address}/dev\n"
        f"sign-config:\n  enabled-signers:\n    '*': [{name}]\n  signers:\n"
        f"    - name: {name}\n      type: cosign\n"
        f"      config: {{private-key: {key}, password-env: COSIGN_PASSWORD}}\n"
    )
    return str(path)


def notary_config(
    tmp_path: Path, registry: Registry, signify: FakeSignify, secret: Path, extra: str = ""
) -> str:
    path = tmp_path / "config-notary.yaml"
    path.write_text(
        f"registry: {registry.address}/notary\n"
        "sign-config:\n  enabled-signers:\n    '*': [signify-prod]\n  signers:\n"
        "    - name: signify-prod\n      type: notary\n      job-type: [postsubmit]\n      config:\n"
        f"        endpoint: {signify.url}/sign\n        rotate-endpoint: {signify.url}/rotate\n"
        f"        ca-file: {signify.ca.write(tmp_path)}\n"
        f"        secret: {{path: {secret}, type: signify}}\n{extra}"
    )
    return str(path)


def build(cli: Cli, ctx: Path, cfg: str, name: str, *extra: str, env: dict[str, str] = PUSH) -> Run:
    return cli(
        "build", "--name", name, "--context", str(ctx), "--config", cfg, *extra,
        env={**env, "COSIGN_PASSWORD": PASSWORD},
    )  # fmt: skip


def verify(cli: Cli, ref: str, pub: Path) -> Run:
    return cli("verify", ref, "--key", str(pub))


# --- cosign -------------------------------------------------------------------------------------


def test_build_sign_verify_multi_platform(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, pub = keygen(cli, tmp_path / "release", PASSWORD)
    assert key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    cfg = cosign_config(tmp_path, registry, key)
    run = build(
        cli,
        context(tmp_path, base_image, "multi"),
        cfg,
        "team/signed",
        "--platform",
        "linux/amd64,linux/arm64",
        "--tag",
        "v1",
    )
    assert run.returncode == 0, run.stderr
    report = run.report
    assert report["signed"] is True
    assert report["signed_by"] == ["release-key"]
    plan_signers = json.loads(
        build(cli, context(tmp_path, base_image, "dry"), cfg, "team/signed", "--dry-run").stdout
    )["signers"]
    assert plan_signers == [
        {
            "name": "release-key",
            "type": "cosign",
            "runs": True,
            "reason": "enabled under '*'; postsubmit builds are signed",
        }
    ]
    ref = f"{registry.address}/signed/team/signed:v1"
    checked = verify(cli, ref, pub)
    assert checked.returncode == 0, checked.stderr
    results = json.loads(checked.stdout)
    assert len(results) == 3  # the index and both platform manifests
    assert all(r["verified"] for r in results)
    assert results[0]["digest"] == report["digest"]
    # the signature carries where the image came from
    sig = inspect_raw(
        f"{registry.address}/signed/team/signed:{str(report['digest']).replace(':', '-')}.sig"
    )
    assert sig is not None
    assert len(sig["layers"]) == 1


def test_pr_build_has_no_signature(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, pub = keygen(cli, tmp_path / "k", PASSWORD)
    cfg = cosign_config(tmp_path, registry, key)
    run = build(cli, context(tmp_path, base_image, "pr"), cfg, "team/prsig", env=PR)
    assert run.returncode == 0, run.stderr
    assert run.report["signed"] is False
    assert run.report["signed_by"] == []
    checked = verify(cli, f"{registry.address}/dev/team/prsig:PR-123", pub)
    assert checked.returncode == 1
    assert "does not verify with" in checked.stderr
    assert f"the image {run.report['digest']}: no signature" in checked.stderr


def test_wrong_key_moved_tag_and_copied_signature(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, pub = keygen(cli, tmp_path / "right", PASSWORD)
    _, other_pub = keygen(cli, tmp_path / "other", PASSWORD)
    cfg = cosign_config(tmp_path, registry, key)
    first = build(
        cli, context(tmp_path, base_image, "first"), cfg, "team/tamper", "--tag", "stable"
    )
    assert first.returncode == 0, first.stderr
    ref = f"{registry.address}/signed/team/tamper:stable"
    assert verify(cli, ref, pub).returncode == 0

    wrong = verify(cli, ref, other_pub)
    assert wrong.returncode == 1
    assert "wrong key: none of 1 signature(s) verify with it" in wrong.stderr

    # an unsigned image pushed over the tag: the tag now names a digest nobody signed
    unsigned_cfg = tmp_path / "unsigned.yaml"
    unsigned_cfg.write_text(f"registry: {registry.address}/signed\n")
    moved = build(
        cli,
        context(tmp_path, base_image, "moved"),
        str(unsigned_cfg),
        "team/tamper",
        "--tag",
        "stable",
    )
    assert moved.returncode == 0, moved.stderr
    assert moved.report["digest"] != first.report["digest"]
    after = verify(cli, ref, pub)
    assert after.returncode == 1
    assert f"{moved.report['digest']}: no signature" in after.stderr
    assert (
        verify(
            cli, f"{registry.address}/signed/team/tamper@{first.report['digest']}", pub
        ).returncode
        == 0
    )

    # the first digest's signature copied onto the second digest
    repo = f"{registry.address}/signed/team/tamper"
    first_sig = f"{repo}:{str(first.report['digest']).replace(':', '-')}.sig"
    moved_sig = f"{repo}:{str(moved.report['digest']).replace(':', '-')}.sig"
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{first_sig}",
        f"docker://{moved_sig}",
    )
    assert copied.returncode == 0, copied.stderr
    forged = verify(cli, ref, pub)
    assert forged.returncode == 1
    assert f"payload for another digest ({first.report['digest']})" in forged.stderr


def test_openssl_agrees_with_the_verifier(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, pub = keygen(cli, tmp_path / "ossl", PASSWORD)
    cfg = cosign_config(tmp_path, registry, key)
    run = build(cli, context(tmp_path, base_image, "openssl"), cfg, "team/ossl", "--tag", "x")
    assert run.returncode == 0, run.stderr
    digest = str(run.report["digest"])
    sig_ref = f"{registry.address}/signed/team/ossl:{digest.replace(':', '-')}.sig"
    out = tmp_path / "sigdir"
    copied = skopeo("copy", "--src-tls-verify=false", f"docker://{sig_ref}", f"dir:{out}")
    assert copied.returncode == 0, copied.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (layer,) = manifest["layers"]
    payload = out / layer["digest"].removeprefix("sha256:")
    signature = tmp_path / "sig.der"
    signature.write_bytes(
        base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    )
    openssl = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(signature), str(payload)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert openssl.returncode == 0, openssl.stdout + openssl.stderr
    assert openssl.stdout.strip() == "Verified OK"
    body = json.loads(payload.read_text())
    assert body["critical"]["image"]["docker-manifest-digest"] == digest
    assert (
        body["critical"]["identity"]["docker-reference"] == f"{registry.address}/signed/team/ossl"
    )
    assert body["critical"]["type"] == "cosign container image signature"
    assert verify(cli, f"{registry.address}/signed/team/ossl:x", pub).returncode == 0
    # and a tampered payload fails both
    payload.write_text(payload.read_text().replace(digest, "sha256:" + "0" * 64))
    assert subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(signature), str(payload)],
        capture_output=True, check=False,
    ).returncode == 1  # fmt: skip


def test_signer_failure_leaves_images_pushed_but_unsigned(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, _ = keygen(cli, tmp_path / "k", PASSWORD)
    cfg = cosign_config(tmp_path, registry, key)
    run = cli(
        "build", "--name", "team/nopass", "--context", str(context(tmp_path, base_image, "np")), "--config", cfg,
        env={**PUSH, "COSIGN_PASSWORD": "wrong password"},
    )  # fmt: skip
    assert run.returncode == 2  # refused before building: the key cannot be opened
    assert "signer release-key: cannot decrypt" in run.stderr
    assert "wrong password" in run.stderr
    assert "Traceback" not in run.stderr


# --- notary (Signify) -----------------------------------------------------------------------------


@pytest.fixture
def signify_secret(ca: CA, tmp_path: Path) -> Path:
    cert, key = ca.pair("image-builder-client")
    secret(key.decode().splitlines()[1])
    secret(base64.b64encode(key).decode())
    return write_signify_secret(tmp_path / "signify-secret.json", cert, key)


def manifest_size(ref: str) -> int:
    done = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    return len(done.stdout.encode())


def test_notary_payload_single_platform(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    cfg = notary_config(tmp_path, registry, signify, signify_secret)
    run = build(
        cli,
        context(tmp_path, base_image, "n1"),
        cfg,
        "team/notary1",
        "--platform",
        "linux/amd64",
        "--tag",
        "latest",
    )
    assert run.returncode == 0, run.stderr
    report = run.report
    assert report["signed"] is True
    (request,) = signify.sign_requests()
    assert request.client_subject == "commonName=image-builder-client"
    digest = str(report["digest"])
    size = manifest_size(f"{registry.address}/notary/team/notary1@{digest}")
    assert request.json() == {
        "trustedCollections": [
            {
                "gun": f"{registry.address}/notary/team/notary1",
                "targets": [
                    {"name": tag, "byteSize": size, "digest": digest.removeprefix("sha256:")}
                    for tag in report["tags"]
                ],
            }
        ]
    }


def test_notary_payload_multi_platform(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    cfg = notary_config(tmp_path, registry, signify, signify_secret)
    run = build(
        cli,
        context(tmp_path, base_image, "n2"),
        cfg,
        "team/notary2",
        "--platform",
        "linux/amd64,linux/arm64",
        "--tag",
        "v2",
    )
    assert run.returncode == 0, run.stderr
    digest = str(run.report["digest"])
    index = inspect_raw(f"{registry.address}/notary/team/notary2@{digest}")
    assert index is not None
    (request,) = signify.sign_requests()
    (collection,) = request.json()["trustedCollections"]
    index_size = manifest_size(f"{registry.address}/notary/team/notary2@{digest}")
    expected = [
        {"name": tag, "byteSize": index_size, "digest": digest.removeprefix("sha256:")}
        for tag in run.report["tags"]
    ] + [
        {
            "name": m["digest"].replace(":", "-"),
            "byteSize": m["size"],
            "digest": m["digest"].removeprefix("sha256:"),
        }
        for m in index["manifests"]
    ]
    assert collection == {"gun": f"{registry.address}/notary/team/notary2", "targets": expected}


def test_notary_retries_5xx_429_and_drops_with_the_same_body(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    signify.script = [Reply(503), Reply(429, {"Retry-After": "1"}), Reply(0, drop=True), Reply(502)]
    cfg = notary_config(tmp_path, registry, signify, signify_secret)
    run = build(cli, context(tmp_path, base_image, "n3"), cfg, "team/notary3")
    assert run.returncode == 0, run.stderr
    requests = signify.sign_requests()
    assert len(requests) == 5
    assert len({r.body for r in requests}) == 1
    assert run.report["signed"] is True
    assert "signer signify-prod: attempt 1 failed (HTTP 503); retrying" in run.stderr


def test_notary_never_retries_other_4xx(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    signify.script = [Reply(400, body=b"bad collection")]
    cfg = notary_config(tmp_path, registry, signify, signify_secret)
    run = build(cli, context(tmp_path, base_image, "n4"), cfg, "team/notary4", "--tag", "v4")
    assert run.returncode == 1
    assert len(signify.sign_requests()) == 1
    report = run.report
    assert report["pushed"] is True
    assert report["signed"] is False
    assert report["status"] == "Failed"
    assert report["images_list"]  # still listed: they are in the registry
    (error,) = report["signing_errors"]
    assert error["signer"] == "signify-prod"
    assert "refused the request with HTTP 400: bad collection" in error["error"]
    assert f"{registry.address}/notary/team/notary4:v4" in error["error"]
    assert "the images are pushed but not signed" in run.stderr


def test_notary_gives_up_at_the_timeout(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    signify.script = [Reply(503)] * 50
    cfg = notary_config(
        tmp_path,
        registry,
        signify,
        signify_secret,
        extra="        timeout: 2s\n        retry-timeout: 500ms\n",
    )
    run = build(cli, context(tmp_path, base_image, "n5"), cfg, "team/notary5")
    assert run.returncode == 1
    assert "did not accept the request within 2s" in run.stderr
    assert 2 <= len(signify.sign_requests()) < 50


def test_wrong_client_certificate_is_refused(
    cli: Cli, registry: Registry, base_image: str, signify: FakeSignify, tmp_path: Path
) -> None:
    stranger = CA("some other CA")
    cert, key = stranger.pair("intruder")
    secret = write_signify_secret(tmp_path / "stranger.json", cert, key)
    cfg = notary_config(tmp_path, registry, signify, secret, extra="        timeout: 3s\n")
    run = build(cli, context(tmp_path, base_image, "n6"), cfg, "team/notary6")
    assert run.returncode == 1
    assert signify.sign_requests() == []  # the handshake failed: nothing reached the service
    assert run.report["signed"] is False
    assert "signer signify-prod" in run.stderr


def test_rotation_and_cert_status(
    cli: Cli, registry: Registry, signify: FakeSignify, ca: CA, tmp_path: Path
) -> None:
    cert, key = ca.pair("image-builder-client", lifetime=timedelta(days=1))
    secret = write_signify_secret(tmp_path / "secret.json", cert, key)
    cfg = notary_config(tmp_path, registry, signify, secret)
    status = cli("signify", "cert-status", "--config", cfg)
    assert status.returncode == 1  # inside the 2-day warning window
    assert "expires within 2 day(s); run `image-builder signify rotate`" in status.stderr
    assert json.loads(status.stdout)["subject"] == "CN=image-builder-client"

    rotated = cli("signify", "rotate", "--config", cfg)
    assert rotated.returncode == 0, rotated.stderr
    answer = json.loads(rotated.stdout)
    assert answer["previous_secret"] == str(secret) + ".previous"
    assert Path(answer["previous_secret"]).read_text() == (
        json.dumps(
            {
                "certData": base64.b64encode(cert).decode(),
                "privateKeyData": base64.b64encode(key).decode(),
            }
        )
    )
    (request,) = [r for r in signify.requests if r.path == "/rotate"]
    assert (
        request.client_subject == "commonName=image-builder-client"
    )  # authenticated with the old pair
    assert datetime.fromisoformat(answer["not_after"]) > datetime.now(UTC) + timedelta(days=6)
    assert cli("signify", "cert-status", "--config", cfg).returncode == 0
    new_secret = json.loads(secret.read_text())
    assert new_secret["privateKeyData"] != base64.b64encode(key).decode()
    assert oct(secret.stat().st_mode & 0o777) == "0o600"


def test_rotation_refuses_an_expired_certificate_and_a_mismatched_answer(
    cli: Cli, registry: Registry, signify: FakeSignify, ca: CA, tmp_path: Path
) -> None:
    cert, key = ca.pair(
        "image-builder-client",
        lifetime=timedelta(days=7),
        not_before=datetime.now(UTC) - timedelta(days=8),
    )
    secret = write_signify_secret(tmp_path / "secret.json", cert, key)
    before = secret.read_text()
    cfg = notary_config(tmp_path, registry, signify, secret)
    expired = cli("signify", "rotate", "--config", cfg)
    assert expired.returncode == 1
    assert "the Signify client certificate (CN=image-builder-client) expired on" in expired.stderr
    assert secret.read_text() == before
    assert signify.requests == []
    status = cli("signify", "cert-status", "--config", cfg)
    assert status.returncode == 1
    assert "has expired" in status.stderr

    fresh_cert, fresh_key = ca.pair("image-builder-client")
    write_signify_secret(secret, fresh_cert, fresh_key)
    other_cert, _ = ca.pair("someone-else")
    signify.rotate_reply = Reply(
        200, body=json.dumps({"certData": base64.b64encode(other_cert).decode()}).encode()
    )
    mismatched = cli("signify", "rotate", "--config", cfg)
    assert mismatched.returncode == 1
    assert "returned a certificate for another key; the secret is unchanged" in mismatched.stderr
    assert json.loads(secret.read_text())["certData"] == base64.b64encode(fresh_cert).decode()

    for reply, message in [
        (
            Reply(200, body=b'{"cert": "x"}'),
            "the rotation endpoint's answer has no base64 certData",
        ),
        (Reply(200, body=b'{"certData": "not base64!"}'), "has no base64 certData"),
        (Reply(200, body=b"[]"), "has no base64 certData"),
        (Reply(403, body=b"denied"), "the rotation endpoint answered HTTP 403: denied"),
    ]:
        signify.rotate_reply = reply
        refused = cli("signify", "rotate", "--config", cfg)
        assert refused.returncode == 1, refused.stderr
        assert message in refused.stderr
        assert json.loads(secret.read_text())["certData"] == base64.b64encode(fresh_cert).decode()
    signify.rotate_reply = None

    # The exchange may issue a certificate: once it may have arrived it is not sent again.
    for reply, message in [
        (Reply(0, drop=True), "the rotation endpoint did not answer: "),
        (Reply(503, body=b"busy"), "the rotation endpoint answered HTTP 503: busy"),
    ]:
        signify.rotate_script = [reply]
        sent = len(signify.requests)
        refused = cli("signify", "rotate", "--config", cfg)
        assert refused.returncode == 1, refused.stderr
        assert message in refused.stderr
        assert [r.path for r in signify.requests[sent:]] == ["/rotate"]
        assert json.loads(secret.read_text())["certData"] == base64.b64encode(fresh_cert).decode()
    # A 429 says it was not taken: sent again, and the rotation completes.
    signify.rotate_script = [Reply(429, {"Retry-After": "0"})]
    sent = len(signify.requests)
    rotated = cli("signify", "rotate", "--config", cfg)
    assert rotated.returncode == 0, rotated.stderr
    assert [r.path for r in signify.requests[sent:]] == ["/rotate", "/rotate"]
    assert json.loads(secret.read_text())["certData"] != base64.b64encode(fresh_cert).decode()


def test_no_secret_ever_appears_in_output(
    cli: Cli,
    registry: Registry,
    base_image: str,
    signify: FakeSignify,
    signify_secret: Path,
    tmp_path: Path,
) -> None:
    key, _ = keygen(cli, tmp_path / "quiet", PASSWORD)
    cfg_path = tmp_path / "both.yaml"
    secret_cfg = Path(notary_config(tmp_path, registry, signify, signify_secret)).read_text()
    cfg_path.write_text(
        secret_cfg.replace("'*': [signify-prod]", "'*': [signify-prod, release-key]")
        + f"    - name: release-key\n      type: cosign\n      config: {{private-key: {key}, password-env: COSIGN_PASSWORD}}\n"
    )
    outputs = tmp_path / "gh_output"
    run = build(
        cli, context(tmp_path, base_image, "quiet"), str(cfg_path), "team/quiet", "--debug",
        env={**PUSH, "GITHUB_OUTPUT": str(outputs)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(run.report["signed_by"]) == ["release-key", "signify-prod"]
    secret = json.loads(signify_secret.read_text())
    forbidden = [
        PASSWORD,
        secret["privateKeyData"],
        base64.b64decode(secret["privateKeyData"]).decode().splitlines()[1],
        key.read_text().splitlines()[1],
    ]
    everything = run.stdout + run.stderr + outputs.read_text()
    for value in forbidden:
        assert value not in everything
