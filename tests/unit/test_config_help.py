"""What a user sees of config.yaml: the schema's help for every key, and problems in plain words."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, ValidationError

from image_builder.cli import main
from image_builder.config import Config, CosignSignerConfig, parse_config
from image_builder.errors import ConfigError
from image_builder.validation import describe_validation_error, problems


def _schema(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["config", "schema"]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


def _undocumented(schema: dict[str, Any]) -> list[str]:
    """Every property, of every object the schema reaches, that lacks a description or
    examples; ``$ref`` followed into ``$defs``."""
    defs: dict[str, Any] = schema.get("$defs", {})
    missing: list[str] = []
    seen: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in seen:
                seen.add(name)
                if "description" not in defs[name]:
                    missing.append(f"{name}: description")
                walk(defs[name], name)
        for key, prop in node.get("properties", {}).items():
            missing.extend(
                f"{where}.{key}: {need}" for need in ("description", "examples") if need not in prop
            )
            walk(prop, f"{where}.{key}")
        for keyword in ("anyOf", "allOf", "oneOf", "prefixItems", "items", "additionalProperties"):
            walk(node.get(keyword), where)

    walk(schema, "config")
    assert seen, "the walk never reached $defs"
    return missing


def test_every_key_in_the_schema_has_a_description_and_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _undocumented(_schema(capsys)) == []


def test_the_walk_finds_an_undocumented_key() -> None:
    schema = {
        "properties": {"a": {"$ref": "#/$defs/A", "description": "an A", "examples": [{}]}},
        "$defs": {"A": {"description": "A.", "properties": {"b": {"description": "b"}}}},
    }
    assert _undocumented(schema) == ["A.b: examples"]


def test_the_schema_shows_editors_both_forms_of_a_signer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Editors pick the form by the signer's type, and offer that form's config keys."""
    schema = _schema(capsys)
    signers = schema["$defs"]["SignConfig"]["properties"]["signers"]["items"]
    assert signers["discriminator"]["propertyName"] == "type"
    assert signers["oneOf"] == [
        {"$ref": "#/$defs/NotarySignerConfig"},
        {"$ref": "#/$defs/CosignSignerConfig"},
    ]
    notary = schema["$defs"]["NotarySignerConfig"]["properties"]
    cosign = schema["$defs"]["CosignSignerConfig"]["properties"]
    assert notary["type"]["const"] == "notary"
    assert notary["config"]["$ref"] == "#/$defs/NotaryConfig"
    assert cosign["type"]["const"] == "cosign"
    assert cosign["config"]["$ref"] == "#/$defs/CosignConfig"
    assert schema["$defs"]["CosignConfig"]["properties"]["private-key"]["type"] == "string"
    registry = schema["properties"]["registry"]
    assert registry["examples"] == [["ghcr.io/my-org", "europe-docker.pkg.dev/proj/images"]]


def test_a_signers_config_is_read_as_its_types_settings() -> None:
    """The type picks the form, once, when the file is read: the other form's keys are unknown."""
    text = "sign-config:\n  signers:\n    - {name: s, type: cosign, config: {private-key: k}}\n"
    signer = parse_config(text).sign_config.signers[0]
    assert isinstance(signer, CosignSignerConfig)
    assert signer.config.private_key == "k"
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("private-key: k", "private-key: k, endpoint: 'https://x'"))
    assert str(caught.value) == (
        "config.yaml: unknown key 'sign-config.signers[0].config.endpoint'; known keys under "
        "'sign-config.signers[0].config': private-key, password-env"
    )


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=lambda n: n.replace("_", "-"))

    size: int = Field(default=1, ge=1, le=10, examples=[3])


