"""buildah: the only module that runs it. Builds every platform once, in the sandbox, and hands
the image over as a verified OCI layout. It holds no registry credentials and no keys; the build
secrets of a plan it only hands to the build."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from image_builder import layout, proc, sandbox, workdirs
from image_builder.dockerfile import DockerfileSyntaxError, parse
from image_builder.engines import BuiltImage
from image_builder.errors import ImageBuilderError, RuntimeFailure, ToolMissingError
from image_builder.http import Deadline
from image_builder.oci import is_loopback
from image_builder.plan import BuildPlan
from image_builder.platforms import BINFMT_NAME, QEMU_BINARY, arch_of
from image_builder.sandbox import BuildAccount

log = logging.getLogger(__name__)

_RUN_INSTRUCTION = re.compile(r"^\s*RUN\s", re.IGNORECASE | re.MULTILINE)
# buildah gives every build with --platform the TARGET* arguments itself, and then warns that
# the Dockerfile did not use them, although nobody passed them.
_UNUSED_ARGS = re.compile(r"(one or more build args were not consumed: \[)([^\]]*)(\])")
_PLATFORM_ARGS = frozenset(
    f"{side}{part}"
    for side in ("TARGET", "BUILD")
    for part in ("PLATFORM", "OS", "ARCH", "VARIANT")
)
_LOCAL_PREFIX = "localhost/image-builder-local"
# In the work folder, beside the sandbox and out of the build account's hands.
_SECRETS = "secrets"
_POLICY = "policy.json"
_SYSTEM_POLICY = Path("/etc/containers/policy.json")


class BuildahEngine:
    """Builds in the sandbox (see :mod:`image_builder.sandbox`): buildah runs as the build account
    with storage, a home and a temp folder of its own, made fresh for each build and removed
    after it, so nothing one build leaves behind reaches the next. The image comes back as a
    verified OCI layout in a folder only image-builder can read."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        host_platform: str,
        accounts: Sequence[BuildAccount],
        storage_driver: str | None = None,
        on_line: Callable[[str], None] | None = None,
        binfmt_dir: Path = Path("/proc/sys/fs/binfmt_misc"),
        build_timeout: float = 7200.0,
        lock_timeout: float = 300.0,
    ) -> None:
        self._env = dict(env)
        self._build_timeout = build_timeout
        self._lock_timeout = lock_timeout
        self._deadline: Deadline | None = None
        self._held: workdirs.WorkDir | None = None
        self._host_platform = host_platform
        self._accounts = tuple(accounts)
        self._account = self._accounts[0]
        self._storage_driver = storage_driver
        self._on_line = on_line
        self._binfmt_dir = binfmt_dir
        self._work: Path | None = None
        self._lock = threading.Lock()
        self._masks: tuple[str, ...] = ()  # the build secrets' values, hidden in every line
        self._given: frozenset[str] = frozenset()  # the build arguments the caller named
        self._exported: frozenset[str] = frozenset()  # TAG_<name>, from --export-tags

    # --- public -------------------------------------------------------------------------------

    def build(self, plan: BuildPlan) -> BuiltImage:
        # The syntax was checked before the build (commands.build.prepare); the text serves
        # to name the line of what only buildah finds.
        label = str(plan.dockerfile.relative_to(plan.context_dir))
        try:
            text = plan.dockerfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = None  # buildah says why it cannot read it
        tools = ["buildah", "newuidmap", "newgidmap"]
        if self._accounts[0].dedicated:
            tools += ["unshare", "setpriv"]
        for tool in tools:
            proc.which(tool)
        check_emulation(plan, host_platform=self._host_platform, binfmt_dir=self._binfmt_dir)
        self._deadline = Deadline(self._build_timeout)
        with sandbox.claim(
            self._accounts,
            on_wait=self._say,
            timeout=self._build_timeout,  # a queue for an account, like a CI queue
            stopping=lambda: proc.CHILDREN.stopping,
        ) as account:
            self._account = account
            self._masks = tuple(m for secret in plan.secrets for m in secret.masks())
            self._exported = frozenset(f"TAG_{tag.name}" for tag in plan.tags)
            self._given = frozenset(name for name, _ in plan.build_args) - self._exported
            work = self._prepare(plan)
            try:
                self._build_in(work / "sandbox", plan)
            except RuntimeFailure as exc:
                unreadable = syntax_error(exc, label, text or "")
                if unreadable is None:
                    raise
                raise unreadable from None
            finally:
                # From here on no build account can reach the sandbox, not even the next build
                # of this account: the build's processes died with its PID namespace, and the
                # folder above is image-builder's alone.
                work.chmod(0o700)
                # The secrets' copies go now, not with the rest in the background: nothing
                # needs them any more, and the build's storage, which had them while a RUN step
                # ran, is out of every build account's reach from here on.
                shutil.rmtree(work / _SECRETS, ignore_errors=True)
        image = layout.take(work / "sandbox" / "layout", work / "image", plan.platforms)
        return BuiltImage(layout=image, platforms=plan.platforms)

    def _build_in(self, box: Path, plan: BuildPlan) -> None:
        """Build, and leave the image in the OCI layout ``box/layout`` for the trusted side, which
        writes the index itself in plan order (layout.take)."""
        out = f"oci:{box / 'layout'}:{layout.REF_NAME}"
        if len(plan.platforms) == 1 and plan.cache is None:
            # Straight into the layout, compressed as it is written: its digest is then the one
            # every registry gets, and publishing copies it as it is. (A remote cache needs a
            # named image in storage, hence the other path.)
            self._bud(plan, box, out, is_list=False, compress=True)
            return
        # One bud for all platforms: buildah builds them concurrently and pulls each base once
        # (separate concurrent buds race on the base image and record different base names).
        local_name = f"{_LOCAL_PREFIX}/{uuid.uuid4().hex[:12]}"
        is_list = len(plan.platforms) > 1
        # Then one export of every platform, compressed, in the same sandbox: one buildah
        # process beats one rootless buildah process per platform (measured: 0.12 s against
        # 0.23 s for two platforms).
        export = ["manifest", "push", "--all"] if is_list else ["push"]
        export += self._policy_args(plan, box)
        self._bud(
            plan, box, local_name, is_list=is_list, then=[*export, "--quiet", local_name, out]
        )

    def _say(self, message: str) -> None:
        if self._on_line is not None:
            self._on_line(message)

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        """Import the verified image into image-builder's own local storage under ``references``."""
        if not references:
            return
        # buildah names what it pulls after the layout's path and refuses a name with "_" or
        # capitals, which TMPDIR may hold: the path is given from the work folder's parent, so
        # the name is the work folder's own (image-builder-work-<hex>/image).
        path = image.layout.path
        source = f"oci:{path.parent.name}/{path.name}:{layout.REF_NAME}"
        here = path.parent.parent
        if image.layout.is_list:
            first = references[0]
            self._buildah("manifest", "create", first, what="buildah manifest create")
            for platform in image.platforms:
                pulled = (
                    self._buildah(
                        "pull",
                        "--quiet",
                        "--platform",
                        platform,
                        source,
                        what="buildah pull",
                        cwd=here,
                    )
                    .output.strip()
                    .splitlines()[-1]
                )
                self._buildah("manifest", "add", first, pulled, what="buildah manifest add")
        else:
            pulled = self._buildah("pull", "--quiet", source, what="buildah pull", cwd=here).output
            first = pulled.strip().splitlines()[-1]
        self._buildah("tag", first, *references, what="buildah tag")

    def cleanup(self, image: BuiltImage | None) -> None:
        """Remove this build's sandbox and layout; runs on in the background."""
        del image  # everything of the build lives in its work folder
        if self._work is None:
            return
        work, self._work = self._work, None
        try:
            self._remove(work)
        except (ImageBuilderError, OSError) as exc:
            log.debug("cleanup failed: %s", exc)
        finally:
            if self._held is not None:
                self._held.release()
                self._held = None

    def sweep(self) -> list[Path]:
        """Remove the work folders of earlier builds that no live process holds (a build that
        was killed, or a machine that went down mid-build). Everything a build leaves lives in
        its work folder: its storage, containers, images and temp files; its mounts lived in its
        own mount namespace and ended with it."""
        return workdirs.sweep(Path(tempfile.gettempdir()), self._remove, owner=os.geteuid())

    def _remove(self, work: Path) -> None:
        """Remove ``work`` in the background."""
        if self._account.dedicated or os.geteuid() == 0:
            command = ["rm", "-rf", "--one-file-system", str(work)]
        else:  # rootless storage holds files of the account's subordinate ids
            command = ["buildah", "unshare", "rm", "-rf", "--one-file-system", str(work)]
        proc.spawn(
            command,
            log_path=Path(tempfile.gettempdir()) / "image-builder-cleanup.log",
            env=self._box_env(work / "sandbox"),
        )

    # --- internals ----------------------------------------------------------------------------

    def _bud(
        self,
        plan: BuildPlan,
        box: Path,
        name: str,
        *,
        is_list: bool,
        then: list[str] | None = None,
        compress: bool = False,
    ) -> None:
        """``buildah bud`` in the sandbox; ``then`` is a second buildah command run right after
        it in the same sandbox (one namespace set-up fewer)."""
        platforms = ",".join(plan.platforms)
        context = box / "context" if self._account.dedicated else plan.context_dir
        dockerfile = context / plan.dockerfile.relative_to(plan.context_dir)
        args = [
            "bud",
            "--isolation",
            "chroot",
            "--platform",
            platforms,
            "--file",
            str(dockerfile),
        ]
        args += ["--manifest" if is_list else "--tag", name]
        args += ["--format", "oci", "--identity-label=false"]
        if compress:
            args.append("--disable-compression=false")
        if plan.target:
            args += ["--target", plan.target]
        for key, value in plan.build_args:
            args += ["--build-arg", f"{key}={value}"]
        for key, value in plan.labels:
            args += ["--label", f"{key}={value}"]
        if plan.timestamp is not None:
            args += ["--timestamp", str(plan.timestamp)]
        if plan.cache is not None:
            args += ["--layers", "--cache-from", plan.cache.cache_from]
            if plan.cache.cache_to:
                args += ["--cache-to", plan.cache.cache_to]
        else:
            args += ["--layers=false"]
        # Each secret by the path of its copy: its value is never on a command line (ps shows
        # those to every account) nor in the build's environment.
        for index, secret in enumerate(plan.secrets):
            args += [
                "--secret",
                f"id={secret.id},src={box.parent / _SECRETS / str(index)},type=file",
            ]
        args += self._policy_args(plan, box)
        args.append(str(context))
        binds = [(plan.context_dir, context)] if self._account.dedicated else []
        argv = ["buildah", *args]
        if then:
            second = " ".join(shlex.quote(a) for a in then)
            argv = ["sh", "-c", f'buildah "$@" && exec buildah {second}', "sh", *args]
        self._sandboxed(box, argv, what=f"build for {platforms}", binds=binds)

    def _policy_args(self, plan: BuildPlan, box: Path) -> list[str]:
        """The build's own containers policy under --use-restricted-registry; else the
        machine's, as always."""
        if not plan.restricted_registries:
            return []
        return ["--signature-policy", str(box.parent / _POLICY)]

    def _sandboxed(
        self, box: Path, argv: list[str], *, what: str, binds: list[tuple[Path, Path]] | None = None
    ) -> proc.Result:
        """``argv`` as the build account, with the sandbox's environment only."""
        argv = sandbox.wrap(argv, self._account, binds=binds or [])
        return self._run(argv, env=self._box_env(box), what=what)

    def _buildah(self, *args: str, what: str, cwd: Path | None = None) -> proc.Result:
        """buildah as image-builder itself, on verified data only (never a build), in the
        machine's storage, which another process may hold locked."""
        workdirs.wait_for_lock(
            graphroot(self._env) / "storage.lock",
            timeout=self._lock_timeout,
            say=self._say,
            what="buildah's storage lock",
            stopping=lambda: proc.CHILDREN.stopping,
        )
        return self._run(
            ["buildah", *self._global_args(), *args], env=self._env, what=what, cwd=cwd
        )

    def _run(
        self, argv: list[str], *, env: Mapping[str, str], what: str, cwd: Path | None = None
    ) -> proc.Result:
        on_line = None
        if self._on_line is not None:
            emit = self._on_line

            def on_line(line: str) -> None:
                shown = unused_args_line(line, self._given, self._exported)
                if shown is None:
                    return
                with self._lock:
                    emit(shown)

        deadline = self._deadline or Deadline(self._build_timeout)
        return proc.run(
            argv,
            env=env,
            secrets=self._masks,
            on_line=on_line,
            what=what,
            timeout=deadline.remaining(),
            cwd=cwd,
        )

    def _global_args(self) -> list[str]:
        driver = self._storage_driver or choose_storage_driver(self._env)
        return ["--storage-driver", driver] if driver else []

    def _box_env(self, box: Path) -> dict[str, str]:
        extra = {"CONTAINERS_STORAGE_CONF": str(box / "storage.conf")}
        if (box / "registries.conf").exists():
            extra["CONTAINERS_REGISTRIES_CONF"] = str(box / "registries.conf")
        return sandbox.child_env(box, extra, self._env)

    def _prepare(self, plan: BuildPlan) -> Path:
        """A fresh work folder: ``sandbox/`` belongs to the build account (its storage, home, temp
        folder, registries.conf and the read-only view of the context); the verified image goes
        next to it, where only image-builder can read."""
        self._held = workdirs.create(Path(tempfile.gettempdir()))
        self._work = self._held.path
        if self._account.dedicated:
            self._work.chmod(0o711)  # the build account may pass through, not list
        box = self._work / "sandbox"
        for folder in (box, *(box / name for name in ("tmp", "run", "config", "data"))):
            folder.mkdir(mode=0o700)
            sandbox.give_to(folder, self._account)
        if self._account.dedicated:
            (box / "context").mkdir(mode=0o755)
        driver = self._storage_driver or ("vfs" if _on_overlayfs(box) else "overlay")
        conf = box / "storage.conf"
        conf.write_text(
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{box / "storage"}"\n'
            f'runroot = "{box / "run" / "storage"}"\n'
        )
        conf.chmod(0o644)
        hosts = sorted(set(plan.plain_http_hosts) | _loopback_hosts(plan))
        if hosts:
            base = effective_registries_conf(self._env)
            entries = "".join(
                f'\n[[registry]]\nlocation = "{host}"\ninsecure = true\n'
                for host in hosts
                if f'"{host}"' not in base
            )
            (box / "registries.conf").write_text(base + entries)
            (box / "registries.conf").chmod(0o644)
        if plan.restricted_registries:
            self._write_policy(plan, self._work / _POLICY)
        if plan.secrets:
            self._hand_secrets(plan, self._work / _SECRETS)
        return self._work

    def _write_policy(self, plan: BuildPlan, path: Path) -> None:
        """--use-restricted-registry, again at pull time: a policy that lets buildah pull only
        from the restricted prefixes (and the build's cache), whatever the Dockerfile turned out
        to name. It lies outside the sandbox folder, where the build account cannot replace it."""
        allowed = list(plan.restricted_registries)
        if plan.cache is not None:
            allowed += [r for r in (plan.cache.cache_from, plan.cache.cache_to) if r]
        policy = sandbox.pull_policy(dict.fromkeys(allowed), _system_policy())
        path.write_text(json.dumps(policy, indent=2) + "\n")
        path.chmod(0o644)

    def _hand_secrets(self, plan: BuildPlan, folder: Path) -> None:
        """A copy of each secret in a folder of image-builder's that the build account may pass
        through but not list or write, each file readable by that account alone."""
        folder.mkdir(mode=0o711 if self._account.dedicated else 0o700)
        if "," in str(folder):  # buildah splits --secret at commas
            raise RuntimeFailure(
                f"the work folder {folder} has a comma in its path, which buildah's --secret "
                "cannot take; set TMPDIR to a folder without one"
            )
        try:
            for index, secret in enumerate(plan.secrets):
                sandbox.hand_secret(folder / str(index), secret.value, self._account)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeFailure(
                f"cannot write the build secrets into {folder}: {exc.strerror}"
            ) from None


