"""``image-builder registry start|stop|status``: the embedded registry on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from image_builder.reporter import Reporter


@dataclass(frozen=True, kw_only=True)
class RegistryOptions:
    action: Literal["start", "stop", "status"]
    address: str = "127.0.0.1:5000"  # where ``start`` listens


def run_registry(options: RegistryOptions, *, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder import embedded_registry

    if options.action == "start":
        state = embedded_registry.start(env, options.address)
        reporter.result(f"registry running on {state.address} (data in {state.data_dir})")
        return 0
    if options.action == "stop":
        stopped = embedded_registry.stop(env)
        reporter.result("registry stopped" if stopped else "registry was not running")
        return 0
    state = embedded_registry.status(env)
    if state.running:
        reporter.result(
            f"registry running on {state.address} (pid {state.pid}, data in {state.data_dir})"
        )
        return 0
    reporter.result("registry not running; start it with: image-builder registry start")
    return 1
