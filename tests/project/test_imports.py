"""The package's modules import one another without cycles, and its packages in one
direction: LAYERS, lowest first, each importing only the ones before it, and the packages of
one layer none of one another; so the packages import one another without cycles too.

The folders too, each as it is on disk (a subfolder is a node apart from its parent), with
one exception: a module that LAYERS names alone, as the top-level modules of runtime/
(terminal.py low, api.py high), is a node of its own, not its folder's. A folder stands for
the modules in it (its __init__.py included), less those; an import of a module in a
subfolder runs the __init__.py of the folders above it first, which counts, but for the
CONTAINERS', which import nothing and so close no cycle.

An import inside a function counts as one at the top: it runs later, but the two modules
still need each other. The one exception is the package's root: `dlc.load` is the entry
point that reaches the runtime's API when called, and every module, whose import first runs
the root, would otherwise be in a cycle with it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import networkx as nx

import dlc

ROOT = Path(dlc.__file__).resolve().parent
PACKAGES = ("compiler", "runtime", "grammar", "tools")  # the folders of the package's subpackages


@functools.cache  # read, never changed
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
    out, named = set(), set()
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
            while target and target not in modules:  # `import dlc.x.y.z` of a name: its module
                target = target.rpartition(".")[0]
            named.add(target)
            while target.startswith("dlc"):  # importing a.b.c first runs a/__init__ and a/b/__init__
                out.add(target)
                target = target.rpartition(".")[0]
    # a module runs inside its own packages: they are already being imported, not a dependency,
    # unless it imports one by name (a name of its __init__.py), which is
    return {t for t in out if t != name and (t in named or not name.startswith(t + "."))}


@functools.cache  # the tests only read it: the package's sources are parsed once
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
    assert ("dlc.runtime.training.inputs", "dlc.runtime.data.registry") in graph.edges  # absolute
    assert ("dlc.compiler.passes.optimize", "dlc.compiler.ir.graph") in graph.edges  # relative
    assert ("dlc.compiler.native.codegen.jit", "dlc.compiler.errors") in graph.edges  # inside a function


def test_no_import_cycles():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in sorted(cycles, key=len)[:20])


# The layers, lowest first: a module imports modules of its own layer and of layers before it,
# never after. The compiler's stages in pipeline order, then the runtime: what runs a step
# (engines, with the optimizers they run), the data it reads, training, and the front doors
# (cli, api, lsp, deploy) last.
LAYERS = (
    ("dlc.compiler.errors", "dlc.grammar", "dlc.compiler.stdlib"),  # stdlib: .dl files the front end reads
    ("dlc.compiler.ir",),
    ("dlc.compiler.passes",),
    ("dlc.compiler.frontend",),
    # the native backend's floors: the kernel program (with its text and the lowering
    # registry), LLVM code generation, the kinds of kernel, the choice of which computes
    # each node, the rule families, and at the top of compiler/native/ the planning
    # (fusion, lowering, memory)
    ("dlc.compiler.native.program",),
    ("dlc.compiler.native.codegen",),
    ("dlc.compiler.native.kernels",),
    ("dlc.compiler.native.choose",),
    ("dlc.compiler.native.rules",),
    ("dlc.compiler.native",),
    # ONNX: what a rule is written with (the rule API, values, folding, writing), the rules,
    # and at the top of compiler/onnx/ the importer, which the rules fill, and export
    ("dlc.compiler.onnx.rule_api",),
    ("dlc.compiler.onnx.rules",),
    ("dlc.compiler.onnx",),
    # the graph page, and Hugging Face folders' import (which names models as the ONNX importer does)
    ("dlc.compiler.graph_page", "dlc.compiler.huggingface"),
    ("dlc.runtime.terminal",),
    # optimizers, schedules and their formulas: what the engines run
    ("dlc.runtime.optim",),
    ("dlc.runtime.engines",),
    ("dlc.runtime.data",),
    # weights files in and out (dlc's checkpoints, safetensors, torch layouts): a run reads
    # and writes them
    ("dlc.runtime.interop",),
    ("dlc.runtime.training",),
    ("dlc.runtime.decoding", "dlc.runtime.kv_cache"),
    ("dlc.runtime.api", "dlc.runtime.deploy", "dlc.runtime.lsp"),
    ("dlc.runtime.cli",),
    ("dlc.tools",),
)


def package(module: str) -> str | None:
    """The package of LAYERS a module is in: the longest name that is the module's or one of
    its packages' (dlc.compiler.native.codegen.jit is in dlc.compiler.native.codegen, not
    in dlc.compiler.native); None for a package that only holds packages of several layers
    (CONTAINERS)."""
    names = [p for packages in LAYERS for p in packages if module == p or module.startswith(p + ".")]
    return max(names, key=len) if names and module not in CONTAINERS else None


def layer(module: str) -> int | None:
    """The index of the module's layer; None for the CONTAINERS."""
    p = package(module)
    return next(i for i, packages in enumerate(LAYERS) if p in packages) if p else None