def check_emulation(plan: BuildPlan, *, host_platform: str, binfmt_dir: Path) -> None:
    """Before a build for a foreign platform with RUN steps: its qemu binary is installed and
    its binfmt_misc handler (in ``binfmt_dir``) registered; a ToolMissingError says how."""
    host_arch = arch_of(host_platform)
    foreign = [p for p in plan.platforms if arch_of(p) != host_arch]
    if not foreign:
        return
    try:
        text = plan.dockerfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if not _RUN_INSTRUCTION.search(text):
        return  # COPY-only builds never execute foreign code
    for platform in foreign:
        arch = arch_of(platform)
        if shutil.which(QEMU_BINARY[arch]) is None:
            raise ToolMissingError(
                f"building {platform} on a {host_platform} host runs RUN steps under "
                f"emulation, but {QEMU_BINARY[arch]} is missing; install it with "
                "`apt-get install qemu-user-static binfmt-support`"
            )
        handler = binfmt_dir / BINFMT_NAME[arch]
        if not handler.exists():
            raise ToolMissingError(
                f"building {platform} needs the binfmt_misc handler {BINFMT_NAME[arch]}; run "
                "`mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && "
                f"update-binfmts --enable {BINFMT_NAME[arch]}` (package binfmt-support)"
            )


