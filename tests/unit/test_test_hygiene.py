"""Rules for the tests themselves. A test goes through image_builder's public names only, so the
code can change behind them; and no test module imports another, so shared helpers live in
tests/support/ or a conftest, where a reader looks for them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and parts[-1].startswith("test_")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an import names, with a relative one resolved against ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    anchor = parts[: len(parts) - node.level + 1]
    return ".".join([*anchor, node.module] if node.module else anchor)


def findings(source: str, path: Path) -> list[str]:
    """``<path>:<line>: <what>`` for each import of a private name of image_builder, each
    ``name._private`` (also ``name(...)._private``, ``name.x[0]._private``) where ``name`` was
    bound by an import from image_builder (a module, class or function), and each import of a
    test module."""
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    tree = ast.parse(source)
    bound: set[str] = set()  # local names that an import from image_builder made
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _test_module(alias.name):
                    found.append((node.lineno, f"imports the test module {alias.name}"))
                parts = alias.name.split(".")
                if parts[0] == "image_builder":
                    if any(_private(part) for part in parts):
                        found.append((node.lineno, f"imports the private {alias.name}"))
                    bound.add(alias.asname or "image_builder")
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if _test_module(module) or _test_module(full):
                    found.append((node.lineno, f"imports {full} from a test module"))
                if module.split(".")[0] == "image_builder":
                    if _private(alias.name) or any(_private(p) for p in module.split(".")):
                        found.append((node.lineno, f"imports the private {full}"))
                    bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute | ast.Call | ast.Subscript):
                root = root.func if isinstance(root, ast.Call) else root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append((node.lineno, f"reaches the private {ast.unparse(node)}"))
    where = path.relative_to(TESTS.parent)
    return [f"{where}:{line}: {what}" for line, what in sorted(found)]


def everywhere() -> list[str]:
    return [
        problem
        for path in sorted(TESTS.rglob("*.py"))
        for problem in findings(path.read_text(encoding="utf-8"), path)
    ]


def test_no_test_reaches_a_private_name_of_image_builder_or_imports_a_test_module() -> None:
    assert everywhere() == []


HERE = TESTS / "unit" / "test_planted.py"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "from image_builder.engines.buildah import _registries_conf",
            "1: imports the private image_builder.engines.buildah._registries_conf",
        ),
        (
            "from image_builder._internal import helper",
            "1: imports the private image_builder._internal.helper",
        ),
        ("import image_builder._internal", "1: imports the private image_builder._internal"),
        (
            "from image_builder import proc\n\nproc._Children()",
            "3: reaches the private proc._Children",
        ),
        (
            "import image_builder.proc\nimage_builder.proc._stop()",
            "2: reaches the private image_builder.proc._stop",
        ),
        ("import image_builder.proc as p\np._TAIL", "2: reaches the private p._TAIL"),
        (
            "from image_builder.registry import RegistryClient as C\nC._check(x)",
            "2: reaches the private C._check",
        ),
        (
            "from image_builder.engines.buildah import BuildahEngine\n"
            "def f(e):\n    return BuildahEngine(e)._check_emulation",
            "3: reaches the private BuildahEngine(e)._check_emulation",
        ),
        (
            "from tests.unit.test_plan import plan",
            "1: imports tests.unit.test_plan.plan from a test module",
        ),
        (
            "from tests.integration import test_build",
            "1: imports tests.integration.test_build from a test module",
        ),
        (
            "import tests.integration.test_ado",
            "1: imports the test module tests.integration.test_ado",
        ),
        ("from .test_publish import FakeEngine", "1: imports tests.unit.test_publish.FakeEngine"),
        (
            "def f():\n    from tests.unit.test_plan import ctx\n    return ctx",
            "2: imports tests.unit.test_plan.ctx from a test module",
        ),
    ],
)
def test_the_detector_catches_a_planted_example(source: str, problem: str) -> None:
    (found,) = findings(source, HERE)
    assert found.startswith(f"tests/unit/test_planted.py:{problem}")


@pytest.mark.parametrize(
    "source",
    [
        "from tests.support.fakes import FakeEngine",
        "from tests.integration.conftest import Cli\nfrom tests.conftest import EVENTS",
        "from .conftest import secret",
        "import image_builder\nimage_builder.__version__",
        "from image_builder import proc\nproc.CHILDREN.stop_all('SIGTERM')",
        "from image_builder.proc import Children\nChildren().stopping",
        "class Fake:\n    def f(self):\n        return self._lock",
        "import argparse\nargparse._SubParsersAction",
        "payload = {'_type': 'x'}",
    ],
)
def test_the_detector_leaves_public_names_and_support_modules_alone(source: str) -> None:
    assert findings(source, HERE) == []
