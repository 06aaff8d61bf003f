from __future__ import annotations

import os
from pathlib import Path

import pytest

from image_builder.envfile import parse_env_file, read_env_file
from image_builder.errors import InputError


def test_parse() -> None:
    text = (
        "# comment\n\nA=1\n  B = two words \nexport C=3\nD=\"quoted value\"\nE='x'\nF=a=b\nG=\r\n"
    )
    assert parse_env_file(text, source="envs") == {
        "A": "1",
        "B": "two words",
        "C": "3",
        "D": "quoted value",
        "E": "x",
        "F": "a=b",
        "G": "",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "A=1\nnot a pair\n",
            "envs:2: expected KEY=value with KEY made of letters, digits and '_', got 'not a pair'",
        ),
        ("1A=x", "envs:1: expected KEY=value"),
        ("A-B=x", "envs:1: expected KEY=value"),
        ("=x", "envs:1: expected KEY=value"),
    ],
)
def test_parse_refusals(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_env_file(text, source="envs")
    assert caught.value.exit_code == 2
    assert message in str(caught.value)


def context_with_dockerfile(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "ctx"
    (root / "images" / "app").mkdir(parents=True)
    dockerfile = root / "images" / "app" / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    return root.resolve(), dockerfile.resolve()


def test_read_relative_to_the_dockerfile(tmp_path: Path) -> None:
    root, dockerfile = context_with_dockerfile(tmp_path)
    (dockerfile.parent / "envs").write_text("A=1\n")
    (root / "shared.env").write_text("S=2\n")
    assert read_env_file(root, dockerfile, "envs") == {"A": "1"}
    assert read_env_file(root, dockerfile, "../../shared.env") == {"S": "2"}


def test_escape_through_dotdot_is_refused(tmp_path: Path) -> None:
    root, dockerfile = context_with_dockerfile(tmp_path)
    (tmp_path / "outside.env").write_text("X=1\n")
    with pytest.raises(InputError) as caught:
        read_env_file(root, dockerfile, "../../../outside.env")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"--env-file '../../../outside.env' resolves to {tmp_path.resolve() / 'outside.env'}, "
        f"outside the build context {root}; keep it inside the build context"
    )


def test_escape_through_symlink_is_refused(tmp_path: Path) -> None:
    root, dockerfile = context_with_dockerfile(tmp_path)
    secret = tmp_path / "secrets.env"
    secret.write_text("TOKEN=x\n")
    os.symlink(secret, dockerfile.parent / "envs")
    with pytest.raises(InputError, match="outside the build context") as caught:
        read_env_file(root, dockerfile, "envs")
    assert caught.value.exit_code == 2


def test_missing_and_non_utf8(tmp_path: Path) -> None:
    root, dockerfile = context_with_dockerfile(tmp_path)
    with pytest.raises(
        InputError,
        match=r"--env-file 'nope' does not exist at .*; the path is relative to the Dockerfile's folder",
    ):
        read_env_file(root, dockerfile, "nope")
    (dockerfile.parent / "latin1").write_bytes(b"A=\xe9\n")
    with pytest.raises(InputError, match="--env-file 'latin1' is not UTF-8 text"):
        read_env_file(root, dockerfile, "latin1")
