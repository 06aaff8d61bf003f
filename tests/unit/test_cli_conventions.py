"""The command line as people coming from docker, cosign and pip expect it: refusals that say
where each part goes, "did you mean", no abbreviations, ``-V``, ``-`` for stdout, ``--quiet``,
``--json``, NO_COLOR and FORCE_COLOR, and library warnings once, in the reporter's form."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder import __version__
from image_builder.cli import console, main
from image_builder.commands.build import BuildOptions
from image_builder.commands.outputs import publish_report
from image_builder.config import parse_config
from image_builder.go_flags import translate_legacy_argv
from image_builder.report import BuildReport
from image_builder.reporter import Reporter
from image_builder.trust import JwksCache, TokenVerifier
from tests.conftest import EVENTS

SHA = "1" * 40


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local checkout with a commit and a Dockerfile: nothing else to refuse."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text(SHA + "\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    code = main(list(argv), env=env or {})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- --name says where each part goes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("team/app:1.0", "image names carry no tag: pass --name team/app --tag 1.0"),
        (
            "127.0.0.1:5000/team/app",
            "the registry comes from config.yaml (registry / dev-registry); pass --name team/app",
        ),
        (
            "localhost/team/app",
            "the registry comes from config.yaml (registry / dev-registry); pass --name team/app",
        ),
        (
            "ghcr.io/team/app:v1",
            "the registry comes from config.yaml (registry / dev-registry); pass --name team/app "
            "--tag v1",
        ),
        (
            "team/app@sha256:" + "a" * 64,
            "image names carry no digest: the build makes it; pass --name team/app",
        ),
        (
            "Team/App",
            "image name 'Team/App' has upper-case letters; use lower case: --name team/app",
        ),
    ],
)
def test_a_docker_reference_as_name_says_where_each_part_goes(
    name: str, message: str, checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "build", "--name", name, "--dry-run")
    assert (code, out, err) == (2, "", f"error: {message}\n")


# --- did you mean, no abbreviations, the command's own --help ---------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["biuld"], "unknown command 'biuld'; did you mean 'build'? see 'image-builder --help'"),
        (
            ["build", "--platfrom", "linux/amd64"],
            "unrecognized argument --platfrom; did you mean --platform? see 'image-builder build "
            "--help'",
        ),
        (  # an abbreviation is not taken for the flag
            ["build", "--name", "team/app", "--plat", "linux/amd64", "--dry-run"],
            "unrecognized argument --plat; did you mean --platform? see 'image-builder build "
            "--help'",
        ),
        (  # the typo is named, not the --name it leaves missing
            ["build", "--nmae", "team/app"],
            "unrecognized argument --nmae; did you mean --name? see 'image-builder build --help'",
        ),
        (  # not the Go tool's flag: our parser names it (and the Go flag it is close to)
            ["--nmae", "team/app"],
            "unrecognized argument --nmae; did you mean --name? see 'image-builder --help'",
        ),
        (  # the Go tool's command line, with a typo later on
            ["--name=team/app", "--nmae=x"],
            "unrecognized argument --nmae; did you mean --name? see 'image-builder build --help'",
        ),
        (  # the flag's name only: its value may be a secret
            ["tags", "--bogus=s3cr3t"],
            "unrecognized argument --bogus; see 'image-builder tags --help'",
        ),
        (
            ["sign", "--images-to-sign", "ghcr.io/o/a:1", "--confg", "c.yaml"],
            "unrecognized argument --confg; did you mean --config? see 'image-builder sign --help'",
        ),
        (
            ["build", "--name", "team/app", "extra"],
            "unrecognized argument extra; see 'image-builder build --help'",
        ),
        (
            ["config", "valdate"],
            "unknown command 'valdate'; did you mean 'validate'? see 'image-builder config --help'",
        ),
        (
            ["registry", "strat"],
            "invalid action 'strat' (choose from start, stop, status); did you mean 'start'? see "
            "'image-builder registry --help'",
        ),
        (
            ["build", "--name", "team/app", "--backend", "lcoal"],
            "invalid --backend 'lcoal' (choose from local, ado); did you mean 'local'? see "
            "'image-builder build --help'",
        ),
    ],
)
def test_usage_errors_suggest_and_point_to_the_commands_help(
    argv: list[str], message: str, checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (2, "", f"error: {message}\n")
    assert not (checkout / "-").exists()


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, flag) == (0, f"image-builder {__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "translated"),
    [
        (["-V"], ["-V"]),
        (["--nmae", "x"], ["--nmae", "x"]),
        (["-q", "build", "--name", "x"], ["-q", "build", "--name", "x"]),
        (["--silent", "--quiet", "tags"], ["--silent", "--quiet", "tags"]),
        (["-name", "x"], ["build", "--name=x"]),
        (["--name=x", "-q"], ["build", "--name=x", "-q"]),
        (["-parse-tags-only=true", "--tag", "a"], ["tags", "--tag=a", "--tags-output-file="
                                                   "/generated-tags.json"]),
    ],
)  # fmt: skip
def test_only_a_go_flag_first_makes_a_go_command_line(
    argv: list[str], translated: list[str]
) -> None:
    assert translate_legacy_argv(argv, exists=lambda _: False) == translated


# --- "-" is stdout --------------------------------------------------------------------------------


def test_tags_output_file_dash_is_stdout(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tags", "--tags-output-file", "-")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1  # printed once
    assert json.loads(out)[0]["name"] == "default_tag"
    assert not (checkout / "-").exists()
    code, again, _ = run(capsys, "tags", "--tags-output-file", "./-")  # a file named "-"
    assert (code, again) == (0, out)
    assert (checkout / "-").read_text() == out


def test_build_tags_output_file_dash_is_stdout(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "build", "--name", "team/app", "--dry-run", "--tags-output-file", "-"
    )
    assert code == 0
    tags_line, plan = out.split("\n", 1)
    assert json.loads(tags_line)[0]["name"] == "default_tag"
    assert json.loads(plan)["name"] == "team/app"
    assert not (checkout / "-").exists()


def test_build_report_path_dash_prints_the_json_alone(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    report = BuildReport(
        status="Succeeded", pushed=True, signed=False, image_name="team/app", error="##vso[x]"
    )
    reporter = Reporter(out=out, err=err, env={})
    publish_report(report, report_path=Path("-"), env={}, reporter=reporter)
    assert json.loads(out.getvalue()) == json.loads(report.to_json())
    assert len(out.getvalue().splitlines()) == 1  # no marker lines
    assert "##vso[" not in out.getvalue()  # inert in an Azure DevOps log, as the block is
    assert err.getvalue() == ""


def capture_run_build(monkeypatch: pytest.MonkeyPatch) -> list[BuildOptions]:
    seen: list[BuildOptions] = []

    def fake(options: BuildOptions, **kwargs: Any) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("image_builder.commands.build.run_build", fake)
    return seen


@pytest.mark.parametrize(
    "argv", [["--json"], ["--build-report-path", "-"], ["--json", "--build-report-path=-"]]
)
def test_json_is_the_report_on_stdout(
    argv: list[str], checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = capture_run_build(monkeypatch)
    assert main(["build", "--name", "team/app", *argv], env={}) == 0
    assert seen[0].build_report_path == Path("-")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--json", "--build-report-path", "report.json"],
            "--json prints the report on stdout, --build-report-path writes it to a file: pass "
            "one of them",
        ),
        (
            ["--json", "--tags-output-file", "-"],
            "--json keeps stdout for the report's JSON; write the tags to a file with "
            "--tags-output-file PATH",
        ),
        (
            ["--build-report-path", "-", "--tags-output-file", "-"],
            "--build-report-path - keeps stdout for the report's JSON; write the tags to a file "
            "with --tags-output-file PATH",
        ),
    ],
)
def test_one_thing_on_stdout(
    argv: list[str], message: str, checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "build", "--name", "team/app", *argv) == (2, "", f"error: {message}\n")


def test_json_dry_run_prints_the_plan_alone(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "build", "--name", "team/app", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out)["name"] == "team/app"


def test_sign_build_report_path_dash_writes_no_file(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def fake(options: Any, **kwargs: Any) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("image_builder.commands.signing.run_sign", fake)
    assert main(["sign", "--from-report", "r.json", "--build-report-path", "-"], env={}) == 0
    assert seen[0].build_report_path is None  # the report goes to stdout in any case


# --- --quiet ------------------------------------------------------------------------------------


def chatty(options: BuildOptions, *, reporter: Reporter, **kwargs: Any) -> int:
    with reporter.step("build team/app"):
        reporter.stream("STEP 1/1: FROM scratch")
        reporter.info("notice: RUN steps run as you")
    reporter.warning("careful")
    reporter.error("one image failed")
    reporter.result("the result")
    return 0


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "build", "--name", "team/app"],
        ["--quiet", "build", "--name", "team/app"],
        ["build", "--name", "team/app", "-q"],
        ["build", "--name", "team/app", "--quiet"],
    ],
)
def test_quiet_keeps_warnings_errors_and_results(
    argv: list[str],
    checkout: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("image_builder.commands.build.run_build", chatty)
    assert run(capsys, *argv) == (0, "the result\n", "warning: careful\nerror: one image failed\n")


def test_quiet_still_logs_everything(tmp_path: Path) -> None:
    out, err, log = io.StringIO(), io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, env={})
    reporter.keep_log(log, silent=False)
    reporter.quiet = True
    chatty(BuildOptions(name="team/app"), reporter=reporter)
    assert err.getvalue() == "warning: careful\nerror: one image failed\n"
    assert "STEP 1/1: FROM scratch" in log.getvalue()
    assert "notice: RUN steps run as you" in log.getvalue()
    assert "==> build team/app" in log.getvalue()


# --- colour ---------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "tty", "color"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": ""}, True, True),  # no-color.org: only when set and not empty
        ({"NO_COLOR": "1"}, True, False),
        ({"FORCE_COLOR": "1"}, False, True),  # force-color.org: without a TTY too
        ({"FORCE_COLOR": "0"}, False, True),  # force-color.org: whatever the value
        ({"FORCE_COLOR": ""}, False, False),  # but not when empty
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, True, False),  # NO_COLOR wins
        ({"FORCE_COLOR": "1", "TERM": "dumb"}, False, True),
    ],
)
def test_no_color_and_force_color(env: dict[str, str], tty: bool, color: bool) -> None:
    err = Tty() if tty else io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, env=env)
    reporter.error("x")
    assert err.getvalue() == ("\x1b[31merror: x\x1b[0m\n" if color else "error: x\n")


# --- library warnings: once, in the reporter's form -----------------------------------------------

ISSUER = "https://issuer.example"
TRUST = f"""\
trust:
  - issuer: {ISSUER}
    audience: image-builder
    jwks-uri: {ISSUER}/jwks
    job-workflow-refs: any
    repository-owners: [{{name: org, id: 1}}]
    events: [push]
