from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from image_builder.cli import main
from image_builder.config import (
    DEFAULT_REGISTRY,
    Config,
    NotarySecret,
    NotarySignerConfig,
    load_config,
    parse_config,
)
from image_builder.errors import ConfigError
from tests.conftest import DATA


def test_go_tool_config_loads_unchanged() -> None:
    config = load_config(DATA / "config" / "go-tool.yaml")
    assert config.registry == ("europe-docker.pkg.dev/kyma-project/prod",)
    assert config.dev_registries == ("europe-docker.pkg.dev/kyma-project/dev",)
    assert config.cache.enabled
    assert config.cache.cache_repo == "europe-docker.pkg.dev/kyma-project/cache/cache"
    assert config.cache.cache_run_layers
    assert not config.cache.cache_copy_layers
    assert config.log_format == "json"
    assert config.default_pr_tag.value == "PR-{{ .PRNumber }}"
    assert config.default_commit_tag.validation == "^(v[0-9]{8}-[0-9a-f]{8})$"
    signer = config.sign_config.signers[0]
    assert signer.name == "signify-prod"
    assert signer.type == "notary"
    assert signer.job_type == ("postsubmit",)
    assert isinstance(signer, NotarySignerConfig)
    assert signer.config.secret == NotarySecret(path="/secret/secret.json", type="signify")
    assert config.sign_config.enabled_signers == {"*": ("signify-prod",)}
    ado = config.ado_config
    assert ado is not None
    assert ado.ado_pipeline_id == 14902
    assert ado.ado_pipeline_version == 2
    assert ado.ado_retry_strategy.attempts == 3
    assert ado.ado_retry_strategy.delay == timedelta(seconds=5)
    assert ado.ado_refresh_interval == timedelta(seconds=15)


def test_no_config_gives_built_in_defaults() -> None:
    config = load_config(None)
    assert config.registry == (DEFAULT_REGISTRY,)
    assert config.dev_registries == (f"{DEFAULT_REGISTRY}/dev",)
    assert config.default_pr_tag.value == "PR-{{ .PRNumber }}"
    assert config.default_commit_tag.value == "v{{ .Date }}-{{ .ShortSHA }}"
    assert config.default_merge_group_tag.value == "MG-{{ .ShortSHA }}"
    assert config.additional_pr_tag is None
    assert config.ado_config is None
    assert not config.cache.enabled


def test_empty_file_gives_defaults() -> None:
    assert parse_config("") == Config()
    assert parse_config("# only a comment\n") == Config()


def test_registry_takes_a_string_or_a_list() -> None:
    assert parse_config("registry: ghcr.io/a").registry == ("ghcr.io/a",)
    both = parse_config("registry: [ghcr.io/a, quay.io/b/]\ndev-registry: ghcr.io/dev")
    assert both.registry == ("ghcr.io/a", "quay.io/b")
    assert both.dev_registries == ("ghcr.io/dev",)


def test_an_empty_registry_entry_is_refused_in_one_line() -> None:
    """Found by the config property test: ``registry: [null]`` crashed with a TypeError."""
    with pytest.raises(ConfigError) as caught:
        parse_config("registry:\n-\n")
    assert caught.value.exit_code == 2
    assert "expected a registry host and optional path such as ghcr.io/org, got None" in str(
        caught.value
    )


def test_partial_config_keeps_other_defaults() -> None:
    config = parse_config("default-pr-tag:\n  name: pr\n  value: pr-{{ .PRNumber }}\n")
    assert config.default_pr_tag.name == "pr"
    assert config.default_commit_tag.value == "v{{ .Date }}-{{ .ShortSHA }}"


