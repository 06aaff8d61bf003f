"""Property-based tests: no input to the parsers ends in anything but a result or our own error."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from image_builder.config import Config, parse_config
from image_builder.context.github import SUPPORTED_EVENTS, parse_event
from image_builder.context.model import CIContext
from image_builder.envfile import parse_env_file
from image_builder.errors import ImageBuilderError
from image_builder.tags import (
    OCI_TAG,
    TemplateValues,
    decode_tags_base64,
    parse_tag_arg,
    render_tags,
    render_template,
)
from tests.conftest import EVENTS

VALUES = TemplateValues(
    commit_sha="1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
    pr_number=12,
    date="20261126",
    env={"A": "x y", "B": ""},
    allowed_env=frozenset({"A", "B"}),
)

FRAGMENTS = st.sampled_from(
    [
        "{{", "}}", "{{-", "-}}", " ", "-", ".", "Env", '"A"', '"B"', "`A`", "CommitSHA",
        "ShortSHA", "PRNumber", "Date", "if", "|", "$", "/*", "*/", "v", "=", ",", "\n", "\t",
    ]
)  # fmt: skip
TEMPLATES = st.one_of(
    st.text(), st.lists(FRAGMENTS | st.text(max_size=3), max_size=20).map("".join)
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(TEMPLATES)
def test_template_evaluator_never_crashes(template: str) -> None:
    try:
        result = render_template(template, VALUES)
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
        assert "\n" not in str(exc).replace(repr(template), "")
    else:
        assert isinstance(result, str)


@given(st.lists(TEMPLATES, min_size=1, max_size=4))
def test_rendered_tags_always_fit_the_oci_grammar(templates: list[str]) -> None:
    try:
        tags = render_tags([parse_tag_arg(t) for t in templates], VALUES)
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
    else:
        assert all(OCI_TAG.fullmatch(t.value) for t in tags)
        assert len({t.value for t in tags}) == len(tags)


@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_tag_base64_never_crashes(text: str) -> None:
    try:
        decode_tags_base64(text)
    except ImageBuilderError as exc:
        assert exc.exit_code == 2


@given(st.text())
@example("\u00e9t\u00e9=1\n")  # letters beyond ASCII: str.isidentifier() takes them
@example("K\u0661=1\n")  # an Arabic-Indic digit: str.isalnum() takes it
@example("export A_1=x\n_b = 'y'\n")
def test_env_file_parser_never_crashes(text: str) -> None:
    try:
        entries = parse_env_file(text, source="envs")
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
    else:
        # Build-argument names: ASCII letters, digits and "_", not starting with a digit.
        assert all(key.isascii() and key.isidentifier() for key in entries), entries


def _load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


FIXTURES = [
    _load(name)
    for name in (
        "pull_request.opened.json",
        "push.new-branch.json",
        "merge_group.checks_requested.json",
        "workflow_dispatch.json",
        "schedule.json",
    )
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """A real payload with one of its values replaced by arbitrary JSON, or deleted."""
    payload = json.loads(json.dumps(draw(st.sampled_from(FIXTURES))))
    path = draw(st.sampled_from(_paths(payload)))
    parent = payload
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return payload


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.sampled_from(SUPPORTED_EVENTS), st.one_of(JSON, mutated_payloads()), st.text(max_size=45))
def test_payload_parser_never_crashes(event: str, payload: Any, sha: str) -> None:
    try:
        ctx = parse_event(event, payload, {"GITHUB_SHA": sha, "GITHUB_REF": "refs/heads/main"})
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
    else:
        assert isinstance(ctx, CIContext)
        assert ctx.commit_sha is None or len(ctx.commit_sha) in (40, 64)


@settings(max_examples=200)
@given(st.one_of(st.text(), JSON.map(lambda v: yaml.safe_dump(v))))
def test_config_parser_never_crashes(text: str) -> None:
    try:
        config = parse_config(text)
    except ImageBuilderError as exc:
        assert exc.exit_code == 2
        first, *more = str(exc).split("\n")
        assert not more or (
            first.endswith(" problems:") and all(m.startswith("  - ") for m in more)
        )
    else:
        assert isinstance(config, Config)


@settings(max_examples=150)
@given(st.lists(TEMPLATES, min_size=1, max_size=3))
def test_the_tags_command_exits_0_or_2(templates: list[str]) -> None:
    """Through the whole CLI: whatever the tags, the answer is a result or a one-line refusal."""
    import contextlib
    import io

    from image_builder.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["tags", "--context", str(EVENTS.parent.parent.parent)]
    for template in templates:
        argv.append(f"--tag={template}")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert err.getvalue().startswith("error: ")
