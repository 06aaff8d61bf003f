from __future__ import annotations

import json
from pathlib import Path

import pytest

from image_builder.context import CIContext, detect_ci_context
from image_builder.context.model import PipelineSource, repo_from_url
from image_builder.errors import InputError, UnsupportedEventError
from tests.conftest import EVENTS

SHA_A = "1" * 40
SHA_B = "2" * 40


def github_env(event: str, payload: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / payload),
        **extra,
    }


@pytest.mark.parametrize("event", ["pull_request", "pull_request_target"])
def test_github_pull_request(event: str, tmp_path: Path) -> None:
    ctx = detect_ci_context(
        github_env(event, "pull_request.opened.json", GITHUB_REF="refs/pull/2/merge"), tmp_path
    )
    assert ctx == CIContext(
        ci="github",
        event=event,
        job_type="presubmit",
        repo_owner="Codertocat",
        repo_name="Hello-World",
        pr_number=2,
        base_sha="f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
        head_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        commit_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        ref="refs/pull/2/merge",
        base_ref="refs/heads/master",
        source_url="https://github.com/Codertocat/Hello-World",
        pipeline=PipelineSource(
            base_sha="f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            pull_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            pull_number=2,
        ),
        head_branch="changes",
        default_branch="master",
    )
    assert ctx.is_pull_request
    assert ctx.repository == "Codertocat/Hello-World"


def test_github_push_builds_the_head_commit(tmp_path: Path) -> None:
    ctx = detect_ci_context(github_env("push", "push.new-branch.json", GITHUB_SHA=SHA_A), tmp_path)
    assert ctx.job_type == "postsubmit"
    assert ctx.commit_sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert ctx.base_sha is None  # "before" is all zeros for a new branch
    assert ctx.ref == "refs/heads/master"
    assert ctx.pr_number is None
    assert not ctx.is_pull_request


def test_github_push_with_deleted_ref_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedEventError) as caught:
        detect_ci_context(github_env("push", "push.deleted.json"), tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "push event for refs/heads/feature has head_commit: null (the push deleted the ref); "
        "there is nothing to build, so skip this job when github.event.deleted is true"
    )


def test_github_merge_group_builds_the_group_head(tmp_path: Path) -> None:
    ctx = detect_ci_context(
        github_env("merge_group", "merge_group.checks_requested.json"), tmp_path
    )
    assert ctx.job_type == "merge_group"
    assert ctx.commit_sha == "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d"
    assert ctx.base_sha == "380387fbc80638b734a49e1be1c4dfec1c01b33c"
    assert ctx.ref.startswith("refs/heads/gh-readonly-queue/main/")  # type: ignore[union-attr]
    assert ctx.base_ref == "refs/heads/main"


@pytest.mark.parametrize(
    ("event", "payload"),
    [("workflow_dispatch", "workflow_dispatch.json"), ("schedule", "schedule.json")],
)
def test_github_dispatch_and_schedule_build_github_sha(
    event: str, payload: str, tmp_path: Path
) -> None:
    ctx = detect_ci_context(
        github_env(event, payload, GITHUB_SHA=SHA_A.upper(), GITHUB_REF="refs/heads/main"),
        tmp_path,
    )
    assert ctx.job_type == event
    assert ctx.event == event
    assert ctx.commit_sha == SHA_A
    assert ctx.ref == "refs/heads/main"
    assert ctx.repository == "octo-org/octo-repo"


@pytest.mark.parametrize(
    ("env", "exc", "message"),
    [
        (
            github_env("issues", "push.new-branch.json"),
            UnsupportedEventError,
            "GitHub event 'issues' is not supported; trigger the workflow on one of: push, "
            "pull_request_target, pull_request, merge_group, workflow_dispatch, schedule",
        ),
        (
            {"GITHUB_ACTIONS": "true"},
            InputError,
            "GITHUB_EVENT_NAME is not set; run inside GitHub Actions or unset GITHUB_ACTIONS",
        ),
        (
            {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push"},
            InputError,
            "GITHUB_EVENT_PATH is not set; it must point to the event payload JSON",
        ),
        (
            github_env("schedule", "schedule.json"),
            InputError,
            "GITHUB_SHA is not set; GitHub sets it for schedule events",
        ),
        (
            github_env("schedule", "schedule.json", GITHUB_SHA="abc"),
            InputError,
            "GITHUB_SHA must be a full 40-character commit SHA, got 'abc'",
        ),
        (
            github_env("push", "pull_request.opened.json"),
            InputError,
            "the GitHub push payload is missing what Image Builder needs: 'ref' is required "
            "(and 1 more problem(s))",
        ),
        (
            github_env("merge_group", "push.new-branch.json"),
            InputError,
            "the GitHub merge_group payload is missing what Image Builder needs: "
            "'merge_group' is required",
        ),
    ],
)
def test_github_refusals(
    env: dict[str, str], exc: type[InputError], message: str, tmp_path: Path
) -> None:
    with pytest.raises(exc) as caught:
        detect_ci_context(env, tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message


def test_github_unreadable_and_malformed_payload(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(InputError, match=r"cannot read the GitHub event payload at .*missing.json"):
        detect_ci_context(
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": "push",
                "GITHUB_EVENT_PATH": str(missing),
            },
            tmp_path,
        )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON") as caught:
        detect_ci_context(
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": "push",
                "GITHUB_EVENT_PATH": str(broken),
            },
            tmp_path,
        )
    assert caught.value.exit_code == 2


def test_github_payload_with_bad_sha(tmp_path: Path) -> None:
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    payload["pull_request"]["head"]["sha"] = "$(curl evil)"
    path = tmp_path / "pr.json"
    path.write_text(json.dumps(payload))
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(path),
    }
    with pytest.raises(InputError) as caught:
        detect_ci_context(env, tmp_path)
    assert str(caught.value) == (
        "pull_request.head.sha must be a full 40-character commit SHA, got '$(curl evil)'"
    )


