"""The package's modules import one another without cycles, and the compiler never imports
the runtime.

An import inside a function counts as one at the top: it runs later, but the two modules
still need each other. The one exception is the package's root: `dlc.load` is the entry
point that reaches the runtime's API when called, and every module, whose import first runs
the root, would otherwise be in a cycle with it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import dlc

ROOT = Path(dlc.__file__).resolve().parent
PACKAGES = ("compiler", "runtime", "grammar", "tools")   # the folders of the package's subpackages


def module_files() -> dict:
    """Every module of the package, by dotted name (a package by its __init__)."""
    files = {"dlc": ROOT / "__init__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = ("dlc",) + path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_statements(name: str, path: Path) -> list:
    """The import statements of a module: all of them, those inside functions too, but for
    the package's root, whose own are at the top."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    statements = tree.body if name == "dlc" else ast.walk(tree)
    return [s for s in statements if isinstance(s, (ast.Import, ast.ImportFrom))]


def imported_modules(name: str, path: Path, modules: set) -> set:
    """The dlc modules that a module imports."""
    is_package = path.name == "__init__.py"
    out = set()
    for stmt in import_statements(name, path):
        if isinstance(stmt, ast.Import):
            targets = [a.name for a in stmt.names]
        else:
            base = stmt.module or ""
            if stmt.level:
                anchor = name.split(".")[: len(name.split(".")) - stmt.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import f` only mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in stmt.names]
        for target in targets:
            while target and target not in modules:     # `import dlc.x.y.z` of a name: its module
                target = target.rpartition(".")[0]
            while target.startswith("dlc"):     # importing a.b.c first runs a/__init__ and a/b/__init__
                out.add(target)
                target = target.rpartition(".")[0]
    out.discard(name)
    return out


def import_graph() -> nx.DiGraph:
    files = module_files()
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for target in imported_modules(name, path, set(files)):
            graph.add_edge(name, target)
    return graph


def test_the_import_graph_covers_the_package():
    graph = import_graph()
    assert "dlc.compiler.native.lower" in graph
    assert ("dlc.runtime.training.inputs", "dlc.runtime.data.registry") in graph.edges      # absolute
    assert ("dlc.compiler.passes.optimize", "dlc.compiler.ir.graph") in graph.edges    # relative
    assert ("dlc.compiler.ir.scan", "dlc.compiler.frontend.summary") in graph.edges    # inside a function


def test_no_import_cycles():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in sorted(cycles, key=len)[:20])


def test_the_compiler_never_imports_the_runtime():
    graph = import_graph()
    found = sorted((a, b) for a, b in graph.edges
                   if a.startswith("dlc.compiler.") and b.split(".")[:2] == ["dlc", "runtime"])
    assert not found, "the compiler imports the runtime:\n" + "\n".join(f"{a} -> {b}" for a, b in found)
