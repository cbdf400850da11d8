"""DESIGN.md's import rules, checked on the source (``ast``), not on what happens to be loaded.

* Layers: ``common`` at the bottom imports no other project package; ``graphs`` and
  ``tasks`` sit on it and know nothing of each other; the applications (``lopt``,
  ``editing``, ``predict``) import those and never each other.
* No import cycle between modules, counting imports inside functions (a "local import to
  break the cycle" is still a cycle in the design).
* Every dependency is an ``import`` statement this test can see: no ``__import__`` or
  ``importlib.import_module``.

``benchmarks/``, ``notebooks/`` and ``tests/`` sit outside the library and are not checked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "graphs", "tasks", "lopt", "editing", "predict")
# What each package may import (besides itself).
ALLOWED = {
    "common": set(),
    "graphs": {"common"},
    "tasks": {"common"},
    "lopt": {"common", "graphs", "tasks"},
    "editing": {"common", "graphs", "tasks"},
    "predict": {"common", "graphs", "tasks"},
}
DYNAMIC_IMPORTS = {"__import__", "import_module"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported project module, dotted
    where: str  # path:line of the statement

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_sources() -> dict[str, tuple[str, str]]:
    """``{module: (path relative to the root, source)}`` for every module of PACKAGES."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[module_name(path)] = (str(path.relative_to(ROOT)), path.read_text())
    return out


def _resolve(name: str, modules: set[str]) -> str | None:
    """The project module ``name`` refers to: itself, or its longest prefix that is one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def project_imports(sources: dict[str, tuple[str, str]]) -> tuple[list[Import], list[str]]:
    """Every import of a project module (at any depth of the code) and every dynamic import."""
    modules = set(sources)
    imports, dynamic = [], []
    for source, (path, text) in sources.items():
        is_package = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(text, path)):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    package = source.split(".")
                    package = package[: len(package) - node.level + is_package]
                    base = ".".join(package + ([base] if base else []))
                # `from pkg import sub` imports the module pkg.sub when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            elif isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if called in DYNAMIC_IMPORTS:
                    dynamic.append(f"{where}: {source} calls {called}")
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != source:
                    imports.append(Import(source, target, where))
    return imports, dynamic


def layer_violations(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        src, dst = imp.source.split(".")[0], imp.target.split(".")[0]
        if src != dst and dst not in ALLOWED[src]:
            out.append(str(imp))
    return out


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle (as the imports along it) per strongly connected group of modules."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        path = _path_back(graph, start)
        if path is not None:
            cycles.append(path)
            done |= {imp.source for imp in path}
    return cycles


def _path_back(graph: dict[str, dict[str, Import]], start: str) -> list[Import] | None:
    """The imports of a shortest path from ``start`` back to itself (breadth first)."""
    parents: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for target, imp in sorted(graph.get(node, {}).items()):
                if target == start:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, parents[path[0].source])
                    return path
                if target not in parents:
                    parents[target] = imp
                    nxt.append(target)
        frontier = nxt
    return None


def _fail_if(lines: list[str], title: str) -> None:
    if lines:
        pytest.fail(f"{title}:\n  " + "\n  ".join(lines), pytrace=False)


# ----------------------------------------------------------------------------- the rules
def test_packages_import_only_the_layers_below():
    imports, _ = project_imports(read_sources())
    _fail_if(layer_violations(imports),
             "imports that break DESIGN.md's layering (common <- graphs, tasks <- lopt, editing, "
             "predict; graphs and tasks independent; applications never import each other)")


def test_no_import_cycles():
    imports, _ = project_imports(read_sources())
    shown = [" -> ".join([c[0].source] + [i.target for i in c]) + "\n    "
             + "\n    ".join(map(str, c)) for c in import_cycles(imports)]
    _fail_if(shown, "import cycles (function-level imports count)")


def test_no_dynamic_imports():
    _, dynamic = project_imports(read_sources())
    _fail_if(dynamic, "dynamic imports hide dependencies from these checks")


# ----------------------------------------------------------------------------- the checker
def _fake(**modules: str) -> dict[str, tuple[str, str]]:
    """Sources of fake modules (``graphs__core`` is ``graphs.core``)."""
    out = {}
    for key, text in modules.items():
        name = key.replace("__", ".")
        is_package = "." not in name
        path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        out[name] = (path, text)
    return out


def test_checker_reports_layer_violations_with_their_lines():
    sources = _fake(
        common="", graphs="", tasks="", lopt="", editing="",
        graphs__core="import torch\nfrom common import cli\n\ndef f():\n    import tasks\n",
        tasks__data="from graphs.core import x\n",
        lopt__run="from graphs import core\nfrom editing import y\n",
        common__cli="from . import x\nfrom ..graphs import core\n",
    )
    imports, _ = project_imports(sources)
    assert sorted(layer_violations(imports)) == [
        "common/cli.py:2: common.cli imports graphs.core",
        "graphs/core.py:5: graphs.core imports tasks",
        "lopt/run.py:2: lopt.run imports editing",
        "tasks/data.py:1: tasks.data imports graphs.core",
    ]


def test_checker_finds_cycles_through_function_level_imports():
    sources = _fake(
        graphs="from graphs.a import A\n",
        graphs__a="from graphs.b import B\n",
        graphs__b="def f():\n    from graphs.a import A\n",
        graphs__c="from graphs import a\n",
    )
    imports, _ = project_imports(sources)
    (cycle,) = import_cycles(imports)
    assert [str(i) for i in cycle] == ["graphs/a.py:1: graphs.a imports graphs.b",
                                       "graphs/b.py:2: graphs.b imports graphs.a"]
    acyclic = _fake(graphs="", graphs__a="", graphs__b="from graphs.a import A\n")
    assert import_cycles(project_imports(acyclic)[0]) == []


def test_checker_reports_dynamic_imports():
    sources = _fake(graphs="import importlib\nm = importlib.import_module('tasks')\n",
                    graphs__x="y = __import__('tasks')\n")
    _, dynamic = project_imports(sources)
    assert dynamic == ["graphs/__init__.py:2: graphs calls import_module",
                       "graphs/x.py:1: graphs.x calls __import__"]


def test_every_command_line_module_runs_its_main():
    """A module with a top-level ``main`` is a ``python -m`` command: without the guard the
    command silently does nothing."""
    missing = []
    for path, source in read_sources().values():
        tree = ast.parse(source)
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        guarded = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
                      for n in tree.body)
        if has_main and not guarded:
            missing.append(f"{path}: defines main() but never calls it under __main__")
    _fail_if(missing, "command-line modules that do nothing")
