"""bocb's import graph, read from its source with ``ast`` (no module is imported), keeps two rules.

(a) No import cycle among bocb modules. An edge is an import that runs when its module is imported: a
statement at module level, in an ``if``/``try``/``with`` block or a class body there. Imports inside
functions (lazy imports, for a library that only some commands need) are allowed and are no edges; nor are
those under ``if TYPE_CHECKING:``, which never run. Importing ``a.b.c`` from outside the package ``a.b`` runs
``a/b/__init__.py`` first: an edge to that package too. ``from pkg import name`` is an edge to the submodule
``pkg.name`` if there is one, else to ``pkg`` itself, whose ``__init__`` re-exports ``name`` and whose own
edges lead on to the module that defines it.

(b) No private name imported across packages: a name starting with ``_`` (dunders aside), or anything from
a module whose dotted name has a part starting with ``_`` (``bocb.analysis._frame``), is imported only
within its top-level subpackage (``bocb.analysis``); modules directly under ``bocb`` form the root's own
group. This rule holds for every import, lazy ones included: a private name is private wherever it is used.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass(frozen=True)
class Import:
    importer: str
    module: str  # the bocb module that the statement names (relative imports resolved)
    names: tuple[str, ...]  # what ``from module import ...`` takes; empty for ``import module``
    runs_on_import: bool  # at module level and not under ``if TYPE_CHECKING:``
    line: int


def module_files(src: Path, package: str = "bocb") -> dict[str, Path]:
    """Every module of ``package`` under ``src``, by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _statements(body: list[ast.stmt], runs: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Each statement with whether it runs on import (functions' bodies and TYPE_CHECKING blocks do not)."""
    for node in body:
        yield node, runs
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _statements(node.body, False)
        elif isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from _statements(node.body, False)
            yield from _statements(node.orelse, runs)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    yield from _statements([child] if isinstance(child, ast.stmt) else child.body, runs)


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, its dots resolved against the importer's package."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(src: Path, package: str = "bocb") -> list[Import]:
    """Every import of one ``package`` module by another, lazy ones included."""
    files = module_files(src, package)
    found = []
    for name, path in files.items():
        for node, runs in _statements(ast.parse(path.read_text(), str(path)).body, True):
            if isinstance(node, ast.Import):
                found += [Import(name, a.name, (), runs, node.lineno) for a in node.names if a.name in files]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(name, path.name == "__init__.py", node)
                if module in files:
                    found.append(Import(name, module, tuple(a.name for a in node.names), runs, node.lineno))
    return found


def _packages_run(importer: str, module: str) -> list[str]:
    """The packages whose ``__init__`` importing ``module`` runs first: its parents outside the importer's."""
    parts = module.split(".")
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p not in own]


def import_graph(src: Path, package: str = "bocb") -> dict[str, set[str]]:
    """Module -> the modules its import runs (see the module's docstring)."""
    files = module_files(src, package)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for imp in imports(src, package):
        if not imp.runs_on_import:
            continue
        submodules = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in files]
        targets = submodules if len(submodules) == len(imp.names) and imp.names else [imp.module, *submodules]
        for target in targets:
            graph[imp.importer] |= {target, *_packages_run(imp.importer, target)} - {imp.importer}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def _group(module: str, packages: set[str]) -> str:
    """The top-level subpackage a module belongs to (``bocb`` for a module directly under it)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in packages else parts[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_crossings(src: Path, package: str = "bocb") -> list[str]:
    """Each import of a private name or module from another top-level subpackage, as 'file:line: what'."""
    packages = {n for n, p in module_files(src, package).items() if p.name == "__init__.py"}
    found = []
    for imp in imports(src, package):
        taken = [f"{imp.module}.{n}" for n in imp.names] or [imp.module]
        private = [t for t in taken if any(_private(part) for part in t.split(".")[1:])]
        if private and _group(imp.importer, packages) != _group(imp.module, packages):
            found += [f"{imp.importer}:{imp.line}: {t}" for t in private]
    return found


def test_bocb_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(SRC))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_is_imported_across_packages() -> None:
    assert private_crossings(SRC) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_graph_finds_a_cycle_through_a_package_init(tmp_path: Path) -> None:
    """``a`` imports ``pkg.b`` (running ``pkg/__init__``), whose ``__init__`` imports ``a``; a lazy import
    and a TYPE_CHECKING one make no edge."""
    src = _write(tmp_path, {
        "bocb/__init__.py": "",
        "bocb/a.py": "from bocb.pkg.b import x\n",
        "bocb/pkg/__init__.py": "from .b import x\nfrom .c import y\n",
        "bocb/pkg/b.py": "x = 1\n",
        "bocb/pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bocb.a import x\n"
                         "def f():\n    from bocb import a\ny = 2\n",
    })
    assert find_cycle(import_graph(src)) is None
    (src / "bocb/pkg/c.py").write_text("try:\n    from bocb.a import x\nexcept ImportError:\n    pass\ny = 2\n")
    assert find_cycle(import_graph(src)) == ["bocb.a", "bocb.pkg", "bocb.pkg.c", "bocb.a"]


def test_private_names_crossing_packages_are_found(tmp_path: Path) -> None:
    src = _write(tmp_path, {
        "bocb/__init__.py": "",
        "bocb/top.py": "from bocb.one._impl import thing\n",
        "bocb/one/__init__.py": "from bocb.one._impl import thing\n",
        "bocb/one/_impl.py": "thing = _hidden = 1\n",
        "bocb/two/__init__.py": "def f():\n    from ..one import _impl\n    from bocb.one import thing, __doc__\n",
    })
    assert private_crossings(src) == ["bocb.top:1: bocb.one._impl.thing", "bocb.two:2: bocb.one._impl"]
