"""The trusted Azure DevOps pipeline, executed job by job with Azure DevOps' rules
(tests/support/ado_runner.py) against the real registry, real buildah and a local OIDC issuer.
A caller controls only the pipeline's parameters and the content of its repository; each attack
it can make from there is a named test."""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from image_builder.backends.ado import PARAMETER_NAMES
from image_builder.errors import RuntimeFailure
from image_builder.report import parse_from_logs
from tests.integration.conftest import REPO, Cli, Registry, inspect_raw, record, secret, tool_env
from tests.support.ado_runner import AdoRunner, RunResult, compile_pipeline
from tests.support.escape import static_escape
from tests.support.oidc import WORKFLOW, FakeIssuer

PIPELINE = REPO / "pipelines" / "azure" / "oci-image-builder.yml"
PASSWORD = secret("pipeline cosign password 81c4")
JOB_TOKEN = secret("system-access-token-of-the-job-5d02")
REGISTRY_PASSWORD = secret("registry-robot-password-7e3a")


def caller_repo(root: Path, files: dict[str, str | bytes]) -> str:
    """The caller's repository org/app, served as ``<root>/org/app.git``; returns its commit.
    Bytes are committed as executables."""
    work = root / "work"
    work.mkdir(parents=True)
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (work / name).write_bytes(content)
            (work / name).chmod(0o755)
        else:
            (work / name).write_text(content)

    def git(*args: str, cwd: Path = work) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "caller")
    bare = root / "org" / "app.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    return git("rev-parse", "HEAD")


class Pipeline:
    def __init__(self, cli: Cli, registry: Registry, issuer: FakeIssuer, tmp_path: Path) -> None:
        self.cli, self.registry, self.issuer, self.tmp = cli, registry, issuer, tmp_path
        self.token = ""
        keys = cli("keygen", "--output-key-prefix", str(tmp_path / "release"),
                   env={"COSIGN_PASSWORD": PASSWORD})  # fmt: skip
        assert keys.returncode == 0, keys.stderr
        paths = json.loads(keys.stdout)
        self.key, self.pub = Path(paths["private_key"]), Path(paths["public_key"])
        secret(self.key.read_text().splitlines()[1])
        self.config = tmp_path / "trusted-config.yaml"
        self.config.write_text(
            f"registry: {registry.address}/prod\ndev-registry: {registry.address}/dev\n"
            f"sign-config:\n  enabled-signers:\n    '*': [release]\n  signers:\n"
            f"    - name: release\n      type: cosign\n"
            f"      config: {{private-key: {self.key}, password-env: COSIGN_PASSWORD}}\n"
            + issuer.trust_yaml(**{"image-namespaces": "{org/app: ['org/*']}"})
        )
        auth = base64.b64encode(f"robot:{REGISTRY_PASSWORD}".encode()).decode()
        self.registry_auth = json.dumps({"auths": {"registry.invalid:5000": {"auth": auth}}})
        secret(auth)

    def run(
        self,
        files: dict[str, str | bytes],
        *,
        event: str = "push",
        params: dict[str, str] | None = None,
        token: Callable[[str], str] | None = None,
        setup: bool = False,
        token_as_parameter: bool = False,
    ) -> tuple[RunResult, str]:
        """``setup``: each job checks out a copy of this repository and runs the pipeline's own
        set-up in it (a runtime venv per job, as on a fresh agent); otherwise the jobs share
        this checkout, already set up."""
        commit = caller_repo(self.tmp / "git", files)
        if token is None:
            claims: dict[str, Any] = {"sha": commit, "event_name": event}
            if event == "pull_request_target":
                claims.update(ref="refs/heads/main", sha="ab" * 20)
            value = secret(self.issuer.token(**claims))
        else:
            value = secret(token(commit))
        self.token = value
        presubmit = event == "pull_request_target"
        parameters = {
            "RepoOwner": "org", "RepoName": "app",
            "JobType": "presubmit" if presubmit else "postsubmit",
            "PullBaseSHA": "ab" * 20 if presubmit else commit,
            "BaseRef": "refs/heads/main", "Name": "org/app", "Context": ".",
            "Platforms": "linux/amd64", "Tags": base64.b64encode(b"latest").decode(),
            **({"PullNumber": "7", "PullPullSHA": commit} if presubmit else {}),
            **({"Authorization": value} if token_as_parameter else {}),
            **(params or {}),
        }  # fmt: skip
        venv_bin = REPO / ".venv" / "bin"
        env = tool_env(self.cli.storage, self.cli.home)
        env["PATH"] = f"{venv_bin}:{env['PATH']}"
        runner = AdoRunner(
            pipeline=PIPELINE,
            self_repo=REPO,
            work=self.tmp / "agent",
            base_env=env,
            variables={
                "IMAGE_BUILDER_CONFIG": str(self.config),
                "SourceBaseUrl": f"file://{self.tmp / 'git'}",
            },
            secrets={
                **({} if token_as_parameter else {"AUTHORIZATION": value}),
                "System.AccessToken": JOB_TOKEN,
            },
            groups={
                "image-builder-registry": {"RegistryAuth": self.registry_auth},
                "image-builder-signing": {"COSIGN_PASSWORD": PASSWORD},
            },
            skip_scripts=() if setup else ("stage.sh setup",),
            copy_checkout=setup,
        )
        result = runner.run(parameters)
        record("pipeline log", result.log)
        return result, commit

    def results(self, run: RunResult) -> dict[str, str]:
        return {name: job.result for name, job in run.jobs.items()}


