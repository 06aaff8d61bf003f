"""Reading a Dockerfile for the images it pulls, as buildah 1.28 reads it, and the
restricted-registry rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_builder.dockerfile import (
    BadReference,
    Instruction,
    check_restricted,
    image_uses,
    normalise,
    parse,
    platform_args,
    under,
)
from image_builder.errors import InputError


def uses(text: str, **build_args: str) -> list[tuple[int, str, str | None]]:
    return [(u.line, u.shown, u.reference) for u in image_uses(parse(text), build_args)]


def problems(text: str, **build_args: str) -> list[str | None]:
    return [u.problem for u in image_uses(parse(text), build_args) if u.reference is None]


def test_parse_joins_continuations_and_drops_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "\n"
        "# a comment\n"
        "FROM --platform=$BUILDPLATFORM \\\n"
        "  # a comment inside the instruction\n"
        "\n"
        "  busybox:1 AS build\n"
        "RUN --mount=type=cache,target=/c echo one \\\n"
        "    two\n"
        "copy --from=build /a /b\n"
    )
    assert parse(text) == [
        Instruction(
            line=4, keyword="FROM", flags=("--platform=$BUILDPLATFORM",), args="busybox:1 AS build"
        ),
        Instruction(
            line=8, keyword="RUN", flags=("--mount=type=cache,target=/c",), args="echo one     two"
        ),
        Instruction(line=10, keyword="COPY", flags=("--from=build",), args="/a /b"),
    ]


def test_the_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM `\n  busybox\nRUN dir c:\\\n"
    assert [(i.line, i.keyword, i.args) for i in parse(text)] == [
        (2, "FROM", "busybox"),
        (4, "RUN", "dir c:\\"),
    ]
    # After the first instruction, "# escape=" is a comment.
    assert parse("FROM a\n# escape=`\nRUN x `\nRUN y\n")[1].args == "x `"


def test_arg_defaults_and_build_args_substitute_as_docker_does() -> None:
    text = (
        "ARG REGISTRY=cgr.dev/sap\n"
        "ARG IMAGE=${REGISTRY}/go\n"
        "ARG VERSION\n"
        "FROM $IMAGE:${VERSION:-1.22} AS build\n"
        "FROM ${MIRROR:-cgr.dev}/sap/static${SUFFIX:+-$SUFFIX}\n"
    )
    assert uses(text) == [
        (4, "FROM $IMAGE:${VERSION:-1.22}", "cgr.dev/sap/go:1.22"),
        (5, "FROM ${MIRROR:-cgr.dev}/sap/static${SUFFIX:+-$SUFFIX}", "cgr.dev/sap/static"),
    ]
    assert [r for _, _, r in uses(text, VERSION="1.23", REGISTRY="docker.io/x")] == [
        "docker.io/x/go:1.23",
        "cgr.dev/sap/static",
    ]
    # A build argument only counts for a declared ARG.
    assert uses("FROM cgr.dev/sap/go${TAG}\n", TAG=":1") == [(1, "FROM cgr.dev/sap/go${TAG}", None)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("FROM $BASE\n", "BASE is not declared with ARG; declare it with a default (ARG BASE=...)"),
        (
            "ARG BASE\nFROM ${BASE}\n",
            "BASE has no value; give it a default (ARG BASE=...) or pass --build-arg BASE=...",
        ),
        (
            "ARG BASE\nFROM ${BASE-busybox}\n",
            "${BASE-...} is a substitution buildah 1.28 does not support; use ${BASE}, "
            "${BASE:-default} or ${BASE:+word}",
        ),
        ("ARG BASE\nFROM ${BASE:?}\n", "BASE has no value; give it a default"),
        ("FROM ${BASE\n", "it has an unclosed ${; close it with }"),
        ("FROM 'busybox\n", "it has an unclosed ' quote; close it"),
        ("FROM a b\n", "it is not FROM [--platform=...] <image> [AS <name>]; fix the line"),
        (
            "FROM oci:/srv/layout\n",
            "buildah reads it through the oci: transport, not from a registry; name an image in "
            "one of the listed registries",
        ),
        ("FROM Busybox\n", "'Busybox' is not a valid image reference; correct it"),
    ],
)
def test_what_cannot_be_known_before_the_build(text: str, problem: str) -> None:
    found = problems(text)
    assert len(found) == 1
    assert (found[0] or "").startswith(problem)


def test_stages_scratch_and_indexes_are_not_images() -> None:
    text = (
        "FROM cgr.dev/sap/go AS build\n"
        "FROM scratch AS empty\n"
        "FROM build AS test\n"
        "COPY --from=build /a /a\n"
        "COPY --from=0 /b /b\n"
        "COPY --from=BUILD /c /c\n"
        "RUN --mount=type=bind,from=empty,target=/e --mount=type=cache,target=/c true\n"
    )
    assert uses(text) == [(1, "FROM cgr.dev/sap/go", "cgr.dev/sap/go")]


def test_copy_from_and_mount_from_name_images() -> None:
    text = (
        "FROM cgr.dev/sap/go AS build\n"
        "COPY --from=alpine:3 /a /a\n"
        "RUN --mount=type=bind,from=ghcr.io/org/tools,target=/t \\\n"
        "    --mount=type=cache,target=/c,from=5 true\n"
        "ADD --from=quay.io/x/y /z /z\n"
    )
    assert uses(text) == [
        (1, "FROM cgr.dev/sap/go", "cgr.dev/sap/go"),
        (2, "COPY --from=alpine:3", "docker.io/library/alpine:3"),
        (3, "RUN --mount=type=bind,from=ghcr.io/org/tools,target=/t", "ghcr.io/org/tools"),
        (3, "RUN --mount=type=cache,target=/c,from=5", "docker.io/library/5"),
        (5, "ADD --from=quay.io/x/y", "quay.io/x/y"),
    ]


def test_a_stage_is_only_ever_an_earlier_one() -> None:
    """buildah pulls an image of the name when the stage comes later, or is the current one."""
    text = (
        "FROM cgr.dev/sap/go AS build\n"
        "COPY --from=build /a /a\n"
        "COPY --from=later /b /b\n"
        "COPY --from=0 /c /c\n"
        "FROM later AS later\n"
    )
    assert uses(text) == [
        (1, "FROM cgr.dev/sap/go", "cgr.dev/sap/go"),
        (2, "COPY --from=build", "docker.io/library/build"),
        (3, "COPY --from=later", "docker.io/library/later"),
        (4, "COPY --from=0", "docker.io/library/0"),
        (5, "FROM later", "docker.io/library/later"),
    ]


def test_a_stage_sees_its_own_args_and_global_ones_only_when_declared_again() -> None:
    text = (
        "ARG TOOLS=cgr.dev/sap/tools\n"
        "FROM cgr.dev/sap/go\n"
        "COPY --from=$TOOLS /a /a\n"
        "ARG TOOLS\n"
        "COPY --from=$TOOLS /b /b\n"
        "ARG OTHER=ghcr.io/org/other\n"
        "COPY --from=${OTHER} /c /c\n"
        "ENV VIA_ENV=ghcr.io/org/env\n"
        "COPY --from=$VIA_ENV /d /d\n"
    )
    found = image_uses(parse(text), {"OTHER": "quay.io/o/x"})
    assert [(u.line, u.reference) for u in found] == [
        (2, "cgr.dev/sap/go"),
        (3, None),
        (5, "cgr.dev/sap/tools"),
        (7, "quay.io/o/x"),
        (9, None),
    ]


def test_platform_arguments_count_where_declared() -> None:
    text = "ARG TARGETARCH\nFROM cgr.dev/sap/go-${TARGETARCH}\n"
    found = image_uses(parse(text), {}, platform_args("linux/arm64", "linux/amd64"))
    assert [u.reference for u in found] == ["cgr.dev/sap/go-arm64"]
    assert platform_args("linux/arm/v7", "linux/amd64") == {
        "TARGETPLATFORM": "linux/arm/v7",
        "TARGETOS": "linux",
        "TARGETARCH": "arm",
        "TARGETVARIANT": "v7",
        "BUILDPLATFORM": "linux/amd64",
        "BUILDOS": "linux",
        "BUILDARCH": "amd64",
        "BUILDVARIANT": "",
    }


def test_quotes_and_escapes_in_words() -> None:
    text = "ARG A='cgr.dev/sap/x'\nARG B=\"$A:1\"\nFROM $B\nFROM '$A'\nFROM \\$A\n"
    found = [u.reference or u.problem for u in image_uses(parse(text), {})]
    assert found[0] == "cgr.dev/sap/x:1"
    assert "'$A' is not a valid image reference" in (found[1] or "")
    assert "'$A' is not a valid image reference" in (found[2] or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("org/x", "docker.io/org/x"),
        ("index.docker.io/org/x", "docker.io/org/x"),
        ("docker.io/busybox", "docker.io/library/busybox"),
        ("docker://golang:1.22", "docker.io/library/golang:1.22"),
        ("docker:latest", "docker.io/library/docker:latest"),  # an image named docker
        ("localhost/x", "localhost/x"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("cgr.dev/sap/go@sha256:" + "a" * 64, "cgr.dev/sap/go@sha256:" + "a" * 64),
        ("cgr.dev/sap/go:1@sha256:" + "a" * 64, "cgr.dev/sap/go:1@sha256:" + "a" * 64),
        ("[::1]:5000/x", "[::1]:5000/x"),
        ("Registry/x", "Registry/x"),  # upper case makes it a host, as in docker
    ],
)
def test_normalise_as_docker(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    ["oci:latest", "oci-archive:/x.tar", "docker-archive:/x.tar", "containers-storage:x", "dir:/x",
     "UPPER", "a b", "x:bad tag", "x@sha256:short", "", "/x", "x//y"],
)  # fmt: skip
def test_normalise_refuses_what_is_no_registry_image(text: str) -> None:
    with pytest.raises(BadReference):
        normalise(text)


@pytest.mark.parametrize(
    ("reference", "prefix", "inside"),
    [
        ("cgr.dev/sap/go:1", "cgr.dev/sap", True),
        ("cgr.dev/sap", "cgr.dev/sap", True),
        ("cgr.dev/sap/deep/er/go@sha256:" + "a" * 64, "cgr.dev/sap", True),
        ("cgr.dev/sapper/x", "cgr.dev/sap", False),
        ("cgr.dev/sap.com/go", "cgr.dev/sap", False),
        ("cgr.dev.evil.com/sap/go", "cgr.dev", False),
        ("127.0.0.1:50000/x", "127.0.0.1:5000", False),
        ("127.0.0.1:5000/x", "127.0.0.1", False),
        ("docker.io/library/busybox", "docker.io/library", True),
        ("docker.io/library/busybox", "index.docker.io/library", True),
        ("docker.io/library/busybox:1", "docker.io/library/busybox", True),
        ("docker.io/library/busybox", "docker.io/lib", False),
    ],
)
def test_the_prefix_rule_holds_on_path_components(
    reference: str, prefix: str, inside: bool
) -> None:
    assert under(reference, prefix) is inside


_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,4})?", fullmatch=True)


@given(
    host=st.sampled_from(["cgr.dev", "ghcr.io", "localhost:5000", "docker.io", ""]),
    path=st.lists(_component, min_size=1, max_size=4),
    tag=st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9.-]{0,8}", fullmatch=True)),
    prefix=st.lists(_component, min_size=0, max_size=3),
)
def test_normalised_references_stay_put_and_prefixes_match_whole_components(
    host: str, path: list[str], tag: str | None, prefix: list[str]
) -> None:
    text = "/".join(([host] if host else []) + path) + (f":{tag}" if tag else "")
    reference = normalise(text)
    assert normalise(reference) == reference
    name = reference.split("@")[0].rsplit(":", 1)[0] if tag else reference
    components = name.split("/")
    candidate = "/".join([components[0], *prefix])
    assert under(reference, candidate) is (
        components[: len(prefix) + 1] == [components[0], *prefix]
    )


def restricted(
    text: str,
    *prefixes: str,
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
    **build_args: str,
) -> str:
    with pytest.raises(InputError) as caught:
        check_restricted(
            text,
            label="build/Dockerfile",
            build_args=build_args,
            platforms=platforms,
            build_platform="linux/amd64",
            prefixes=prefixes or ("cgr.dev/sap.com",),
        )
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_restricted_refusals_name_the_line_and_the_fix() -> None:
    text = "# escape=\\\nARG GO=1.22\n\nFROM docker.io/library/golang:${GO}\n"
    assert restricted(text) == (
        "build/Dockerfile line 4: FROM docker.io/library/golang:${GO} "
        "(docker.io/library/golang:1.22) is not in restricted-registries (cgr.dev/sap.com); take "
        "it from one of those registries, or build without --use-restricted-registry"
    )
    assert restricted("FROM cgr.dev/sap.com/go\nCOPY --from=busybox / /\n").startswith(
        "build/Dockerfile line 2: COPY --from=busybox (docker.io/library/busybox) is not in "
        "restricted-registries (cgr.dev/sap.com);"
    )
    assert restricted("ARG BASE\nFROM $BASE\n", "cgr.dev/sap.com", "ghcr.io/sap") == (
        "build/Dockerfile line 2: FROM $BASE cannot be checked against restricted-registries "
        "(cgr.dev/sap.com, ghcr.io/sap): BASE has no value; give it a default (ARG BASE=...) or "
        "pass --build-arg BASE=..."
    )


def test_restricted_checks_every_platform() -> None:
    text = "ARG TARGETVARIANT\nFROM ${TARGETVARIANT:+docker.io/}cgr.dev/sap.com/go\n"
    prefixes = ("cgr.dev/sap.com",)
    check_restricted(
        text, label="D", build_args={}, platforms=("linux/amd64", "linux/arm64"),
        build_platform="linux/amd64", prefixes=prefixes,
    )  # fmt: skip
    assert "(docker.io/cgr.dev/sap.com/go) is not in" in restricted(
        text, *prefixes, platforms=("linux/amd64", "linux/arm/v7")
    )


def test_restricted_allows_listed_registries_scratch_and_stages() -> None:
    text = (
        "ARG BASE=cgr.dev/sap.com/go:1.22\n"
        "FROM ${BASE} AS build\n"
        "FROM scratch\n"
        "COPY --from=build /app /app\n"
        "COPY --from=127.0.0.1:5000/base/busybox /bin/sh /bin/sh\n"
    )
    check_restricted(
        text,
        label="Dockerfile",
        build_args={"UNUSED": "docker.io/evil"},
        platforms=("linux/amd64",),
        build_platform="linux/amd64",
        prefixes=("cgr.dev/sap.com", "127.0.0.1:5000"),
    )


def test_lines_end_at_newlines_alone_and_messages_hold_no_control_characters() -> None:
    # Python's splitlines would break at \x0b and \r; docker does not, so neither does this.
    assert [i.line for i in parse("RUN a\x0bFROM evil\r\nFROM b\n")] == [1, 2]
    message = restricted("FROM evil\r::error::x\n")
    assert message == (
        "build/Dockerfile line 1: FROM evil?::error::x cannot be checked against "
        "restricted-registries (cgr.dev/sap.com): it is not FROM [--platform=...] <image> "
        "[AS <name>]; fix the line"
    )
