"""A Dockerfile buildah cannot read is bad input (exit 2) that names the file and line; and
buildah's warning about the platform arguments it adds itself is dropped, while a caller's own
unused build argument is still reported."""

from __future__ import annotations

import pytest

from image_builder import proc
from image_builder.dockerfile import DockerfileSyntaxError, check_syntax
from image_builder.engines.buildah import syntax_error, unused_args_line
from image_builder.errors import InputError, RuntimeFailure


def test_an_unknown_instruction_names_the_line_and_the_fix() -> None:
    with pytest.raises(DockerfileSyntaxError) as caught:
        check_syntax("FRUM busybox\n", label="Dockerfile")
    assert str(caught.value) == (
        "Dockerfile line 1: unknown instruction FRUM (did you mean FROM?); fix the Dockerfile"
    )
    assert isinstance(caught.value, InputError)
    assert caught.value.exit_code == 2


def test_the_line_counts_comments_continuations_and_directives() -> None:
    text = "# escape=`\n# a comment\nFROM busybox\nRUN echo a `\n    b\n\ncopy a /a\nWROKDIR /x\n"
    with pytest.raises(
        DockerfileSyntaxError, match=r"^sub/Dockerfile line 8: unknown instruction "
    ):
        check_syntax(text, label="sub/Dockerfile")


def test_only_arg_may_come_before_from() -> None:
    check_syntax("ARG BASE=busybox\nFROM $BASE\nRUN true\n", label="Dockerfile")
    with pytest.raises(DockerfileSyntaxError) as caught:
        check_syntax("RUN true\nFROM busybox\n", label="Dockerfile")
    assert str(caught.value) == (
        "Dockerfile line 1: RUN comes before any FROM; fix the Dockerfile: it starts with "
        "FROM <image> (only ARG may come before it)"
    )
    with pytest.raises(DockerfileSyntaxError, match=r"^Dockerfile has no FROM instruction; fix"):
        check_syntax("# nothing but a comment\n", label="Dockerfile")


def test_every_instruction_buildah_knows_passes() -> None:
    check_syntax(
        'FROM busybox AS base\nadd a /a\nARG X\nCMD ["sh"]\nCOPY --from=base /a /b\n'
        'ENTRYPOINT ["sh"]\nENV A=1\nEXPOSE 80\nHEALTHCHECK NONE\nLABEL a=b\n'
        'MAINTAINER me\nONBUILD RUN true\nRUN true\nSHELL ["sh", "-c"]\nSTOPSIGNAL TERM\n'
        "USER 1000\nVOLUME /v\nWORKDIR /w\n",
        label="Dockerfile",
    )


def test_a_heredoc_body_is_left_to_buildah() -> None:
    check_syntax("FROM busybox\nRUN <<EOF\necho hi\nEOF\n", label="Dockerfile")
    check_syntax("FROM busybox\nRUN <<1\necho hi\n1\n", label="Dockerfile")  # any word


def _failed(last_line: str) -> RuntimeFailure:
    return RuntimeFailure(f"build for linux/amd64 failed (exit code 125): {last_line}")


def test_buildahs_own_parse_errors_become_bad_input_with_the_line() -> None:
    text = "FROM busybox\nRUN <<EOF\necho hi\nEOF\n"
    step = '&imagebuilder.Step{Command:"echo", Original:"echo hi"}'
    error = syntax_error(
        _failed(
            f'Error: building at STEP "ECHO ": Build error: Unknown instruction: "ECHO" {step}'
        ),
        "Dockerfile",
        text,
    )
    assert error is not None
    assert str(error) == (
        'Dockerfile line 3: buildah cannot read it (Unknown instruction: "ECHO"); fix the '
        "Dockerfile"
    )
    error = syntax_error(
        _failed('Error: building at STEP "COPY ": COPY requires at least one argument'),
        "Dockerfile",
        "FROM busybox\nCOPY\n",
    )
    assert str(error) == (
        "Dockerfile: buildah cannot read it (COPY requires at least one argument); fix the "
        "Dockerfile"
    )


def test_other_build_failures_stay_build_failures() -> None:
    run_failed = _failed('error building at STEP "RUN false": exit status 1')
    assert syntax_error(run_failed, "Dockerfile", "FROM busybox\nRUN false\n") is None
    # the step's own text is the Dockerfile's, not buildah's verdict
    said = 'Error: building at STEP "RUN echo COPY requires at least one": exit status 1'
    assert syntax_error(_failed(said), "Dockerfile", "") is None
    # a RUN step's text or output that reads like buildah's verdict is still a failed build
    said = 'Error: building at STEP "RUN echo ": no FROM statement found": exit status 1'
    assert syntax_error(_failed(said), "Dockerfile", "") is None
    timed_out = proc.Timeout("build did not finish within 10 s; no FROM statement found")
    assert syntax_error(timed_out, "Dockerfile", "") is None


WARNING = "[Warning] one or more build args were not consumed: [{}]"


def test_the_platform_arguments_buildah_adds_itself_are_not_reported() -> None:
    line = WARNING.format("TARGETARCH TARGETOS TARGETPLATFORM")
    assert unused_args_line(line, frozenset()) is None
    logged = 'time="x" level=warning msg="one or more build args were not consumed: [TARGETOS]"'
    assert unused_args_line(logged, frozenset()) is None


def test_a_callers_own_unused_argument_is_still_reported() -> None:
    line = WARNING.format("NPM_TOKEN TARGETARCH TARGETOS TARGETPLATFORM")
    assert unused_args_line(line, frozenset({"NPM_TOKEN"})) == WARNING.format("NPM_TOKEN")
    # one the caller passed under a platform argument's name is theirs to hear about
    mine = WARNING.format("TARGETARCH TARGETOS")
    assert unused_args_line(mine, frozenset({"TARGETARCH"})) == WARNING.format("TARGETARCH")


def test_exported_tags_a_dockerfile_does_not_use_are_not_reported() -> None:
    line = WARNING.format("NPM_TOKEN TAG_latest TARGETARCH")
    exported = frozenset({"TAG_latest", "TAG_default_tag"})
    assert unused_args_line(line, frozenset({"NPM_TOKEN"}), exported) == WARNING.format("NPM_TOKEN")
    assert unused_args_line(WARNING.format("TAG_latest"), frozenset(), exported) is None


def test_other_lines_pass_unchanged() -> None:
    for line in ["STEP 1/2: FROM busybox", "[Warning] something else: [TARGETARCH]", ""]:
        assert unused_args_line(line, frozenset()) == line