class _Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=lambda n: n.replace("_", "-"))

    name: str = Field(min_length=1, examples=["app"])
    flag: bool = False
    count: int = Field(default=1, ge=1)
    ratio: float = 0.5
    items: list[str] = Field(default_factory=list, examples=[["a", "b"]])
    entries: tuple[str, ...] = Field(default=(), min_length=1, max_length=2)
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"team": "core"}])
    inner_part: _Inner | None = None
    mode: Literal["fast", "slow"] = "fast"
    code: str = Field(default="a", pattern=r"^[a-z]+$", examples=["abc"])
    short: str = Field(default="", max_length=3)
    link: AnyUrl | None = None
    either: int | list[int] = 0


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _Sample.model_validate({"name": "n", **data})
    return _texts(caught.value)


def _texts(exc: ValidationError) -> list[str]:
    return [p.text for p in problems(exc.errors(include_url=False), _Sample)]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"name": ""},
            "'name': expected a non-empty string such as app; got an empty string",
        ),
        ({"name": 5}, "'name': expected a string such as app; got 5"),
        ({"nmae": "x"}, "unknown key 'nmae'; did you mean 'name'?"),
        (
            {"zzzz": "x"},
            "unknown key 'zzzz'; known keys: name, flag, count, ratio, items, entries, labels, "
            "inner-part, mode, code, short, link, either",
        ),
        (
            {"inner-part": {"siz": 2}},
            "unknown key 'inner-part.siz'; did you mean 'inner-part.size'?",
        ),
        ({"flag": "maybe"}, "'flag': expected true or false; got 'maybe'"),
        ({"flag": [True]}, "'flag': expected true or false; got a list"),
        ({"count": "many"}, "'count': expected a whole number of at least 1; got 'many'"),
        ({"count": 1.5}, "'count': expected a whole number of at least 1; got 1.5"),
        ({"count": 0}, "'count': expected a number of at least 1; got 0"),
        (
            {"inner-part": {"size": 11}},
            "'inner-part.size': expected a number of at most 10; got 11",
        ),
        (
            {"inner-part": {"size": "x"}},
            "'inner-part.size': expected a whole number from 1 to 10; got 'x'",
        ),
        ({"ratio": "half"}, "'ratio': expected a number; got 'half'"),
        ({"items": "a"}, "'items': expected a list such as [a, b]; got 'a'"),
        ({"items": [1]}, "'items[0]': expected a string such as a; got 1"),
        ({"entries": {"a": 1}}, "'entries': expected a list; got a mapping"),
        ({"entries": []}, "'entries': expected a list of at least 1 entry; got an empty list"),
        (
            {"entries": ["a", "b", "c"]},
            "'entries': expected a list of at most 2 entries; got a list",
        ),
        (
            {"labels": ["a"]},
            "'labels': expected a mapping of keys such as {team: core}; got a list",
        ),
        ({"labels": {"team": 1}}, "'labels.team': expected a string such as core; got 1"),
        ({"inner-part": "big"}, "'inner-part': expected a mapping of keys; got 'big'"),
        ({"mode": "medium"}, "'mode': expected 'fast' or 'slow'; got 'medium'"),
        (
            {"code": "ABC"},
            "'code': expected a string such as abc (matching ^[a-z]+$); got 'ABC'",
        ),
        ({"short": "abcd"}, "'short': expected at most 3 characters; got 'abcd'"),
        ({"link": "not a url"}, "'link': expected a URL; got 'not a url'"),
        ({"either": "x"}, "'either': expected a whole number or a list; got 'x'"),
        ({"either": ["x"]}, "'either[0]': expected a whole number; got 'x'"),
        ({"short": None}, "'short': expected a string; got nothing"),
    ],
)
def test_each_kind_of_problem_in_plain_words(data: dict[str, Any], problem: str) -> None:
    assert _problems(data) == [problem]


def test_missing_keys_say_what_to_add() -> None:
    with pytest.raises(ValidationError) as caught:
        _Sample.model_validate({})
    assert _texts(caught.value) == ["'name' is required, e.g. name: app"]