def test_older_tag_template_key_becomes_default_commit_tag() -> None:
    config = parse_config("tag-template:\n  name: t\n  value: v{{ .ShortSHA }}\n")
    assert config.default_commit_tag.value == "v{{ .ShortSHA }}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registy: ghcr.io/a", "unknown key 'registy'; did you mean 'registry'?"),
        (
            "cache:\n  cache-rep: x",
            "unknown key 'cache.cache-rep'; did you mean 'cache.cache-repo'?",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: notary\n      jobtype: [postsubmit]\n"
            "      config: {endpoint: 'https://s.example/sign', secret: {path: p}}",
            "unknown key 'sign-config.signers[0].jobtype'; did you mean 'sign-config.signers[0].job-type'?",
        ),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-retry-strategy:\n    attempt: 3",
            "unknown key 'ado-config.ado-retry-strategy.attempt'; "
            "did you mean 'ado-config.ado-retry-strategy.attempts'?",
        ),
        ("registri: x", "unknown key 'registri'; did you mean 'registry'?"),
        ("cache:\n  enabled: maybe", "'cache.enabled': expected true or false; got 'maybe'"),
        ("reproducible: [1]", "'reproducible': expected true or false; got a list"),
        (
            "registry: oci://ghcr.io/a",
            "'registry[0]': expected a registry host and optional path such as ghcr.io/org, "
            "without a scheme; got 'oci://ghcr.io/a'",
        ),
        (
            "registry: []",
            "'registry': expected a registry host such as ghcr.io/org, or a list of them; "
            "got an empty list",
        ),
        (
            "registry: {a: 1}",
            "'registry': expected a registry host such as ghcr.io/org, or a list of them; "
            "got a mapping",
        ),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-refresh-interval: 15",
            "'ado-config.ado-refresh-interval': expected a Go duration such as 5s, 1m30s or 250ms, got 15",
        ),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-refresh-interval: soon",
            "'ado-config.ado-refresh-interval': expected a Go duration such as 5s, 1m30s or "
            "250ms, got 'soon'",
        ),
        (
            "default-pr-tag:\n  value: PR-{{ .PRNumber }}\n  validation: '^(PR-['",
            "'default-pr-tag.validation': expected a regular expression, got '^(PR-[' "
            "(unterminated character set at position 5)",
        ),
        (
            "default-pr-tag:\n  name: x",
            "'default-pr-tag.value' is required, e.g. value: v{{ .Date }}-{{ .ShortSHA }}",
        ),
        (
            "sign-config:\n  enabled-signers:\n    '*': [nope]",
            "'sign-config': enabled-signers['*'] names 'nope', which no entry under "
            "sign-config.signers defines (defined: none)",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: gpg",
            "'sign-config.signers[0].type': expected 'notary' or 'cosign'; got 'gpg'",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: [notary]",
            "'sign-config.signers[0].type': expected 'notary' or 'cosign'; got a list",
        ),
        (
            "sign-config:\n  signers:\n    - name: a",
            "'sign-config.signers[0].type' is required, e.g. type: notary",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: cosign",
            "'sign-config.signers[0].config' is required, e.g. config: "
            "{private-key: /secret/cosign.key, password-env: COSIGN_PASSWORD}",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: cosign\n"
            "      config: {private-key: k, secret: {path: p}}",
            "unknown key 'sign-config.signers[0].config.secret'; known keys under "
            "'sign-config.signers[0].config': private-key, password-env",
        ),
        (
            "sign-config:\n  signers: [notary]",
            "'sign-config.signers[0]': expected a mapping of keys; got 'notary'",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: notary\n      job-type: [nightly]\n"
            "      config: {endpoint: 'https://s.example/sign', secret: {path: p}}",
            "'sign-config.signers[0].job-type[0]': expected 'presubmit', 'postsubmit', "
            "'merge_group', 'workflow_dispatch' or 'schedule'; got 'nightly'",
        ),
        (
            "tag-template-env: [GOOD, 'BAD-NAME']",
            "'tag-template-env': expected environment variable names such as BUILD_ID, "
            "got 'BAD-NAME'",
        ),
        (
            "tag-template-env: BUILD_ID",
            "'tag-template-env': expected a list such as [BUILD_ID, RELEASE_CHANNEL]; "
            "got 'BUILD_ID'",
        ),
        (
            "publish-timeout: 0s",
            "'publish-timeout': expected a positive duration such as 90s or 3m; got '0s'",
        ),
        (
            "lock-timeout: soon",
            "'lock-timeout': expected a Go duration such as 5s, 1m30s or 250ms, got 'soon'",
        ),
        (
            "publish-mode: partial",
            "'publish-mode': expected 'atomic' or 'best-effort'; got 'partial'",
        ),
        (
            "registry: [a\n",
            "expected ',' or ']', but got '<stream end>' at line 2, column 1; fix the YAML syntax",
        ),
        ("- a\n- b\n", "expected a mapping of keys at the top level, got list"),
    ],
)
def test_bad_config_is_refused_with_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"cfg.yaml: {message}"


