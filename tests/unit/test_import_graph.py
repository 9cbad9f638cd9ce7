"""The import graph has no circle, and pipeline never imports the Celery glue: read from the sources, imports
inside functions and ``TYPE_CHECKING`` blocks included, so that no circle hides behind a late import."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = {"pipeline": ROOT / "pipeline", "tasks": ROOT / "tasks", "schemas": ROOT / "schemas"}
PACKAGES["hubsync_sandbox"] = ROOT / "sandbox" / "hubsync_sandbox"
IMPORTERS = {"import_module", "__import__"}


def _modules() -> dict[str, Path]:
    found = {"celeryconfig": ROOT / "celeryconfig.py"}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _named(module: str, path: Path, tree: ast.AST) -> list[str]:
    """Every dotted name an import anywhere in ``tree`` asks for (``from a import b`` asks for ``a.b``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called in IMPORTERS and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


def import_graph(modules: dict[str, Path], sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports. Importing ``a.b.c`` also runs the packages ``a`` and
    ``a.b`` first, so those are edges too, except towards a package the importing module is part of (Python
    has begun running it already)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        text = sources[module] if sources is not None else path.read_text(encoding="utf-8")
        edges: set[str] = set()
        for name in _named(module, path, ast.parse(text, filename=str(path))):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if not name or name == module:
                continue
            edges.add(name)
            parts = name.split(".")
            for depth in range(1, len(parts)):
                package = ".".join(parts[:depth])
                if package in modules and not (module + ".").startswith(package + "."):
                    edges.add(package)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another, directly or not (strongly connected, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_product_or_the_sandbox_is_part_of_an_import_circle() -> None:
    # given the import graph of pipeline, tasks, schemas, celeryconfig and the sandbox distribution
    graph = import_graph(_modules())
    assert {"pipeline.providers", "pipeline.cli", "tasks.chains", "hubsync_sandbox.demo"} <= set(graph)

    # then no module reaches itself again through its imports
    assert cycles(graph) == []


def test_pipeline_never_imports_the_celery_glue() -> None:
    graph = import_graph(_modules())

    offending = sorted(
        f"{module} imports {other}"
        for module, others in graph.items()
        if module.split(".")[0] == "pipeline"
        for other in others
        if other.split(".")[0] == "tasks"
    )

    assert offending == []


def test_a_circle_closed_by_an_import_inside_a_function_is_found() -> None:
    # given two modules of which one imports the other only inside a function
    modules = {"pipeline.a": ROOT / "pipeline" / "a.py", "pipeline.b": ROOT / "pipeline" / "b.py"}
    sources = {"pipeline.a": "from pipeline.b import g\n", "pipeline.b": "def g():\n    from pipeline.a import f\n"}

    # then the circle is seen
    assert cycles(import_graph(modules, sources)) == [["pipeline.a", "pipeline.b"]]


def test_a_circle_through_a_package_that_runs_first_is_found() -> None:
    # given a module importing a package's submodule, while the package imports that module
    modules = {
        "pipeline.x": ROOT / "pipeline" / "x.py",
        "pipeline.cli": ROOT / "pipeline" / "cli" / "__init__.py",
        "pipeline.cli.common": ROOT / "pipeline" / "cli" / "common.py",
    }
    sources = {
        "pipeline.x": "from pipeline.cli.common import fail\n",
        "pipeline.cli": "from pipeline import x\n",
        "pipeline.cli.common": "import click\n",
    }

    # then importing pipeline.x first would run pipeline.cli half-way through: the circle is seen
    assert cycles(import_graph(modules, sources)) == [["pipeline.cli", "pipeline.x"]]
