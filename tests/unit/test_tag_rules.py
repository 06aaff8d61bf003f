"""The tag rules users know from docker/metadata-action: version tags from a git tag push,
``latest`` only where a release moves it, template fields over the ref, and the event table
behind all of it. Driven through ``main()`` with real GitHub payloads where one exists."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from image_builder.cli import main
from image_builder.config import parse_config
from image_builder.context import CIContext
from image_builder.events import EVENTS, JOB_TYPES, JOBS, rule
from image_builder.tags import TemplateValues, render_template, template_values, version_of
from tests.conftest import EVENTS as EVENT_FILES

SRC = Path(__file__).resolve().parents[2] / "src" / "image_builder"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


@pytest.fixture(autouse=True)
def _in_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def github(monkeypatch: pytest.MonkeyPatch, event: str, payload: str, **extra: str) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_NAME", event)
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(EVENT_FILES / payload))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def tags(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, list[tuple[str, str]], list[str]]:
    """Exit code, (name, value) pairs, and the warnings (GitHub's ::warning:: lines)."""
    code = main(["tags", "--context", ".", *argv])
    out, err = capsys.readouterr()
    pairs = [(t["name"], t["value"]) for t in json.loads(out)] if out.strip() else []
    warnings = [line.removeprefix("::warning::") for line in err.splitlines()]
    return code, pairs, warnings


def plan(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> dict[str, Any]:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    code = main(["build", "--name", "team/app", "--context", ".", "--dry-run", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


# --- the event table ----------------------------------------------------------------------------


def test_the_event_table() -> None:
    table = {
        job: (r.event, r.default_tag_key, r.registry_key, r.signed, r.gets_secrets, r.cache_key)
        for job, r in JOBS.items()
    }
    assert table == {
        "presubmit": (
            "pull_request",
            "default-pr-tag",
            "dev-registry",
            False,
            False,
            "dev-cache-repo",
        ),
        "merge_group": (
            "merge_group",
            "default-merge-group-tag",
            "dev-registry",
            False,
            False,
            "dev-cache-repo",
        ),
        "postsubmit": ("push", "default-commit-tag", "registry", True, True, "cache-repo"),
        "schedule": ("schedule", "default-commit-tag", "registry", True, True, "cache-repo"),
        "workflow_dispatch": (
            "workflow_dispatch",
            "default-commit-tag",
            "registry",
            True,
            True,
            "cache-repo",
        ),
    }
    assert set(EVENTS.values()) == set(JOB_TYPES)
    assert EVENTS["pull_request_target"] == EVENTS["pull_request"] == "presubmit"
    assert [j for j in JOB_TYPES if rule(j).pull_request] == ["presubmit"]


def _job_type_literals(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in JOB_TYPES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for element in node.elts for v in _job_type_literals(element)]
    return []


def test_no_module_but_the_event_table_compares_job_type_strings() -> None:
    """A comparison with a job-type string anywhere else is a rule outside the table."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "events.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    found += [
                        f"{path.relative_to(SRC)}:{node.lineno} {v}"
                        for v in _job_type_literals(side)
                    ]
    assert found == []


def test_the_comparison_check_sees_a_comparison() -> None:
    tree = ast.parse('if ctx.job_type in ("presubmit", "merge_group") or x != "schedule": pass')
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert [
        v for n in compares for s in (n.left, *n.comparators) for v in _job_type_literals(s)
    ] == [
        "presubmit",
        "merge_group",
        "schedule",
    ]


# --- version tags -------------------------------------------------------------------------------


def test_a_version_tag_push_gets_version_major_minor_and_major(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, "push", "push.tag.json", GITHUB_REF="refs/tags/v1.2.3", GITHUB_SHA=SHA)
    code, got, warnings = tags(capsys, "--tag", "latest")
    assert (code, warnings) == (0, [])
    assert got == [
        ("latest", "latest"),
        ("Version", "1.2.3"),
        ("MajorMinor", "1.2"),
        ("Major", "1"),
        ("default_tag", f"v{today()}-6113728f"),
    ]


def test_a_pre_release_gets_only_its_full_version_and_never_latest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, "push", "push.tag-prerelease.json")
    code, got, warnings = tags(capsys, "--tag", "latest")
    assert code == 0
    assert got == [("Version", "1.3.0-rc.1"), ("default_tag", f"v{today()}-6113728f")]
    assert warnings == [
        "tag 'latest' (--tag) is not applied: v1.3.0-rc.1 is a pre-release",
    ]


def test_a_deleted_tag_builds_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, "push", "push.tag-deleted.json", GITHUB_SHA=SHA)
    code, got, warnings = tags(capsys)
    assert (code, got) == (2, [])
    assert warnings == [
        "::error::push event for refs/tags/v1.2.3 has head_commit: null (the push deleted the "
        "ref); there is nothing to build, so skip this job when github.event.deleted is true"
    ]


def test_semver_tags_are_configurable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "push", "push.tag.json")
    config = tmp_path / "c.yaml"
    config.write_text("semver-tags: ['v{{ .Major }}.{{ .Minor }}', 'stable-{{ .Version }}']\n")
    assert tags(capsys, "--config", str(config))[1][:2] == [
        ("vMajorMinor", "v1.2"),
        ("stable-Version", "stable-1.2.3"),
    ]
    config.write_text("semver-tags: []\n")
    assert tags(capsys, "--config", str(config))[1] == [("default_tag", f"v{today()}-6113728f")]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("refs/tags/v1.2.3", "1.2.3"),
        ("refs/tags/1.2.3", "1.2.3"),
        ("refs/tags/v1.3.0-rc.1", "1.3.0-rc.1"),
        ("refs/tags/v1.2.3+build.5", "1.2.3+build.5"),
        ("refs/tags/v1.2", None),  # not a semantic version
        ("refs/tags/release-1", None),
        ("refs/tags/v01.2.3", None),  # leading zero
        ("refs/heads/v1.2.3", None),  # a branch, not a tag
        (None, None),
    ],
)
def test_version_of(ref: str | None, expected: str | None) -> None:
    version = version_of(ref)
    assert (str(version) if version else None) == expected


# --- latest and release-only tags ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload", "extra", "reason"),
    [
        (
            "pull_request",
            "pull_request.opened.json",
            {},
            "pull_request builds never move release-only tags (presubmit)",
        ),
        (
            "pull_request_target",
            "pull_request_target.synchronize.json",
            {},
            "pull_request_target builds never move release-only tags (presubmit)",
        ),
        (
            "merge_group",
            "merge_group.checks_requested.json",
            {},
            "merge_group builds never move release-only tags (merge_group)",
        ),
        (
            "push",
            "push.deleted.json",  # the payload's repository; the ref is another branch
            {},
            None,
        ),
    ],
)
def test_latest_is_dropped_where_a_release_does_not_move_it(
    event: str,
    payload: str,
    extra: dict[str, str],
    reason: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    if reason is None:  # a push to a feature branch
        data = json.loads((EVENT_FILES / "push.new-branch.json").read_text())
        data["ref"] = "refs/heads/feature"
        (tmp_path / "push.json").write_text(json.dumps(data))
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_EVENT_NAME", "push")
        monkeypatch.setenv("GITHUB_EVENT_PATH", str(tmp_path / "push.json"))
        reason = "refs/heads/feature is neither the default branch (master) nor a version tag"
    else:
        github(monkeypatch, event, payload, **extra)
    code, got, warnings = tags(capsys, "--tag", "latest", "--tag", "keep=k-{{ .ShortSHA }}")
    assert code == 0
    assert "latest" not in [value for _, value in got]
    assert next(name for name, _ in got) == "keep"  # other user tags stay
    assert warnings == [f"tag 'latest' (--tag) is not applied: {reason}"]


def test_the_default_branch_moves_latest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "push", "push.new-branch.json")  # refs/heads/master, default: master
    assert tags(capsys, "--tag", "latest")[1][0] == ("latest", "latest")
    config = tmp_path / "c.yaml"
    config.write_text("default-branch: main\n")  # config wins over the payload
    _, got, warnings = tags(capsys, "--tag", "latest", "--config", str(config))
    assert got == [("default_tag", f"v{today()}-6113728f")]
    assert warnings == [
        "tag 'latest' (--tag) is not applied: refs/heads/master is neither the default "
        "branch (main) nor a version tag"
    ]


def test_an_unknown_ref_is_not_held_against_a_release_build(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipeline run without BASE_REF (the Go client sends none for a push) keeps latest, as
    the Go tool did; a known other branch does not."""
    ado = {"BUILD_BUILDID": "1", "REPO_OWNER": "o", "REPO_NAME": "r", "JOB_TYPE": "postsubmit"}
    for key, value in {**ado, "PULL_BASE_SHA": SHA}.items():
        monkeypatch.setenv(key, value)
    assert tags(capsys, "--tag", "latest")[1][0] == ("latest", "latest")
    monkeypatch.setenv("BASE_REF", "refs/heads/release-1.0")
    code, got, warnings = tags(capsys, "--tag", "latest")
    assert code == 0
    assert [v for _, v in got] == [f"v{today()}-6113728f"]
    assert warnings == [
        "##vso[task.logissue type=warning]tag 'latest' (--tag) is not applied: "
        "refs/heads/release-1.0 is neither the default branch (main or master) nor a version tag"
    ]


@pytest.mark.parametrize("event", ["schedule", "workflow_dispatch"])
def test_scheduled_and_manual_runs_of_the_default_branch_move_latest(
    event: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, event, f"{event}.json", GITHUB_SHA=SHA, GITHUB_REF="refs/heads/master")
    code, got, warnings = tags(capsys, "--tag", "latest")
    assert (code, warnings, got[0]) == (0, [], ("latest", "latest"))


def test_config_marks_more_tags_release_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "pull_request", "pull_request.opened.json")
    config = tmp_path / "c.yaml"
    config.write_text(
        "registry: ghcr.io/o\ndev-registry: ghcr.io/o/dev\nrelease-only-tags: [stable, edge]\n"
    )
    _, got, warnings = tags(
        capsys, "--config", str(config), "--tag", "stable", "--tag", "edge=e-{{ .PRNumber }}",
        "--tag", "latest",
    )  # fmt: skip
    assert got == [("default_tag", "PR-2")]  # latest stays release-only
    assert warnings == [
        f"tag {value!r} (--tag) is not applied: pull_request builds never move release-only "
        "tags (presubmit)"
        for value in ("stable", "e-2", "latest")
    ]


def test_the_plan_says_which_rule_made_each_tag_and_why_one_was_dropped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "push", "push.tag-prerelease.json")
    data = plan(capsys, tmp_path, "--tag", "latest", "--tag", "sha={{ .ShortSHA }}")
    assert [(t["value"], t["rule"]) for t in data["tags"]] == [
        ("6113728f", "--tag"),
        ("1.3.0-rc.1", "semver-tags (refs/tags/v1.3.0-rc.1)"),
        (f"v{today()}-6113728f", "default-commit-tag"),
    ]
    assert data["dropped_tags"] == [
        {
            "name": "latest",
            "value": "latest",
            "rule": "--tag",
            "reason": "v1.3.0-rc.1 is a pre-release",
        }
    ]


def test_a_pull_request_plan_shows_the_dropped_latest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "pull_request", "pull_request.opened.json")
    data = plan(capsys, tmp_path, "--tag", "latest")
    assert [t["value"] for t in data["tags"]] == ["PR-2"]
    assert data["references"] == ["localhost:5000/dev/team/app:PR-2"]
    assert [d["reason"] for d in data["dropped_tags"]] == [
        "pull_request builds never move release-only tags (presubmit)"
    ]


# --- template fields ----------------------------------------------------------------------------


def ctx_values(ref: str | None, **fields: Any) -> TemplateValues:
    ctx = CIContext(ci="github", event="push", job_type="postsubmit", ref=ref, **fields)
    return template_values(
        ctx, now=datetime(2026, 12, 7, tzinfo=UTC), env={}, env_file={}, allowed_env=()
    )


@pytest.mark.parametrize(
    ("template", "ref", "expected"),
    [
        ("{{ .Ref }}", "refs/heads/feat/x", "refs-heads-feat-x"),
        ("b-{{ .Branch }}", "refs/heads/feat/x", "b-feat-x"),
        ("{{ .Tag }}", "refs/tags/v1.2.3", "v1.2.3"),
        ("{{ .Version }}", "refs/tags/v1.2.3", "1.2.3"),
        ("{{ .Version }}", "refs/tags/v1.2.3+build.5", "1.2.3_build.5"),
        ("{{ .Major }}.{{ .Minor }}.{{ .Patch }}", "refs/tags/v10.20.30", "10.20.30"),
        ("{{ .Event }}", "refs/heads/main", "push"),
    ],
)
def test_ref_fields(template: str, ref: str, expected: str) -> None:
    assert render_template(template, ctx_values(ref)) == expected


@pytest.mark.parametrize(
    ("template", "ref", "message"),
    [
        (
            "{{ .Tag }}",
            "refs/heads/main",
            "tag template '{{ .Tag }}' uses .Tag, which is only set when building a git tag "
            "(refs/tags/...); this build is of refs/heads/main",
        ),
        (
            "{{ .Branch }}",
            "refs/tags/v1",
            "tag template '{{ .Branch }}' uses .Branch, which is only set when building a "
            "branch; this build is of refs/tags/v1",
        ),
        (
            "{{ .Version }}",
            "refs/tags/nightly",
            "tag template '{{ .Version }}' uses .Version, which is only set when building a "
            "version tag such as refs/tags/v1.2.3; this build is of refs/tags/nightly",
        ),
        (
            "{{ .Ref }}",
            None,
            "tag template '{{ .Ref }}' uses .Ref, which is only set when the git ref being "
            "built is known; this build is of no known ref",
        ),
    ],
)
def test_ref_fields_that_are_not_set_say_when_they_are(
    template: str, ref: str | None, message: str
) -> None:
    from image_builder.errors import TemplateError

    with pytest.raises(TemplateError) as caught:
        render_template(template, ctx_values(ref))
    assert str(caught.value) == message


def test_an_unknown_field_lists_every_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, "push", "push.new-branch.json")
    code, _, errors = tags(capsys, "--tag", "{{ .Branchname }}")
    assert code == 2
    assert errors == [
        "::error::tag template '{{ .Branchname }}' uses unknown field '.Branchname'; supported: "
        "{{ .CommitSHA }}, {{ .ShortSHA }}, {{ .PRNumber }}, {{ .Date }}, {{ .Ref }}, "
        "{{ .Branch }}, {{ .Tag }}, {{ .Version }}, {{ .Major }}, {{ .Minor }}, {{ .Patch }}, "
        '{{ .Event }}, {{ .Env "NAME" }}'
    ]


def test_a_pull_requests_branch_is_its_head_branch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    github(monkeypatch, "pull_request", "pull_request.opened.json")
    head = json.loads((EVENT_FILES / "pull_request.opened.json").read_text())
    branch = head["pull_request"]["head"]["ref"]
    assert tags(capsys, "--tag", "pr-{{ .Branch }}-{{ .Event }}")[1][0] == (
        "pr-Branch-Event",
        f"pr-{branch}-pull_request",
    )


def test_semver_templates_are_checked_when_used(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    github(monkeypatch, "push", "push.tag.json")
    config = tmp_path / "c.yaml"
    config.write_text("semver-tags: ['{{ .Majr }}']\n")
    code, _, errors = tags(capsys, "--config", str(config))
    assert code == 2
    assert errors[0].startswith(
        "::error::tag template '{{ .Majr }}' uses unknown field '.Majr'; supported: "
    )


def test_release_only_tags_are_latest_and_what_config_adds() -> None:
    assert parse_config("").release_only_tags == ()
    assert parse_config("release-only-tags: [stable]").release_only_tags == ("stable",)
