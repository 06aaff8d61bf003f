"""Table tests from the Go tool's own test cases (kyma-project/test-infra cmd/image-builder:
``prepareADOTemplateParameters``, ``LoadGitStateConfig``, ``parseTags``, ``getTags``,
``generateTags`` and the flag table), run through our command line with the Go spelling. Where
we deliberately differ, the case says so and docs/compatibility.md explains why."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from image_builder.cli import main
from image_builder.cli_parser import build_parser
from image_builder.go_flags import translate_legacy_argv

ADO_CONFIG = """\
ado-config:
  ado-organization-url: https://dev.azure.com/hyperspace-pipelines
  ado-project-name: kyma
  ado-pipeline-id: 14902
"""
# The Go tests' buildConfig.
GO_TAGS_CONFIG = """\
default-pr-tag:
  name: default_tag
  value: PR-{{ .PRNumber }}
  validation: ^(PR-[0-9]+)$
default-commit-tag:
  name: default_tag
  value: v{{ .Date }}-{{ .ShortSHA }}
  validation: ^(v[0-9]{8}-[0-9a-f]{8})$
"""
PLATFORMS = "linux/amd64,linux/arm64"  # the Go tool's default
BASE = {"Name": "test-image", "Dockerfile": "Dockerfile", "Context": ".", "ExportTags": "false"}


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "config.yaml").write_text(ADO_CONFIG + GO_TAGS_CONFIG)
    return tmp_path


def payload(tmp_path: Path, name: str, data: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def repository(owner: str) -> dict[str, Any]:
    return {"name": "test-infra", "owner": {"login": owner}}


def dry_run(capsys: pytest.CaptureFixture[str], env: dict[str, str], *extra: str) -> dict[str, str]:
    """The Go command line with --dry-run: the parameters the pipeline would get."""
    code = main(
        ["--name=test-image", "--context=.", "--dockerfile=Dockerfile", "--config=config.yaml",
         "--dry-run", *extra],
        env=env,
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    params: dict[str, str] = json.loads(out)
    return params


# --- LoadGitStateConfig through prepareADOTemplateParameters ------------------------------------------


def github_case(tmp_path: Path, event: str, data: dict[str, Any], **env: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": payload(tmp_path, event, data),
        **env,
    }


PR_BASE, PR_HEAD = (
    "4b91c74a2aa9aeeb4a265cf1ffe2dd54812b4124",
    "8d0172d980653a377317a8bff9a6bb6ec2334801",
)
PUSH_SHA = "d42f5051757b3e0699eb979d7581404e36fc0eee"
MG_SHA, MG_HEAD = (
    "659bf74f7b4ecab07d9398eec554217b51bad738",
    "e47034172c36d3e5fb407b5ba57adf0f7868599d",
)


def git_state_cases(tmp_path: Path) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    pr_event = {
        "number": 10410,
        "repository": repository("kyma-project"),
        "pull_request": {
            "head": {"sha": PR_HEAD, "ref": "feature"},
            "base": {"sha": PR_BASE, "ref": "main"},
        },
    }
    push_event = {
        "ref": "refs/heads/main",
        "repository": repository("KacperMalachowski"),
        "head_commit": {"id": PUSH_SHA},
    }
    plain = {"repository": repository("KacperMalachowski")}
    merge_group = {
        "repository": repository("kyma-project"),
        "merge_group": {
            "head_sha": MG_HEAD,
            "head_ref": "refs/heads/gh-readonly-queue/main/pr-1-" + MG_SHA,
            "base_sha": MG_SHA,
            "base_ref": "refs/heads/main",
        },
    }
    ref = {"GITHUB_SHA": PUSH_SHA, "GITHUB_REF": "refs/heads/main"}
    return [
        (
            "github pull_request_target",
            github_case(tmp_path, "pull_request_target", pr_event),
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "presubmit",
             "PullNumber": "10410", "PullBaseSHA": PR_BASE, "PullPullSHA": PR_HEAD},
        ),
        (
            "github push",
            github_case(tmp_path, "push", push_event),
            {"RepoName": "test-infra", "RepoOwner": "KacperMalachowski", "JobType": "postsubmit",
             "PullBaseSHA": PUSH_SHA},
        ),
        (
            "github workflow_dispatch",
            github_case(tmp_path, "workflow_dispatch", plain, **ref),
            {"RepoName": "test-infra", "RepoOwner": "KacperMalachowski",
             "JobType": "workflow_dispatch", "PullBaseSHA": PUSH_SHA, "BaseRef": "refs/heads/main"},
        ),
        (
            "github schedule",
            github_case(tmp_path, "schedule", plain, **ref),
            {"RepoName": "test-infra", "RepoOwner": "KacperMalachowski", "JobType": "schedule",
             "PullBaseSHA": PUSH_SHA, "BaseRef": "refs/heads/main"},
        ),
        (
            "github merge_group",
            github_case(
                tmp_path, "merge_group", merge_group, GITHUB_SHA=MG_SHA, GITHUB_REF="refs/heads/main"
            ),
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "merge_group",
             "PullNumber": "0", "PullBaseSHA": MG_SHA, "BaseRef": "refs/heads/main",
             "PullPullSHA": MG_HEAD},
        ),
        (
            # Go's case has GIT_COMMIT "1234"; the default commit tag's validation wants 8 hex
            # digits of it, which the pipeline would refuse, so the client refuses it first.
            "jenkins push (short SHA, scheme-less GIT_URL)",
            {"JENKINS_HOME": "/some/absolute/path", "CHANGE_BRANCH": "refs/heads/main",
             "GIT_URL": "github.com/kyma-project/test-infra.git", "GIT_COMMIT": "1234abcd"},
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "postsubmit",
             "PullBaseSHA": "1234abcd"},
        ),
        (
            "jenkins pull request",
            {"JENKINS_HOME": "/some/absolute/path", "CHANGE_BRANCH": "refs/heads/main",
             "CHANGE_ID": "14", "GIT_URL": "github.com/kyma-project/test-infra.git",
             "GIT_COMMIT": "1234", "CHANGE_BASE_SHA": "4321"},
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "presubmit",
             "PullNumber": "14", "PullBaseSHA": "4321", "BaseRef": "refs/heads/main",
             "PullPullSHA": "1234"},
        ),
        (
            "azure devops presubmit (short SHAs)",
            {"BUILD_BUILDID": "1", "REPO_NAME": "test-infra", "REPO_OWNER": "kyma-project",
             "JOB_TYPE": "presubmit", "PULL_NUMBER": "5", "PULL_BASE_SHA": "abcdef123456",
             "PULL_PULL_SHA": "fedcba654321"},
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "presubmit",
             "PullNumber": "5", "PullBaseSHA": "abcdef123456", "PullPullSHA": "fedcba654321"},
        ),
        (
            "azure devops postsubmit",
            {"BUILD_BUILDID": "1", "REPO_NAME": "test-infra", "REPO_OWNER": "kyma-project",
             "JOB_TYPE": "postsubmit", "PULL_BASE_SHA": "abcdef123456"},
            {"RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "postsubmit",
             "PullBaseSHA": "abcdef123456"},
        ),
    ]  # fmt: skip


CASE_NAMES = [
    "github pull_request_target",
    "github push",
    "github workflow_dispatch",
    "github schedule",
    "github merge_group",
    "jenkins push (short SHA, scheme-less GIT_URL)",
    "jenkins pull request",
    "azure devops presubmit (short SHAs)",
    "azure devops postsubmit",
]


def test_every_git_state_case_runs(tmp_path: Path) -> None:
    assert [case[0] for case in git_state_cases(tmp_path)] == CASE_NAMES


@pytest.mark.parametrize("case", CASE_NAMES)
def test_template_parameters_per_ci_match_the_go_tool(
    case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LoadGitStateConfig's cases, through prepareADOTemplateParameters: byte-identical, and
    --dry-run needs neither token nor credentials."""
    _, env, expected = next(c for c in git_state_cases(workdir) if c[0] == case)
    assert dry_run(capsys, env) == {**BASE, **expected, "Platforms": PLATFORMS}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # "Tag with parentheses"
        (
            ["--tag=1.25.1-ShortSHA=1.25.1-{{ .ShortSHA }}"],
            {"Tags": "MS4yNS4xLVNob3J0U0hBPTEuMjUuMS17eyAuU2hvcnRTSEEgfX0="},
        ),
        # "With target set"
        (["--target=build"], {"Target": "build"}),
        # "With useRestrictedRegistry flag set"
        (["--use-restricted-registry"], {"useRestrictedRegistry": "true"}),
        (["--use-go-internal-sap-modules=true"], {"UseGoInternalSAPModules": "true"}),
        (["--use-restricted-registry=false", "--target="], {}),
        # Tags and build arguments as Tags.String() writes them: name=value, names derived.
        (
            ["--tag=latest", "--tag=v{{ .ShortSHA }}", "--build-arg=BIN=test",
             "--build-arg=BIN2=test2", "--export-tags", "--platform=linux/arm64",
             "--platform=linux/amd64"],
            {"Tags": base64.b64encode(b"latest=latest,vShortSHA=v{{ .ShortSHA }}").decode(),
             "BuildArgs": "BIN=test,BIN2=test2", "ExportTags": "true",
             "Platforms": "linux/arm64,linux/amd64"},
        ),
    ],
)  # fmt: skip
def test_template_parameters_from_flags_match_the_go_tool(
    flags: list[str],
    expected: dict[str, str],
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """prepareADOTemplateParameters' own cases (with a real CI context: Go's cases leave the
    repository and commit empty, which our client refuses before any call)."""
    _, env, git = git_state_cases(workdir)[1]  # a push
    assert dry_run(capsys, env, *flags) == {**BASE, **git, "Platforms": PLATFORMS, **expected}


def test_an_empty_repository_is_refused_before_any_call(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Go sends RepoName "" when its git state is empty and lets the pipeline fail; we refuse."""
    env = {"BUILD_BUILDID": "1", "REPO_NAME": "", "REPO_OWNER": "o", "JOB_TYPE": "postsubmit",
           "PULL_BASE_SHA": "abcd"}  # fmt: skip
    code = main(["--name=test-image", "--config=config.yaml", "--dry-run"], env=env)
    assert code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "REPO_NAME is not set; the Azure DevOps pipeline must export it as the repository name, "
            "e.g. test-infra"
        )
    )


# --- parseTags, getTags, generateTags --------------------------------------------------------------

ADO_PR = {"BUILD_BUILDID": "1", "REPO_NAME": "test-infra", "REPO_OWNER": "kyma-project",
          "JOB_TYPE": "presubmit", "PULL_NUMBER": "5", "PULL_BASE_SHA": "abcdef123456",
          "PULL_PULL_SHA": "abcdef123456"}  # fmt: skip
ADO_COMMIT = {"BUILD_BUILDID": "1", "REPO_NAME": "test-infra", "REPO_OWNER": "kyma-project",
              "JOB_TYPE": "postsubmit", "PULL_BASE_SHA": "abcdef123456"}  # fmt: skip
PR_DEFAULT = {"name": "default_tag", "value": "PR-5", "validation": "^(PR-[0-9]+)$"}


def commit_default(short: str) -> dict[str, str]:
    return {
        "name": "default_tag",
        "value": f"v{today()}-{short}",
        "validation": "^(v[0-9]{8}-[0-9a-f]{8})$",
    }


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        # "pares only PR default tag"
        (ADO_PR, [], [PR_DEFAULT]),
        # "parse only commit default tag"
        (ADO_COMMIT, [], [commit_default("abcdef12")]),
        # "parse PR default and additional tags"
        (
            ADO_PR,
            ["--tag=AnotherTest=Another-{{ .PRNumber }}", "--tag=Test=tag-value"],
            [{"name": "AnotherTest", "value": "Another-5"},
             {"name": "Test", "value": "tag-value"}, PR_DEFAULT],
        ),
        # "parse commit default and additional tags"
        (
            ADO_COMMIT,
            ["--tag=AnotherTest=Another-{{ .CommitSHA }}", "--tag=Test=tag-value"],
            [{"name": "AnotherTest", "value": "Another-abcdef123456"},
             {"name": "Test", "value": "tag-value"}, commit_default("abcdef12")],
        ),
        # "parse tags from base64 encoded flag"
        (
            ADO_PR,
            ["--tag-base64=" + base64.b64encode(
                b"base64testtag=testtag,base64testtemplate=test-{{ .PRNumber }}").decode()],
            [{"name": "base64testtag", "value": "testtag"},
             {"name": "base64testtemplate", "value": "test-5"}, PR_DEFAULT],
        ),
        # generateTags "Success - With Base64 tags": Go renders .ShortSHA empty on pull
        # requests (version=""); we render the pull request's head commit, and never an empty tag.
        # (Go's case has latest, which a pull request never moves here: test_tag_rules.py.)
        (
            ADO_PR,
            ["--tag-base64=" + base64.b64encode(b"edge,version={{ .ShortSHA }}").decode()],
            [{"name": "edge", "value": "edge"}, {"name": "version", "value": "abcdef12"},
             PR_DEFAULT],
        ),
        # Issue 16: same value, different names: every TAG_<name> survives.
        (
            ADO_COMMIT,
            ["--tag=a=latest", "--tag=b=latest", "--tag=TagTemplate=v{{ .Date }}-{{ .ShortSHA }}"],
            [{"name": "a", "value": "latest"}, {"name": "b", "value": "latest"},
             {"name": "TagTemplate", "value": f"v{today()}-abcdef12"},
             commit_default("abcdef12")],
        ),
    ],
)  # fmt: skip
def test_parse_tags_only_matches_the_go_tool(
    env: dict[str, str],
    flags: list[str],
    expected: list[dict[str, str]],
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (workdir / "tags.yaml").write_text(GO_TAGS_CONFIG)
    code = main(
        ["--parse-tags-only", "--config=tags.yaml", "--context=.", "--dockerfile=Dockerfile",
         "--tags-output-file=tags.json", *flags],
        env=env,
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out) == expected
    assert json.loads((workdir / "tags.json").read_text()) == expected


def test_get_tags_custom_template_and_env(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """getTags "custom template, additional fields, env variable". .Env reads only what config
    lists in tag-template-env (Go read any variable of the machine)."""
    sha = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    env = {**ADO_COMMIT, "PULL_BASE_SHA": sha, "CUSTOM_ENV": "customEnvValue"}
    (workdir / "tags.yaml").write_text(
        "default-commit-tag: {name: TagTemplate, value: '{{ .ShortSHA }}'}\n"
        "tag-template-env: [CUSTOM_ENV]\n"
    )
    code = main(
        ["--parse-tags-only", "--config=tags.yaml", "--tags-output-file=", "--tag=latest",
         "--tag=Test=cookie", "--tag=AnotherTest={{ .CommitSHA }}",
         '--tag=TestEnv={{ .Env "CUSTOM_ENV" }}'],
        env=env,
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {"name": "latest", "value": "latest"},
        {"name": "Test", "value": "cookie"},
        {"name": "AnotherTest", "value": sha},
        {"name": "TestEnv", "value": "customEnvValue"},
        {"name": "TagTemplate", "value": "da39a3ee"},
    ]
    assert not (workdir / "tags.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # "parse bad tag template" / "Error - Invalid tag template"
        (["--tag=BadTagTemplate={{ .ASD }}"], "uses unknown field '.ASD'"),
        # "Error - Invalid Base64 encoding"
        (["--tag-base64=not-a-valid-base64-string-!@#"], "--tag-base64 is not valid base64"),
        # "Error - Unwritable output file"
        (
            ["--tags-output-file=/unwritable-dir/tags.json"],
            "cannot write /unwritable-dir/tags.json: folder /unwritable-dir does not exist; "
            "create it first",
        ),
    ],
)
def test_parse_tags_refusals_are_exit_2(
    flags: list[str],
    message: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Go exits 1 for these; ours are bad input, exit 2, one line."""
    code = main(["--parse-tags-only", "--context=.", *flags], env=ADO_PR)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


# --- the flag table ------------------------------------------------------------------------------


def parsed(argv: list[str]) -> dict[str, Any]:
    return vars(build_parser().parse_args(translate_legacy_argv(argv, exists=lambda _: False)))


def test_go_flag_table() -> None:
    """Go's "Test Flags" entries: every flag, in Go's syntax, lands in our options."""
    args = parsed(
        ["--config=config.yaml", "--dockerfile=dockerfile", "--repo=kyma-project/test-infra",
         "--name=test-image", "--tag=latest", "--tag=cookie=cookie", "--context=prow/build",
         "--log-dir=prow/logs", "--silent", "--export-tags", "--build-arg=BIN=test",
         "--build-arg=BIN2=test2", "--platform=linux/amd64", "--target=build"]
    )  # fmt: skip
    assert {k: args[k] for k in ("config", "dockerfile", "repo", "name", "tag", "context")} == {
        "config": "config.yaml",
        "dockerfile": "dockerfile",
        "repo": "kyma-project/test-infra",
        "name": "test-image",
        "tag": ["latest", "cookie=cookie"],
        "context": "prow/build",
    }
    assert (args["log_dir"], args["silent"], args["export_tags"]) == ("prow/logs", True, True)
    assert (args["build_arg"], args["platform"], args["target"]) == (
        ["BIN=test", "BIN2=test2"],
        ["linux/amd64"],
        "build",
    )


def test_go_unknown_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Go's "unknown flag, fail"; ours is exit 2 with the flag named."""
    assert main(["--name=x", "--unknown-flag=asdasd"], env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unrecognized argument --unknown-flag; see 'image-builder build --help'"
    assert len(err.splitlines()) == 1


# --- the rest of the Go surface ------------------------------------------------------------------


def test_go_config_leniency(tmp_path: Path) -> None:
    """Keys and values the Go tool ignored load, each with a notice; typos stay errors."""
    from image_builder.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(
        "kaniko-config: {flags: [--cache]}\n"
        "log-format: fancy\n"
        "registry: https://ghcr.io/org\n"
        "dev-registry: http://ghcr.io/org/dev\n"
        "sign-config:\n  signers:\n    - {name: s, type: cosign, job-type: [periodic],"
        " config: {private-key: k}}\n"
    )
    config = load_config(path)
    assert (config.registry, config.dev_registry, config.log_format) == (
        ("ghcr.io/org",),
        ("ghcr.io/org/dev",),
        "text",
    )
    assert config.sign_config.signers[0].job_type == ("schedule",)
    assert config.notices == (
        f"{path}: log-format 'fancy' is not color, text or json; using text",
        f"{path}: dev-registry 'http://ghcr.io/org/dev': the scheme is dropped and ghcr.io is "
        "reached over HTTPS; list it in insecure-registries for plain HTTP",
        f"{path}: key 'kaniko-config' means nothing to Image Builder; ignoring it (as the Go "
        "tool did)",
    )


def test_config_notices_are_warnings(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "tags.yaml").write_text("kaniko-config: {}\n")
    argv = ["--parse-tags-only", "--config=tags.yaml", "--tags-output-file="]
    assert main(argv, env=ADO_COMMIT) == 0
    err = capsys.readouterr().err
    assert "##vso[task.logissue type=warning]tags.yaml: key 'kaniko-config' means nothing" in err


def test_tags_output_file_in_build_mode(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "tags.yaml").write_text(GO_TAGS_CONFIG)
    code = main(["--name=app", "--config=tags.yaml", "--tag=a=latest", "--tag=b=latest",
                 "--tags-output-file=out.json", "--export-tags", "--dry-run"],
                env=ADO_COMMIT)  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads((workdir / "out.json").read_text()) == [
        {"name": "a", "value": "latest"},
        {"name": "b", "value": "latest"},
        commit_default("abcdef12"),
    ]
    plan = json.loads(out)
    assert plan["destinations"][0]["tags"] == ["latest", f"v{today()}-abcdef12"]
    assert {"TAG_a", "TAG_b", "TAG_default_tag"} <= set(plan["build_args"])


def test_ado_state_output_in_sign_only_mode(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Go tool's exact variable line, false when signing fails (here: nothing to sign)."""
    argv = ["--sign-only", "--ado-state-output", "--name=ignored", "--images-to-sign="]
    code = main(argv, env={})
    out, err = capsys.readouterr()
    assert code == 2
    assert out == (
        "##vso[task.setvariable variable=signing_success;issecret=false;isoutput=true]false\n"
    )
    assert err.strip() == (
        "error: name what to sign: --images-to-sign with at least one reference, or "
        "--from-report with a build report (not both)"
    )


def test_silent_and_log_dir(tmp_path: Path) -> None:
    """--log-dir keeps a copy of every line, secrets masked; --silent keeps tools' output off the
    terminal but not out of the log."""
    import io

    from image_builder.reporter import Reporter

    err, log = io.StringIO(), io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, env={})
    reporter.keep_log(log, silent=True)
    reporter.mask("s3cr3t-value")
    reporter.stream("RUN echo s3cr3t-value")
    reporter.warning("step uses s3cr3t-value")
    assert err.getvalue() == "warning: step uses ***\n"
    assert log.getvalue() == "RUN echo ***\nwarning: step uses ***\n"


def test_log_dir_that_cannot_be_written_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    assert main(["--parse-tags-only", f"--log-dir={tmp_path / 'file'}"], env={}) == 2
    assert "cannot write the log to --log-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("inputs", "name", "message"),
    [
        ({"IB_INPUT_IMAGE_NAME": "team/app"}, "team/app", None),
        ({"IB_INPUT_NAME": "team/app", "IB_INPUT_IMAGE_NAME": "team/app"}, "team/app", None),
        (
            {"IB_INPUT_NAME": "team/a", "IB_INPUT_IMAGE_NAME": "team/b"},
            None,
            "inputs 'name' ('team/a') and 'image-name' ('team/b') differ; give only one",
        ),
        (
            {"IB_INPUT_NAME": "x", "IB_INPUT_USE_RESTRICTED_REGISTRY": "yes"},
            None,
            "input 'use-restricted-registry' must be true or false, got 'yes'",
        ),
    ],
)
def test_action_takes_the_go_input_names(
    inputs: dict[str, str], name: str | None, message: str | None
) -> None:
    from image_builder.commands.github import action_build
    from image_builder.errors import InputError

    env = {**inputs, "IB_INPUT_USE_GO_INTERNAL_SAP_MODULES": "true", "IB_INPUT_OIDC_TOKEN": "t"}
    if message is not None:
        with pytest.raises(InputError) as caught:
            action_build(env)
        assert str(caught.value) == message
        assert caught.value.exit_code == 2
        return
    options = action_build(env).options
    assert (options.name, options.use_go_internal_sap_modules, options.oidc_token) == (
        name,
        True,
        "t",
    )


# --- review findings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--name=x", "--export-tags=maybe"], {}, "--export-tags=maybe: a Go boolean flag takes "
         "true or false"),
        (["--name=x", "--tag"], {}, "--tag needs a value; see 'image-builder --help'"),
        (["--name=x", "--config=config.yaml", "--dry-run", "--secret=id=a,env=HOME"], ADO_COMMIT,
         "--secret cannot be sent to Azure DevOps: the trusted pipeline mounts only the secrets "
         "its own config declares (go-internal-sap-modules); drop --secret or build with "
         "--backend local"),
        (["--name=x", "--config=config.yaml", "--dry-run", "--build-arg=HOME"], ADO_COMMIT,
         "--build-arg HOME has no value; the ADO backend sends build arguments as given, never "
         "this machine's values: pass HOME=value"),
        (["--name=x", "--config=config.yaml", "--dry-run"],
         {"JENKINS_HOME": "/j", "GIT_URL": "github.com/o/r.git", "CHANGE_ID": "3",
          "CHANGE_BASE_SHA": "abcd1234"},
         "a pull request build needs the pull request's head SHA"),
    ],
)  # fmt: skip
def test_go_command_line_refusals(
    argv: list[str],
    env: dict[str, str],
    message: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv, env=env) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message), err
    assert len(err.splitlines()) == 1


