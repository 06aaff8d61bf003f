from __future__ import annotations

from datetime import UTC, datetime

import pytest

from image_builder.config import parse_config
from image_builder.errors import InputError
from image_builder.plan import parse_build_args, validate_name
from image_builder.platforms import host_platform, parse_platforms
from tests.support.plans import SHA, plan

REGISTRIES = "registry: [prod.example/a, prod2.example]\ndev-registry: dev.example/d\n"


@pytest.mark.parametrize(
    ("job_type", "expected"),
    [
        ("presubmit", ["dev.example/d/team/app:v1", "dev.example/d/team/app:latest"]),
        ("merge_group", ["dev.example/d/team/app:v1", "dev.example/d/team/app:latest"]),
        (
            "postsubmit",
            [
                "prod.example/a/team/app:v1",
                "prod.example/a/team/app:latest",
                "prod2.example/team/app:v1",
                "prod2.example/team/app:latest",
            ],
        ),
        (
            "schedule",
            [
                "prod.example/a/team/app:v1",
                "prod.example/a/team/app:latest",
                "prod2.example/team/app:v1",
                "prod2.example/team/app:latest",
            ],
        ),
        (
            "workflow_dispatch",
            [
                "prod.example/a/team/app:v1",
                "prod.example/a/team/app:latest",
                "prod2.example/team/app:v1",
                "prod2.example/team/app:latest",
            ],
        ),
    ],
)
def test_registry_per_event(job_type: str, expected: list[str]) -> None:
    assert [str(r) for r in plan(REGISTRIES, job_type).references] == expected


@pytest.mark.parametrize("job_type", ["presubmit", "merge_group"])
def test_a_pr_build_without_a_dev_registry_is_refused(job_type: str) -> None:
    with pytest.raises(InputError) as caught:
        plan("registry: prod.example", job_type)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"a {job_type} build needs dev-registry in the config: pull-request and merge-group "
        "images never go to the release registry (prod.example)"
    )


@pytest.mark.parametrize(
    ("registries", "dev", "release"),
    [
        (
            "registry: prod.example/a\ndev-registry: prod.example/a",
            "prod.example/a",
            "prod.example/a",
        ),
        (
            "registry: [r.example/p, q.example]\ndev-registry: [d.example, q.example]",
            "q.example",
            "q.example",
        ),
        (
            "registry: prod.example/release\ndev-registry: prod.example",
            "prod.example",
            "prod.example/release",
        ),
    ],
)
def test_a_dev_registry_that_holds_a_release_registry_is_refused(
    registries: str, dev: str, release: str
) -> None:
    with pytest.raises(InputError) as caught:
        plan(registries, "presubmit")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"dev-registry {dev} holds the release registry {release}: a presubmit image would land "
        "where release images live; give dev-registry its own path, e.g. <host>/dev"
    )


def test_a_dev_path_under_the_release_registry_is_fine() -> None:
    built = plan("registry: r.example\ndev-registry: r.example/dev", "presubmit")
    assert tuple(map(str, built.registries)) == ("r.example/dev",)


def test_the_embedded_default_has_its_own_dev_path() -> None:
    assert tuple(map(str, plan("", "presubmit").registries)) == ("localhost:5000/dev",)
    assert tuple(map(str, plan("", "postsubmit").registries)) == ("localhost:5000",)


def test_build_args_order_and_precedence() -> None:
    built = plan(
        build_args=[("A", "flag"), ("B", "flag")],
        env_file_args={"B": "file", "C": "file"},
        export_tags=True,
    )
    assert built.build_args == (
        ("A", "flag"),
        ("B", "flag"),
        ("C", "file"),
        ("TAG_default_tag", "v1"),
        ("TAG_latest", "latest"),
    )
    assert plan().build_args == ()


def test_labels() -> None:
    labels = dict(plan().labels)
    assert labels == {
        "org.opencontainers.image.created": "2026-11-26T12:00:00Z",
        "org.opencontainers.image.source": "https://github.com/org/repo",
        "org.opencontainers.image.revision": SHA,
    }


def test_reproducible_uses_the_commit_time() -> None:
    commit = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    built = plan("reproducible: true", commit_time=commit)
    assert built.timestamp == 1700000000
    assert dict(built.labels)["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert plan(commit_time=commit).timestamp is None


def test_reproducible_without_commit_time_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        plan("reproducible: true")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "reproducible: true needs the commit time: build inside a git checkout that has the "
        "commit, or set SOURCE_DATE_EPOCH"
    )


CACHE = "cache:\n  enabled: true\n  cache-repo: reg.example/cache\n"


