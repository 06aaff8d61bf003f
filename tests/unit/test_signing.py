from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder.config import parse_config
from image_builder.context import CIContext
from image_builder.errors import ConfigError, InputError
from image_builder.go_flags import translate_legacy_argv
from image_builder.http import RetryableError, RetryPolicy, retry_after_seconds
from image_builder.oci import parse_reference
from image_builder.registry import Manifest, RegistryError, sha256_digest
from image_builder.signing import PlatformManifest, SignTarget, select_signers
from image_builder.signing.cosign import (
    append_signature,
    check_payload,
    payload,
    sign_payload,
    signature_tag,
)
from image_builder.signing.keys import (
    decrypt_cosign_key,
    encrypt_cosign_key,
    generate_key_pair,
    load_private_key,
    load_public_key,
)
from image_builder.signing.notary import signify_request

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32

SIGN_CONFIG = """
sign-config:
  enabled-signers:
    '*': [everywhere]
    org/app: [app-only]
  signers:
    - {name: everywhere, type: cosign, config: {private-key: k.pem}}
    - {name: app-only, type: cosign, config: {private-key: k.pem}}
    - {name: post-only, type: cosign, job-type: [postsubmit], config: {private-key: k.pem}}
    - {name: sched-only, type: cosign, job-type: [schedule], config: {private-key: k.pem}}
"""


def ctx(job_type: str) -> CIContext:
    return CIContext(ci="github", event="x", job_type=job_type, repo_owner="org", repo_name="app")  # type: ignore[arg-type]


def test_signer_selection_with_reasons() -> None:
    config = parse_config(
        SIGN_CONFIG.replace("'*': [everywhere]", "'*': [everywhere, post-only, sched-only]")
    )
    choices = {c.name: c for c in select_signers(config, ctx("postsubmit"), "org/app")}
    assert choices["everywhere"].runs
    assert choices["everywhere"].reason == "enabled under '*'; postsubmit builds are signed"
    assert choices["app-only"].runs
    assert choices["app-only"].reason == "enabled under 'org/app'; postsubmit builds are signed"
    assert choices["post-only"].runs
    assert not choices["sched-only"].runs
    assert choices["sched-only"].reason == (
        "enabled under '*', but its job-type ['schedule'] excludes postsubmit"
    )
    other_repo = {c.name: c for c in select_signers(config, ctx("postsubmit"), "org/other")}
    assert not other_repo["app-only"].runs
    assert other_repo["app-only"].reason == "not enabled under '*' or 'org/other'"


@pytest.mark.parametrize("job_type", ["presubmit", "merge_group"])
def test_pull_requests_and_merge_groups_are_never_signed(job_type: str) -> None:
    config = parse_config(SIGN_CONFIG)
    choices = select_signers(config, ctx(job_type), "org/app")
    assert not any(c.runs for c in choices)
    assert choices[0].reason == f"enabled under '*', but {job_type} builds are never signed"


@pytest.mark.parametrize("job_type", ["schedule", "workflow_dispatch"])
def test_other_release_events_are_signed(job_type: str) -> None:
    assert select_signers(parse_config(SIGN_CONFIG), ctx(job_type), None)[0].runs


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        (
            "{name: s, type: notary, config: {endpont: x}}",
            "unknown key 'sign-config.signers[0].config.endpont'; "
            "did you mean 'sign-config.signers[0].config.endpoint'?",
        ),
        (
            "{name: s, type: notary, config: {endpoint: 'http://x', secret: {path: p}}}",
            "'sign-config.signers[0].config.endpoint': expected an https:// URL",
        ),
        (
            "{name: s, type: notary, config: {endpoint: 'https://x', secret: {path: p}, timeout: 5}}",
            "expected a Go duration such as 5s",
        ),
        (
            "{name: s, type: cosign, config: {}}",
            "'sign-config.signers[0].config.private-key' is required",
        ),
        (
            "{name: s, type: cosign, config: {private-key: k, password-env: 'BAD-NAME'}}",
            "'sign-config.signers[0].config.password-env': expected an environment variable name",
        ),
    ],
)
def test_signer_config_is_validated_by_type(signer: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"sign-config:\n  signers:\n    - {signer}\n")
    assert caught.value.exit_code == 2
    assert message in str(caught.value)