def test_postsubmit_ignores_pull_pull_sha_as_go_did(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Azure DevOps job passes `$(PULL_PULL_SHA)` unexpanded outside pull requests."""
    env = {**ADO_COMMIT, "PULL_PULL_SHA": "$(PULL_PULL_SHA)"}
    assert dry_run(capsys, env)["PullBaseSHA"] == "abcdef123456"


def test_our_global_flags_before_a_subcommand_and_go_precedence() -> None:
    never = {"exists": lambda _: False}
    ours = ["--silent", "--log-dir", "/l", "build", "--name", "x"]
    assert translate_legacy_argv(ours, **never) == ours
    assert translate_legacy_argv(["--log-dir=/l", "tags"], **never) == ["--log-dir=/l", "tags"]
    assert translate_legacy_argv(["--parse-tags-only", "--sign-only", "--images-to-sign=a"],
                                 **never) == ["sign", "--images-to-sign=a"]  # fmt: skip
    assert translate_legacy_argv(["--sign-only", "--parse-tags-only", "--images-to-sign=a"],
                                 **never) == ["sign", "--images-to-sign=a"]  # fmt: skip


@pytest.mark.parametrize("flag", ["-debug", "--debug", "-debug=true", "--debug=1"])
def test_go_debug_spellings_turn_debug_on(
    flag: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [flag, "--parse-tags-only", "--tag={{ .Nope }}", "--tags-output-file="]
    assert main(argv, env={}) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_multi_line_secret_is_masked_line_by_line() -> None:
    """GitHub's runner reads one line per ::add-mask:: directive; the rest would show."""
    import io

    from image_builder.reporter import Reporter

    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, env={"GITHUB_ACTIONS": "true"})
    reporter.mask("machine h\nlogin robot\npassword p4ss-7c1d\n")
    assert err.getvalue().splitlines() == [
        "::add-mask::machine h",
        "::add-mask::login robot",
        "::add-mask::password p4ss-7c1d",
    ]
    reporter.result('{"final": "password p4ss-7c1d"}')
    reporter.stream("cat: password p4ss-7c1d")
    assert "p4ss-7c1d" not in out.getvalue() + err.getvalue().split("\n", 3)[3]


def test_json_log_lines_are_masked_before_json_escapes_them() -> None:
    """log-format: json writes "\\"" for a quote and "\\u00e9" for é: a secret holding either
    would no longer match the mask in the encoded line."""
    import io

    from image_builder.reporter import Reporter

    err = io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, env={}, log_format="json")
    reporter.mask('pa"ss-é-7c1d')
    reporter.stream('echo pa"ss-é-7c1d')
    reporter.warning('uses pa"ss-é-7c1d')
    assert "7c1d" not in err.getvalue()
    assert [json.loads(line)["msg"] for line in err.getvalue().splitlines()] == [
        "echo ***",
        "uses ***",
    ]
