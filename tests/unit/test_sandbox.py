"""The sandbox's decisions: which account builds, what it could read, how buildah is wrapped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.sandbox import (
    BuildAccount,
    SandboxError,
    child_env,
    choose_account,
    exposed_secrets,
    readable_by,
    wrap,
)

BUILDER = BuildAccount(name="builder", uid=4242, gid=4242, dedicated=True)
SELF = BuildAccount(name="me", uid=os.getuid(), gid=os.getgid(), dedicated=False)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every account can reach (pytest's own temporary folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="ib-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def subids(tmp_path: Path, text: str) -> tuple[Path, Path]:
    (tmp_path / "subuid").write_text(text)
    (tmp_path / "subgid").write_text(text)
    return tmp_path / "subuid", tmp_path / "subgid"


def test_root_builds_as_the_dedicated_account(tmp_path: Path) -> None:
    files = subids(tmp_path, "nobody:1000000:65536\n")
    account = choose_account("nobody", euid=0, subid_files=files)
    assert (account.name, account.dedicated) == ("nobody", True)
    assert account.uid != 0


def test_a_missing_account_is_refused_with_the_fix(tmp_path: Path) -> None:
    files = subids(tmp_path, "")
    with pytest.raises(SandboxError) as caught:
        choose_account("no-such-builder", euid=0, subid_files=files)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        "the build account 'no-such-builder' does not exist; run scripts/setup, or as root: "
        "`useradd --system --user-group"
    )


def test_an_account_without_a_subid_range_is_refused(tmp_path: Path) -> None:
    files = subids(tmp_path, "nobody:1000000:1000\n")  # too small for a user namespace
    with pytest.raises(SandboxError) as caught:
        choose_account("nobody", euid=0, subid_files=files)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        f"the build account 'nobody' has no range in {files[0]}, so RUN steps cannot run in a "
        "user namespace; run scripts/setup"
    )


def test_root_itself_is_never_the_build_account(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="the build account 'root' is root"):
        choose_account("root", euid=0, subid_files=subids(tmp_path, "root:100000:65536\n"))


def test_readable_by_follows_permission_bits(open_dir: Path, tmp_path: Path) -> None:
    folder = open_dir / "keys"
    folder.mkdir()
    key = folder / "cosign.key"
    key.write_text("secret")
    folder.chmod(0o755)
    key.chmod(0o644)
    assert readable_by(key, BUILDER)
    key.chmod(0o600)
    assert not readable_by(key, BUILDER)
    key.chmod(0o644)
    folder.chmod(0o700)  # readable file, but the folder cannot be searched
    assert not readable_by(key, BUILDER)
    assert not readable_by(open_dir / "missing", BUILDER)
    (tmp_path / "open.txt").write_text("x")
    (tmp_path / "open.txt").chmod(0o644)
    assert not readable_by(tmp_path / "open.txt", BUILDER)  # under pytest's root-only folder


def test_exposed_secrets_names_files_and_variables(open_dir: Path) -> None:
    key = open_dir / "cosign.key"
    key.write_text("secret")
    key.chmod(0o644)
    env = {"COSIGN_PASSWORD": "pw", "AUTHORIZATION": ""}
    names = ["COSIGN_PASSWORD", "AUTHORIZATION"]
    assert exposed_secrets(BUILDER, [key], env, names) == [f"the file {key}"]
    # The same account as image-builder reads its variables from /proc, too.
    assert exposed_secrets(SELF, [key], env, names) == [
        f"the file {key}",
        "the variable COSIGN_PASSWORD",
    ]
    key.chmod(0o600)
    assert exposed_secrets(BUILDER, [key], env, names) == []


def test_the_build_environment_is_an_allowlist(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin", "COSIGN_PASSWORD": "pw", "AUTHORIZATION": "t", "HOME": "/root"}
    out = child_env(tmp_path, {"CONTAINERS_STORAGE_CONF": "/x"}, env)
    assert out == {
        "PATH": "/usr/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_STORAGE_CONF": "/x",
    }


def test_wrap_switches_account_in_new_namespaces() -> None:
    argv = wrap(["buildah", "bud", "."], BUILDER, binds=[(Path("/src"), Path("/box/context"))])
    assert argv[:9] == [
        "unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--ipc", "--uts",
        "--",
    ]  # fmt: skip
    script = argv[11]
    assert script == (
        'mount --bind "${1}" "${2}" && mount -o remount,bind,ro,nosuid,nodev "${2}" && shift 2 '
        '&& exec "$@"'
    )
    assert argv[12:] == [
        "sh", "/src", "/box/context", "setpriv", "--reuid=4242", "--regid=4242",
        "--clear-groups", "--", "buildah", "bud", ".",
    ]  # fmt: skip


def test_wrap_leaves_a_rootless_build_to_buildah() -> None:
    assert wrap(["buildah", "bud"], SELF, binds=[]) == ["buildah", "bud"]
    with pytest.raises(ValueError, match="bind mounts need a dedicated build account"):
        wrap(["buildah"], SELF, binds=[(Path("/a"), Path("/b"))])


def test_a_rootless_build_is_refused_while_secrets_are_in_reach(tmp_path: Path) -> None:
    """As a normal account the build runs as image-builder's own account, which could read its
    secret variables through /proc and every credential file it can read."""
    from image_builder.commands.build import check_reach
    from image_builder.config import Config

    env = {"HOME": str(tmp_path), "COSIGN_PASSWORD": "x", "AUTHORIZATION": "token"}
    with pytest.raises(SandboxError) as caught:
        check_reach([SELF], Config(), env)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "image-builder runs as me, and RUN steps would run as the same account, which can read "
        "the variable AUTHORIZATION, the variable COSIGN_PASSWORD; run image-builder as root, so that the build runs as the "
        "account 'ib-sandbox', or build where no key or credential is present"
    )
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text("{}")
    with pytest.raises(SandboxError, match=r"which can read the file .*config\.json"):
        check_reach([SELF], Config(), {"HOME": str(tmp_path)})
    check_reach([SELF], Config(), {"HOME": str(tmp_path / "empty")})  # nothing in reach


def test_the_github_api_token_counts_as_a_secret_in_reach(tmp_path: Path) -> None:
    from image_builder.commands.build import check_reach
    from image_builder.config import parse_config

    config = parse_config(
        "trust:\n  - {issuer: https://i.example, audience: a, job-workflow-refs: any,\n"
        "     repository-owners: [{name: o, id: 1}], events: [push],\n"
        "     github-api: https://api.github.com, github-api-token-env: PR_READER_TOKEN}\n"
    )
    env = {"HOME": str(tmp_path), "PR_READER_TOKEN": "ghs_x"}
    with pytest.raises(SandboxError) as caught:
        check_reach([SELF], config, env)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "image-builder runs as me, and RUN steps would run as the same account, which can read "
        "the variable PR_READER_TOKEN; run image-builder as root, so that the build runs as the "
        "account 'ib-sandbox', or build where no key or credential is present"
    )
