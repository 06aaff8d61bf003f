"""Build secrets (``--secret``, ``--use-go-internal-sap-modules``) and
``--use-restricted-registry``, up to the plan: refusals with exit 2 and one line, release-only
secrets, ids only in the plan, the secret's file and the build's pull policy."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_builder.cli import main
from image_builder.commands.build import BuildOptions, prepare, withheld_notice
from image_builder.config import load_config, parse_config
from image_builder.errors import InputError
from image_builder.events import JobType
from image_builder.plan import gives_secrets
from image_builder.sandbox import BuildAccount, hand_secret, pull_policy
from image_builder.secrets import BuildSecret, SecretSource, parse_flag
from tests.conftest import EVENTS, leaks

VALUE = "s3cret-value-7f3a9c"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout holding the build context ``ctx``, a secret file outside it, and a push
    event."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_NAME", "push")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(EVENTS / "push.new-branch.json"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "inside.txt").write_text(VALUE)
    (tmp_path / "secret.txt").write_text(VALUE + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def build(*argv: str) -> list[str]:
    return ["build", "--name", "team/app", "--context", "ctx", "--dry-run", *argv]


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(build(*argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert VALUE not in captured.err
    return lines[0].removeprefix("::error::")


def planned(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(build(*argv)) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert leaks(VALUE, captured.out, captured.err) == []  # GitHub is told to mask it
    data = json.loads(captured.out)
    assert isinstance(data, dict)
    return data


# --- the flag's form ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tok", "--secret '***': expected comma-separated key=value pairs, e.g. id=npmrc,src="),
        ("id=tok,src=", "--secret 'id=tok,src=': expected comma-separated key=value pairs"),
        (
            "id=tok,path=f",
            "--secret 'id=tok,path=***': unknown key 'path'; use id, src (or source) and env, "
            "e.g. ",
        ),
        (
            "src=secret.txt",
            "--secret 'src=secret.txt': no id; add id=NAME, the name that "
            "RUN --mount=type=secret,id=NAME uses",
        ),
        (
            "id=tok,src=secret.txt,env=TOKEN",
            "--secret 'id=tok,src=secret.txt,env=TOKEN': give src=FILE or env=VARIABLE, not both",
        ),
        (
            "id=tok",
            "--secret 'id=tok': say where the value comes from: id=tok,src=FILE or "
            "id=tok,env=VARIABLE",
        ),
        (
            "id=../../x,src=secret.txt",
            "--secret 'id=../../x,src=secret.txt': the id '../../x' may hold only letters, "
            "digits, '_', '.' and '-' (at most 64, not only dots); rename it",
        ),
        ("id=..,src=secret.txt", "--secret 'id=..,src=secret.txt': the id '..' may hold only"),
        (
            "id=tok,env=1BAD",
            "--secret 'id=tok,env=1BAD': '1BAD' is not a variable name; use letters, digits and "
            "'_', e.g. TOKEN",
        ),
        (
            "id=tok,type=env,src=secret.txt",
            "--secret 'id=tok,type=env,src=secret.txt': type=env does not match its source; use "
            "type=file with src= and type=env with env=, or leave type out",
        ),
        ("id=a,id=b,src=secret.txt", "--secret 'id=a,id=b,src=secret.txt': id is given twice"),
    ],
)
def test_malformed_secrets_are_refused(
    value: str, message: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(capsys, "--secret", value).startswith(message)


def test_a_value_passed_by_mistake_is_never_repeated(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """build-push-action's ``secrets:`` input takes NAME=value; here that would be a leak."""
    assert refused(capsys, "--secret", f"GIT_AUTH_TOKEN={VALUE}") == (
        "--secret 'GIT_AUTH_TOKEN=***': unknown key 'git_auth_token'; use id, src (or source) "
        "and env, e.g. id=npmrc,src=$HOME/.npmrc or id=token,env=TOKEN"
    )
    assert refused(capsys, "--secret", VALUE) == (
        "--secret '***': expected comma-separated key=value pairs, e.g. id=npmrc,src="
        "$HOME/.npmrc or id=token,env=TOKEN"
    )


def test_the_flags_forms() -> None:
    assert parse_flag("id=npmrc,src=/home/me/.npmrc") == SecretSource(
        id="npmrc", file=Path("/home/me/.npmrc"), origin="--secret 'id=npmrc,src=/home/me/.npmrc'"
    )
    assert parse_flag("type=env,ID=gh,env=GH_TOKEN").env == "GH_TOKEN"
    assert parse_flag("id=a.b_c-1,source=f,type=file").file == Path("f")


# --- the secret's source ------------------------------------------------------------------------