# buildah's words for a Dockerfile it cannot read (as opposed to a build that failed).
_SYNTAX = re.compile(
    r"no FROM statement found|[Uu]nknown instruction: \"?(?P<keyword>\w+)\"?"
    r"|[Dd]ockerfile parse error[^:]*:[^&]*|\b[A-Z]+ requires (?:at least|exactly|either)[^&]*"
    r"|\b[A-Z]+ only supports [^&]*"
)
_AT_STEP = re.compile(r'^building at STEP ".*?": ')


def syntax_error(exc: RuntimeFailure, label: str, text: str) -> DockerfileSyntaxError | None:
    """buildah's failure as bad input, naming the line where it can, when it says the
    Dockerfile cannot be read; ``None`` for any other failure."""
    if isinstance(exc, (proc.Timeout, proc.Cancelled)):
        return None
    # buildah's own error line; the step it names is the Dockerfile's text, not buildah's words.
    _, marker, said = str(exc).partition("Error: ")
    if not marker or said.startswith('building at STEP "RUN'):
        return None  # a RUN step that failed ran: its output says anything it likes
    found = _SYNTAX.search(_AT_STEP.sub("", said, count=1))
    if found is None:
        return None
    where = label
    keyword = found.group("keyword")
    if keyword:
        lines = [i.line for i in parse(text) if i.keyword == keyword.upper()]
        where += f" line {lines[0]}" if lines else ""
    return DockerfileSyntaxError(
        f"{where}: buildah cannot read it ({found.group(0).strip()}); fix the Dockerfile"
    )


