"""Build plans for unit tests: a push to main of org/repo, building team/app with the tags v1 and
latest, made by the real :func:`image_builder.plan.make_plan` from a config text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from image_builder.config import parse_config
from image_builder.context import CIContext
from image_builder.plan import BuildPlan, make_plan
from image_builder.tags import Tag

SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TAGS = (Tag(name="default_tag", value="v1"), Tag(name="latest", value="latest"))


def ctx(job_type: str = "postsubmit") -> CIContext:
    return CIContext(
        ci="github",
        event="push",
        job_type=job_type,  # type: ignore[arg-type]
        repo_owner="org",
        repo_name="repo",
        commit_sha=SHA,
        pr_number=5 if job_type == "presubmit" else None,
        source_url="https://github.com/org/repo",
    )


def plan(config_text: str = "", job_type: str = "postsubmit", **overrides: object) -> BuildPlan:
    """The plan for ``config_text``; ``overrides`` replace make_plan's arguments."""
    args: dict[str, object] = {
        "config": parse_config(config_text),
        "ctx": ctx(job_type),
        "tags": TAGS,
        "name": "team/app",
        "context_dir": Path("/ctx"),
        "dockerfile": Path("/ctx/Dockerfile"),
        "platforms": ("linux/amd64",),
        "build_args": [],
        "env_file_args": {},
        "export_tags": False,
        "target": None,
        "push": True,
        "now": NOW,
        "commit_time": None,
    }
    args.update(overrides)
    return make_plan(**args)  # type: ignore[arg-type]
