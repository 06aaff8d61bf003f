"""Registry faults between Image Builder and the real registry: whatever happens, the report
names exactly the references that are in the registry (checked with skopeo), the exit code is
non-zero when anything is missing, and a re-run completes the job without duplicating anything."""

from __future__ import annotations

import json
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.integration.conftest import Cli, Registry, Run, inspect_raw, manifest_digest
from tests.support.fault_proxy import FaultProxy

PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    server = FaultProxy(registry.address).start()
    yield server
    server.stop()


def context(tmp_path: Path, base_image: str) -> Path:
    root = tmp_path / "ctx"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nCOPY data /data\n")
    (root / "data").write_bytes(secrets.token_bytes(256 * 1024))  # a blob worth cutting off
    return root


def build(
    cli: Cli,
    tmp_path: Path,
    proxy: FaultProxy,
    registry: Registry,
    base_image: str,
    name: str,
    extra: str = "",
    publish_timeout: str = "20s",
) -> Run:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"registry: [{proxy.address}/faults, {registry.address}/direct]\n"
        f"publish-timeout: {publish_timeout}\n" + extra
    )
    return cli(
        "build", "--name", name, "--context", str(context(tmp_path, base_image)), "--config", str(config),
        "--tag", "one", "--tag", "two", "--platform", "linux/amd64", env=PUSH,
    )  # fmt: skip


def assert_honest(run: Run, proxy: FaultProxy, registry: Registry) -> list[str]:
    """The report lists exactly the references that are in the registry (with its digest), every
    other planned reference is in ``failed_images`` and really absent, and the exit code is 1
    exactly when something failed. Returns the failed references."""
    report = run.report
    listed = set(report["images_list"])
    failed = {f["image"] for f in report["failed_images"]}
    assert len(listed | failed) == 6, "3 tags x 2 registries, each either pushed or failed"
    assert not listed & failed
    for ref in listed | failed:
        found = manifest_digest(ref.replace(proxy.address, registry.address))
        if ref in listed:
            assert found == report["digest"], (
                f"{ref} is reported pushed but the registry has {found}"
            )
        else:
            assert found is None, f"{ref} is reported failed but the registry has it"
    assert run.returncode == (1 if failed else 0), run.stderr
    assert report["pushed"] is (not failed)
    return sorted(failed)


@pytest.mark.parametrize(
    ("faults", "name", "kind", "times"),
    [
        ({"burst_503": 4}, "team/f503", "503", 4),
        ({"burst_429": 2, "retry_after": "1"}, "team/f429", "429", 2),
        ({"delay": 0.2}, "team/fslow", "delay", None),  # None: every request
        ({"drop_uploads": 1}, "team/fdrop", "drop", 1),
    ],
)
def test_transient_faults_are_survived(
    cli: Cli,
    proxy: FaultProxy,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    faults: dict[str, object],
    name: str,
    kind: str,
    times: int | None,
) -> None:
    for key, value in faults.items():
        setattr(proxy.faults, key, value)
    run = build(cli, tmp_path, proxy, registry, base_image, name)
    injected = Counter(entry.split()[0] for entry in proxy.faults.log)
    expected = {kind: proxy.faults.seen if times is None else times}
    assert injected == expected, f"injected {dict(injected)} of {proxy.faults.seen} requests"
    assert_honest(run, proxy, registry)
    assert run.returncode == 0, run.stderr
    assert run.report["pushed"] is True
    assert len(run.report["images_list"]) == 6  # 3 tags (default, one, two) x 2 registries


@pytest.fixture(scope="module")
def clean_push_requests(
    tmp_path_factory: pytest.TempPathFactory,
    storage_conf: Path,
    registry: Registry,
    base_image: str,
) -> int:
    """How many requests a clean push sends through the proxy."""
    tmp_path = tmp_path_factory.mktemp("clean")
    home = tmp_path / "home"
    home.mkdir()
    proxy = FaultProxy(registry.address).start()
    try:
        run = build(
            Cli(storage=storage_conf, home=home),
            tmp_path,
            proxy,
            registry,
            base_image,
            "team/clean",
        )
        assert run.returncode == 0, run.stderr
        return proxy.faults.seen
    finally:
        proxy.stop()