def unused_args_line(
    line: str, given: frozenset[str], exported: frozenset[str] = frozenset()
) -> str | None:
    """buildah's unused-build-argument warning without the platform arguments it adds itself
    and the ``TAG_<name>`` arguments ``--export-tags`` offers (a Dockerfile uses those it
    wants); ``None`` when only those were left. A caller's own unused argument stays, also one
    named like them. Every other line as it is."""
    found = _UNUSED_ARGS.search(line)
    if found is None:
        return line
    implied = _PLATFORM_ARGS | exported
    names = [n for n in found.group(2).split() if n in given or n not in implied]
    if not names:
        return None
    return line[: found.start(2)] + " ".join(names) + line[found.end(2) :]


_REGISTRY_HOST = re.compile(r"(?<![\w.:\]-])((?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5})/")


def _loopback_hosts(plan: BuildPlan) -> set[str]:
    """Loopback registries the build pulls from (FROM lines, ARG defaults, build args): like the
    destinations, they may be plain HTTP; nothing else may."""
    try:
        text = plan.dockerfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    text += "\n" + "\n".join(value for _, value in plan.build_args)
    return {host for host in _REGISTRY_HOST.findall(text) if is_loopback(host)}


def choose_storage_driver(env: Mapping[str, str]) -> str | None:
    """The storage driver to ask for, or ``None`` to leave it to buildah's own configuration.

    storage.conf or ``STORAGE_DRIVER`` win. Otherwise keep what the storage already uses, and
    prefer overlay unless the storage sits on overlayfs (overlay on overlay does not work).
    """
    if env.get("STORAGE_DRIVER"):
        return None
    if _storage_conf(env).get("driver"):
        return None
    root = graphroot(env)
    if (root / "vfs-images").exists() and not (root / "overlay-images").exists():
        return "vfs"
    if (root / "overlay-images").exists():
        return "overlay"
    return "vfs" if _on_overlayfs(root) else "overlay"