def test_every_problem_is_listed_in_file_order() -> None:
    text = (
        "publish-mode: partial\n"
        "ado-config:\n"
        "  ado-project-name: p\n"
        "trust:\n"
        "  - zzzzzz: 1\n"
        "    job-workflow-refs: any\n"
        "registy: ghcr.io/a\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "cfg.yaml has 9 problems:\n"
        "  - 'publish-mode': expected 'atomic' or 'best-effort'; got 'partial'\n"
        "  - 'ado-config.ado-organization-url' is required, "
        "e.g. ado-organization-url: https://dev.azure.com/my-org\n"
        "  - 'ado-config.ado-pipeline-id' is required, e.g. ado-pipeline-id: 14902\n"
        "  - unknown key 'trust[0].zzzzzz'; known keys under 'trust[0]': issuer, audience, "
        "jwks-uri, job-workflow-refs, repository-owners, events, signing-refs, max-token-age, "
        "image-namespaces, github-api, github-api-token-env\n"
        "  - 'trust[0].issuer' is required, e.g. issuer: https://token.actions.githubusercontent.com\n"
        "  - 'trust[0].audience' is required, e.g. audience: image-builder\n"
        "  - 'trust[0].repository-owners' is required, "
        "e.g. repository-owners: [{name: my-org, id: 12345678}]\n"
        "  - 'trust[0].events' is required, e.g. events: [push, pull_request_target, merge_group]\n"
        "  - unknown key 'registy'; did you mean 'registry'?"
    )


def test_unknown_keys_the_go_tool_ignored_do_not_hide_a_typo() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("kaniko-config: {}\nregisty: x\nplatforms: 5\n", source="cfg.yaml")
    assert str(caught.value) == (
        "cfg.yaml has 2 problems:\n"
        "  - unknown key 'registy'; did you mean 'registry'?\n"
        "  - 'platforms': expected a list such as [linux/amd64, linux/arm64]; got 5"
    )


