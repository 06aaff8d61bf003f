"""The build sandbox: which account runs the Dockerfile's steps, what it may see, and the command
that puts buildah there.

Code from the repository being built is hostile, on release builds too. Its RUN steps run as an
unprivileged account inside a user namespace (rootless buildah). When image-builder is root, that
account is a dedicated one made by the set-up, and buildah starts in a fresh PID, mount, IPC and
UTS namespace: the steps cannot see image-builder's processes (nor read their environment), and
everything they leave running dies with the build. The account never owns anything secret, so a
step that escapes its root gets exactly that account's access: world-readable files and nothing
else. Credentials and keys stay with the publishing side, which reads the image as data.

This module decides; it holds no credentials and runs nothing itself.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_builder.errors import ImageBuilderError, RuntimeFailure

SETUP_HINT = (
    "run scripts/setup, or as root: `useradd --system --user-group --no-create-home "
    "--shell /usr/sbin/nologin {name} && usermod --add-subuids 1000000-1065535 "
    "--add-subgids 1000000-1065535 {name}`, with a range no other account uses (package uidmap)"
)

# Variables the build may see; nothing else is inherited.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "SOURCE_DATE_EPOCH")

# Variables that hold secrets in this project, besides any signer's own password variable.
SECRET_VARIABLES = (
    "AUTHORIZATION",
    "COSIGN_PASSWORD",
    "ADO_PAT",
    "AZURE_DEVOPS_EXT_PAT",
    "AZURE_CLIENT_SECRET",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "SYSTEM_ACCESSTOKEN",
    "GITHUB_TOKEN",
)


class SandboxError(ImageBuilderError):
    """The machine cannot keep the build away from secrets; the message says what to change."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True)
class BuildAccount:
    """Who runs the build. ``dedicated`` is true when it is a separate account that image-builder
    (as root) switches to; false when image-builder itself is unprivileged and builds rootless."""

    name: str
    uid: int
    gid: int
    dedicated: bool


def choose_accounts(
    name: str, *, euid: int, subid_files: tuple[Path, Path] | None = None
) -> list[BuildAccount]:
    """The accounts that may run builds: as root, ``name`` and its numbered siblings
    (``name-1``, ``name-2``, ...), one per concurrent build, so that two builds never share an
    account; otherwise image-builder's own account."""
    first = choose_account(name, euid=euid, subid_files=subid_files)
    if not first.dedicated:
        return [first]
    pattern = re.compile(re.escape(name) + r"-[0-9]+")
    siblings = sorted(
        (e.pw_name for e in pwd.getpwall() if pattern.fullmatch(e.pw_name)),
        key=lambda n: int(n.rsplit("-", 1)[1]),
    )
    accounts = [first]
    for sibling in siblings:
        try:
            accounts.append(choose_account(sibling, euid=euid, subid_files=subid_files))
        except SandboxError:
            continue  # not set up completely: never used
    return accounts


