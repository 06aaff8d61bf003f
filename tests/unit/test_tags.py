from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from image_builder.config import TagTemplate, parse_config
from image_builder.context import CIContext
from image_builder.errors import TagError, TemplateError
from image_builder.tags import (
    Tag,
    TagSpec,
    TemplateValues,
    additional_specs,
    decode_tags_base64,
    default_spec,
    derive_name,
    parse_tag_arg,
    render_tags,
    render_template,
    tag_values,
    template_values,
)

SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
NOW = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)


def values(
    *,
    pr: int | None = 7,
    sha: str | None = SHA,
    env: dict[str, str] | None = None,
    allowed: frozenset[str] = frozenset(),
) -> TemplateValues:
    return TemplateValues(
        commit_sha=sha, pr_number=pr, date="20261126", env=env or {}, allowed_env=allowed
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("latest", "latest"),
        ("v{{ .Date }}-{{ .ShortSHA }}", "v20261126-1a2b3c4d"),
        ("{{.CommitSHA}}", SHA),
        ("PR-{{ .PRNumber }}", "PR-7"),
        ("a  {{- .ShortSHA -}}  b", "a1a2b3c4db"),
        ("a {{- .ShortSHA }} b", "a1a2b3c4d b"),
        ("x{{-3}}", None),  # not trimming: '-3' is an unsupported construct
        ('{{ .Env "BUILD" }}-x', "b7-x"),
        ("{{ .Env `BUILD` }}", "b7"),
        ("}} stays text", "}} stays text"),
    ],
)
def test_render(template: str, expected: str | None) -> None:
    vals = values(env={"BUILD": "b7"}, allowed=frozenset({"BUILD"}))
    if expected is None:
        with pytest.raises(TemplateError):
            render_template(template, vals)
    else:
        assert render_template(template, vals) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ .Branchname }}",
            "tag template '{{ .Branchname }}' uses unknown field '.Branchname'; supported: "
            "{{ .CommitSHA }}, {{ .ShortSHA }}, {{ .PRNumber }}, {{ .Date }}, {{ .Ref }}, "
            "{{ .Branch }}, {{ .Tag }}, {{ .Version }}, {{ .Major }}, {{ .Minor }}, "
            '{{ .Patch }}, {{ .Event }}, {{ .Env "NAME" }}',
        ),
        ("{{ if .PRNumber }}x{{ end }}", "uses 'if', which tag templates do not support"),
        ("{{ range . }}", "uses 'range', which tag templates do not support"),
        ("{{ .ShortSHA | printf }}", "uses pipeline '|', which tag templates do not support"),
        ('{{ printf "%s" .Date }}', "uses 'printf', which tag templates do not support"),
        ("{{ $x := 1 }}", "uses '$x', which tag templates do not support"),
        ("{{/* note */}}", "uses comment, which tag templates do not support"),
        ("{{ .Date 1 }}", "uses '.Date 1', which tag templates do not support"),
        ("v{{ .Date", "tag template 'v{{ .Date' has '{{' without a closing '}}'"),
        ("{{ }}", "tag template '{{ }}' has an empty action '{{ }}'"),
        (
            "{{ .Env }}",
            "tag template '{{ .Env }}': .Env needs a variable name, e.g. {{ .Env \"BUILD_ID\" }}",
        ),
        (
            '{{ .Env "A-B" }}',
            "tag template '{{ .Env \"A-B\" }}': 'A-B' is not an environment variable name",
        ),
    ],
)
def test_unsupported_constructs_are_named(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_template(template, values())
    assert caught.value.exit_code == 2
    assert message in str(caught.value)


def test_env_is_secure_by_default() -> None:
    with pytest.raises(TemplateError) as caught:
        render_template(
            '{{ .Env "AZURE_CLIENT_SECRET" }}', values(env={"AZURE_CLIENT_SECRET": "s3cret"})
        )
    message = str(caught.value)
    assert message == (
        'tag template \'{{ .Env "AZURE_CLIENT_SECRET" }}\' reads .Env "AZURE_CLIENT_SECRET", '
        "which tag templates may not read; list it under 'tag-template-env' in config.yaml (an "
        "env file gives values, it never makes a name readable)"
    )
    assert "s3cret" not in message


def test_allowed_env_that_is_unset() -> None:
    with pytest.raises(TemplateError, match=r'reads \.Env "BUILD", but BUILD is not set'):
        render_template('{{ .Env "BUILD" }}', values(allowed=frozenset({"BUILD"})))


def test_template_values_serve_allowed_names_only() -> None:
    """An env file gives values to allowed names; it never makes a name readable. An allowed
    variable that is set wins over the file."""
    ctx = CIContext(ci="local", event="push", job_type="postsubmit", commit_sha=SHA)
    vals = template_values(
        ctx,
        now=NOW,
        env={"A": "from-env", "LISTED": "listed", "SECRET": "x"},
        env_file={"A": "from-file", "B": "file-only", "FILE_ALLOWED": "f", "SECRET": "y"},
        allowed_env=["LISTED", "FILE_ALLOWED", "A"],
    )
    assert vals.env == {"A": "from-env", "FILE_ALLOWED": "f", "LISTED": "listed"}
    assert vals.allowed_env == frozenset({"LISTED", "FILE_ALLOWED", "A"})
    assert vals.date == "20261126"


def test_date_is_utc() -> None:
    ctx = CIContext(ci="local", event="push", job_type="postsubmit", commit_sha=SHA)
    late_in_tokyo = datetime(2026, 11, 27, 1, 0, tzinfo=timezone(timedelta(hours=9)))
    assert (
        template_values(ctx, now=late_in_tokyo, env={}, env_file={}, allowed_env=()).date
        == "20261126"
    )


def test_pr_number_outside_pull_requests() -> None:
    with pytest.raises(
        TemplateError, match=r"uses \.PRNumber, which is only set for pull request builds"
    ):
        render_template("PR-{{ .PRNumber }}", values(pr=None))


def test_unknown_commit() -> None:
    with pytest.raises(
        TemplateError, match=r"uses \.ShortSHA, but the commit being built is unknown"
    ):
        render_template("{{ .ShortSHA }}", values(sha=None))


@pytest.mark.parametrize(
    ("arg", "name", "template"),
    [
        ("latest", "latest", "latest"),
        ("v{{ .ShortSHA }}-{{ .Date }}", "vShortSHA-Date", "v{{ .ShortSHA }}-{{ .Date }}"),
        ("release=v1.2", "release", "v1.2"),
        ("my_tag-1=x", "my_tag-1", "x"),
    ],
)
def test_named_tags(arg: str, name: str, template: str) -> None:
    assert parse_tag_arg(arg) == TagSpec(name=name, template=template)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("a=b=c", "--tag 'a=b=c' has more than one '='; use name=value"),
        (
            "bad name=x",
            "--tag 'bad name=x': tag name 'bad name' may hold only letters, digits, '_', '.' and '-'",
        ),
        ("x=", "--tag 'x=' has an empty value; use name=value or a plain value"),
        ("...", "--tag '...': cannot derive a tag name from it; use name=value"),
    ],
)
def test_bad_tag_args(arg: str, message: str) -> None:
    with pytest.raises(TagError) as caught:
        parse_tag_arg(arg)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message