# --- Azure DevOps -----------------------------------------------------------------------------


def ado_env(**values: str) -> dict[str, str]:
    return {
        "BUILD_BUILDID": "42",
        "REPO_OWNER": "kyma-project",
        "REPO_NAME": "test-infra",
        "PULL_BASE_SHA": SHA_A,
        **values,
    }


def test_azure_presubmit(tmp_path: Path) -> None:
    ctx = detect_ci_context(
        ado_env(JOB_TYPE="presubmit", PULL_NUMBER="123", PULL_PULL_SHA=SHA_B), tmp_path
    )
    assert ctx.ci == "azure"
    assert ctx.job_type == "presubmit"
    assert ctx.pr_number == 123
    assert ctx.base_sha == SHA_A
    assert ctx.commit_sha == SHA_B
    assert ctx.repository == "kyma-project/test-infra"


@pytest.mark.parametrize("job_type", ["postsubmit", "schedule", "workflow_dispatch", "merge_group"])
def test_azure_other_job_types_build_the_base_sha(job_type: str, tmp_path: Path) -> None:
    ctx = detect_ci_context(ado_env(JOB_TYPE=job_type), tmp_path)
    assert ctx.job_type == job_type
    assert ctx.commit_sha == SHA_A
    assert ctx.pr_number is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BUILD_BUILDID": "1"},
            "REPO_OWNER is not set; the Azure DevOps pipeline must export it as the repository owner, e.g. kyma-project",
        ),
        (
            ado_env(JOB_TYPE="nightly"),
            "JOB_TYPE 'nightly' is not supported; set it to one of presubmit, postsubmit, "
            "merge_group, workflow_dispatch, schedule",
        ),
        (
            ado_env(JOB_TYPE="presubmit", PULL_PULL_SHA=SHA_B),
            "PULL_NUMBER is not set; the Azure DevOps pipeline must export it as the pull request number",
        ),
        (
            ado_env(JOB_TYPE="presubmit", PULL_NUMBER="abc", PULL_PULL_SHA=SHA_B),
            "PULL_NUMBER must be a positive pull request number, got 'abc'",
        ),
        (
            ado_env(JOB_TYPE="presubmit", PULL_NUMBER="5"),
            "PULL_PULL_SHA is not set; presubmit jobs need the pull request head SHA",
        ),
        (
            ado_env(JOB_TYPE="postsubmit", PULL_BASE_SHA="xyz"),
            "PULL_BASE_SHA must be a commit SHA (4 to 40 hex digits), got 'xyz'",
        ),
    ],
)
def test_azure_refusals(env: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        detect_ci_context(env, tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message


# --- Jenkins ----------------------------------------------------------------------------------


def test_jenkins_pull_request(tmp_path: Path) -> None:
    ctx = detect_ci_context(
        {
            "JENKINS_HOME": "/var/jenkins",
            "CHANGE_ID": "77",
            "GIT_URL": "https://user:secret-token@github.com/acme/widgets.git",
            "GIT_COMMIT": SHA_B,
            "CHANGE_BRANCH": "feature/x",
            "CHANGE_TARGET": "main",
            "CHANGE_BASE_SHA": SHA_A,
        },
        tmp_path,
    )
    assert ctx.ci == "jenkins"
    assert ctx.job_type == "presubmit"
    assert ctx.pr_number == 77
    assert ctx.commit_sha == SHA_B
    assert ctx.base_sha == SHA_A
    assert ctx.ref == "refs/heads/feature/x"
    assert ctx.base_ref == "refs/heads/main"
    assert ctx.repository == "acme/widgets"
    assert ctx.source_url == "https://github.com/acme/widgets"  # credentials removed


def test_jenkins_branch_build(tmp_path: Path) -> None:
    ctx = detect_ci_context(
        {
            "JENKINS_HOME": "/var/jenkins",
            "GIT_URL": "git@github.com:acme/widgets.git",
            "GIT_COMMIT": SHA_A,
            "GIT_BRANCH": "origin/main",
        },
        tmp_path,
    )
    assert ctx.job_type == "postsubmit"
    assert ctx.commit_sha == SHA_A
    assert ctx.ref == "refs/heads/main"
    assert ctx.pr_number is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"JENKINS_HOME": "/j"},
            "GIT_URL is not set; check out the repository with the Jenkins Git plugin",
        ),
        (
            {"JENKINS_HOME": "/j", "GIT_URL": "https://github.com/"},
            "GIT_URL does not name an owner/repository; expected e.g. https://github.com/org/repo.git",
        ),
        (
            {"JENKINS_HOME": "/j", "GIT_URL": "https://github.com/a/b", "CHANGE_ID": "-1"},
            "CHANGE_ID must be a positive pull request number, got '-1'",
        ),
    ],
)
def test_jenkins_refusals(env: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        detect_ci_context(env, tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/org/repo.git", ("org", "repo", "https://github.com/org/repo")),
        ("https://github.com/org/repo", ("org", "repo", "https://github.com/org/repo")),
        ("git@github.com:org/repo.git", ("org", "repo", "https://github.com/org/repo")),
        (
            "ssh://git@example.com:2222/team/org/repo.git",
            ("org", "repo", "https://example.com/team/org/repo"),
        ),
        (
            "https://tok:x@git.example.com:8443/o/r.git",
            ("o", "r", "https://git.example.com:8443/o/r"),
        ),
        ("/srv/git/repo.git", (None, None, None)),
        ("nonsense", (None, None, None)),
    ],
)
def test_repo_from_url(url: str, expected: tuple[str | None, ...]) -> None:
    owner, name, browse = repo_from_url(url)
    assert (owner, name) == expected[:2]
    if expected[2] is not None:
        assert browse == expected[2]


