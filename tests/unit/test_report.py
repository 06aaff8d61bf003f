from __future__ import annotations

import io
from pathlib import Path

import pytest

from image_builder.ci_output import format_outputs, github_outputs, step_summary
from image_builder.errors import RuntimeFailure
from image_builder.report import BuildReport, FailedImage, SupersededImage, parse_from_logs
from image_builder.reporter import Reporter, inert

REPORT = BuildReport(
    status="Succeeded",
    pushed=True,
    signed=False,
    image_name="team/app",
    images_list=["r.example/team/app:v1", "r.example/team/app:latest"],
    digest="sha256:" + "a" * 64,
    tags=["v1", "latest"],
    repository_path="r.example/",
    architectures=["linux/amd64", "linux/arm64"],
    platforms=["linux/amd64", "linux/arm64"],
)


def test_block_round_trips_through_remote_logs() -> None:
    logs = "\n".join(
        f"2026-11-26T10:00:00.1234567Z {line}"
        for line in ["starting", *REPORT.block().splitlines(), "done"]
    )
    assert parse_from_logs(logs) == REPORT


def test_missing_or_broken_report() -> None:
    with pytest.raises(RuntimeFailure, match="no build report between the marker lines"):
        parse_from_logs("nothing here")
    with pytest.raises(RuntimeFailure, match="the build report in the logs is not valid"):
        parse_from_logs("---IMAGE BUILD REPORT---\n{oops\n---END OF IMAGE BUILD REPORT---")


def test_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    REPORT.write(target)
    assert BuildReport.model_validate_json(target.read_text()) == REPORT
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_github_outputs_are_multiline_safe() -> None:
    values = github_outputs(REPORT)
    assert values["images"] == '["r.example/team/app:v1", "r.example/team/app:latest"]'
    assert values["architectures"] == '["linux/amd64", "linux/arm64"]'
    text = format_outputs({"a": "line1\nline2", "b": ""})
    lines = text.splitlines()
    assert lines[0].startswith("a<<ghadelimiter_")
    delimiter = lines[0].split("<<", 1)[1]
    assert lines[1:4] == ["line1", "line2", delimiter]


def test_step_summary_names_failures() -> None:
    failed = REPORT.model_copy(
        update={
            "status": "Failed",
            "pushed": False,
            "images_list": ["r.example/team/app:v1"],
            "failed_images": [FailedImage(image="r2.example/team/app:v1", error="refused")],
            "error": "1 of 2 reference(s) were not pushed",
        }
    )
    text = step_summary(failed)
    assert "❌ Failed" in text
    assert "| `r.example/team/app:v1` |" in text
    assert "| `r2.example/team/app:v1` | not pushed: refused | - |" in text
    assert "**Error:** 1 of 2 reference(s) were not pushed" in text


def test_step_summary_names_superseded_tags_and_cancellation() -> None:
    other = "sha256:" + "f" * 64
    report = REPORT.model_copy(
        update={
            "status": "Cancelled",
            "superseded_images": [SupersededImage(image="r.example/team/app:v1", digest=other)],
        }
    )
    text = step_summary(report)
    assert "⏹ Cancelled" in text
    assert (
        f"| `r.example/team/app:v1` | superseded: another build moved it; it holds `{other}`"
        in (text)
    )


def test_build_output_cannot_drive_the_ci_agent_or_fake_a_report() -> None:
    """The attack: a RUN step prints logging commands and a report block of its own."""
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, env={"TF_BUILD": "True"})
    fake = BuildReport(status="Succeeded", pushed=True, signed=True, image_name="team/app")
    for line in [
        "##vso[task.setvariable variable=signing_success]true",
        "  ##vso[task.uploadfile]/etc/cosign.key",
        "see ##vso[task.complete result=Succeeded] here",
        "##[error]fake",
        "::set-output name=digest::sha256:evil",
        *fake.block().splitlines(),
    ]:
        reporter.stream(line)
    logged = err.getvalue()
    assert "##vso[" not in logged
    assert "##[" not in logged
    assert not any(line.lstrip().startswith("::") for line in logged.splitlines())
    real = BuildReport(status="Failed", pushed=False, signed=False, image_name="team/app")
    with pytest.raises(RuntimeFailure, match="no build report between the marker lines"):
        parse_from_logs(logged)
    assert parse_from_logs(logged + real.block() + "\n") == real


def test_json_log_lines_cannot_drive_the_agent_either() -> None:
    """A JSON log line is still a line to an Azure DevOps agent, which acts on ``##vso[``
    anywhere in it."""
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, env={"TF_BUILD": "True"}, log_format="json")
    reporter.stream("[build] ##vso[task.setvariable variable=signing_success]true")
    assert "##vso[" not in err.getvalue()
    assert "task.setvariable variable=signing_success" in err.getvalue()


def test_a_carriage_return_cannot_start_a_command() -> None:
    """Both runners also end a line at a lone carriage return."""
    assert inert("50%\r::error::forged") == "50%\n| ::error::forged"
    assert inert("a\r\n::warning::b") == "a\n| ::warning::b"


def test_inert_keeps_ordinary_lines() -> None:
    assert inert("STEP 1/3: FROM scratch") == "STEP 1/3: FROM scratch"
    assert inert("##vso[task.setvariable variable=x]1") == "| ##vso [task.setvariable variable=x]1"
    assert inert("a ##[group]b") == "a ## [group]b"


def test_output_variables_cannot_start_a_line() -> None:
    """A value with a carriage return would end the logging command and start another."""
    from image_builder.ci_output import vso_variables

    forged = "main\r##vso[task.setvariable variable=SIGN;isOutput=true]true\nx"
    assert vso_variables({"BASE_REF": forged}) == [
        "##vso[task.setvariable variable=BASE_REF;isOutput=true]"
        "main ##vso[task.setvariable variable=SIGN;isOutput=true]true x"
    ]