@pytest.fixture
def pipeline(cli: Cli, registry: Registry, issuer: FakeIssuer, tmp_path: Path) -> Pipeline:
    return Pipeline(cli, registry, issuer, tmp_path)


def assert_no_secret(run: RunResult, *values: str) -> None:
    for value in (JOB_TOKEN, PASSWORD, REGISTRY_PASSWORD, *values):
        assert value not in run.log


# --- the pipeline as written ------------------------------------------------------------------------


def _scripts(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "script" and isinstance(value, str):
                yield value
            else:
                yield from _scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


def test_the_pipeline_declares_the_go_tools_parameters_and_guards_each() -> None:
    document = yaml.safe_load(PIPELINE.read_text())
    declared = [p["name"] for p in document["parameters"]]
    assert set(declared) == set(PARAMETER_NAMES)
    guard = next(k for item in document["jobs"] for k in item if "contains(format(" in k)
    for name in declared:  # every parameter is inside the compile-time guard
        assert f"parameters.{name}," in guard or f"parameters.{name})" in guard
    scripts = list(_scripts(document["jobs"]))
    assert len(scripts) == 11  # refused 1, verify 2, build 3, publish 3, sign 2
    for script in scripts:
        assert "${{" not in script, "parameters reach scripts only through env:"


def test_no_parameter_reaches_a_build_job() -> None:
    """The Go tool's Authorization parameter (which our client sends only when config asks)
    and the token variable reach the verify, publish and sign steps, never the build job, which
    runs the caller's code."""
    compiled = compile_pipeline(
        PIPELINE,
        {"RepoOwner": "o", "RepoName": "r", "JobType": "postsubmit", "PullBaseSHA": "a",
         "Name": "o/r", "Authorization": "token-as-parameter"},
    )  # fmt: skip
    for job in compiled["jobs"]:
        text = json.dumps(job)
        holds = "token-as-parameter" in text or "authorization" in text.lower()  # any spelling
        assert holds == (job["job"] in ("verify", "publish", "sign")), job["job"]


def test_a_release_run_builds_publishes_and_signs_in_separate_jobs(
    pipeline: Pipeline, base_image: str, tmp_path: Path
) -> None:
    """With the escape and env-file attacks inside the pipeline's build job: that job holds no
    token, no password and no registry credentials, and the key file is out of its reach."""
    static_escape(tmp_path)
    files: dict[str, str | bytes] = {
        "Dockerfile": f"FROM {base_image}\nARG COSIGN_PASSWORD\nCOPY escape /escape\n"
        f"RUN /escape {pipeline.key} AUTHORIZATION= > /loot.txt 2>&1; cat /loot.txt; env; "
        'echo "arg=$COSIGN_PASSWORD"\n',
        "envs": "COSIGN_PASSWORD=from-the-file\n",
        "escape": (tmp_path / "escape").read_bytes(),
    }
    result, commit = pipeline.run(files, params={"EnvFile": "envs"})
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Succeeded", "publish": "Succeeded", "sign": "Succeeded",
    }, result.log[-4000:]  # fmt: skip
    build_log = "\n".join(result.jobs["build"].log)
    assert f"FILE {pipeline.key}: Permission denied" in build_log
    assert "arg=from-the-file" in build_log
    assert "ENV /proc" not in build_log  # no process with the token is visible
    assert_no_secret(result)
    report = parse_from_logs(result.log)
    assert (report.status, report.pushed, report.signed) == ("Succeeded", True, True)
    assert report.signed_by == ["release"]
    assert report.images_list[-1].startswith(f"{pipeline.registry.address}/prod/org/app:v")
    assert result.jobs["publish"].outputs["publish.push_success"] == "true"
    assert result.jobs["publish"].outputs["publish.signing_success"] == "false"
    assert result.jobs["sign"].outputs["sign.signing_success"] == "true"
    verified = pipeline.cli("verify", report.images_list[-1], "--key", str(pipeline.pub))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The publish job made the provenance, the sign job signed and stored it; its identity is
    # the verified token's, whatever the run's parameters said.
    assert report.provenance is not None
    assert (
        report.provenance["predicate"]["buildDefinition"]["internalParameters"]["identityFromToken"]
        is True
    )
    assert [a.signer for a in report.attestations] == ["release"]
    # GitHub Enterprise Server's issuer is on its own host; this fake one is such an issuer.
    source = f"{pipeline.issuer.issuer.removesuffix('/')}/org/app"
    attested = pipeline.cli(
        "verify", report.images_list[-1], "--key", str(pipeline.pub), "--provenance", "--json",
        "--source-repo", source, "--ref", "refs/heads/main", "--workflow", WORKFLOW,
    )  # fmt: skip
    assert attested.returncode == 0, attested.stdout + attested.stderr
    found = json.loads(attested.stdout)["provenance"]
    assert (found["commit"], found["event"], found["source_repository"]) == (commit, "push", source)


