"""Build secrets and restricted base images against real buildah and a real registry: what a RUN
step can read, and where a secret must never show up (the pushed image, its history, the logs,
the report, buildah's command lines and environment); who gets secrets at all; and base images
refused before the build and again when buildah pulls."""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Cli,
    Registry,
    assert_nowhere,
    everything_pushed,
    image_config,
    manifest_digest,
    secret,
)
from tests.support.inputs import config, config_file, context, github, push_payload
from tests.support.oidc import FakeIssuer

_ROT13 = str.maketrans(
    string.ascii_lowercase + string.ascii_uppercase,
    string.ascii_lowercase[13:] + string.ascii_lowercase[:13]
    + string.ascii_uppercase[13:] + string.ascii_uppercase[:13],
)  # fmt: skip
SED_ROT13 = (
    "sed 'y/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/"
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM/'"
)


@pytest.fixture
def buildah_calls() -> Iterator[tuple[Path, Path]]:
    """A buildah first on PATH that records every command line and environment it gets, then
    runs the real one; in a folder the build account can reach, since it runs as that account.
    Returns (folder for PATH, the record)."""
    folder = Path(tempfile.mkdtemp(prefix="ib-shim-"))
    folder.chmod(0o755)
    record = folder / "calls.log"
    record.touch()
    record.chmod(0o666)
    real = shutil.which("buildah")
    assert real is not None
    shim = folder / "buildah"
    shim.write_text(
        "#!/bin/sh\n"
        f'{{ printf "ARGV"; printf " %s" "$@"; printf "\\n"; env | sed "s/^/ENV /"; }} >> {record}\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    yield folder, record
    shutil.rmtree(folder)


def on_path(folder: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{folder}:{os.environ['PATH']}", **extra}


def leftover_secret_folders() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("image-builder-work-*/secrets"))


def test_secrets_reach_their_run_steps_and_nothing_else(
    cli: Cli,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    buildah_calls: tuple[Path, Path],
) -> None:
    from_file = secret("file-secret-4b1e9d2a")
    from_env = secret("env-secret-c07d3e55")
    password = secret("machine-netrc-password-91ab77")
    # Several lines, as a netrc has: GitHub reads one line per ::add-mask::, so each is masked.
    netrc = f"machine git.example.com\nlogin robot\npassword {password}\n"
    (tmp_path / "tok.txt").write_text(from_file + "\n")
    (tmp_path / "netrc").write_text(netrc)
    steps = "".join(
        f"RUN --mount=type=secret,id={name} mkdir -p /seen && "
        f"wc -c < /run/secrets/{name} > /seen/{name}.len && "
        f"{SED_ROT13} /run/secrets/{name} > /seen/{name}.rot13 && "
        f'echo "{name} is: $(cat /run/secrets/{name})"\n'
        for name in ("tok", "tok2", "netrc")
    )
    ctx = context(tmp_path, f"FROM {base_image}\n{steps}")
    cfg = config(
        tmp_path,
        f"registry: {registry.address}/prod\n"
        f"go-internal-sap-modules: {{file: {tmp_path}/netrc}}\n"
        # The single-platform export under the build's own pull policy, on the way.
        f"restricted-registries: [{registry.address}/base]\n",
    )
    shim, calls = buildah_calls
    report_file = tmp_path / "report.json"
    run = cli(
        "build", "--name", "team/secrets", "--context", str(ctx), "--config", cfg, "--tag", "s",
        "--secret", f"id=tok,src={tmp_path}/tok.txt", "--secret", "id=tok2,env=TOK2",
        "--use-go-internal-sap-modules", "--use-restricted-registry",
        "--build-report-path", str(report_file),
        env=github("push", "push.new-branch.json", **on_path(shim, TOK2=from_env)),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # Each step read its secret: a rot13 of it is in the image...
    ref = f"{registry.address}/prod/team/secrets:s"
    pushed = everything_pushed(ref, tmp_path / "pushed")
    for value in (from_file, from_env, netrc):
        assert value.translate(_ROT13).encode() in pushed
    # ...and printed it, masked.
    for name in ("tok", "tok2", "netrc"):
        assert f"{name} is: ***" in run.stderr
    # The value itself is nowhere: output, layers, config and history, report.
    history = json.dumps(image_config(ref)["history"])
    assert "--mount=type=secret,id=tok" in history
    for value in (from_file, from_env, password):
        assert_nowhere(value, run, pushed)
        assert value not in history
        assert value not in report_file.read_text()
    assert f"::add-mask::password {password}" in run.stderr  # each line its own directive
    # buildah ran with each secret as a path (to a copy only the build account could read), in
    # an environment without it, and with the restricted pull policy.
    recorded = calls.read_text()
    assert "--secret id=tok,src=" in recorded
    assert "--secret id=netrc,src=" in recorded
    assert "--signature-policy" in recorded
    for value in (from_file, from_env, password):
        assert value not in recorded
    assert not leftover_secret_folders()


def test_a_pull_request_build_gets_no_secret(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """The attack: a pull request's Dockerfile reads the release secret into its image."""
    value = secret("release-only-secret-2d8f61")
    (tmp_path / "tok.txt").write_text(value)
    ctx = context(
        tmp_path,
        f"FROM {base_image}\n"
        "RUN --mount=type=secret,id=tok (cat /run/secrets/tok || echo no-secret-here) > /seen\n",
    )
    cfg = config(
        tmp_path, f"registry: {registry.address}/prod\ndev-registry: {registry.address}/dev\n"
    )
    run = cli(
        "build", "--name", "team/pr-secret", "--context", str(ctx), "--config", cfg,
        "--secret", f"id=tok,src={tmp_path}/tok.txt",
        env=github("pull_request", "pull_request.opened.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    pushed = everything_pushed(run.report["images_list"][0], tmp_path / "pushed")
    assert value.encode() not in pushed
    assert b"no-secret-here" in pushed
    assert_nowhere(value, run, pushed)
    assert (
        "build secrets withheld from this presubmit build, whose Dockerfile comes from the pull "
        "request: tok; set secrets-for-presubmits: true in config.yaml to mount them"
    ) in run.stderr


@pytest.fixture
def machine_file() -> Iterator[tuple[Path, str]]:
    """A root-only file of the trusted machine, such as a signing key."""
    folder = Path(tempfile.mkdtemp(prefix="ib-machine-"))
    folder.chmod(0o755)
    value = secret("trusted-machine-key-5e0c3b")
    path = folder / "signing.key"
    path.write_text(value)
    path.chmod(0o600)
    yield path, value
    shutil.rmtree(folder)


def test_the_trusted_side_refuses_a_callers_secret(
    cli: Cli,
    issuer: FakeIssuer,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    machine_file: tuple[Path, str],
) -> None:
    """The attack: a verified caller asks the trusted machine to mount one of its files (its
    signing key) into a build that copies it into the image."""
    key, value = machine_file
    ctx = context(
        tmp_path, f"FROM {base_image}\nRUN --mount=type=secret,id=k cat /run/secrets/k > /loot\n"
    )
    cfg = config_file(tmp_path, issuer, registry)
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": push_payload(tmp_path),
        "AUTHORIZATION": secret(issuer.token()),
    }
    run = cli(
        "build", "--name", "app/web", "--context", str(ctx), "--config", cfg, "--tag", "loot",
        "--secret", f"id=k,src={key}", env=env,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "::error::--secret is refused with a trust policy: it would read files and variables of "
        "this trusted machine; the config declares the secrets a build may get "
        "(go-internal-sap-modules, mounted with --use-go-internal-sap-modules)"
    )
    assert "STEP" not in run.stderr
    assert manifest_digest(f"{registry.address}/trusted/app/web:loot") is None
    assert value not in run.stdout + run.stderr


def test_restricted_registries_refuse_before_building_and_allow_listed_ones(
    cli: Cli,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    buildah_calls: tuple[Path, Path],
) -> None:
    shim, calls = buildah_calls
    ctx = context(tmp_path, f"# a comment\nFROM {base_image}\nCOPY a /a\n", a="a\n")
    listed = f"{registry.address}/approved"
    cfg = config(
        tmp_path, f"registry: {registry.address}/prod\nrestricted-registries: [{listed}]\n"
    )
    args = ("build", "--name", "team/restricted", "--context", str(ctx), "--config", cfg,
            "--tag", "r", "--use-restricted-registry")  # fmt: skip
    refused = cli(*args, env=github("push", "push.new-branch.json", **on_path(shim)))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"::error::Dockerfile line 2: FROM {base_image} is not in restricted-registries "
        f"({listed}); take it from one of those registries, or build without "
        "--use-restricted-registry"
    )
    assert "ARGV" not in calls.read_text()  # no buildah ran
    # Listed: it builds, every platform at once, under the build's own pull policy.
    config(
        tmp_path,
        f"registry: {registry.address}/prod\nrestricted-registries: [{registry.address}/base]\n",
    )
    run = cli(*args, "--platform", "linux/amd64,linux/arm64",
              env=github("push", "push.new-branch.json", **on_path(shim)))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.report["status"] == "Succeeded"
    recorded = [line for line in calls.read_text().splitlines() if line.startswith("ARGV")]
    builds = [line for line in recorded if line.startswith("ARGV bud ")]
    exports = [line for line in recorded if line.startswith("ARGV manifest push --all ")]
    assert len(builds) == len(exports) == 1
    assert " --signature-policy " in builds[0]
    assert exports[0].startswith("ARGV manifest push --all --signature-policy ")


def test_the_pull_policy_stops_what_the_dockerfile_check_cannot_see(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """The attack: a short name that docker reads as Docker Hub (under the listed
    docker.io/base), which buildah resolves through registries.conf to another registry."""
    del base_image  # pushed to <registry>/base/busybox, which the short name now reaches
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'unqualified-search-registries = ["{registry.address}"]\n'
        f'[[registry]]\nlocation = "{registry.address}"\ninsecure = true\n'
    )
    ctx = context(tmp_path, "FROM base/busybox\nCOPY a /a\n", a="a\n")
    cfg = config(
        tmp_path, f"registry: {registry.address}/prod\nrestricted-registries: [docker.io/base]\n"
    )
    run = cli(
        "build", "--name", "team/shortname", "--context", str(ctx), "--config", cfg,
        "--tag", "p", "--use-restricted-registry",
        env=github("push", "push.new-branch.json", CONTAINERS_REGISTRIES_CONF=str(conf)),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"Trying to pull {registry.address}/base/busybox:latest" in run.stderr
    assert (
        f"Running image docker://{registry.address}/base/busybox:latest is rejected by policy"
    ) in run.stderr
    assert manifest_digest(f"{registry.address}/prod/team/shortname:p") is None