def graphroot(env: Mapping[str, str]) -> Path:
    """Where image-builder's own buildah storage lives, as containers/storage finds it: the
    ``graphroot`` of storage.conf; without root, the system file's does not count (rootless
    storage lives under the user's data folder unless the user's own storage.conf says)."""
    root = _storage_conf(env).get("graphroot")
    rootless = os.geteuid() != 0
    if isinstance(root, str) and root and not (rootless and _system_conf(env)):
        return Path(root)
    if rootless:
        data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/")) / ".local" / "share")
        return Path(data) / "containers" / "storage"
    return Path("/var/lib/containers/storage")


def _system_conf(env: Mapping[str, str]) -> bool:
    return "CONTAINERS_STORAGE_CONF" not in env and not _user_conf(env).exists()


def _user_conf(env: Mapping[str, str]) -> Path:
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "/")) / ".config")
    return Path(config) / "containers" / "storage.conf"


def _storage_conf(env: Mapping[str, str]) -> dict[str, object]:
    default = "/etc/containers/storage.conf"
    if os.geteuid() != 0 and _user_conf(env).exists():
        default = str(_user_conf(env))
    path = Path(env.get("CONTAINERS_STORAGE_CONF", default))
    try:
        conf = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    storage = conf.get("storage") if isinstance(conf, dict) else None
    return storage if isinstance(storage, dict) else {}


