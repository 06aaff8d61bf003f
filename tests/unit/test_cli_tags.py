"""``image-builder tags`` end to end, through ``main()``, for every supported CI and event."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_builder.cli import main
from image_builder.cli_parser import build_parser
from image_builder.go_flags import translate_legacy_argv
from tests.conftest import DATA, EVENTS

GO_CONFIG = str(DATA / "config" / "go-tool.yaml")


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


@pytest.fixture(autouse=True)
def _in_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The context is a path inside the checkout: each test's folder is its checkout."""
    monkeypatch.chdir(tmp_path)


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, env: Mapping[str, str] | None = None
) -> tuple[int, list[dict[str, str]] | None, str]:
    code = main(list(argv), env=env or {})
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def github(event: str, payload: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / payload),
        **extra,
    }


USER_TAGS = ("--tag", "latest", "--tag", "commit={{ .ShortSHA }}")
MASTER = "refs/heads/master"  # the default branch of the payloads' repositories


def pairs(tags: list[dict[str, str]] | None) -> list[tuple[str, str]]:
    """(name, value) of each tag, without the validation the default tag carries."""
    return [(t["name"], t["value"]) for t in tags or []]


@pytest.mark.parametrize(
    ("event", "payload", "extra", "expected"),
    [
        (
            "pull_request_target",
            "pull_request_target.synchronize.json",
            {},
            [("commit", "1a2b3c4d"), ("default_tag", "PR-123")],
        ),
        (
            "pull_request",
            "pull_request.opened.json",
            {},
            [("commit", "ec26c3e5"), ("default_tag", "PR-2")],
        ),
        (
            "merge_group",
            "merge_group.checks_requested.json",
            {},
            [("commit", "2ffea6db"), ("default_tag", "MG-2ffea6db")],
        ),
        (
            "push",
            "push.new-branch.json",
            {"GITHUB_SHA": "f" * 40},
            [("latest", "latest"), ("commit", "6113728f"), ("default_tag", "v{today}-6113728f")],
        ),
        (
            "workflow_dispatch",
            "workflow_dispatch.json",
            {"GITHUB_SHA": "abcdef0123456789abcdef0123456789abcdef01", "GITHUB_REF": MASTER},
            [("latest", "latest"), ("commit", "abcdef01"), ("default_tag", "v{today}-abcdef01")],
        ),
        (
            "schedule",
            "schedule.json",
            {"GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "GITHUB_REF": MASTER},
            [("latest", "latest"), ("commit", "01234567"), ("default_tag", "v{today}-01234567")],
        ),
    ],
)
def test_github_events(
    event: str,
    payload: str,
    extra: dict[str, str],
    expected: list[tuple[str, str]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``latest`` only where a release of the default branch (master in these payloads) moves it;
    pull-request and merge-group builds drop it with a notice."""
    env = github(event, payload, **extra)
    code, tags, err = run(
        capsys, "tags", "--config", GO_CONFIG, "--context", ".", *USER_TAGS, env=env
    )
    release = expected[0][0] == "latest"
    job = "merge_group" if event == "merge_group" else "presubmit"
    notice = (
        f"::warning::tag 'latest' (--tag) is not applied: {event} builds never move "
        f"release-only tags ({job})\n"
    )
    assert (code, err) == (0, "" if release else notice)
    assert pairs(tags) == [(n, v.format(today=today())) for n, v in expected]


@pytest.mark.parametrize(
    ("env", "expected_default"),
    [
        (
            {"JOB_TYPE": "presubmit", "PULL_NUMBER": "41", "PULL_PULL_SHA": "b" * 40},
            "PR-41",
        ),
        ({"JOB_TYPE": "postsubmit", "BASE_REF": "refs/heads/main"}, "v{today}-aaaaaaaa"),
        ({"JOB_TYPE": "merge_group"}, "MG-aaaaaaaa"),
    ],
)
def test_azure_devops(
    env: dict[str, str],
    expected_default: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    azure = {
        "BUILD_BUILDID": "9",
        "REPO_OWNER": "kyma-project",
        "REPO_NAME": "test-infra",
        "PULL_BASE_SHA": "a" * 40,
        **env,
    }
    code, tags, _ = run(capsys, "tags", "--context", ".", "--tag", "latest", env=azure)
    assert code == 0
    assert pairs(tags) == [
        *([("latest", "latest")] if env["JOB_TYPE"] == "postsubmit" else []),
        ("default_tag", expected_default.format(today=today())),
    ]


@pytest.mark.parametrize(
    ("env", "expected_default"),
    [
        ({"CHANGE_ID": "5"}, "PR-5"),
        ({}, "v{today}-cccccccc"),
    ],
)
def test_jenkins(
    env: dict[str, str],
    expected_default: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    jenkins = {
        "JENKINS_HOME": "/var/lib/jenkins",
        "GIT_URL": "https://github.com/acme/widgets.git",
        "GIT_COMMIT": "c" * 40,
        **env,
    }
    code, tags, _ = run(capsys, "tags", "--context", ".", "--tag", "x={{ .ShortSHA }}", env=jenkins)
    assert code == 0
    assert pairs(tags) == [
        ("x", "cccccccc"),
        ("default_tag", expected_default.format(today=today())),
    ]


def test_env_file_and_tag_template_env(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = github(
        "pull_request",
        "pull_request.opened.json",
        BUILD_NUMBER="88",
        CHANNEL="stable",  # allowed and set: the env file does not override it
    )
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "envs").write_text("VERSION=1.4\nCHANNEL=beta\n")
    config = tmp_path / "config.yaml"
    config.write_text("tag-template-env: [BUILD_NUMBER, VERSION, CHANNEL]\n")
    code, tags, _ = run(
        capsys,
        "tags",
        "--config", str(config),
        "--context", ".",
        "--dockerfile", "app/Dockerfile",
        "--env-file", "envs",
        "--tag", 'v={{ .Env "VERSION" }}-{{ .Env "CHANNEL" }}-{{ .Env "BUILD_NUMBER" }}',
        env=env,
    )  # fmt: skip
    assert code == 0
    assert pairs(tags) == [("v", "1.4-stable-88"), ("default_tag", "PR-2")]


def test_an_env_file_cannot_make_a_secret_readable_by_a_template(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The attack: the repository's env file lists COSIGN_PASSWORD, and a tag template reads it,
    which used to hand the machine's password to the caller's tag."""
    env = github("pull_request", "pull_request.opened.json", COSIGN_PASSWORD="machine-secret-3b7e")
    (tmp_path / "envs").write_text("COSIGN_PASSWORD=x\n")
    code, tags, err = run(
        capsys, "tags", "--context", ".", "--env-file", "envs",
        "--tag", 'leak={{ .Env "COSIGN_PASSWORD" }}', env=env,
    )  # fmt: skip
    assert (code, tags) == (2, None)
    assert "machine-secret-3b7e" not in err
    assert err.strip().endswith(
        'tag template \'{{ .Env "COSIGN_PASSWORD" }}\' reads .Env "COSIGN_PASSWORD", which tag '
        "templates may not read; list it under 'tag-template-env' in config.yaml (an env file "
        "gives values, it never makes a name readable)"
    )


def test_tag_base64_and_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = github("pull_request", "pull_request.opened.json")
    encoded = base64.b64encode(b"one=1,two=2").decode()
    out = tmp_path / "tags.json"
    code, tags, _ = run(
        capsys, "tags", "--context", ".", "--tag-base64", encoded,
        "--tags-output-file", str(out), env=env,
    )  # fmt: skip
    assert code == 0
    assert pairs(tags) == [("one", "1"), ("two", "2"), ("default_tag", "PR-2")]
    assert json.loads(out.read_text()) == tags
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tags.json")] == []


def test_go_tool_spellings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Go's parse-tags-only command line, build flags included: they are accepted and ignored;
    the JSON is Go's (validation, the default tag last) and goes to the output file too."""
    env = github("pull_request", "pull_request.opened.json")
    out = tmp_path / "generated-tags.json"
    code, tags, err = run(
        capsys,
        "--parse-tags-only", "--name", "test-infra/ginkgo", "-config", GO_CONFIG,
        "-context", ".", "-tag", "v{{ .ShortSHA }}", "--tag=edge",
        "-log-dir", str(tmp_path / "logs"), "--silent", "--platform", "linux/arm64",
        "--build-arg=A=1", "--export-tags=true", "--target=", "--use-restricted-registry=false",
        "--use-go-internal-sap-modules", "--oidc-token=not-needed", "--dry-run",
        f"--tags-output-file={out}", env=env,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert tags == [
        {"name": "vShortSHA", "value": "vec26c3e5"},
        {"name": "edge", "value": "edge"},
        {"name": "default_tag", "value": "PR-2", "validation": "^(PR-[0-9]+)$"},
    ]
    assert json.loads(out.read_text()) == tags


def test_parse_tags_only_writes_go_default_output_file() -> None:
    assert translate_legacy_argv(["--parse-tags-only"], exists=lambda _: False) == [
        "tags",
        "--tags-output-file=/generated-tags.json",
    ]
    assert translate_legacy_argv(["--parse-tags-only", "--tags-output-file="], exists=bool) == [
        "tags",
        "--tags-output-file=",
        "--config=/config/image-builder-config.yaml",
    ]


def test_translate_legacy_argv() -> None:
    never = {"exists": lambda _: False}
    assert translate_legacy_argv(["tags", "--tag", "x"], **never) == ["tags", "--tag", "x"]
    assert translate_legacy_argv(["--parse-tags-only=true", "-tag=x"], **never) == [
        "tags",
        "--tag=x",
        "--tags-output-file=/generated-tags.json",
    ]
    assert translate_legacy_argv(["-name", "x", "-log-dir=/l", "--silent=false"], **never) == [
        "--log-dir=/l",
        "build",
        "--name=x",
    ]
    assert translate_legacy_argv(
        ["--name", "x", "--use-restricted-registry", "--use-go-internal-sap-modules=true",
         "--ado-state-output", "--export-tags=0"], **never,
    ) == ["build", "--name=x", "--use-restricted-registry", "--use-go-internal-sap-modules"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["tags", "--tag", "{{ .Nope }}"],
            {},
            "tag template '{{ .Nope }}' uses unknown field '.Nope'",
        ),
        (
            ["tags", "--tag", "a=b=c"],
            {},
            "--tag 'a=b=c' has more than one '='; use name=value",
        ),
        (
            ["tags", "--tag-base64", "%%%"],
            {},
            "--tag-base64 is not valid base64 of UTF-8 text",
        ),
        (
            ["tags", "--env-file", "../../etc/passwd"],
            {},
            "outside the build context",
        ),
        (
            ["tags", "--config", "/nonexistent/config.yaml"],
            {},
            "config file /nonexistent/config.yaml does not exist; pass an existing --config path",
        ),
        (
            ["tags", "--bogus"],
            {},
            "unrecognized argument --bogus; see 'image-builder tags --help'",
        ),
        (
            ["tags", "--tag"],
            {},
            "argument --tag: expected one argument; see 'image-builder tags --help'",
        ),
        (
            ["frobnicate"],
            {},
            "unknown command 'frobnicate'; see 'image-builder --help'",
        ),
        (
            ["tags"],
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": "push",
                "GITHUB_EVENT_PATH": str(EVENTS / "push.deleted.json"),
            },
            "push event for refs/heads/feature has head_commit: null",
        ),
        (
            ["tags", "--tag", "PR-{{ .PRNumber }}"],
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": "schedule",
                "GITHUB_EVENT_PATH": str(EVENTS / "schedule.json"),
                "GITHUB_SHA": "1" * 40,
            },
            "uses .PRNumber, which is only set for pull request builds",
        ),
    ],
)
def test_refusals_exit_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # a checkout with a commit, so only the tested problem remains
    (tmp_path / ".git" / "HEAD").write_text("1" * 40 + "\n")
    code, tags, err = run(capsys, *argv, env=env)
    assert code == 2
    assert tags is None
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "tags", "--debug", "--tag", "{{ .Nope }}")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "TemplateError" in err


def test_no_colour_off_a_tty_and_github_annotations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _, _, plain = run(capsys, "tags", "--tag", "{{ .Nope }}")
    assert plain.startswith("error: ")
    assert "\x1b[" not in plain
    env = github("pull_request", "pull_request.opened.json")
    _, _, annotated = run(capsys, "tags", "--tag", "{{ .Nope }}", env=env)
    assert annotated.startswith("::error::tag template '{{ .Nope }}'")


def commands(parser: object) -> list[list[str]]:
    """Every command path in the parser, e.g. ['tags'], ['config', 'schema']."""
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found: list[list[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append([name])
                found += [[name, *rest] for rest in commands(sub)]
    return found


@pytest.mark.parametrize("path", [[], *commands(build_parser())])
def test_every_help_shows_an_example(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"], env={}) == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "image-builder " + " ".join(path) in out


def test_double_dash_tag_value_is_refused_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    """Defect found by hypothesis: argparse turns ``--tag=--`` into a list, which crashed the
    tag parser with a TypeError instead of a one-line refusal."""
    assert main(["tags", "--tag=--"], env={}) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: argument --tag: [] is not a value; pass --tag=VALUE"
    )