def test_derive_name_follows_the_go_rule() -> None:
    assert derive_name("v{{ .ShortSHA }}-{{ .Date }}") == "vShortSHA-Date"
    assert derive_name("1.2.3") == "123"


def test_tag_base64() -> None:
    encoded = base64.b64encode(b"latest,release=v{{ .Date }}").decode()
    assert decode_tags_base64(encoded) == [
        TagSpec(name="latest", template="latest", source="--tag-base64"),
        TagSpec(name="release", template="v{{ .Date }}", source="--tag-base64"),
    ]
    with pytest.raises(TagError) as caught:
        decode_tags_base64("not base64!")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("--tag-base64 is not valid base64 of UTF-8 text")


def ctx_for(job_type: str) -> CIContext:
    return CIContext(
        ci="local",
        event="x",
        job_type=job_type,  # type: ignore[arg-type]
        commit_sha=SHA,
        pr_number=7 if job_type == "presubmit" else None,
    )


@pytest.mark.parametrize(
    ("job_type", "expected"),
    [
        ("presubmit", ["pr-extra-7", "PR-7"]),
        ("merge_group", ["MG-1a2b3c4d"]),
        ("postsubmit", ["v20261126-1a2b3c4d"]),
        ("schedule", ["v20261126-1a2b3c4d"]),
        ("workflow_dispatch", ["v20261126-1a2b3c4d"]),
    ],
)
def test_default_tag_per_event(job_type: str, expected: list[str]) -> None:
    config = parse_config("additional-pr-tag:\n  name: extra\n  value: pr-extra-{{ .PRNumber }}\n")
    ctx = ctx_for(job_type)
    vals = template_values(ctx, now=NOW, env={}, env_file={}, allowed_env=())
    specs = [*additional_specs(config, ctx), default_spec(config, ctx)]
    assert [t.value for t in render_tags(specs, vals)] == expected