# Packages whose own module every import of a module inside runs first, and which import
# nothing of dlc: dlc.compiler.native's holds constants that the runtime reads without the
# backend (PRECISIONS, ...). test_containers_import_nothing holds them to it.
CONTAINERS = ("dlc", "dlc.compiler", "dlc.runtime", "dlc.compiler.native", "dlc.compiler.onnx")


def edges_against_the_layers(edges) -> list:
    """Imports of a later layer, and between two packages of one layer."""
    return sorted(
        (a, b)
        for a, b in edges
        if None not in (layer(a), layer(b))
        and (layer(b) > layer(a) or layer(b) == layer(a) and package(a) != package(b))
    )


def package_cycles(edges) -> list:
    """The cycles of the graph of packages (each module's package of LAYERS)."""
    packages = nx.DiGraph(
        (package(a), package(b)) for a, b in edges if None not in (package(a), package(b)) and package(a) != package(b)
    )
    return sorted(nx.simple_cycles(packages), key=len)


def folder(module: str) -> str:
    """The node of a module in the graph of folders: the folder it is in (a package's
    __init__ is in the package's own folder), or for a module that LAYERS names alone, itself."""
    is_package = module_files()[module].name == "__init__.py"
    named_alone = any(module in packages for packages in LAYERS)
    return module if is_package or named_alone else module.rpartition(".")[0]


def folder_cycles(edges) -> list:
    """The cycles of the graph of folders (see the module's docstring); an import of a
    CONTAINERS module, which imports nothing, is no edge."""
    folders = nx.DiGraph((folder(a), folder(b)) for a, b in edges if b not in CONTAINERS and folder(a) != folder(b))
    return sorted(nx.simple_cycles(folders), key=len)


def test_every_module_is_in_a_layer():
    outside = [m for m in import_graph() if layer(m) is None and m not in CONTAINERS]
    assert not outside, f"modules in no layer of LAYERS: {outside}"


def test_containers_import_nothing():
    graph = import_graph()
    found = [(c, b) for c in CONTAINERS if c != "dlc" for b in graph.successors(c)]
    assert not found, f"a package of CONTAINERS imports: {found}"


def test_packages_import_in_one_direction():
    found = edges_against_the_layers(import_graph().edges)
    assert not found, "imports against the layer order (LAYERS):\n" + "\n".join(f"{a} -> {b}" for a, b in found)


def test_no_package_cycles():
    cycles = package_cycles(import_graph().edges)
    assert not cycles, "package cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_no_folder_cycles():
    graph = import_graph()
    assert {folder("dlc.runtime.api"), folder("dlc.runtime.terminal")} == {"dlc.runtime.api", "dlc.runtime.terminal"}
    assert folder("dlc.compiler.onnx.importer") == folder("dlc.compiler.onnx") == "dlc.compiler.onnx"
    cycles = folder_cycles(graph.edges)
    assert not cycles, "folder cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_a_wrong_edge_is_found():
    planted = [
        ("dlc.compiler.ir.graph", "dlc.compiler.native.codegen.jit"),
        ("dlc.runtime.engines.native", "dlc.runtime.training.trainer"),
        ("dlc.compiler.native.program.registry", "dlc.compiler.native.rules"),  # a floor below
        ("dlc.runtime.api", "dlc.runtime.lsp.server"),
    ]  # within a layer
    assert edges_against_the_layers(list(import_graph().edges) + planted) == sorted(planted)


def test_an_import_of_its_own_package_by_name_is_found(tmp_path):
    """A module that takes a name from its own package's __init__.py depends on it: with the
    __init__.py importing the module (a kind's `emit` importing its loops.py), a cycle."""
    loops = "dlc.compiler.native.kernels.gemm.loops"
    planted = tmp_path / "loops.py"
    planted.write_text("from dlc.compiler.native.kernels.gemm import packed_floats\n")
    edges = imported_modules(loops, planted, set(module_files()))
    assert edges == {"dlc.compiler.native.kernels.gemm"}  # the packages above it: already running
    graph = import_graph().copy()
    graph.add_edges_from((loops, target) for target in edges)
    assert sorted([loops, "dlc.compiler.native.kernels.gemm"]) in [sorted(c) for c in nx.simple_cycles(graph)]


def test_a_planted_package_cycle_is_found():
    planted = [("dlc.compiler.native.kernels.map", "dlc.compiler.native.rules")]  # rules/pooling.py imports map
    assert ["dlc.compiler.native.kernels", "dlc.compiler.native.rules"] in [
        sorted(c) for c in package_cycles(list(import_graph().edges) + planted)
    ]


def test_a_planted_folder_cycle_is_found():
    edges = list(import_graph().edges)
    planted = [
        ("dlc.compiler.onnx.rule_api.node", "dlc.compiler.onnx.importer"),  # the registry reads the importer
        ("dlc.runtime.terminal", "dlc.runtime.api"),
    ]
    cycles = [sorted(c) for c in folder_cycles(edges + planted)]
    assert ["dlc.compiler.onnx", "dlc.compiler.onnx.rule_api"] in cycles
    assert any({"dlc.runtime.api", "dlc.runtime.terminal"} <= set(c) for c in cycles)  # through engines/
