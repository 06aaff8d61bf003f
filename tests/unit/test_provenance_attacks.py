"""Attacks on provenance by someone who controls the Dockerfile, can push to a repository but
holds no key, or holds a token for their own repository; each was seen to succeed against the
first version of this feature."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder import base_images
from image_builder.commands.signing import ProvenanceExpectations
from image_builder.context import CIContext
from image_builder.errors import RuntimeFailure
from image_builder.oci import Reference
from image_builder.provenance import identity, mismatch, read
from image_builder.registry import OCI_MANIFEST, RegistryClient
from image_builder.signing import SignTarget
from image_builder.signing.attest import Found, attest
from image_builder.signing.dsse import EnvelopeError, open_envelope, pae, seal
from image_builder.signing.layers import read_layers
from image_builder.trust import VerifiedClaims
from tests.support.mock_registry import mock_registry

SHA = "1" * 40
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
KEY = ec.generate_private_key(ec.SECP256R1())


def client(answer: Callable[[httpx.Request], httpx.Response], seen: list[str]) -> RegistryClient:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}{request.url.path}")
        return answer(request)

    return mock_registry(record)


def statement(subjects: list[str], **external: object) -> bytes:
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": d.removeprefix("sha256:")}} for d in subjects],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {
                    "buildType": "https://example.com/bt",
                    "externalParameters": {"source": {}, **external},
                    "internalParameters": {"identityFromToken": True},
                },
                "runDetails": {"builder": {"id": "https://builder.example"}},
            },
        }
    ).encode()


# --- a hostile registry ---------------------------------------------------------------------------


def test_deeply_nested_json_is_a_malformed_envelope_not_a_crash() -> None:
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(b"[" * 100_000 + b"]" * 100_000, KEY.public_key())
    assert str(refused.value) == "malformed DSSE envelope"


def test_an_envelope_with_thousands_of_signatures_is_refused_before_any_is_tried() -> None:
    envelope = json.loads(seal(b"{}", KEY))
    envelope["signatures"] *= 5000
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(
            json.dumps(envelope).encode(), ec.generate_private_key(ec.SECP256R1()).public_key()
        )
    assert str(refused.value) == (
        "an envelope with 5000 signatures, more than 8; refusing to try them"
    )


def test_url_safe_base64_is_read_as_dsse_allows() -> None:
    payload = b'{"a": "\xff\xfe"}' * 3
    signature = KEY.sign(pae("application/vnd.in-toto+json", payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "signatures": [{"sig": base64.urlsafe_b64encode(signature).decode()}],
    }
    assert open_envelope(json.dumps(envelope).encode(), KEY.public_key()) == payload


def test_a_planted_layer_without_a_digest_is_dropped_not_written_back() -> None:
    kept = {"mediaType": "x", "digest": DIGEST, "size": 1}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "layers": [
            {"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 1},
            {"mediaType": "x", "digest": "sha256:nothex", "size": 1},
            kept,
        ],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=json.dumps(manifest).encode(), headers={"content-type": OCI_MANIFEST}
        )

    found = read_layers(client(answer, []), Reference(host="r.example", repository="a", tag="t"))
    assert [layer.document() for layer in found] == [kept]


def test_only_unsigned_statements_say_so() -> None:
    found = Found(digest=DIGEST, verified=(), problems=(), layers=0, unsigned=2)
    assert found.problem == "only 2 unsigned statement(s), which no key signed"


# --- the signer never stores a statement where it does not name the digest -------------------------


def test_the_signer_refuses_to_store_a_statement_for_digests_it_does_not_name() -> None:
    seen: list[str] = []
    target = SignTarget(
        reference=Reference(host="r.example", repository="team/app", digest=OTHER),
        tags=("v1",),
        size=1,
        media_type=OCI_MANIFEST,
    )
    registry = client(lambda r: httpx.Response(500), seen)
    with pytest.raises(RuntimeFailure) as refused:
        attest(registry, [target], statement([DIGEST]), KEY)
    assert str(refused.value) == (
        f"the provenance statement does not name {OTHER}, which the registry holds for this "
        "image; nothing was attested"
    )
    assert seen == []


# --- the Dockerfile chooses what the trusted side asks for ----------------------------------------


def test_a_withheld_build_argument_reaches_no_request_name_or_message() -> None:
    seen: list[str] = []
    registry = client(lambda r: httpx.Response(404, json={"errors": []}), seen)
    dockerfile = "ARG NPM_TOKEN\nFROM evil.example/x:${NPM_TOKEN}\n"
    bases = base_images.resolve(
        registry,
        dockerfile,
        build_args={"NPM_TOKEN": "s3cr3t-value"},
        platforms=("linux/amd64",),
        host_platform="linux/amd64",
        withheld=("NPM_TOKEN",),
    )
    assert seen == []
    assert "s3cr3t-value" not in repr(bases)
    assert [b.problem for b in bases] == [
        "NPM_TOKEN has no value; give it a default (ARG NPM_TOKEN=...) or pass --build-arg "
        "NPM_TOKEN=..."
    ]


def test_a_registrys_error_text_is_not_echoed() -> None:
    registry = client(lambda r: httpx.Response(400, text="INJECTED <b>text</b>"), [])
    (found,) = base_images.resolve(
        registry, "FROM evil.example/x:1\n", build_args={}, platforms=("linux/amd64",),
        host_platform="linux/amd64",
    )  # fmt: skip
    assert found.problem == "the registry of evil.example/x:1 answered with an error"


def test_no_more_names_are_resolved_than_the_entry_cap() -> None:
    seen: list[str] = []
    registry = client(lambda r: httpx.Response(404, json={"errors": []}), seen)
    registry.max_entries = 2
    dockerfile = "".join(f"FROM r.example/img{i}:1 AS s{i}\n" for i in range(5))
    bases = base_images.resolve(
        registry, dockerfile, build_args={}, platforms=("linux/amd64",), host_platform="linux/amd64"
    )
    assert len(seen) == 2
    assert [b.problem for b in bases][2:] == [
        "not resolved: the Dockerfile names more than 2 images"
    ] * 3


# --- identity: the token's claims only ------------------------------------------------------------


def claims(**fields: object) -> VerifiedClaims:
    values: dict[str, object] = {
        "issuer": "https://token.actions.githubusercontent.com",
        "repository": "org/app",
        "repository_owner": "org",
        "repository_owner_id": 1,
        "event_name": "push",
        "job_workflow_ref": "org/builder/.github/workflows/b.yml@refs/heads/main",
        "workflow_ref": None,
        "ref": "refs/heads/main",
        "sha": SHA,
        "signing_allowed": True,
        "signing_reason": "",
    }
    return VerifiedClaims(**{**values, **fields})  # type: ignore[arg-type]


CALLER = CIContext(
    ci="azure",
    event="push",
    job_type="postsubmit",
    repo_owner="org",
    repo_name="app",
    commit_sha="f" * 40,
    ref="refs/heads/release-by-the-caller",
)


def test_a_claim_the_token_lacks_is_not_filled_in_from_the_callers_context() -> None:
    found = identity(CALLER, claims(ref=None, sha=None))
    assert (found.ref, found.commit, found.verified) == (None, None, True)


TOKEN = identity(CALLER, claims())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workflow", "org/evil/.github/workflows/x.yml@refs/heads/main", "records the workflow"),
        (
            "event",
            "workflow_dispatch",
            "records the event workflow_dispatch, but the token says push",
        ),
    ],
)
def test_sign_from_report_refuses_a_statement_whose_other_identity_fields_differ(
    field: str, value: str, message: str
) -> None:
    forged = replace(TOKEN, workflow=value) if field == "workflow" else replace(TOKEN, event=value)
    data = json.loads(
        statement(
            [DIGEST],
            source={"repository": forged.source_url, "ref": forged.ref, "commit": forged.commit},
            event=forged.event,
            workflow=forged.workflow,
        )
    )
    problem = mismatch(data, digests=[DIGEST], who=TOKEN)
    assert problem is not None
    assert problem.startswith(message)


def test_sign_from_report_refuses_another_builder() -> None:
    data = json.loads(
        statement(
            [DIGEST],
            source={"repository": TOKEN.source_url, "ref": TOKEN.ref, "commit": TOKEN.commit},
            event="push",
            workflow=TOKEN.workflow,
        )
    )
    assert mismatch(data, digests=[DIGEST], who=TOKEN) is None
    assert mismatch(data, digests=[DIGEST], who=TOKEN, builder_id="https://ours.example") == (
        "records the builder https://builder.example, but this builder is https://ours.example"
    )


# --- verify: pins hold only for what a token established -------------------------------------------


def test_source_pins_fail_on_a_statement_whose_identity_no_token_verified() -> None:
    found = read(
        statement(
            [DIGEST],
            source={"repository": "https://github.com/org/app", "ref": "refs/heads/main"},
            image="team/app",
        )
    )
    untrusted = replace(found, identity_from_token=False)
    expect = ProvenanceExpectations(source_repo="org/app", ref="main")
    assert expect.problems(found) == []
    assert expect.problems(untrusted) == [
        "its source, ref and workflow were not taken from a verified token (the builder has no "
        "trust policy), so --source-repo, --ref and --workflow cannot hold"
    ]
    assert ProvenanceExpectations(builder_id="https://builder.example").problems(untrusted) == []


@pytest.mark.parametrize(
    ("repository", "holds"),
    [
        ("r.example/team/app", True),
        ("r.example/prod/team/app", True),
        ("r.example/evil/app", False),
        ("r.example/xteam/app", False),
        ("r.example/team/app/sub", False),
    ],
)
def test_a_statement_is_about_the_image_it_names(repository: str, holds: bool) -> None:
    found = read(statement([DIGEST], image="team/app"))
    assert found.with_image(repository) is holds