def test_a_go_client_run_with_the_token_as_a_parameter(pipeline: Pipeline, base_image: str) -> None:
    """The Go client sends the token as the Authorization template parameter and the tags as
    name=template; the pipeline accepts both, and masks the token from the verify step on."""
    tags = base64.b64encode(b"latest=latest,release=r-{{ .ShortSHA }}").decode()
    result, commit = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"}, params={"Tags": tags}, token_as_parameter=True
    )
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Succeeded", "publish": "Succeeded", "sign": "Succeeded",
    }, result.log[-4000:]  # fmt: skip
    assert pipeline.token
    assert pipeline.token not in result.log
    masked = {c.job for c in result.honoured("task.setsecret") if c.data == pipeline.token}
    assert masked == {"verify", "publish", "sign"}  # from the first step that holds it
    report = parse_from_logs(result.log)
    assert report.signed
    assert f"{pipeline.registry.address}/prod/org/app:r-{commit[:8]}" in report.images_list


def test_the_go_flags_reach_the_build_through_the_pipeline(
    pipeline: Pipeline, base_image: str, tmp_path: Path
) -> None:
    """UseGoInternalSAPModules and useRestrictedRegistry as the Go client sends them: the build
    job mounts the trusted config's credential and builds from a restricted registry."""
    password = secret("go-modules-credential-5e2a")
    (tmp_path / "netrc").write_text(f"machine git.example.com\npassword {password}\n")
    pipeline.config.write_text(
        pipeline.config.read_text()
        + f"go-internal-sap-modules: {{file: {tmp_path / 'netrc'}}}\n"
        + f"restricted-registries: [{pipeline.registry.address}/base]\n"
    )
    go = {"UseGoInternalSAPModules": "true", "useRestrictedRegistry": "true"}
    dockerfile = (
        f"FROM {base_image}\n"
        "RUN --mount=type=secret,id=netrc grep -c password /run/secrets/netrc > /netrc-lines\n"
    )
    result, _ = pipeline.run({"Dockerfile": dockerfile}, params=go)
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Succeeded", "publish": "Succeeded", "sign": "Succeeded",
    }, result.log[-4000:]  # fmt: skip
    assert password not in result.log  # the RUN step found it: without it, grep fails