# --- no CI: the git checkout ------------------------------------------------------------------


def make_git(root: Path, *, head: str = "ref: refs/heads/main\n") -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head)
    (git / "config").write_text(
        '[core]\n\tbare = false\n[remote "upstream"]\n\turl = https://github.com/wrong/one\n'
        '[remote "origin"]\n\turl = git@github.com:acme/widgets.git\n'
        "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
    )
    return git


def test_local_checkout_loose_ref(tmp_path: Path) -> None:
    git = make_git(tmp_path)
    (git / "refs" / "heads" / "main").write_text(SHA_A + "\n")
    sub = tmp_path / "images" / "app"
    sub.mkdir(parents=True)
    ctx = detect_ci_context({}, sub)
    assert ctx == CIContext(
        ci="local",
        event="push",
        job_type="postsubmit",
        repo_owner="acme",
        repo_name="widgets",
        head_sha=SHA_A,
        commit_sha=SHA_A,
        ref="refs/heads/main",
        source_url="https://github.com/acme/widgets",
    )


def test_local_checkout_packed_ref_and_detached_head(tmp_path: Path) -> None:
    git = make_git(tmp_path)
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA_B} refs/heads/main\n")
    assert detect_ci_context({}, tmp_path).commit_sha == SHA_B
    (git / "HEAD").write_text(SHA_A + "\n")
    ctx = detect_ci_context({}, tmp_path)
    assert ctx.commit_sha == SHA_A
    assert ctx.ref is None


def test_local_worktree(tmp_path: Path) -> None:
    main_git = make_git(tmp_path / "main")
    wt_git = main_git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (wt_git / "commondir").write_text("../..\n")
    (main_git / "refs" / "heads" / "topic").write_text(SHA_B + "\n")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {wt_git}\n")
    ctx = detect_ci_context({}, worktree)
    assert ctx.commit_sha == SHA_B
    assert ctx.ref == "refs/heads/topic"
    assert ctx.repository == "acme/widgets"


def test_local_without_git_or_commit(tmp_path: Path) -> None:
    plain = detect_ci_context({}, tmp_path)
    assert plain.commit_sha is None
    assert plain.job_type == "postsubmit"
    make_git(tmp_path)  # unborn branch: HEAD names a ref that has no commit yet
    assert detect_ci_context({}, tmp_path).commit_sha is None


def test_detection_order(tmp_path: Path) -> None:
    both = {**ado_env(JOB_TYPE="postsubmit"), "JENKINS_HOME": "/j"}
    assert detect_ci_context(both, tmp_path).ci == "azure"
    gh = {**github_env("push", "push.new-branch.json"), **both}
    assert detect_ci_context(gh, tmp_path).ci == "github"