@pytest.mark.parametrize(
    ("config_text", "job_type", "cache_from", "cache_to"),
    [
        (CACHE, "postsubmit", "reg.example/cache", "reg.example/cache"),
        (CACHE, "presubmit", "reg.example/cache", None),
        (CACHE, "merge_group", "reg.example/cache", None),
        (
            CACHE + "  dev-cache-repo: reg.example/dev-cache\n",
            "presubmit",
            "reg.example/cache",
            "reg.example/dev-cache",
        ),
        (
            CACHE + "  dev-cache-repo: reg.example/dev-cache\n",
            "schedule",
            "reg.example/cache",
            "reg.example/cache",
        ),
    ],
)
def test_untrusted_builds_never_write_the_release_cache(
    config_text: str, job_type: str, cache_from: str, cache_to: str | None
) -> None:
    cache = plan(config_text, job_type).cache
    assert cache is not None
    assert (cache.cache_from, cache.cache_to) == (cache_from, cache_to)


def test_cache_enabled_needs_a_repo() -> None:
    with pytest.raises(
        InputError, match=r"cache\.enabled is true but cache\.cache-repo is not set"
    ):
        parse_config("cache:\n  enabled: true\n")


def test_plain_http_only_for_loopback_and_listed_registries() -> None:
    built = plan(
        "registry: [localhost:5000, 127.0.0.1:5001/x, '[::1]:5002', ghcr.io/org, lab.internal:5000]\n"
        "insecure-registries: [lab.internal:5000]\n"
    )
    assert built.plain_http_hosts == (
        "localhost:5000",
        "127.0.0.1:5001",
        "[::1]:5002",
        "lab.internal:5000",
    )
    assert [d.registry.plain_http for d in built.destinations] == [True, True, True, False, True]
    assert [str(r) for r in built.references[2:4]] == [
        "127.0.0.1:5001/x/team/app:v1",
        "127.0.0.1:5001/x/team/app:latest",
    ]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("team/app", True),
        ("team/a.b_c__d-e/f--g", True),
        ("a.b_c__d-e/f--g", True),  # a dotted first part is a repository path (Go built it)
        ("ghcr.io/team/app", False),  # ... unless it is a registry's host
        ("registry.example/team/app:v1", False),  # ... or the name is a whole reference
        ("Team/App", False),
        ("team/../app", False),
        ("team//app", False),
        ("-app", False),
        ("app_", False),
        ("", False),
    ],
)
def test_name_grammar(name: str, ok: bool) -> None:
    if ok:
        assert validate_name(name) == name
    else:
        with pytest.raises(InputError) as caught:
            validate_name(name)
        assert caught.value.exit_code == 2


def test_name_too_long_with_the_registry() -> None:
    with pytest.raises(InputError, match="is longer than 255 characters; use a shorter --name"):
        plan("registry: " + "r" * 200, name="a" * 60)


def test_parse_build_args() -> None:
    assert parse_build_args(["A=1", "B=x=y", "C="], {}) == [("A", "1"), ("B", "x=y"), ("C", "")]
    assert parse_build_args(["HOME"], {"HOME": "/root"}) == [("HOME", "/root")]
    with pytest.raises(InputError, match="--build-arg UNSET has no value and UNSET is not set"):
        parse_build_args(["UNSET"], {})
    with pytest.raises(InputError, match="expected KEY=value"):
        parse_build_args(["1A=x"], {})


def test_platforms() -> None:
    assert parse_platforms(["linux/amd64,linux/arm64", "linux/amd64", "linux/arm64/v8"]) == (
        "linux/amd64",
        "linux/arm64",
    )
    assert parse_platforms(["linux/arm/v7"]) == ("linux/arm/v7",)
    assert host_platform("x86_64") == "linux/amd64"
    assert host_platform("aarch64") == "linux/arm64"
    for bad, message in (
        ("linux/sparc", "unknown platform 'linux/sparc'; use linux/<arch>[/<variant>]"),
        ("windows/amd64", "unknown platform 'windows/amd64'"),
        ("amd64", "unknown platform 'amd64'"),
        ("linux/arm/v9", "unknown platform 'linux/arm/v9': arm has no variant 'v9'"),
    ):
        with pytest.raises(InputError) as caught:
            parse_platforms([bad])
        assert caught.value.exit_code == 2
        assert message in str(caught.value)


@pytest.mark.parametrize(
    ("config_text", "dev"),
    [
        ("", "localhost:5000/dev"),
        ("registry: r.example\ndev-registry: r.example/dev", "r.example/dev"),
    ],
)
def test_a_release_image_never_lands_in_the_dev_registry(config_text: str, dev: str) -> None:
    with pytest.raises(InputError) as caught:
        plan(config_text, "postsubmit", name="dev/app")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"image 'dev/app' would land in the dev registry {dev} as {dev}/app; choose a name "
        "outside it"
    )
    assert plan(config_text, "postsubmit", name="devtools/app").registries


def test_a_name_starting_with_a_configured_registry_says_where_the_registry_goes() -> None:
    assert validate_name("registry.corp/app") == "registry.corp/app"  # unknown host: a path
    with pytest.raises(InputError) as caught:
        validate_name("registry.corp/team/app", ["registry.corp/prod"])
    assert str(caught.value) == (
        "the registry comes from config.yaml (registry / dev-registry); pass --name team/app"
    )