def test_sources_that_cannot_be_read_are_refused(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert refused(capsys, "--secret", "id=tok,src=missing.txt") == (
        "--secret 'id=tok,src=missing.txt': the file missing.txt does not exist; give the path "
        "of the file that holds the secret"
    )
    (workspace / "folder").mkdir()
    assert refused(capsys, "--secret", "id=tok,src=folder") == (
        "--secret 'id=tok,src=folder': folder is not a file; give the file with the secret"
    )
    os.mkfifo(workspace / "fifo")  # would block a reader that waits for a writer
    assert refused(capsys, "--secret", "id=tok,src=fifo").endswith(
        "fifo is not a file; give the file with the secret"
    )
    assert refused(capsys, "--secret", "id=tok,src=secret.txt/x") == (
        "--secret 'id=tok,src=secret.txt/x': cannot read secret.txt/x (Not a directory); make "
        "it readable by image-builder"
    )
    (workspace / "big").write_bytes(b"x" * (500 * 1024 + 1))
    assert refused(capsys, "--secret", "id=tok,src=big") == (
        "--secret 'id=tok,src=big': the secret is larger than 500 KiB; build secrets are for "
        "credentials, put data in the build context"
    )
    monkeypatch.delenv("TOKEN", raising=False)
    assert refused(capsys, "--secret", "id=tok,env=TOKEN") == (
        "--secret 'id=tok,env=TOKEN': the variable TOKEN is not set or empty; set it, or take "
        "the secret from a file with src="
    )
    monkeypatch.setenv("TOKEN", "")
    assert "the variable TOKEN is not set or empty" in refused(
        capsys, "--secret", "id=tok,env=TOKEN"
    )


def test_a_secret_inside_the_build_context_is_refused(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The build reads its context without any secret mount, pull requests included."""
    (workspace / "ctx" / "link").symlink_to(workspace / "ctx" / "inside.txt")
    for path in ("ctx/inside.txt", f"{workspace}/ctx/link", "ctx/../ctx/inside.txt"):
        assert refused(capsys, "--secret", f"id=tok,src={path}") == (
            f"--secret 'id=tok,src={path}': {path} lies inside the build context, where every "
            "build can read it without a secret mount, pull requests too; keep it outside the "
            "context"
        )


def test_an_id_is_given_once(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / "config.yaml").write_text("go-internal-sap-modules: {id: tok, env: NETRC}\n")
    assert refused(capsys, "--secret", "id=tok,src=secret.txt", "--secret", "id=tok,env=HOME") == (
        "--secret 'id=tok,env=HOME': the id tok is taken by --secret 'id=tok,src=secret.txt'; "
        "give each secret its own id"
    )
    assert refused(
        capsys, "--config", "config.yaml", "--secret", "id=tok,src=secret.txt",
        "--use-go-internal-sap-modules",
    ) == (
        "go-internal-sap-modules in config.yaml: the id tok is taken by --secret "
        "'id=tok,src=secret.txt'; give each secret its own id"
    )  # fmt: skip


def test_image_builders_own_credentials_never_become_build_secrets(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a caller hands the signing key, the password or the registry login to the
    build, which may read nothing of the kind (sandbox.exposed_secrets)."""
    key = workspace / "cosign.key"
    key.write_text("key")
    auth = workspace / "auth.json"
    auth.write_text("{}")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    monkeypatch.setenv("COSIGN_PASSWORD", VALUE)
    (workspace / "config.yaml").write_text(
        "sign-config:\n  signers:\n  - name: release\n    type: cosign\n"
        f"    config: {{private-key: {key}, password-env: SIGNING_PASS}}\n"
    )
    (workspace / "hard").hardlink_to(key)
    for source in (f"src={key}", "src=hard", f"src={auth}", "env=COSIGN_PASSWORD",
                   "env=SIGNING_PASS", "env=AUTHORIZATION"):  # fmt: skip
        message = refused(capsys, "--config", "config.yaml", "--secret", f"id=x,{source}")
        assert message.startswith(f"--secret 'id=x,{source}': ")
        assert "image-builder's own" in message
        assert message.endswith("never reach a build; give the build a credential of its own")


def test_the_trusted_side_refuses_a_callers_secret(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: on the trusted machine, --secret would read its files and variables."""
    (workspace / "config.yaml").write_text(
        "trust:\n  - issuer: https://token.actions.githubusercontent.com\n"
        "    audience: image-builder\n"
        "    job-workflow-refs: [org/builder/.github/workflows/image-builder.yml@refs/heads/main]\n"
        "    repository-owners: [{name: org, id: 1}]\n    events: [push]\n"
    )
    assert refused(
        capsys, "--config", "config.yaml", "--layout-out", "out", "--secret", "id=k,src=secret.txt"
    ) == (
        "--secret is refused with a trust policy: it would read files and variables of this "
        "trusted machine; the config declares the secrets a build may get "
        "(go-internal-sap-modules, mounted with --use-go-internal-sap-modules)"
    )


# --- go-internal-sap-modules --------------------------------------------------------------------


def test_go_internal_sap_modules_needs_its_config(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(capsys, "--use-go-internal-sap-modules") == (
        "--use-go-internal-sap-modules needs go-internal-sap-modules in config.yaml (its id, and "
        "file or env: where the credential is); add it, or drop the flag"
    )


def test_go_internal_sap_modules_is_mounted_by_its_id(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GO_NETRC", VALUE)
    (workspace / "config.yaml").write_text("go-internal-sap-modules: {env: GO_NETRC}\n")
    plan = planned(
        capsys, "--config", "config.yaml", "--use-go-internal-sap-modules",
        "--secret", "id=npmrc,src=secret.txt",
    )  # fmt: skip
    assert plan["secrets"] == ["npmrc", "netrc"]
    assert plan["withheld_secrets"] == []
    assert plan["build_args"] == []  # a secret is never a build argument
    (workspace / "config.yaml").write_text("go-internal-sap-modules: {file: missing.netrc}\n")
    assert refused(capsys, "--config", "config.yaml", "--use-go-internal-sap-modules") == (
        "go-internal-sap-modules in config.yaml: the file missing.netrc does not exist; give the "
        "path of the file that holds the secret"
    )


# --- release builds only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_type", "presubmits", "gives"),
    [
        ("postsubmit", False, True),
        ("schedule", False, True),
        ("workflow_dispatch", False, True),
        ("presubmit", False, False),
        ("merge_group", False, False),
        ("presubmit", True, True),
        ("merge_group", True, True),
    ],
)
def test_secrets_go_to_release_builds_only(
    job_type: JobType, presubmits: bool, gives: bool
) -> None:
    config = parse_config(f"secrets-for-presubmits: {str(presubmits).lower()}\n")
    assert gives_secrets(config, job_type) is gives


PR_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "pull_request",
    "GITHUB_EVENT_PATH": str(EVENTS / "pull_request.opened.json"),
    "TOKEN": VALUE,
}


def test_a_pull_request_build_gets_no_secret_and_says_so(workspace: Path) -> None:
    """Not read at all: a fork's pull request has no secrets to give, and its build still
    runs."""
    options = BuildOptions(
        name="team/app",
        context="ctx",
        secrets=("id=tok,env=TOKEN", "id=file,src=not-there-on-a-fork"),
    )
    plan, _ = prepare(
        options, config=load_config(None), env=PR_ENV, now=NOW, host_platform="linux/amd64"
    )
    assert plan.secrets == ()
    assert plan.withheld_secrets == ("tok", "file")
    assert plan.to_json()["withheld_secrets"] == ["tok", "file"]
    assert withheld_notice(plan) == (
        "build secrets withheld from this presubmit build, whose Dockerfile comes from the pull "
        "request: tok, file; set secrets-for-presubmits: true in config.yaml to mount them"
    )
    (workspace / "config.yaml").write_text("secrets-for-presubmits: true\n")
    with pytest.raises(InputError, match="the file not-there-on-a-fork does not exist"):
        prepare(
            replace(options, config=workspace / "config.yaml"),
            config=load_config(workspace / "config.yaml"),
            env=PR_ENV,
            now=NOW,
            host_platform="linux/amd64",
        )


def test_the_publish_stage_reads_no_secret_and_checks_no_base_image(workspace: Path) -> None:
    """--from-layout builds nothing: the trusted publish job holds neither the go-modules
    credential nor needs the Dockerfile's bases, and must not fail for want of them."""
    (workspace / "config.yaml").write_text(
        "go-internal-sap-modules: {file: /nonexistent/netrc}\n"
        "restricted-registries: [cgr.dev/sap.com]\n"
    )
    (workspace / "ctx" / "Dockerfile").write_text("FROM docker.io/library/golang:1.22\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
           "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json")}  # fmt: skip
    options = BuildOptions(
        name="team/app",
        context="ctx",
        config=workspace / "config.yaml",
        use_go_internal_sap_modules=True,
        use_restricted_registry=True,
        from_layout=workspace / "layout",
    )
    plan, _ = prepare(
        options, config=load_config(options.config), env=env, now=NOW, host_platform="linux/amd64"
    )
    assert (plan.secrets, plan.withheld_secrets, plan.restricted_registries) == ((), (), ())


def test_the_plan_names_secrets_and_never_shows_a_value(workspace: Path) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
           "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"), "TOKEN": VALUE}  # fmt: skip
    options = BuildOptions(
        name="team/app", context="ctx", secrets=("id=tok,env=TOKEN", "id=f,src=secret.txt")
    )
    plan, _ = prepare(
        options, config=load_config(options.config), env=env, now=NOW, host_platform="linux/amd64"
    )
    assert plan.secrets == (
        BuildSecret(id="tok", value=VALUE.encode()),
        BuildSecret(id="f", value=VALUE.encode() + b"\n"),
    )
    assert plan.to_json()["secrets"] == ["tok", "f"]
    assert VALUE not in json.dumps(plan.to_json())
    assert VALUE not in repr(plan)
    assert VALUE not in str(plan.build_args)