@contextmanager
def claim(
    accounts: Sequence[BuildAccount],
    *,
    lock_dir: Path = Path("/run/image-builder"),
    on_wait: Callable[[str], None] | None = None,
    timeout: float = 300.0,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[BuildAccount]:
    """Hold one of ``accounts`` for a build: no two builds run as the same account at once, so
    an escaped step of one build can never reach another's sandbox. Waits while all are busy,
    for at most ``timeout`` seconds."""
    if not accounts[0].dedicated:
        yield accounts[0]
        return
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    said = False
    give_up = time.monotonic() + timeout
    while True:
        if stopping():
            raise RuntimeFailure("stopped while waiting for a free build account")
        if time.monotonic() > give_up:
            raise RuntimeFailure(
                f"all {len(accounts)} build accounts stayed busy for {timeout:.0f} s "
                "(build-timeout): other builds hold them (locks in /run/image-builder); run again "
                "when they are done"
            )
        for account in accounts:
            path = lock_dir / f"{account.name}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield account
            finally:
                os.close(fd)
            return
        if not said and on_wait is not None:
            on_wait(f"all {len(accounts)} build accounts are busy; waiting for one")
            said = True
        time.sleep(0.1)


def choose_account(
    name: str, *, euid: int, subid_files: tuple[Path, Path] | None = None
) -> BuildAccount:
    """The account for the build stage, or a refusal that says what to install or enable."""
    uid_file, gid_file = subid_files or (Path("/etc/subuid"), Path("/etc/subgid"))
    if not _user_namespaces_enabled():
        raise SandboxError(
            "this machine has user namespaces disabled, so the build cannot run unprivileged; "
            "enable them (sysctl user.max_user_namespaces=15000, and "
            "kernel.unprivileged_userns_clone=1 where it exists)"
        )
    if euid == 0:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SandboxError(
                f"the build account {name!r} does not exist; " + SETUP_HINT.format(name=name)
            ) from None
        if entry.pw_uid == 0:
            raise SandboxError(f"the build account {name!r} is root; name an unprivileged one")
        account = BuildAccount(name=name, uid=entry.pw_uid, gid=entry.pw_gid, dedicated=True)
    else:
        entry = pwd.getpwuid(euid)
        account = BuildAccount(
            name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, dedicated=False
        )
    for path in (uid_file, gid_file):
        if not _has_subid_range(path, account):
            raise SandboxError(
                f"the build account {account.name!r} has no range in {path}, so RUN steps cannot "
                "run in a user namespace; " + SETUP_HINT.format(name=account.name)
            )
    return account


def _user_namespaces_enabled() -> bool:
    for path, minimum in (
        ("/proc/sys/user/max_user_namespaces", 1),
        ("/proc/sys/kernel/unprivileged_userns_clone", 1),
    ):
        try:
            if int(Path(path).read_text().strip()) < minimum:
                return False
        except (OSError, ValueError):
            continue
    return True


def _has_subid_range(path: Path, account: BuildAccount) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (account.name, str(account.uid)):
            try:
                if int(fields[2]) >= 65536:
                    return True
            except ValueError:
                continue
    return False


def readable_by(path: Path, account: BuildAccount) -> bool:
    """Whether ``account`` could read ``path``. A dedicated account runs with its primary group
    only (``setpriv --clear-groups``), so its permission bits decide (ACLs are not consulted):
    every folder on the way searchable, the file readable. Image-builder's own account is asked
    directly, supplementary groups included."""
    if not account.dedicated:
        return os.access(path, os.R_OK)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    gids = {account.gid}
    for folder in reversed(resolved.parents):
        if not _allowed(folder, account.uid, gids, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return False
    return _allowed(resolved, account.uid, gids, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _allowed(path: Path, uid: int, gids: set[int], user: int, group: int, other: int) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_uid == uid:
        return bool(info.st_mode & user)
    if info.st_gid in gids:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def exposed_secrets(
    account: BuildAccount, files: Iterable[Path], env: Mapping[str, str], secret_env: Iterable[str]
) -> list[str]:
    """What the build account could read that holds a secret: files by their permissions, and,
    when the build runs as image-builder's own account, its secret variables too (an escaped step
    reads them from /proc)."""
    found = [f"the file {path}" for path in files if path.exists() and readable_by(path, account)]
    if not account.dedicated:
        found += [f"the variable {name}" for name in secret_env if env.get(name)]
    return found


def child_env(workdir: Path, extra: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The build's whole environment: an allowlist, a home and temp folder of its own."""
    out = {name: env[name] for name in _PASSED_THROUGH if env.get(name)}
    out.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    out.update(
        HOME=str(workdir),
        TMPDIR=str(workdir / "tmp"),
        XDG_RUNTIME_DIR=str(workdir / "run"),
        XDG_CONFIG_HOME=str(workdir / "config"),
        XDG_DATA_HOME=str(workdir / "data"),
        BUILDAH_ISOLATION="chroot",
    )
    out.update(extra)
    return out


def wrap(
    argv: Sequence[str], account: BuildAccount, *, binds: Sequence[tuple[Path, Path]]
) -> list[str]:
    """``argv`` as the build account. As root: in new PID, mount, IPC and UTS namespaces, with
    ``binds`` (source, target) mounted read-only, then with the account's ids and no supplementary
    groups. When image-builder is the account already, rootless buildah isolates the steps itself
    and ``binds`` must be empty."""
    if not account.dedicated:
        if binds:
            raise ValueError("bind mounts need a dedicated build account")
        return list(argv)
    mounts = " && ".join(
        f'mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}" && '
        f'mount -o remount,bind,ro,nosuid,nodev "${{{2 * i + 2}}}"'
        for i in range(len(binds))
    )
    script = f'{mounts} && shift {2 * len(binds)} && exec "$@"' if binds else 'exec "$@"'
    return [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--mount-proc",
        "--ipc",
        "--uts",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        *(str(p) for pair in binds for p in pair),
        "setpriv",
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--clear-groups",
        "--",
        *argv,
    ]


def give_to(path: Path, account: BuildAccount) -> None:
    """Hand a folder that image-builder made to the build account (a no-op when it is us)."""
    if account.dedicated:
        os.chown(path, account.uid, account.gid)


def hand_secret(path: Path, data: bytes, account: BuildAccount) -> None:
    """Write a build secret to the new file ``path``, readable by the build account alone
    (and root). Its folder must be one the account cannot write to, so the account cannot put a
    link or another file in its place; the caller removes the file once the build is over."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    try:
        if account.dedicated:
            os.fchown(fd, account.uid, account.gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_ACCEPT: list[dict[str, Any]] = [{"type": "insecureAcceptAnything"}]


def pull_policy(prefixes: Iterable[str], system: Mapping[str, Any] | None) -> dict[str, Any]:
    """The containers policy (policy.json) of a build restricted to ``prefixes``: images from the
    docker transport under one of them, and the build's own storage; nothing else (no other
    registry, no oci:, docker-archive: or other transport). Where the machine's own ``system``
    policy asks more of an allowed prefix (signatures, or a refusal), that still applies."""
    docker_scopes: dict[str, Any] = {}
    system_docker = _transport_scopes(system, "docker")
    for prefix in prefixes:
        docker_scopes[prefix] = _requirement(system, system_docker, prefix)
        # Scopes below the prefix: its repositories, and a repository's tags and digests
        # (a bare host's "host:port" is another registry, not below it).
        below = (prefix + "/", prefix + ":", prefix + "@") if "/" in prefix else (prefix + "/",)
        for scope, requirement in system_docker.items():
            if scope.startswith(below):
                docker_scopes[scope] = requirement
    return {
        "default": [{"type": "reject"}],
        "transports": {"docker": docker_scopes, "containers-storage": {"": _ACCEPT}},
    }


def _transport_scopes(system: Mapping[str, Any] | None, transport: str) -> dict[str, Any]:
    transports = system.get("transports") if system else None
    scopes = transports.get(transport) if isinstance(transports, dict) else None
    return dict(scopes) if isinstance(scopes, dict) else {}


def _requirement(system: Mapping[str, Any] | None, scopes: Mapping[str, Any], prefix: str) -> Any:
    """What the machine's policy asks of every image under ``prefix``: its scope or the
    nearest scope above it (a path, the host, a ``*.domain`` wildcard), else the transport's
    and the policy's default; anything goes when the machine has no policy to read."""
    if system is None:
        return _ACCEPT
    parts = prefix.split("/")
    candidates = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    labels = parts[0].split(".")
    candidates += ["*." + ".".join(labels[n:]) for n in range(1, len(labels))]
    for scope in [*candidates, ""]:
        if scope in scopes:
            return scopes[scope]
    return system.get("default", [{"type": "reject"}])
