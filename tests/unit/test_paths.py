"""The checkout bounds every path a caller names: context, Dockerfile, env file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from image_builder.errors import InputError
from image_builder.paths import checkout_root, context_root


def test_the_checkout_is_the_git_work_tree_holding_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "images" / "app").mkdir(parents=True)
    assert checkout_root(None, tmp_path / "repo" / "images" / "app") == tmp_path / "repo"
    assert checkout_root(None, tmp_path) == tmp_path  # no git: the current folder
    assert checkout_root(str(tmp_path / "repo" / "images"), tmp_path) == (
        tmp_path / "repo" / "images"
    )


def test_a_missing_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        checkout_root(str(tmp_path / "nope"), tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"checkout {str(tmp_path / 'nope')!r} does not exist; pass a folder with --checkout"
    )


def test_contexts_stay_inside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "source"
    (checkout / "app").mkdir(parents=True)
    (tmp_path / "trusted").mkdir()
    os.symlink(tmp_path / "trusted", checkout / "link")
    monkeypatch.chdir(checkout)
    assert context_root("app", checkout) == checkout / "app"
    for context, message in [
        ("../..", f"build context '../..' resolves to {tmp_path.parent}, outside the checkout"),
        ("link", f"build context 'link' resolves to {tmp_path / 'trusted'}, outside the checkout"),
        (str(tmp_path), f"build context {str(tmp_path)!r} is an absolute path; pass it relative"),
        ("missing", "build context 'missing' does not exist; pass an existing folder"),
    ]:
        with pytest.raises(InputError) as caught:
            context_root(context, checkout)
        assert caught.value.exit_code == 2
        assert str(caught.value).startswith(message)