def test_masks_cover_the_value_and_each_line() -> None:
    secret = BuildSecret(id="netrc", value=b"machine h\nlogin u\npassword p4ss\n")
    assert secret.masks() == ("machine h\nlogin u\npassword p4ss", "password p4ss", "machine h",
                              "login u")  # fmt: skip
    assert BuildSecret(id="e", value=b"").masks() == ()


# --- --use-restricted-registry ------------------------------------------------------------------


def test_restricted_registry_needs_its_list(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(capsys, "--use-restricted-registry") == (
        "--use-restricted-registry needs restricted-registries in config.yaml (registry "
        "host[/path] prefixes, e.g. cgr.dev/sap.com); add them, or drop the flag"
    )


def test_restricted_registry_refuses_before_building(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "config.yaml").write_text("restricted-registries: [https://cgr.dev/sap.com/]\n")
    (workspace / "ctx" / "Dockerfile").write_text(
        "ARG GO=1.22\nFROM cgr.dev/sap.com/go:${GO} AS build\nFROM golang:${GO}\n"
    )
    assert refused(capsys, "--config", "config.yaml", "--use-restricted-registry") == (
        "Dockerfile line 3: FROM golang:${GO} (docker.io/library/golang:1.22) is not in "
        "restricted-registries (cgr.dev/sap.com); take it from one of those registries, or build "
        "without --use-restricted-registry"
    )
    # Without the flag, nothing changes.
    assert planned(capsys, "--config", "config.yaml")["restricted_registries"] == []
    (workspace / "ctx" / "Dockerfile").write_text("ARG GO=1.22\nFROM cgr.dev/sap.com/go:${GO}\n")
    plan = planned(capsys, "--config", "config.yaml", "--use-restricted-registry",
                   "--build-arg", "GO=1.23")  # fmt: skip
    assert plan["restricted_registries"] == ["cgr.dev/sap.com"]


# --- the secret's file and the pull policy ------------------------------------------------------


def test_a_secret_file_is_readable_by_the_build_account_alone(tmp_path: Path) -> None:
    open_dir = tmp_path
    me = BuildAccount(name="me", uid=os.getuid(), gid=os.getgid(), dedicated=False)
    hand_secret(open_dir / "0", VALUE.encode(), me)
    info = (open_dir / "0").stat()
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert (open_dir / "0").read_bytes() == VALUE.encode()
    (open_dir / "1").symlink_to(open_dir / "elsewhere")
    with pytest.raises(FileExistsError):  # never through a link planted in its place
        hand_secret(open_dir / "1", b"x", me)
    assert not (open_dir / "elsewhere").exists()
    if os.geteuid() == 0:
        builder = BuildAccount(name="b", uid=4242, gid=4343, dedicated=True)
        hand_secret(open_dir / "2", b"x", builder)
        info = (open_dir / "2").stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (4242, 4343, 0o400)


def test_the_pull_policy_accepts_the_restricted_prefixes_only() -> None:
    policy = pull_policy(["cgr.dev/sap.com", "127.0.0.1:5000"], None)
    assert policy == {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "cgr.dev/sap.com": [{"type": "insecureAcceptAnything"}],
                "127.0.0.1:5000": [{"type": "insecureAcceptAnything"}],
            },
            "containers-storage": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }


def test_the_pull_policy_keeps_what_the_machine_requires() -> None:
    signed = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/keys/sap.gpg"}]
    system = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker": {
                "cgr.dev": signed,
                "cgr.dev/sap.com/legacy": [{"type": "reject"}],
                "cgr.dev/sapper": [{"type": "insecureAcceptAnything"}],
                "localhost:5000/x": [{"type": "insecureAcceptAnything"}],
                "*.example.com": signed,
            },
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }
    docker = pull_policy(["cgr.dev/sap.com", "localhost", "r.example.com/a"], system)["transports"][
        "docker"
    ]
    assert docker == {
        "cgr.dev/sap.com": signed,  # from the host's scope above it
        "cgr.dev/sap.com/legacy": [{"type": "reject"}],  # a refusal below it stays
        "localhost": [{"type": "insecureAcceptAnything"}],  # the machine's default
        "r.example.com/a": signed,  # a wildcard above it
    }
    rejecting = pull_policy(["ghcr.io/x"], {"default": [{"type": "reject"}]})
    assert rejecting["transports"]["docker"] == {"ghcr.io/x": [{"type": "reject"}]}
