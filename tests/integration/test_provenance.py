"""Signed SLSA provenance against the real registry: made by a real two-platform build, stored in
cosign's attestation layout, checked by `verify --provenance`, by openssl over the PAE bytes, and
by a schema check written from the in-toto and SLSA specifications. Each tamper test rewrites the
attestation in the registry the way an attacker with push access could."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from image_builder.oci import Reference
from image_builder.registry import OCI_MANIFEST, make_client
from image_builder.signing.dsse import seal
from image_builder.signing.keys import load_private_key
from tests.conftest import EVENTS
from tests.integration.conftest import (
    REGISTRY_PASSWORD,
    Cli,
    Registry,
    Run,
    auth_file,
    inspect_raw,
    keygen,
    secret,
    skopeo,
)
from tests.support.slsa_spec import check_envelope, check_statement

PASSWORD = secret("provenance key password 5b1e")
BUILDER = "https://dev.azure.com/org/project/_build?definitionId=12"
PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
    "COSIGN_PASSWORD": PASSWORD,
}
PR = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "pull_request_target",
    "GITHUB_EVENT_PATH": str(EVENTS / "pull_request_target.synchronize.json"),
}
DSSE = "application/vnd.dsse.envelope.v1+json"
SLSA = "https://slsa.dev/provenance/v1"


def config(
    folder: Path, registry: Registry, key: Path, *, builder: str = BUILDER, extra: str = ""
) -> Path:
    path = folder / f"config-{abs(hash((builder, extra)))}.yaml"
    path.write_text(
        f"registry: {registry.address}/attested\ndev-registry: {registry.address}/dev\n"
        f"provenance:\n  builder-id: '{builder}'\n{extra}"
        "sign-config:\n  enabled-signers:\n    '*': [release]\n  signers:\n"
        "    - name: release\n      type: cosign\n"
        f"      config: {{private-key: {key}, password-env: COSIGN_PASSWORD}}\n"
    )
    return path


def context(folder: Path, base_image: str, marker: str) -> Path:
    root = folder / f"ctx-{marker}"
    root.mkdir()
    (root / "Dockerfile").write_text(
        f"FROM {base_image} AS tools\nRUN echo {marker} > /made\n"
        f"FROM {base_image}\nCOPY --from=tools /made /made\n"
    )
    return root


def build(
    cli: Cli, ctx: Path, cfg: Path, name: str, *extra: str, env: dict[str, str] = PUSH
) -> Run:
    return cli(
        "build", "--name", name, "--context", str(ctx), "--config", str(cfg), "--tag", "v1",
        "--build-arg", "GREETING=hello", "--build-arg", "NPM_TOKEN=" + secret("npm-9f2c1a"),
        *extra, env=env,
    )  # fmt: skip


def verify(cli: Cli, image: str, pub: Path, *extra: str) -> Run:
    return cli("verify", image, "--key", str(pub), "--provenance", *extra)


def att_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".att"


def envelopes(repository: str, digest: str) -> list[dict[str, Any]]:
    """The DSSE envelopes stored at ``digest``'s attestation tag, read with skopeo."""
    manifest = inspect_raw(f"{repository}:{att_tag(digest)}")
    assert manifest is not None, f"no attestation at {digest}"
    out = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == DSSE
        assert layer["annotations"]["predicateType"] == SLSA
        out.append(json.loads(blob(repository, layer["digest"])))
    return out


def blob(repository: str, digest: str) -> bytes:
    host, _, path = repository.partition("/")
    with closing(make_client({}, plain_http=lambda _: True)) as client:
        return client.get_blob(Reference(host=host, repository=path), digest)