@pytest.mark.parametrize("share", [0.1, 0.4, 0.7, 0.9])
def test_registry_dying_mid_push_is_reported_exactly(
    cli: Cli,
    proxy: FaultProxy,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    share: float,
    clean_push_requests: int,
) -> None:
    die_after = max(1, int(clean_push_requests * share))
    name = f"team/die{die_after}"
    proxy.faults.die_after = die_after
    # A dead registry is retried until the publish deadline: a short one keeps the test short.
    first = build(cli, tmp_path, proxy, registry, base_image, name, publish_timeout="8s")
    failed = assert_honest(first, proxy, registry)
    assert any(entry.startswith("dead") for entry in proxy.faults.log), "it never died"
    # Where it died decides what the report must say, read from the proxy, not from the report:
    # in phase 1 (blobs, manifests by digest), publish-mode atomic moves no tag anywhere; in
    # phase 2 (manifests by tag) the other registry's tags move and stay.
    dead = next(entry for entry in proxy.faults.log if entry.startswith("dead"))
    if re.search(r"/manifests/(?!sha256:)", dead) is None:
        assert len(failed) == 6, dead
        assert first.report["images_list"] == []
    else:
        assert all(ref.startswith(proxy.address) for ref in failed), dead

    proxy.reset()
    again = build(cli, tmp_path, proxy, registry, base_image, name)
    assert again.returncode == 0, again.stderr
    assert_honest(again, proxy, registry)
    assert len(again.report["images_list"]) == 6
    tags = json.loads(
        __import__("subprocess").run(
            ["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.address}/faults/{name}"],
            capture_output=True, text=True, check=True,
        ).stdout
    )["Tags"]  # fmt: skip
    assert sorted(tags) == sorted(["one", "two", again.report["tags"][-1]])  # nothing duplicated


def test_a_refused_signature_is_never_reported_and_a_rerun_signs_once(
    cli: Cli, proxy: FaultProxy, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    keys = cli("keygen", "--output-key-prefix", str(tmp_path / "k"), env={"COSIGN_PASSWORD": "pw"})
    assert keys.returncode == 0, keys.stderr
    paths = json.loads(keys.stdout)
    signer = (
        "sign-config:\n  enabled-signers: {'*': [k]}\n  signers:\n"
        f"    - {{name: k, type: cosign, config: {{private-key: {paths['private_key']}, password-env: COSIGN_PASSWORD}}}}\n"
    )
    proxy.faults.only_path = ".sig"
    proxy.faults.deny = True  # the registry refuses every signature read and upload, for good
    env = {**PUSH, "COSIGN_PASSWORD": "pw", "SOURCE_DATE_EPOCH": "1700000000"}
    config = tmp_path / "config.yaml"
    # reproducible: every run pushes the same digest, so re-runs sign the same thing
    config.write_text(f"registry: {proxy.address}/signed\nreproducible: true\n{signer}")
    args = (
        "build",
        "--name",
        "team/sigfault",
        "--context",
        str(context(tmp_path, base_image)),
        "--config",
        str(config),
        "--tag",
        "s",
        "--platform",
        "linux/amd64",
    )
    first = cli(*args, env=env)
    assert first.returncode == 1
    report = first.report
    assert report["pushed"] is True, json.dumps(report)
    assert report["signed"] is False
    assert report["signing_errors"][0]["signer"] == "k"
    digest = str(report["digest"])
    sig_tag = f"{registry.address}/signed/team/sigfault:{digest.replace(':', '-')}.sig"
    assert inspect_raw(sig_tag) is None
    assert (
        cli(
            "verify", f"{registry.address}/signed/team/sigfault:s", "--key", paths["public_key"]
        ).returncode
        == 1
    )

    proxy.reset()
    for _ in range(2):  # two re-runs: the second finds the signature and adds none
        again = cli(*args, env=env)
        assert again.returncode == 0, again.stderr
        assert again.report["signed"] is True
        assert again.report["digest"] == digest
    sig = inspect_raw(sig_tag)
    assert sig is not None
    assert len(sig["layers"]) == 1