def _on_overlayfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    best, fstype = "", ""
    target = str(path)
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or len(fields[1]) <= len(best):
            continue
        if target == fields[1] or target.startswith(fields[1].rstrip("/") + "/"):
            best, fstype = fields[1], fields[2]
    return fstype in ("overlay", "aufs")


def _system_policy(path: Path = _SYSTEM_POLICY) -> dict[str, object] | None:
    """The machine's containers policy, which buildah in the sandbox would use (its home has
    none); ``None`` when there is none. One that cannot be read stops the build rather than be
    replaced: it may ask for signatures that a restricted build must keep asking for."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"cannot read the containers policy {path} ({exc}); fix it, since restricted builds "
            "keep what it requires"
        ) from None
    if not isinstance(data, dict):
        raise RuntimeFailure(f"the containers policy {path} is not a JSON object; fix it")
    return data


def effective_registries_conf(env: Mapping[str, str]) -> str:
    """The main registries.conf buildah would read, so a private copy keeps its settings."""
    candidates = []
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        candidates.append(Path(env["CONTAINERS_REGISTRIES_CONF"]))
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".config/containers/registries.conf")
    candidates.append(Path("/etc/containers/registries.conf"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if re.search(r"^\s*\[registries\.", text, re.MULTILINE):
            log.warning("%s uses the v1 format; plain-HTTP registries get a fresh file", path)
            return ""
        return text + ("\n" if text and not text.endswith("\n") else "")
    return ""
