"""Concurrency: many builds into one repository, many signers on one digest, two registry starts."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import EVENTS
from tests.integration.conftest import Cli, Registry, Run, free_port, inspect_raw, manifest_digest

PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


def test_twenty_concurrent_builds_into_one_repository(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"registry: {registry.address}/many\n"
        "tag-template-env: [BUILD_INDEX]\n"
        "default-commit-tag: {name: default_tag, value: 'b{{ .Env \"BUILD_INDEX\" }}'}\n"
    )

    def one(index: int) -> Run:
        ctx = tmp_path / f"ctx{index}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY n /n\n")
        (ctx / "n").write_text(f"{index}\n")  # every build has its own content and digest
        return cli(
            "build", "--name", "team/many", "--context", str(ctx), "--config", str(config),
            "--tag", f"t{index}", "--platform", "linux/amd64",
            env={**PUSH, "BUILD_INDEX": str(index)},
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(one, range(20)))
    assert [r.returncode for r in runs] == [0] * 20, [r.stderr[-500:] for r in runs if r.returncode]
    digests = set()
    for index, run in enumerate(runs):
        report = run.report
        assert sorted(report["images_list"]) == sorted(
            [
                f"{registry.address}/many/team/many:b{index}",
                f"{registry.address}/many/team/many:t{index}",
            ]
        )
        for ref in report["images_list"]:
            assert manifest_digest(ref) == report["digest"]
        digests.add(report["digest"])
    assert len(digests) == 20


def test_concurrent_signers_on_one_digest(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY a /a\n")
    (ctx / "a").write_text("signed by many\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"registry: {registry.address}/multi\n")
    built = cli(
        "build",
        "--name",
        "team/multisig",
        "--context",
        str(ctx),
        "--config",
        str(plain),
        "--tag",
        "m",
        "--platform",
        "linux/amd64",
        env=PUSH,
    )
    assert built.returncode == 0, built.stderr
    ref = f"{registry.address}/multi/team/multisig:m"
    keys = []
    for n in range(4):
        made = cli(
            "keygen", "--output-key-prefix", str(tmp_path / f"k{n}"), env={"COSIGN_PASSWORD": ""}
        )
        assert made.returncode == 0, made.stderr
        paths = json.loads(made.stdout)
        config = tmp_path / f"signer{n}.yaml"
        config.write_text(
            f"registry: {registry.address}/multi\nsign-config:\n  enabled-signers: {{'*': [k{n}]}}\n  signers:\n"
            f"    - {{name: k{n}, type: cosign, config: {{private-key: {paths['private_key']}, password-env: COSIGN_PASSWORD}}}}\n"
        )
        keys.append((config, paths["public_key"]))

    def sign(config: Path) -> Run:
        return cli(
            "sign",
            "--config",
            str(config),
            "--images-to-sign",
            ref,
            env={**PUSH, "COSIGN_PASSWORD": ""},
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(sign, [c for c, _ in keys]))
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    for _, public in keys:
        assert cli("verify", ref, "--key", public).returncode == 0
    sig = inspect_raw(
        f"{registry.address}/multi/team/multisig:{str(built.report['digest']).replace(':', '-')}.sig"
    )
    assert sig is not None
    assert len(sig["layers"]) == 4


def test_two_concurrent_registry_starts_give_one_registry(cli: Cli, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(lambda _: cli("registry", "start", "--address", address, env=env), range(2))
        )
    try:
        assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
        config = tmp_path / "xdg" / "image-builder" / "registry" / "config.yml"
        processes = subprocess.run(
            ["pgrep", "-f", f"docker-registry serve {config}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert len(processes.stdout.split()) == 1, processes.stdout
    finally:
        cli("registry", "stop", env=env)