def test_the_signify_body_as_sent() -> None:
    target = SignTarget(
        reference=parse_reference(f"r.example/team/app@{DIGEST}"),
        tags=("v1", "latest"),
        size=501,
        media_type="application/vnd.oci.image.index.v1+json",
        platforms=(PlatformManifest(digest=OTHER, size=700, platform="linux/arm64"),),
    )
    assert json.loads(signify_request([target]).model_dump_json(by_alias=True)) == {
        "trustedCollections": [
            {
                "gun": "r.example/team/app",
                "targets": [
                    {"name": "v1", "byteSize": 501, "digest": "ab" * 32},
                    {"name": "latest", "byteSize": 501, "digest": "ab" * 32},
                    {"name": "sha256-" + "cd" * 32, "byteSize": 700, "digest": "cd" * 32},
                ],
            }
        ]
    }


def test_payload_and_signature() -> None:
    body = payload("r.example/team/app", DIGEST, {"ref": "refs/heads/main"})
    assert json.loads(body) == {
        "critical": {
            "identity": {"docker-reference": "r.example/team/app"},
            "image": {"docker-manifest-digest": DIGEST},
            "type": "cosign container image signature",
        },
        "optional": {"ref": "refs/heads/main"},
    }
    assert json.loads(payload("r/a", DIGEST))["optional"] is None
    key = ec.generate_private_key(ec.SECP256R1())
    signature = base64.b64decode(sign_payload(key, body))
    key.public_key().verify(signature, body, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (payload("r/a", DIGEST), None),
        (payload("r/a", OTHER), f"payload for another digest ({OTHER})"),
        (payload("r/b", DIGEST), "payload for another repository (r/b)"),
        (b"not json", "malformed payload"),
        (b'{"critical": {}}', "malformed payload"),
        (
            payload("r/a", DIGEST).replace(b"cosign container image signature", b"other"),
            "malformed payload",
        ),
    ],
)
def test_check_payload(body: bytes, problem: str | None) -> None:
    assert check_payload(body, "r/a", DIGEST) == problem


def test_cosign_key_format_round_trip(tmp_path: Path) -> None:
    key_path, pub_path = generate_key_pair(tmp_path / "cosign", b"pw")
    text = key_path.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = json.loads(base64.b64decode("".join(text.strip().splitlines()[1:-1])))
    assert body["kdf"]["name"] == "scrypt"
    assert body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(body["cipher"]["nonce"])) == 24
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    key = load_private_key(key_path, password_env="PW", env={"PW": "pw"})
    public = load_public_key(pub_path)
    assert key.public_key().public_numbers() == public.public_numbers()
    with pytest.raises(InputError, match="already exists"):
        generate_key_pair(tmp_path / "cosign", b"pw")


