"""The CI context: which CI, which event, which repository and commit. Parsed once, then frozen.

Detection is pure apart from reading the event payload or the git metadata it points to: the
environment comes in as a mapping, never from ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from image_builder.context.model import CIContext, CISystem

__all__ = ["CIContext", "CISystem", "detect_ci_context"]


def detect_ci_context(env: Mapping[str, str], context_dir: Path) -> CIContext:
    """Work out the CI system from ``env`` and parse its context.

    GitHub Actions (``GITHUB_ACTIONS=true``) wins over Azure DevOps (``BUILD_BUILDID``), which wins
    over Jenkins (``JENKINS_HOME``). With none of them, the git checkout of ``context_dir`` is used.
    """
    if env.get("GITHUB_ACTIONS") == "true":
        from image_builder.context import github

        return github.load(env)
    if env.get("BUILD_BUILDID"):
        from image_builder.context import azure

        return azure.load(env)
    if env.get("JENKINS_HOME"):
        from image_builder.context import jenkins

        return jenkins.load(env)
    from image_builder.context import local

    return local.load(context_dir)