"""


class Issuer:
    """An OIDC issuer behind an httpx mock transport: no socket, and it can fail on demand."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.up = True
        self.now = 0.0
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "k1", "alg": "ES256", "use": "sig"}]}
        self.env: dict[str, str] = {}  # the caller's environment, with its token

    def answer(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.jwks) if self.up else httpx.Response(503)

    def verifier(self) -> TokenVerifier:
        http = httpx.Client(transport=httpx.MockTransport(self.answer))
        clock: Callable[[], float] = lambda: self.now  # noqa: E731
        return TokenVerifier(parse_config(TRUST).trust, JwksCache(http=http, clock=clock))

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": "image-builder",
            "iat": now,
            "exp": now + 300,
            "repository": "org/app",
            "repository_owner": "org",
            "repository_owner_id": "1",
            "event_name": "push",
            "ref": "refs/heads/main",
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})


@pytest.fixture
def issuer(checkout: Path) -> Issuer:
    (checkout / "trust.yaml").write_text(TRUST)
    fake = Issuer()
    fake.env["AUTHORIZATION"] = fake.token()
    return fake


def test_unreachable_keys_are_one_error_with_the_reason(
    issuer: Issuer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer.up = False
    monkeypatch.setattr("image_builder.trust.make_verifier", lambda trust: issuer.verifier())
    assert run(capsys, "verify-token", "--config", "trust.yaml", env=issuer.env) == (
        2,
        "",
        f"error: cannot fetch the signing keys of {ISSUER} ({ISSUER}/jwks answered 503), and "
        "none are cached; refusing the token (fail closed)\n",
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({}, "warning: "),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push"}, "::warning::"),
    ],
)
def test_a_library_warning_shows_once_in_the_reporters_form(
    env: dict[str, str],
    line: str,
    issuer: Issuer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    verifier = issuer.verifier()
    verifier.verify(issuer.token())  # the key set is cached
    issuer.up, issuer.now = False, 700.0  # stale, and the issuer is down: the cached set serves
    monkeypatch.setattr("image_builder.trust.make_verifier", lambda trust: verifier)
    code, out, err = run(
        capsys, "verify-token", "--config", "trust.yaml", env={**issuer.env, **env}
    )
    assert code == 0
    assert json.loads(out)["repository"] == "org/app"
    shown = [row for row in err.splitlines() if not row.startswith("::add-mask::")]
    assert shown == [
        f"{line}fetching the keys of {ISSUER} failed ({ISSUER}/jwks answered 503); using the key "
        "set fetched 700 s ago"
    ]


def test_build_reads_a_config_from_stdin_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Standard input can be read only once: ``build`` reads the config once, and both the
    choice of backend and the build see that text."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("1" * 40 + "\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("registry: ghcr.io/acme\n"))
    code = main(["build", "--name", "team/app", "--config", "-", "--dry-run"], env={})
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out)["registries"] == ["ghcr.io/acme"]