def test_use_restricted_registry_from_the_go_client_refuses_other_bases(
    pipeline: Pipeline, base_image: str
) -> None:
    pipeline.config.write_text(
        pipeline.config.read_text() + f"restricted-registries: [{pipeline.registry.address}/ok]\n"
    )
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"}, params={"useRestrictedRegistry": "true"}
    )
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Failed", "publish": "Skipped", "sign": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert f"FROM {base_image} is not in restricted-registries" in result.log


def test_a_pull_request_run_has_no_job_that_can_read_signing_material(
    pipeline: Pipeline, base_image: str, tmp_path: Path
) -> None:
    """Run as shipped: every job checks out the pipeline's repository where Azure DevOps puts it
    (``$(Pipeline.Workspace)/image-builder``) and sets itself up from the runtime lock."""
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"}, event="pull_request_target", setup=True
    )
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Succeeded", "publish": "Succeeded",
    }, result.log[-4000:]  # fmt: skip
    checkout = tmp_path / "agent" / "agent" / "build" / "w" / "image-builder"
    assert (checkout / ".venv" / "bin" / "image-builder").exists()
    assert not (checkout / ".venv" / "bin" / "pytest").exists()  # the runtime lock only
    assert "sign" not in [job["job"] for job in result.compiled["jobs"]]
    build = next(job for job in result.compiled["jobs"] if job["job"] == "build")
    assert build["pool"] == {"name": "image-builder-untrusted"}
    report = parse_from_logs(result.log)
    # latest is release-only: a pull request's run drops it, with a warning in the build job.
    assert report.images_list == [f"{pipeline.registry.address}/dev/org/app:PR-7"]
    assert [c.data for c in result.honoured("task.logissue") if c.job == "build"] == [
        "tag 'latest' (--tag-base64) is not applied: pull_request builds never move "
        "release-only tags (presubmit)"
    ]
    assert report.signed is False


def test_attack_context_outside_the_checkout(pipeline: Pipeline, base_image: str) -> None:
    """``Context=../../..`` used to let a COPY take the trusted config and keys into an image."""
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\nCOPY . /stolen\n"},
        params={"Context": "../../..", "Name": "org/stolen"},
    )
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Failed", "publish": "Skipped", "sign": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert "build context '../../..' resolves to" in result.log
    assert "outside the checkout" in result.log
    assert inspect_raw(f"{pipeline.registry.address}/prod/org/stolen:latest") is None


def test_attack_macro_in_a_parameter(pipeline: Pipeline, base_image: str) -> None:
    """``BuildArgs=K=$(System.AccessToken)``: Azure DevOps expands macros in env values, so the
    job's token would be baked into the image. The run is refused before any job exists."""
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\nARG K\nRUN echo $K > /k\n"},
        params={"BuildArgs": "K=$(System.AccessToken)"},
    )
    assert pipeline.results(result) == {"refused": "Failed"}, result.log[-4000:]
    assert "a parameter holds '$(', which Azure DevOps would expand as a macro" in result.log
    assert_no_secret(result)


def test_attack_logging_commands_and_a_fake_report_from_a_run_step(
    pipeline: Pipeline, base_image: str
) -> None:
    fake = json.dumps({"status": "Succeeded", "pushed": True, "signed": True,
                       "image_name": "org/app", "images_list": ["evil"]})  # fmt: skip
    lines = [
        "##vso[task.setvariable variable=signing_success;isOutput=true]true",
        "##vso[task.uploadfile]/etc/shadow",
        "##vso[task.prependpath]/tmp/evil",
        "---IMAGE BUILD REPORT---", fake, "---END OF IMAGE BUILD REPORT---",
    ]  # fmt: skip
    run_lines = "".join(f"RUN echo '{line}'\n" for line in lines)
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n{run_lines}"},
        event="pull_request_target",
        params={"Tags": base64.b64encode(b"extra").decode()},  # no notice about latest
    )
    assert pipeline.results(result)["publish"] == "Succeeded"
    from_build = [c for c in result.commands if c.job == "build"]
    assert from_build == []  # neutralised: not even seen as commands
    report = parse_from_logs(result.log)
    assert report.signed is False
    assert report.images_list != ["evil"]
    assert result.jobs["publish"].outputs["publish.signing_success"] == "false"


