"""buildah: the only module that runs it. Builds each platform once, assembles a manifest list
for multi-platform builds, and pushes with the digest taken from the push itself."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import tomllib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from image_builder import proc
from image_builder.engines import BuiltImage
from image_builder.errors import ImageBuilderError, RuntimeFailure, ToolMissingError
from image_builder.http import RetryableError, RetryPolicy
from image_builder.plan import BuildPlan, registry_host
from image_builder.platforms import BINFMT_NAME, QEMU_BINARY, arch_of

log = logging.getLogger(__name__)

_RUN_INSTRUCTION = re.compile(r"^\s*RUN\s", re.IGNORECASE | re.MULTILINE)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LOCAL_PREFIX = "localhost/image-builder-local"
# What buildah prints for a push the registry refused for good (401, 403, a bad manifest).
_FINAL_PUSH_ERROR = re.compile(
    r"unauthorized|authentication required|denied|manifest invalid", re.I
)


class BuildahEngine:
    def __init__(
        self,
        *,
        env: Mapping[str, str],
        host_platform: str,
        storage_driver: str | None = None,
        on_line: Callable[[str], None] | None = None,
        retries: int = 2,
        retry_delay: str = "1s",
        binfmt_dir: Path = Path("/proc/sys/fs/binfmt_misc"),
    ) -> None:
        self._env = dict(env)
        self._host_platform = host_platform
        self._storage_driver = storage_driver
        self._on_line = on_line
        self._retries = retries
        self._retry_delay = retry_delay
        self._binfmt_dir = binfmt_dir
        self._tmp: Path | None = None
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------------------

    def build(self, plan: BuildPlan) -> BuiltImage:
        proc.which("buildah")
        self._check_emulation(plan)
        self._prepare(plan)
        slug = re.sub(r"[^a-z0-9]+", "-", plan.name)
        local_name = f"{_LOCAL_PREFIX}/{slug}:{uuid.uuid4().hex[:12]}"
        is_list = len(plan.platforms) > 1
        # One bud for all platforms: buildah builds them concurrently and pulls each base once
        # (separate concurrent buds race on the base image and record different base names).
        # buildah adds platforms to the list as they finish. Only a reproducible build needs a
        # fixed order (its digest must not depend on which build won); re-ordering costs five
        # buildah calls, so other builds keep buildah's order.
        reorder = is_list and plan.timestamp is not None
        built = f"{local_name}-unordered" if reorder else local_name
        self._bud(plan, built, is_list=is_list)
        if reorder:
            self._ordered_list(built, local_name, plan.platforms)
        return BuiltImage(local_name=local_name, is_list=is_list, platforms=plan.platforms)

    def _ordered_list(self, source: str, target: str, platforms: tuple[str, ...]) -> None:
        """Copy ``source`` into ``target`` in plan order. buildah adds platforms as they finish,
        so the index digest would otherwise depend on which build won the race."""
        try:
            index = json.loads(
                self._buildah("manifest", "inspect", source, what="buildah manifest inspect").output
            )
            images = json.loads(
                self._buildah("images", "--all", "--json", what="buildah images").output
            )
            by_digest = {i.get("digest"): i["id"] for i in images if i.get("id")}
            by_platform = {}
            for entry in index.get("manifests", []):
                p = entry.get("platform", {})
                key = "/".join(
                    x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x
                )
                by_platform[key] = by_digest[entry["digest"]]
            self._buildah("manifest", "create", target, what="buildah manifest create")
            for platform in platforms:
                self._buildah(
                    "manifest", "add", target, by_platform[platform], what="buildah manifest add"
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeFailure(f"cannot read the manifest list buildah built: {exc!r}") from None
        finally:
            self._quiet("manifest", "rm", source)

    def push(self, image: BuiltImage, reference: str, *, plain_http: bool) -> str:
        digest_dir = Path(tempfile.mkdtemp(prefix="image-builder-digest-"))
        digest_file = digest_dir / "digest"
        try:
            tls = ["--tls-verify=false"] if plain_http else []
            if image.is_list:
                args = ["manifest", "push", "--all", *tls, "--digestfile", str(digest_file)]
            else:
                args = [
                    "push",
                    *tls,
                    "--retry",
                    str(self._retries),
                    "--retry-delay",
                    self._retry_delay,
                ]
                args += ["--digestfile", str(digest_file)]
            # buildah retries blob transfers itself (--retry); `manifest push` has no such flag, and
            # a failed manifest upload is worth a second go too, so the whole push is retried.
            policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=4.0, budget=120.0)

            def attempt() -> None:
                try:
                    self._buildah(
                        *args,
                        image.local_name,
                        f"docker://{reference}",
                        what=f"push to {reference}",
                        prefix=f"[{reference}] ",
                    )
                except RuntimeFailure as exc:
                    if _FINAL_PUSH_ERROR.search(str(exc)):
                        raise  # refused credentials or content: another try changes nothing
                    raise RetryableError(str(exc)) from exc

            try:
                policy.run(attempt)
            except RetryableError as exc:
                raise RuntimeFailure(str(exc)) from None
            try:
                digest = digest_file.read_text().strip()
            except OSError:
                raise RuntimeFailure(
                    f"push to {reference} reported success but wrote no digest"
                ) from None
            if not _DIGEST.fullmatch(digest):
                raise RuntimeFailure(
                    f"push to {reference} reported an unexpected digest {digest[:80]!r}"
                )
            return digest
        finally:
            shutil.rmtree(digest_dir, ignore_errors=True)

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        if references:
            self._buildah("tag", image.local_name, *references, what="buildah tag")

    def cleanup(self, image: BuiltImage | None) -> None:
        if image is not None:
            if image.is_list:
                self._quiet("manifest", "rm", image.local_name)
            else:
                self._quiet("rmi", "--force", image.local_name)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- internals ----------------------------------------------------------------------------

    def _bud(self, plan: BuildPlan, name: str, *, is_list: bool) -> None:
        platforms = ",".join(plan.platforms)
        args = [
            "bud",
            "--isolation",
            "chroot",
            "--platform",
            platforms,
            "--file",
            str(plan.dockerfile),
        ]
        args += ["--manifest" if is_list else "--tag", name]
        args += ["--format", "oci", "--identity-label=false"]
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
        args.append(str(plan.context_dir))
        try:
            self._buildah(*args, what=f"build for {platforms}")
        except ImageBuilderError:
            self.cleanup(BuiltImage(local_name=name, is_list=is_list, platforms=plan.platforms))
            raise

    def _buildah(self, *args: str, what: str, prefix: str = "") -> proc.Result:
        on_line = None
        if self._on_line is not None:
            emit = self._on_line

            def on_line(line: str) -> None:
                with self._lock:
                    emit(prefix + line)

        return proc.run(
            ["buildah", *self._global_args(), *args],
            env=self._child_env(),
            on_line=on_line,
            what=what,
        )

    def _quiet(self, *args: str) -> None:
        """Clean-up that nothing waits for: it runs on in the background."""
        log_path = Path(tempfile.gettempdir()) / "image-builder-cleanup.log"
        try:
            proc.spawn(
                ["buildah", *self._global_args(), *args], log_path=log_path, env=self._child_env()
            )
        except (ImageBuilderError, OSError) as exc:
            log.debug("cleanup step failed: %s", exc)

    def _global_args(self) -> list[str]:
        driver = self._storage_driver or choose_storage_driver(self._env)
        return ["--storage-driver", driver] if driver else []

    def _child_env(self) -> dict[str, str]:
        env = dict(self._env)
        if self._tmp is not None and (self._tmp / "registries.conf").exists():
            env["CONTAINERS_REGISTRIES_CONF"] = str(self._tmp / "registries.conf")
        return env

    def _prepare(self, plan: BuildPlan) -> None:
        """Plain-HTTP registries go into a private registries.conf, so TLS stays on for the rest."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="image-builder-"))
        hosts = sorted({registry_host(r) for r in plan.insecure_registries} | _loopback_hosts(plan))
        if not hosts:
            return
        base = _effective_registries_conf(self._env)
        entries = "".join(
            f'\n[[registry]]\nlocation = "{host}"\ninsecure = true\n'
            for host in hosts
            if f'"{host}"' not in base
        )
        (self._tmp / "registries.conf").write_text(base + entries)

    def _check_emulation(self, plan: BuildPlan) -> None:
        host_arch = arch_of(self._host_platform)
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
                    f"building {platform} on a {self._host_platform} host runs RUN steps under "
                    f"emulation, but {QEMU_BINARY[arch]} is missing; install it with "
                    "`apt-get install qemu-user-static binfmt-support`"
                )
            handler = self._binfmt_dir / BINFMT_NAME[arch]
            if not handler.exists():
                raise ToolMissingError(
                    f"building {platform} needs the binfmt_misc handler {BINFMT_NAME[arch]}; run "
                    "`mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && "
                    f"update-binfmts --enable {BINFMT_NAME[arch]}` (package binfmt-support)"
                )


