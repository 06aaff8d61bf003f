from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from image_builder.cli import main
from image_builder.config import (
    DEFAULT_REGISTRY,
    Config,
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
    assert signer.config["secret"] == {"path": "/secret/secret.json", "type": "signify"}
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
            "sign-config:\n  signers:\n    - name: a\n      type: notary\n      jobtype: [postsubmit]",
            "unknown key 'sign-config.signers[0].jobtype'; did you mean 'sign-config.signers[0].job-type'?",
        ),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-retry-strategy:\n    attempt: 3",
            "did you mean 'ado-config.ado-retry-strategy.attempts'?",
        ),
        (
            "trust:\n  - zzzzzz: 1\n    job-workflow-refs: any",
            "unknown key 'trust[0].zzzzzz'; known keys under 'trust[0]': issuer, audience",
        ),
        ("registri: x", "unknown key 'registri'; did you mean 'registry'?"),
        ("cache:\n  enabled: maybe", "'cache.enabled': input should be a valid boolean"),
        ("reproducible: [1]", "'reproducible': input should be a valid boolean"),
        ("registry: oci://ghcr.io/a", "'registry[0]': expected a registry host"),
        ("registry: []", "'registry': tuple should have at least 1 item"),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-refresh-interval: 15",
            "'ado-config.ado-refresh-interval': expected a Go duration such as 5s, 1m30s or 250ms, got 15",
        ),
        (
            "ado-config:\n  ado-organization-url: https://dev.azure.com/o\n  ado-project-name: p\n"
            "  ado-pipeline-id: 1\n  ado-refresh-interval: soon",
            "expected a Go duration such as 5s, 1m30s or 250ms, got 'soon'",
        ),
        ("ado-config:\n  ado-project-name: p", "'ado-config.ado-organization-url' is required"),
        (
            "default-pr-tag:\n  value: PR-{{ .PRNumber }}\n  validation: '^(PR-['",
            "'default-pr-tag.validation': expected a regular expression, got '^(PR-['",
        ),
        ("default-pr-tag:\n  name: x", "'default-pr-tag.value' is required"),
        (
            "sign-config:\n  enabled-signers:\n    '*': [nope]",
            "enabled-signers['*'] names 'nope', which no entry under sign-config.signers defines",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: gpg",
            "'sign-config.signers[0].type': input should be 'notary'",
        ),
        (
            "sign-config:\n  signers:\n    - name: a\n      type: notary\n      job-type: [nightly]",
            "'sign-config.signers[0].job-type[0]': input should be 'presubmit', 'postsubmit'",
        ),
        (
            "tag-template-env: [GOOD, 'BAD-NAME']",
            "expected environment variable names such as BUILD_ID, got 'BAD-NAME'",
        ),
        ("publish-timeout: 0s", "'publish-timeout': expected a positive duration such as 90s"),
        ("lock-timeout: soon", "expected a Go duration such as 5s, 1m30s or 250ms, got 'soon'"),
        ("publish-mode: partial", "'publish-mode': input should be 'atomic' or 'best-effort'"),
        ("registry: [a\n", "fix the YAML syntax"),
        ("- a\n- b\n", "expected a mapping of keys at the top level, got list"),
    ],
)
def test_bad_config_is_refused_with_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="cfg.yaml")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("cfg.yaml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="does not exist; pass an existing --config path"
    ) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.exit_code == 2


def test_config_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = DATA / "config" / "go-tool.yaml"
    assert main(["config", "validate", "--config", str(good)]) == 0
    assert capsys.readouterr().err.strip() == f"{good}: valid"
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache:\n  enabld: true\n")
    assert main(["config", "validate", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: {bad}: unknown key 'cache.enabld'; did you mean 'cache.enabled'?"
    )


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