def test_the_build_step_is_restricted(pipeline: Pipeline) -> None:
    """Even a logging command that got past the neutraliser could set no variable there."""
    compiled = compile_pipeline(
        PIPELINE,
        {"RepoOwner": "org", "RepoName": "app", "JobType": "postsubmit", "PullBaseSHA": "a" * 40,
         "Name": "org/app"},
    )  # fmt: skip
    build = next(job for job in compiled["jobs"] if job["job"] == "build")
    step = next(s for s in build["steps"] if "stage.sh build" in s.get("script", ""))
    assert step["target"] == {"commands": "restricted", "settableVariables": "none"}
    assert "AUTHORIZATION" not in json.dumps(build)
    assert "group" not in json.dumps(build)


def test_attack_a_planted_report_file(pipeline: Pipeline, base_image: str) -> None:
    """A repository that ships ``.image-builder-report.json`` claiming success, with a build that
    fails: the report is read only from where image-builder wrote it, outside the checkout."""
    planted = json.dumps({"status": "Succeeded", "pushed": True, "signed": True,
                          "image_name": "org/app"})  # fmt: skip
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\nRUN false\n", ".image-builder-report.json": planted}
    )
    assert pipeline.results(result) == {
        "verify": "Succeeded", "build": "Failed", "publish": "Skipped", "sign": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert [c.properties["variable"] for c in result.honoured("task.setvariable")] == [
        "REPO_OWNER", "REPO_NAME", "JOB_TYPE", "COMMIT", "PULL_BASE_SHA", "PULL_PULL_SHA",
        "PULL_NUMBER", "BASE_REF", "SIGN",
    ]  # only the verify job's; no state variable claims success  # fmt: skip
    with pytest.raises(RuntimeFailure, match="no build report between the marker lines"):
        parse_from_logs(result.log)


def test_attack_a_bad_token_stops_the_run_before_the_checkout(
    pipeline: Pipeline, base_image: str
) -> None:
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"},
        token=lambda commit: pipeline.issuer.token(sha=commit, repository="other/repo"),
    )
    assert pipeline.results(result) == {
        "verify": "Failed", "build": "Skipped", "publish": "Skipped", "sign": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert not (pipeline.tmp / "agent" / "agent" / "build").exists()  # nothing was fetched


def test_attack_another_teams_image_name_stops_the_run_before_the_checkout(
    pipeline: Pipeline, base_image: str
) -> None:
    """A valid token of org/app asks for payments/app: the verify job refuses the name."""
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"}, params={"Name": "payments/app"}
    )
    assert pipeline.results(result) == {
        "verify": "Failed", "build": "Skipped", "publish": "Skipped", "sign": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert "the token of org/app may not build or sign image 'payments/app'" in result.log
    assert not (pipeline.tmp / "agent" / "agent" / "build").exists()  # nothing was fetched


def test_attack_a_parameter_that_forges_a_verified_output(
    pipeline: Pipeline, base_image: str
) -> None:
    """A pull request's ``BaseRef`` is the caller's; the verify job hands it on as an output
    variable. A carriage return in it would start a logging command of the caller's own, after
    the verified repository was set, and overwrite it."""
    forged = "refs/heads/main\r##vso[task.setvariable variable=REPO_NAME;isOutput=true]victim"
    result, _ = pipeline.run(
        {"Dockerfile": f"FROM {base_image}\n"},
        event="pull_request_target",
        params={"BaseRef": forged},
    )
    assert pipeline.results(result) == {
        "verify": "Failed", "build": "Skipped", "publish": "Skipped",
    }, result.log[-4000:]  # fmt: skip
    assert "claims.REPO_NAME" not in result.jobs["verify"].outputs
    # The refusal quotes the value, made inert ("##vso [") like everything it prints.
    assert (
        "BASE_REF 'refs/heads/main\\r##vso [task.setvariable variable=REPO_NAME;isOutput=true]"
        "victim' is not a git ref: use letters, digits and . _ / @ + -" in result.log
    )


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--bogus"], {}, 2, "setup: unknown option --bogus; use --runtime for an agent, nothing for development"),
        (["--runtime"], {"PYTHON": "/bin/false"}, 1, "setup: Image Builder needs Python 3.11 or newer; /bin/false is missing. Set PYTHON=python3.11 (or newer)"),
    ],
)  # fmt: skip
def test_the_set_up_refuses_before_touching_anything(
    args: list[str], env: dict[str, str], code: int, message: str, tmp_path: Path
) -> None:
    from tests.support.ado_runner import copy_as_checkout

    checkout = tmp_path / "image-builder"
    copy_as_checkout(REPO, checkout)  # never this checkout's own .venv
    done = subprocess.run(
        [str(checkout / "scripts" / "setup"), *args],
        env={**tool_env(Path("/nonexistent"), Path("/nonexistent")), **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == code
    assert done.stderr.strip() == message
    assert done.stdout == ""
    assert not (checkout / ".venv").exists()


AGENT_USER = "ib-agent-test"


@pytest.fixture
def agent_user() -> Iterator[tuple[str, Path]]:
    """An unprivileged agent account as on a Microsoft-hosted agent, without subordinate ids yet;
    the test may give it passwordless sudo, as those agents have. Its home is outside pytest's
    folders, which only root may enter."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="ib-agent-"))
    home.chmod(0o755)
    subprocess.run(["userdel", AGENT_USER], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--user-group", "--no-create-home", "--home-dir", str(home),
         "--shell", "/bin/bash", AGENT_USER],
        check=True,
    )  # fmt: skip
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines(keepends=True)
        Path(table).write_text("".join(x for x in lines if not x.startswith(f"{AGENT_USER}:")))
    checkout = home / "image-builder"
    from tests.support.ado_runner import copy_as_checkout

    copy_as_checkout(REPO, checkout)
    subprocess.run(["chown", "-R", f"{AGENT_USER}:{AGENT_USER}", str(home)], check=True)
    try:
        yield AGENT_USER, checkout
    finally:
        Path(f"/etc/sudoers.d/{AGENT_USER}").unlink(missing_ok=True)
        subprocess.run(["userdel", AGENT_USER], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_the_set_up_runs_as_an_unprivileged_agent_user(agent_user: tuple[str, Path]) -> None:
    """Microsoft-hosted agents do not run as root: the set-up asks for root only through sudo,
    and only for what needs it (here the user's subordinate ids), and installs the runtime
    lock, never the dev tools. Without sudo it says what to do."""
    user, checkout = agent_user

    # The agent's own environment: a home, a PATH, and how this machine reaches PyPI.
    passed = {
        k: v for k, v in os.environ.items() if k.upper().startswith(("PIP_", "HTTP", "NO_PROXY"))
    }
    passed.update(HOME=str(checkout.parent), PATH="/usr/sbin:/usr/bin:/sbin:/bin")

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
             "env", "-i", *(f"{k}={v}" for k, v in passed.items()),
             "bash", str(checkout / "pipelines" / "azure" / "stage.sh"), "setup"],
            capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip

    refused = setup()
    assert refused.returncode == 1
    assert (
        "setup: this needs root: usermod --add-subuids 2000000-2065535 --add-subgids "
        f"2000000-2065535 {user}; run scripts/setup as root, or give {user} passwordless sudo"
    ) in refused.stderr
    Path(f"/etc/sudoers.d/{user}").write_text(f"{user} ALL=(ALL) NOPASSWD: ALL\n")
    Path(f"/etc/sudoers.d/{user}").chmod(0o440)
    done = setup()
    assert done.returncode == 0, done.stderr
    assert f"{user}:2000000:65536" in Path("/etc/subuid").read_text()
    venv = checkout / ".venv" / "bin"
    assert not (venv / "pytest").exists()
    assert not (venv / "mypy").exists()
    version = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
         str(venv / "image-builder"), "--version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    owner = pwd.getpwnam(user)
    assert (venv.parent.stat().st_uid, venv.parent.stat().st_gid) == (owner.pw_uid, owner.pw_gid)