_LOOPBACK_REGISTRY = re.compile(r"(?<![\w.-])((?:localhost|127(?:\.\d{1,3}){3}|\[::1\]):\d{1,5})/")


def _loopback_hosts(plan: BuildPlan) -> set[str]:
    """Loopback registries the build pulls from (FROM lines, ARG defaults, build args): like the
    destinations, they may be plain HTTP; nothing else may."""
    try:
        text = plan.dockerfile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    text += "\n" + "\n".join(value for _, value in plan.build_args)
    return set(_LOOPBACK_REGISTRY.findall(text))


def choose_storage_driver(env: Mapping[str, str]) -> str | None:
    """The storage driver to ask for, or ``None`` to leave it to buildah's own configuration.

    storage.conf or ``STORAGE_DRIVER`` win. Otherwise keep what the storage already uses, and
    prefer overlay unless the storage sits on overlayfs (overlay on overlay does not work).
    """
    if env.get("STORAGE_DRIVER"):
        return None
    conf_path = Path(env.get("CONTAINERS_STORAGE_CONF", "/etc/containers/storage.conf"))
    graphroot = Path("/var/lib/containers/storage")
    try:
        conf = tomllib.loads(conf_path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        conf = {}
    storage = conf.get("storage", {}) if isinstance(conf, dict) else {}
    if isinstance(storage, dict):
        if storage.get("driver"):
            return None
        if isinstance(storage.get("graphroot"), str):
            graphroot = Path(storage["graphroot"])
    if (graphroot / "vfs-images").exists() and not (graphroot / "overlay-images").exists():
        return "vfs"
    if (graphroot / "overlay-images").exists():
        return "overlay"
    return "vfs" if _on_overlayfs(graphroot) else "overlay"


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


def _effective_registries_conf(env: Mapping[str, str]) -> str:
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