def rewrite(repository: str, digest: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Replace each attestation at ``digest`` by ``change``d copies, signatures kept: what an
    attacker who can push to the repository, but holds no key, can do."""
    host, _, path = repository.partition("/")
    repo = Reference(host=host, repository=path)
    tag_ref = repo.with_tag(att_tag(digest))
    with closing(make_client({}, plain_http=lambda _: True)) as client:
        manifest = client.get_manifest(tag_ref).json()
        for layer in manifest["layers"]:
            envelope = json.loads(client.get_blob(repo, layer["digest"]))
            change(envelope)
            data = json.dumps(envelope).encode()
            layer["digest"], layer["size"] = client.put_blob(repo, data), len(data)
        client.put_manifest(tag_ref, json.dumps(manifest).encode(), OCI_MANIFEST)


def change_statement(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(envelope: dict[str, Any]) -> None:
        statement = json.loads(base64.b64decode(envelope["payload"]))
        edit(statement)
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()

    return change


@dataclass(frozen=True)
class Built:
    repository: str
    image: str  # repository@index digest
    digest: str
    report: dict[str, Any]
    pub: Path
    config: Path
    cli: Cli


@pytest.fixture(scope="module")
def attested(
    registry: Registry,
    base_image: str,
    storage_conf: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Built:
    """One two-platform release build, signed and attested, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("provenance")
    cli = Cli(storage_conf, tmp_path_factory.mktemp("home"))
    key, pub = keygen(cli, folder / "release", PASSWORD)
    cfg = config(folder, registry, key)
    ctx = context(folder, base_image, "two")
    run = build(cli, ctx, cfg, "team/attested", "--platform", "linux/amd64,linux/arm64")
    assert run.returncode == 0, run.stderr
    report = run.report
    repository = f"{registry.address}/attested/team/attested"
    digest = str(report["digest"])
    return Built(repository, f"{repository}@{digest}", digest, report, pub, cfg, cli)


def single(
    cli: Cli,
    registry: Registry,
    base_image: str,
    folder: Path,
    name: str,
    *,
    builder: str = BUILDER,
    keys: tuple[Path, Path] | None = None,
) -> tuple[str, str, Path]:
    """A one-platform release build of its own: (repository, digest, public key)."""
    key, pub = keys or keygen(cli, folder / f"key-{name}", PASSWORD)
    cfg = config(folder, registry, key, builder=builder)
    run = build(cli, context(folder, base_image, name), cfg, f"team/{name}")
    assert run.returncode == 0, run.stderr
    return f"{registry.address}/attested/team/{name}", str(run.report["digest"]), pub


# --- a release build carries it -------------------------------------------------------------------


def test_a_two_platform_release_build_signs_and_verifies_end_to_end(attested: Built) -> None:
    report = attested.report
    platforms = [m["digest"] for m in report["manifests"]]
    assert len(platforms) == 2
    # one attestation per pushed digest: the index and each platform manifest
    assert [a["image"] for a in report["attestations"]] == [
        f"{attested.repository}@{d}" for d in [attested.digest, *platforms]
    ]
    assert {a["signer"] for a in report["attestations"]} == {"release"}
    assert [a["reference"] for a in report["attestations"]] == [
        f"{attested.repository}:{att_tag(d)}" for d in [attested.digest, *platforms]
    ]
    run = verify(
        attested.cli, f"{attested.repository}:v1", attested.pub, "--json", "--builder-id", BUILDER
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["verified"] is True
    assert [m["digest"] for m in result["manifests"]] == [attested.digest, *platforms]
    assert all(
        m["provenance"]["verified"] and m["signature"]["verified"] for m in result["manifests"]
    )
    shown = result["provenance"]
    assert shown["builder_id"] == BUILDER
    assert shown["subjects"] == [attested.digest, *platforms]
    assert shown["identity_from_token"] is False  # no trust policy here
    human = verify(attested.cli, attested.image, attested.pub)
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[1] == f"  builder    {BUILDER}"
    assert "  identity   from the builder's CI context (no token verified)" in human.stdout
    # Without a token, what the builder's CI context said is no source to pin.
    pinned = verify(
        attested.cli, attested.image, attested.pub, "--source-repo", "Codertocat/Hello-World"
    )
    assert pinned.returncode == 1
    assert (
        "all 3 manifests: provenance: its source, ref and workflow were not taken from a "
        "verified token (the builder has no trust policy)"
    ) in pinned.stderr


def test_the_statement_meets_the_in_toto_and_slsa_specifications(
    attested: Built, base_image: str
) -> None:
    (envelope,) = envelopes(attested.repository, attested.digest)
    assert check_envelope(envelope) == []
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert check_statement(statement) == []
    assert statement["predicateType"] == SLSA
    platforms = {m["digest"]: m["platform"] for m in attested.report["manifests"]}
    assert [s["digest"]["sha256"] for s in statement["subject"]] == [
        d.removeprefix("sha256:") for d in [attested.digest, *platforms]
    ]
    definition = statement["predicate"]["buildDefinition"]
    external = definition["externalParameters"]
    event = json.loads((EVENTS / "push.new-branch.json").read_text())
    assert external["source"] == {
        "repository": event["repository"]["html_url"],
        "ref": event["ref"],
        "commit": event["after"],
    }
    assert external["platforms"] == ["linux/amd64", "linux/arm64"]
    assert external["buildArgs"] == {"GREETING": "hello"}  # NPM_TOKEN's value stays out
    assert external["secretBuildArgs"] == ["NPM_TOKEN"]
    assert "v1" in external["tags"]
    source, *bases = definition["resolvedDependencies"]
    assert source == {
        "uri": f"git+{event['repository']['html_url']}@{event['after']}",
        "digest": {"gitCommit": event["after"]},
    }
    # both stages' base, per platform, by the digest the registry holds for that platform
    index = inspect_raw(base_image)
    assert index is not None
    expected = {
        f"{e['platform']['os']}/{e['platform']['architecture']}": e["digest"]
        for e in index["manifests"]
    }
    assert {
        b["annotations"]["platform"]: "sha256:" + b["digest"]["sha256"] for b in bases
    } == expected
    assert all(b["name"] == base_image for b in bases)
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == BUILDER
    assert run["metadata"]["startedOn"] <= run["metadata"]["finishedOn"]
    # the statement in the report is the one signed
    assert attested.report["provenance"] == statement


def test_openssl_verifies_the_signature_over_the_pae_bytes(attested: Built, tmp_path: Path) -> None:
    (envelope,) = envelopes(attested.repository, attested.digest)
    payload = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = tmp_path / "pae.bin"
    pae.write_bytes(b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload))
    (signature,) = envelope["signatures"]
    sig = tmp_path / "sig.der"
    sig.write_bytes(base64.b64decode(signature["sig"]))

    def openssl() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(attested.pub), "-signature", str(sig), str(pae)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    done = openssl()
    assert (done.returncode, done.stdout.strip()) == (0, "Verified OK"), done.stderr
    pae.write_bytes(pae.read_bytes().replace(attested.digest[7:].encode(), b"0" * 64))
    assert openssl().returncode == 1


def test_nothing_is_added_to_the_index(attested: Built) -> None:
    index = inspect_raw(attested.image)
    assert index is not None
    platforms = [e.get("platform", {}) for e in index["manifests"]]
    assert [f"{p['os']}/{p['architecture']}" for p in platforms] == ["linux/amd64", "linux/arm64"]
    # cosign's layout: an OCI manifest at sha256-<hex>.att, one DSSE layer per attestation
    manifest = inspect_raw(f"{attested.repository}:{att_tag(attested.digest)}")
    assert manifest is not None
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"


def test_a_rerun_of_the_signing_appends_nothing(attested: Built, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(attested.report))
    for _ in range(2):
        run = attested.cli(
            "sign", "--config", str(attested.config), "--from-report", str(report), env=PUSH
        )
        assert run.returncode == 0, run.stderr
    for digest in [attested.digest, *(m["digest"] for m in attested.report["manifests"])]:
        assert len(envelopes(attested.repository, digest)) == 1


# --- tampered, copied and foreign attestations are refused ----------------------------------------


def test_a_tampered_field_is_refused(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    repository, digest, pub = single(cli, registry, base_image, tmp_path, "tampered")
    assert verify(cli, f"{repository}@{digest}", pub).returncode == 0

    def forge(statement: dict[str, Any]) -> None:
        statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["commit"] = (
            "f" * 40
        )

    rewrite(repository, digest, change_statement(forge))
    run = verify(cli, f"{repository}@{digest}", pub)
    assert run.returncode == 1
    assert (
        f"error: {repository}@{digest} does not verify with {pub}: the image {digest}: "
        "provenance: bad signature: none of 1 attestation(s) verify with the key (another key "
        "signed them, or they were changed)"
    ) in run.stderr


def test_an_attestation_copied_from_another_image_is_refused(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    keys = keygen(cli, tmp_path / "key", PASSWORD)
    victim, digest, pub = single(cli, registry, base_image, tmp_path, "victim", keys=keys)
    donor, donor_digest, _ = single(cli, registry, base_image, tmp_path, "donor", keys=keys)
    # The donor's attestation, signed by the same key, put where the victim's was.
    copied = skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
        f"docker://{donor}:{att_tag(donor_digest)}", f"docker://{victim}:{att_tag(digest)}",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    run = verify(cli, f"{victim}@{digest}", pub)
    assert run.returncode == 1
    assert (
        f"{victim}@{digest} does not verify with {pub}: the image {digest}: provenance: a "
        f"statement for other subjects ({donor_digest})"
    ) in run.stderr


def test_a_statement_of_another_build_type_is_refused(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """Signed with the same key (the key also signs other kinds of statement, say): only Image
    Builder's build type is provenance of an Image Builder build."""
    key, pub = keygen(cli, tmp_path / "key", PASSWORD)
    repository, digest, _ = single(cli, registry, base_image, tmp_path, "typed", keys=(key, pub))
    private = load_private_key(key, password_env="P", env={"P": PASSWORD})

    def other_type(envelope: dict[str, Any]) -> None:
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["buildDefinition"]["buildType"] = "https://example.com/other/v1"
        envelope.update(json.loads(seal(json.dumps(statement).encode(), private)))

    rewrite(repository, digest, other_type)
    run = verify(cli, f"{repository}@{digest}", pub)
    assert run.returncode == 1
    assert "provenance: a statement of another build type (https://example.com/other/v1)" in (
        run.stderr
    )


def test_sign_from_report_without_a_statement_says_so(attested: Built, tmp_path: Path) -> None:
    stripped = {**attested.report, "provenance": None, "attestations": []}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(stripped))
    run = attested.cli(
        "sign", "--config", str(attested.config), "--from-report", str(path), env=PUSH
    )
    assert run.returncode == 0, run.stderr
    assert (
        f"--from-report {path} carries no provenance statement (made by a publish stage that "
        "attaches none, or an older one): the images are signed without provenance"
    ) in run.stderr


def test_an_image_copied_with_its_attestations_to_another_repository_is_refused(
    attested: Built, registry: Registry
) -> None:
    """Same digests, same signed statement, another repository: the statement is about the
    image it names, which cosign's own check (subjects by digest) would not catch."""
    copy = f"{registry.address}/attested/evil/app"
    platforms = [m["digest"] for m in attested.report["manifests"]]
    for source, target in [
        (attested.image, f"{copy}:v1"),
        *(
            (f"{attested.repository}:{att_tag(d)}", f"{copy}:{att_tag(d)}")
            for d in [attested.digest, *platforms]
        ),
    ]:
        done = skopeo(
            "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{source}", f"docker://{target}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    run = verify(attested.cli, f"{copy}@{attested.digest}", attested.pub)
    assert run.returncode == 1
    assert f"provenance: a statement about the image team/attested, not {copy}" in run.stderr


def test_a_private_image_the_dockerfile_names_is_not_resolved_with_the_builders_credentials(
    cli: Cli, registry: Registry, private_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """The builder holds credentials for its registries; the Dockerfile is the caller's. An
    unused stage naming a private image must not get that image's digest into the statement."""
    private = f"{private_registry.address}/secret/base:1"
    copied = skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
        "--dest-creds", f"robot:{REGISTRY_PASSWORD}", f"docker://{base_image}", f"docker://{private}",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    key, _ = keygen(cli, tmp_path / "key", PASSWORD)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {private} AS unused\nFROM {base_image}\nRUN true\n")
    auth = auth_file(tmp_path / "auth.json", private_registry.address, REGISTRY_PASSWORD)
    run = build(
        cli, ctx, config(tmp_path, registry, key), "team/probe",
        env={**PUSH, "REGISTRY_AUTH_FILE": str(auth)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    dependencies = run.report["provenance"]["predicate"]["buildDefinition"]["resolvedDependencies"]
    (probe,) = [d for d in dependencies if d.get("name") == private]
    assert "digest" not in probe
    assert probe["annotations"]["unresolved"] == f"the registry of {private} answered with an error"


def test_a_wrong_key_is_refused(cli: Cli, attested: Built, tmp_path: Path) -> None:
    _, other = keygen(cli, tmp_path / "other", PASSWORD)
    run = verify(cli, attested.image, other)
    assert run.returncode == 1
    assert "provenance: bad signature: none of 1 attestation(s) verify with the key" in run.stderr


def test_provenance_from_another_builder_is_refused(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    repository, digest, pub = single(
        cli, registry, base_image, tmp_path, "foreign", builder="https://evil.example/builder"
    )
    run = verify(cli, f"{repository}@{digest}", pub, "--builder-id", BUILDER)
    assert run.returncode == 1
    assert f"provenance: built by https://evil.example/builder, not {BUILDER}" in run.stderr
    wrong_source = verify(cli, f"{repository}@{digest}", pub, "--source-repo", "org/other")
    assert wrong_source.returncode == 1
    assert "not org/other" in wrong_source.stderr


# --- which builds get it --------------------------------------------------------------------------


def test_a_pull_request_build_gets_none_unless_config_asks_for_an_unsigned_one(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    key, pub = keygen(cli, tmp_path / "key", PASSWORD)
    ctx = context(tmp_path, base_image, "pr")
    run = build(cli, ctx, config(tmp_path, registry, key), "team/pr", env=PR)
    assert run.returncode == 0, run.stderr
    assert (run.report["provenance"], run.report["attestations"]) == (None, [])
    digest = str(run.report["digest"])
    repository = f"{registry.address}/dev/team/pr"
    assert inspect_raw(f"{repository}:{att_tag(digest)}") is None
    refused = verify(cli, f"{repository}@{digest}", pub)
    assert refused.returncode == 1
    assert "provenance: no provenance attestation" in refused.stderr

    unsigned = config(tmp_path, registry, key, extra="  presubmits: unsigned\n")
    run = build(cli, ctx, unsigned, "team/pr-unsigned", env=PR)
    assert run.returncode == 0, run.stderr
    assert [a["signer"] for a in run.report["attestations"]] == [None]
    digest = str(run.report["digest"])
    repository = f"{registry.address}/dev/team/pr-unsigned"
    manifest = inspect_raw(f"{repository}:{att_tag(digest)}")
    assert manifest is not None
    (layer,) = manifest["layers"]  # the bare statement: an envelope needs a signature
    assert (layer["mediaType"], layer["annotations"]["predicateType"]) == (
        "application/vnd.in-toto+json",
        SLSA,
    )
    assert check_statement(json.loads(blob(repository, layer["digest"]))) == []
    refused = verify(cli, f"{repository}@{digest}", pub)
    assert refused.returncode == 1
    assert "provenance: only 1 unsigned statement(s), which no key signed" in refused.stderr


def test_verify_flags_that_check_provenance_need_provenance(cli: Cli, tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    run = cli("verify", "127.0.0.1:1/x:1", "--key", str(pub), "--builder-id", BUILDER)
    assert run.returncode == 2
    assert run.stderr.strip().endswith("--builder-id check provenance: add --provenance")


def test_sign_from_report_refuses_a_statement_about_other_images(
    attested: Built, tmp_path: Path
) -> None:
    forged = json.loads(json.dumps(attested.report))
    forged["provenance"]["subject"][0]["digest"]["sha256"] = "0" * 64
    path = tmp_path / "report.json"
    path.write_text(json.dumps(forged))
    run = attested.cli(
        "sign", "--config", str(attested.config), "--from-report", str(path), env=PUSH
    )
    assert run.returncode == 2
    assert f"error::--from-report {path}: its provenance names other subjects" in run.stderr