def test_one_line_form_names_the_first_problem_and_counts_the_rest() -> None:
    with pytest.raises(ValidationError) as caught:
        _Sample.model_validate({"flag": "x", "nmae": "n"})
    assert describe_validation_error(caught.value, _Sample) == (
        "unknown key 'nmae'; did you mean 'name'? (and 2 more problem(s))"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "build-user: Root",
            "'build-user': expected a user name such as ib-sandbox (at most 32 lower-case "
            "letters, digits, '_' or '-', starting with a letter or '_'); got 'Root'",
        ),
        (
            "ado-config: {ado-organization-url: 'ftp://x', ado-project-name: p, ado-pipeline-id: 1}",
            "'ado-config.ado-organization-url': expected an https:// (or http://) URL such as "
            "https://dev.azure.com/my-org; got 'ftp://x'",
        ),
        (
            "go-internal-sap-modules: {id: 'a b', file: f}",
            "'go-internal-sap-modules.id': expected an id such as netrc (1 to 64 letters, "
            "digits, '.', '_' or '-'); got 'a b'",
        ),
        (
            "sign-config:\n  signers:\n    - name: s\n      type: cosign\n      config:\n"
            "        private-key: k\n        password-env: A-B\n",
            "'sign-config.signers[0].config.password-env': expected an environment variable name "
            "such as COSIGN_PASSWORD (letters, digits and _, not starting with a digit); got 'A-B'",
        ),
        (
            "max-manifest-entries: 99999",
            "'max-manifest-entries': expected a number of at most 4096; got 99999",
        ),
        (
            "cache: true",
            "'cache': expected a mapping of keys such as {enabled: true, cache-repo: "
            "europe-docker.pkg.dev/proj/cache/cache}; got true",
        ),
        (
            "trust:\n  - issuer: https://i.example\n    audience: a\n    job-workflow-refs: 5\n"
            "    repository-owners: [{name: o, id: 1}]\n    events: [push]\n",
            "'trust[0].job-workflow-refs': expected a list of workflow refs such as "
            "[my-org/my-repo/.github/workflows/build.yml@refs/heads/main], or 'any'; got 5",
        ),
        (
            "trust:\n  - issuer: https://i.example\n    audience: a\n    job-workflow-refs: [5]\n"
            "    repository-owners: [{name: o, id: 1}]\n    events: [push]\n",
            "'trust[0].job-workflow-refs[0]': expected a string such as "
            "my-org/my-repo/.github/workflows/build.yml@refs/heads/main; got 5",
        ),
        (
            "trust:\n  - issuer: https://i.example\n    audience: a\n    job-workflow-refs: any\n"
            "    repository-owners: [{name: o}]\n    events: [push]\n",
            "'trust[0].repository-owners[0].id' is required, e.g. id: 12345678",
        ),
    ],
)
def test_config_problems_in_plain_words(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"cfg.yaml: {problem}"


def test_a_registry_password_is_never_repeated_among_many_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("registry: [robot:hunter2pw@host/prod, 5]\nreproducible: maybe\n")
    assert "hunter2pw" not in str(caught.value)
    assert str(caught.value).startswith(
        "config.yaml has 3 problems:\n"
        "  - 'registry[0]': a registry name must not carry credentials (user:password@); "
    )


def _keys() -> list[str]:
    schema = Config.model_json_schema(by_alias=True)
    keys = set(schema["properties"])
    for definition in schema["$defs"].values():
        keys.update(definition.get("properties", {}))
    return sorted(keys)


_KEYS = st.sampled_from(_keys()) | st.text(max_size=8)
_CONFIG_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(["https://x.example", "5s", "notary", "cosign", "any", "a@b"])
    | st.dates(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _CONFIG_LIKE, max_size=6))
def test_any_config_shaped_input_gets_plain_problems(data: dict[str, Any]) -> None:
    """Keys the model knows, with any values: every problem is one line of our own words."""
    try:
        parse_config(yaml.safe_dump(data), source="cfg.yaml")
    except ConfigError as exc:
        assert exc.exit_code == 2
        first, *more = str(exc).split("\n")
        assert first.startswith("cfg.yaml")
        assert not more or (
            first == f"cfg.yaml has {len(more)} problems:"
            and all(m.startswith("  - ") for m in more)
        )
        for words in ("Input should", "input should", "valid tuple", "valid dictionary"):
            assert words not in str(exc)