def test_a_signers_config_problems_are_each_named_under_its_key() -> None:
    text = (
        "sign-config:\n"
        "  signers:\n"
        "    - name: s\n"
        "      type: notary\n"
        "      config:\n"
        "        endpont: https://signing.example.com\n"
        "        timeout: 5\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    where = "sign-config.signers[0].config"
    assert str(caught.value) == (
        "cfg.yaml has 4 problems:\n"
        f"  - unknown key '{where}.endpont'; did you mean '{where}.endpoint'?\n"
        f"  - '{where}.timeout': expected a Go duration such as 5s, 1m30s or 250ms, got 5\n"
        f"  - '{where}.endpoint' is required, "
        "e.g. endpoint: https://signing.example.com/signingsvc/sign\n"
        f"  - '{where}.secret' is required, e.g. secret: {{path: /secret/secret.json, type: signify}}"
    )


def test_the_legacy_tag_template_is_reported_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("tag-template: {value: ''}", source="cfg.yaml")
    assert str(caught.value) == (
        "cfg.yaml: 'tag-template.value': expected a non-empty string such as "
        "v{{ .Date }}-{{ .ShortSHA }}; got an empty string"
    )


@pytest.mark.parametrize(
    "text", ["registry: 5", "dev-registry: 2024-01-01", "insecure-registries: 5"]
)
def test_any_value_under_a_registry_key_gets_an_answer(text: str) -> None:
    """Found while listing every problem: a number or a date there crashed with a TypeError."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"cfg.yaml: '{text.partition(':')[0]}': expected ")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="does not exist; pass an existing --config path"
    ) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.exit_code == 2


def test_config_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = DATA / "config" / "go-tool.yaml"
    assert main(["config", "validate", "--config", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{good}: valid\n"
    assert err == ""


def test_config_validate_lists_every_problem_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "publish-mode: partial\n"  # a value outside the allowed ones
        "registy: ghcr.io/my-org\n"  # a typo of a key
        "platforms: linux/amd64\n"  # a string where a list belongs
        "cache:\n"
        "  enabled: sometimes\n"  # not a boolean
    )
    assert main(["config", "validate", "--config", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: {bad} has 4 problems:\n"
        "  - 'publish-mode': expected 'atomic' or 'best-effort'; got 'partial'\n"
        "  - unknown key 'registy'; did you mean 'registry'?\n"
        "  - 'platforms': expected a list such as [linux/amd64, linux/arm64]; got 'linux/amd64'\n"
        "  - 'cache.enabled': expected true or false; got 'sometimes'\n"
    )
    for pydantic_words in ("tuple", "Input should", "input should", "pydantic", "dictionary"):
        assert pydantic_words not in err


def test_config_validate_keeps_one_problem_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache:\n  enabld: true\n")
    assert main(["config", "validate", "--config", str(bad)]) == 2
    assert capsys.readouterr() == (
        "",
        f"error: {bad}: unknown key 'cache.enabld'; did you mean 'cache.enabled'?\n",
    )


def test_config_validate_warns_on_stderr_and_answers_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("kaniko-config: {}\n")
    assert main(["config", "validate", "--config", str(config)]) == 0
    assert capsys.readouterr() == (
        f"{config}: valid\n",
        f"warning: {config}: key 'kaniko-config' means nothing to Image Builder; ignoring it "
        "(as the Go tool did)\n",
    )


def test_config_validate_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((DATA / "config" / "go-tool.yaml").read_text()))
    assert main(["config", "validate", "--config", "-"]) == 0
    assert capsys.readouterr() == ("<stdin>: valid\n", "")
    monkeypatch.setattr("sys.stdin", io.StringIO("registy: x\nreproducible: maybe\n"))
    assert main(["config", "validate", "--config", "-"]) == 2
    assert capsys.readouterr() == (
        "",
        "error: <stdin> has 2 problems:\n"
        "  - unknown key 'registy'; did you mean 'registry'?\n"
        "  - 'reproducible': expected true or false; got 'maybe'\n",
    )


def test_an_empty_stdin_is_not_taken_for_the_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Standard input can be read once: a second read must not quietly mean "no config"."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["config", "validate", "--config", "-"]) == 2
    assert capsys.readouterr() == (
        "",
        "error: standard input holds no config (it is empty, or was read already); pipe "
        "config.yaml into --config -\n",
    )


def test_a_file_named_dash_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text("registry: ghcr.io/a\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("registy: x\n"))
    assert main(["config", "validate", "--config", "./-"]) == 0
    assert capsys.readouterr() == ("./-: valid\n", "")


def test_schema_describes_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    props = schema["properties"]
    for key in (
        "registry",
        "dev-registry",
        "cache",
        "default-commit-tag",
        "default-pr-tag",
        "default-merge-group-tag",
        "additional-pr-tag",
        "log-format",
        "reproducible",
        "sign-config",
        "ado-config",
        "tag-template-env",
    ):
        assert key in props, key
    assert schema["additionalProperties"] is False
    ado = schema["$defs"]["AdoConfig"]["properties"]
    assert ado["ado-refresh-interval"]["type"] == "string"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("registry: robot:hunter2pw@host/prod", "registry[0]"),
        ("registry: https://robot:hunter2pw@host/prod", "registry[0]"),
        ("dev-registry: [ok.example, 'robot:hunter2pw@host/dev']", "dev-registry[1]"),
        ("cache: {enabled: true, cache-repo: 'robot:hunter2pw@host/cache'}", "cache.cache-repo"),
        ("cache: {dev-cache-repo: 'robot:hunter2pw@host/cache'}", "cache.dev-cache-repo"),
    ],
)
def test_credentials_in_a_registry_name_are_refused_without_repeating_them(
    text: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        f"config.yaml: '{key}': a registry name must not carry credentials (user:password@); "
        "remove them and put them in an auth file (REGISTRY_AUTH_FILE or ~/.docker/config.json)"
    )
    assert "hunter2pw" not in str(caught.value)


def test_namespace_keys_match_the_repository_in_any_case() -> None:
    trust = parse_config(
        "trust:\n  - {issuer: https://i.example, audience: a, job-workflow-refs: any,\n"
        "     repository-owners: [{name: Org, id: 1}], events: [push],\n"
        "     image-namespaces: {Org/App: ['team/*']}}\n"
    ).trust[0]
    assert trust.namespaces_of("org/app") == ("team/*",)
    assert trust.namespaces_of("org/other") == ("other", "other/**")