def test_an_empty_stdin_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = main(["tags", "--config", "-"], env={})
    assert (code, capsys.readouterr().err) == (
        2,
        "error: standard input holds no config (it is empty, or was read already); pipe "
        "config.yaml into --config -\n",
    )


@pytest.mark.parametrize("document", [[], "text", 7])
def test_a_discovery_document_that_is_no_object_is_refused_in_words(document: object) -> None:
    """It used to end as an internal error (``'list' object has no attribute 'get'``)."""
    from image_builder.config import TrustedIssuer
    from image_builder.errors import TrustError

    policy = TrustedIssuer.model_validate(
        {
            "issuer": "https://issuer.example",
            "audience": "image-builder",
            "job-workflow-refs": "any",
            "repository-owners": [{"name": "org", "id": 1}],
            "events": ["push"],
        }
    )
    answers = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    cache = JwksCache(http=httpx.Client(transport=answers))
    with pytest.raises(TrustError) as caught:
        cache.key(policy, "k1")
    assert str(caught.value) == (
        "cannot fetch the signing keys of https://issuer.example (the discovery document is not "
        "a JSON object), and none are cached; refusing the token (fail closed)"
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_tool_detail_lines_go_to_the_log_and_show_only_with_debug(verbose: bool) -> None:
    """skopeo's per-blob lines: off the terminal (one line per repository says it), but kept
    in the --log-dir file, inert, and on the terminal with --debug."""
    out, err, log = io.StringIO(), io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, env={})
    reporter.keep_log(log, silent=False)
    reporter.verbose = verbose
    reporter.detail("[team/app] Copying blob sha256:abc done")
    reporter.detail("##vso[task.setvariable variable=x]y")
    lines = ["[team/app] Copying blob sha256:abc done", "| ##vso [task.setvariable variable=x]y"]
    assert log.getvalue().splitlines() == lines
    assert err.getvalue().splitlines() == (lines if verbose else [])
    assert out.getvalue() == ""


# --- the environment ----------------------------------------------------------------------------


def test_main_reads_the_environment_it_is_given_and_leaves_the_process_alone(
    checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The process says "a pull request on GitHub"; the mapping passed in says nothing: a laptop.
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(EVENTS / "pull_request.opened.json"))
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    before = dict(os.environ)
    code, out, err = run(capsys, "tags", "--tag", "edge", env={"TZ": "UTC"})
    assert (code, err) == (0, "")
    values = [tag["value"] for tag in json.loads(out)]
    assert values[0] == "edge"
    assert values[1].endswith("-11111111")  # the checkout's commit, not PR-2
    assert dict(os.environ) == before


def test_the_console_entry_switches_pydantic_plugins_off_for_the_process(
    checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setattr(sys, "argv", ["image-builder", "tags", "--tag", "edge"])
    assert console() == 0
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    assert json.loads(capsys.readouterr().out)[0] == {"name": "edge", "value": "edge"}