def test_same_value_tags_keep_every_name_and_identical_pairs_merge() -> None:
    """Issue 16: --export-tags needs every TAG_<name>, so names that share a value are all
    kept; only an identical name/value pair is merged. The image still gets each value once."""
    config = parse_config("")
    ctx = ctx_for("presubmit")
    specs = [
        parse_tag_arg("latest"),
        parse_tag_arg("again=PR-{{ .PRNumber }}"),
        parse_tag_arg("also=latest"),
        parse_tag_arg("latest"),
        parse_tag_arg("with space"),
        default_spec(config, ctx),
    ]
    vals = template_values(ctx, now=NOW, env={}, env_file={}, allowed_env=())
    tags = render_tags(specs, vals)
    assert tags == [
        Tag(name="latest", value="latest"),
        Tag(name="again", value="PR-7"),
        Tag(name="also", value="latest"),
        Tag(name="withspace", value="with-space"),
        Tag(name="default_tag", value="PR-7", validation="^(PR-[0-9]+)$"),
    ]
    assert tag_values(tags) == ("latest", "PR-7", "with-space")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            TagSpec(name="x", template="-bad"),
            "--tag '-bad' renders to '-bad', which is not a valid OCI tag",
        ),
        (TagSpec(name="x", template="a" * 129), "which is not a valid OCI tag"),
        (TagSpec(name="x", template="a/b"), "renders to 'a/b', which is not a valid OCI tag"),
        (
            TagSpec(name="x", template="sha256-" + "ab" * 32 + ".sig"),
            "which looks like a signature, attestation or SBOM tag",
        ),
        (TagSpec(name="x", template="sha256-abc.att"), "looks like a signature"),
        (TagSpec(name="x", template="sha256-abc.sbom"), "looks like a signature"),
        (
            TagSpec(
                name="x", template="v1-extra", validation=r"v[0-9]+", source="default-commit-tag"
            ),
            "default-commit-tag 'v1-extra' renders to 'v1-extra', which does not match its validation 'v[0-9]+'",
        ),
    ],
)
def test_tag_validation(spec: TagSpec, message: str) -> None:
    with pytest.raises(TagError) as caught:
        render_tags([spec], values())
    assert caught.value.exit_code == 2
    assert message in str(caught.value)


def test_validation_must_match_the_whole_value() -> None:
    spec = TagSpec(name="x", template="PR-7-x", validation=r"PR-[0-9]+")
    with pytest.raises(TagError, match="does not match its validation"):
        render_tags([spec], values())
    assert render_tags([TagSpec(name="x", template="PR-7", validation=r"PR-[0-9]+")], values())


def test_conflicting_names_are_refused() -> None:
    with pytest.raises(TagError) as caught:
        render_tags([parse_tag_arg("a=one"), parse_tag_arg("a=two")], values())
    assert str(caught.value) == (
        "two tags are named 'a' ('one' and 'two'); give one another name with --tag name=value"
    )


def test_config_tag_without_name_gets_a_derived_one() -> None:
    config = parse_config("default-commit-tag:\n  value: v{{ .ShortSHA }}\n")
    ctx = ctx_for("postsubmit")
    assert default_spec(config, ctx).name == "vShortSHA"
    assert TagTemplate(value="x").name is None
