"""Platforms: ``os/arch[/variant]`` strings, validated against what the engine can build."""

from __future__ import annotations

from collections.abc import Iterable

from image_builder.errors import InputError

KNOWN_ARCHES = ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")
_VARIANTS = {"arm": ("v5", "v6", "v7"), "arm64": ("v8",)}
# uname -m → OCI architecture
_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# OCI architecture → the qemu-user-static binary that runs it
QEMU_BINARY = {
    "amd64": "qemu-x86_64-static",
    "arm64": "qemu-aarch64-static",
    "arm": "qemu-arm-static",
    "386": "qemu-i386-static",
    "ppc64le": "qemu-ppc64le-static",
    "s390x": "qemu-s390x-static",
    "riscv64": "qemu-riscv64-static",
}
# OCI architecture → the binfmt_misc handler name Debian registers
BINFMT_NAME = {
    "amd64": "qemu-x86_64",
    "arm64": "qemu-aarch64",
    "arm": "qemu-arm",
    "386": "qemu-i386",
    "ppc64le": "qemu-ppc64le",
    "s390x": "qemu-s390x",
    "riscv64": "qemu-riscv64",
}


def host_platform(machine: str) -> str:
    """``linux/<arch>`` for a ``platform.machine()`` value."""
    return f"linux/{_MACHINE_TO_ARCH.get(machine.lower(), machine.lower())}"


def parse_platforms(values: Iterable[str]) -> tuple[str, ...]:
    """Split comma-separated values, validate and normalise each, drop repeats (order kept)."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            platform = normalise(item)
            if platform not in out:
                out.append(platform)
    return tuple(out)


def normalise(value: str) -> str:
    parts = value.lower().split("/")
    if len(parts) not in (2, 3) or parts[0] != "linux" or parts[1] not in KNOWN_ARCHES:
        raise InputError(
            f"unknown platform {value!r}; use linux/<arch>[/<variant>] with arch one of "
            + ", ".join(KNOWN_ARCHES)
            + " (e.g. linux/amd64,linux/arm64)"
        )
    os_name, arch = parts[0], parts[1]
    if len(parts) == 3:
        variant = parts[2]
        if variant not in _VARIANTS.get(arch, ()):
            raise InputError(f"unknown platform {value!r}: {arch} has no variant {variant!r}")
        if arch == "arm64":  # linux/arm64/v8 is linux/arm64
            return f"{os_name}/{arch}"
        return f"{os_name}/{arch}/{variant}"
    return f"{os_name}/{arch}"


def arch_of(platform: str) -> str:
    return platform.split("/")[1]