def test_older_cosign_pem_type_and_other_scrypt_costs(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = encrypt_cosign_key(der, b"pw").replace("SIGSTORE", "COSIGN")
    path = tmp_path / "old.key"
    path.write_text(pem)
    loaded = load_private_key(path, password_env="PW", env={"PW": "pw"})
    assert loaded.private_numbers() == key.private_numbers()
    assert decrypt_cosign_key(pem, b"pw", source="old.key") == der


@pytest.mark.parametrize(
    ("env", "password_env", "message"),
    [
        ({"PW": "nope"}, "PW", "cannot decrypt {path}: wrong password"),
        ({}, "PW", "password-env names PW, but PW is not set"),
        ({}, None, "private key {path} is encrypted; set password-env"),
    ],
)
def test_key_refusals(
    env: dict[str, str], password_env: str | None, message: str, tmp_path: Path
) -> None:
    key_path, _ = generate_key_pair(tmp_path / "k", b"secret")
    with pytest.raises(InputError) as caught:
        load_private_key(key_path, password_env=password_env, env=env)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(message.format(path=key_path))
    assert "secret" not in str(caught.value)


def test_plain_and_encrypted_pem_keys(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plain = tmp_path / "plain.pem"
    plain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert (
        load_private_key(plain, password_env=None, env={}).private_numbers()
        == key.private_numbers()
    )
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    assert (
        load_private_key(encrypted, password_env="PW", env={"PW": "pw"}).private_numbers()
        == key.private_numbers()
    )
    rsa_like = tmp_path / "p384.pem"
    rsa_like.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(InputError, match="is not an ECDSA P-256 key"):
        load_private_key(rsa_like, password_env=None, env={})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(InputError, match="is not a PEM or cosign private key"):
        load_private_key(garbage, password_env=None, env={})


def test_retry_after() -> None:
    def response(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(response("3"), now=now) == 3.0
    assert retry_after_seconds(response("3600"), now=now) == 30.0  # capped
    assert retry_after_seconds(response("Thu, 26 Nov 2026 12:00:05 GMT"), now=now) == 5.0
    assert retry_after_seconds(response("Thu, 26 Nov 2026 11:00:00 GMT"), now=now) == 0.0
    assert retry_after_seconds(response("soon"), now=now) is None
    assert retry_after_seconds(httpx.Response(503), now=now) is None


def test_retry_policy_honours_retry_after_and_stops() -> None:
    sleeps: list[float] = []
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableError("busy", retry_after=2.0 if len(calls) == 1 else None)
        return "done"

    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=1.0, budget=60)
    assert policy.run(flaky, sleep=sleeps.append) == "done"
    assert sleeps[0] == 2.0  # the server's Retry-After wins over a shorter backoff
    assert 0.05 <= sleeps[1] <= 0.2  # jittered second backoff
    calls.clear()

    def always() -> str:
        calls.append(1)
        raise RetryableError("down")

    with pytest.raises(RetryableError, match="down"):
        RetryPolicy(attempts=3, base_delay=0.01).run(always, sleep=lambda _: None)
    assert len(calls) == 3


def test_go_sign_only_spelling() -> None:
    argv = translate_legacy_argv(
        [
            "--sign-only",
            "--images-to-sign",
            "r/a:1,r/b:2",
            "--name",
            "x",
            "--config",
            "c.yaml",
            "--export-tags",
            "--ado-state-output",
        ],
        exists=lambda _: False,
    )
    assert argv == ["sign", "--images-to-sign=r/a:1,r/b:2", "--config=c.yaml", "--ado-state-output"]


class CollidingRegistry:
    """A registry whose first signature-manifest upload meets a concurrent signer's blob upload:
    Distribution answers "blob unknown" for a blob that is being written."""

    max_entries = 64

    def __init__(self) -> None:
        self.blobs: set[str] = set()
        self.manifest: bytes | None = None
        self.puts = 0

    def put_blob(self, ref: object, data: bytes) -> str:
        digest = sha256_digest(data)
        self.blobs.add(digest)
        return digest

    def put_manifest(self, ref: object, data: bytes, media_type: str) -> str:
        self.puts += 1
        if self.puts == 1:
            raise RegistryError(
                "uploading the manifest: 400 MANIFEST_BLOB_UNKNOWN: blob unknown to registry"
            )
        self.manifest = data
        return sha256_digest(data)

    def get_manifest(self, ref: object) -> Manifest:
        if self.manifest is None:
            raise RegistryError("the manifest does not exist")
        return Manifest(digest=sha256_digest(self.manifest), media_type="", data=self.manifest)


def test_a_signature_append_survives_a_concurrent_blob_upload() -> None:
    registry = CollidingRegistry()
    repo = parse_reference("registry.example/team/app")
    append_signature(
        registry,  # type: ignore[arg-type]
        repo, "sha256:" + "a" * 64, b"payload", "c2ln", sleep=lambda _: None,
    )  # fmt: skip
    assert registry.puts == 2
    assert registry.manifest is not None
    layers = json.loads(registry.manifest)["layers"]
    assert [layer["annotations"]["dev.cosignproject.cosign/signature"] for layer in layers] == [
        "c2ln"
    ]
