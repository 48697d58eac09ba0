"""LLVM on its floor (docs/architecture.md, compiler/native/): of the compiler, only
compiler/native/codegen/ and each kernel kind's loops.py import llvmlite; the planning floor
(the modules at the top of compiler/native/ and rules/) imports nothing of codegen/, so that
fusion, lowering and memory planning run without LLVM. Nothing else imports it: the runtime
reaches LLVM through codegen/ (the compile cache's objects and MCJIT through jit.py, a built
library's embedded data module through data.py)."""

import ast
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("compiler", "runtime", "grammar", "tools", "editors")
LLVM_FLOOR = ("compiler/native/codegen/*.py", "compiler/native/kernels/*/loops.py")
PLANNING = ("compiler/native/*.py", "compiler/native/rules/*.py")


def imported(path: Path) -> set:
    """The modules a file imports, at its top or inside functions (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def modules() -> dict:
    return {
        p.relative_to(ROOT).as_posix(): imported(p)
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
    }


def importers_of(prefix: str, files: dict) -> set:
    return {f for f, names in files.items() if any(n == prefix or n.startswith(prefix + ".") for n in names)}


def off_the_floor(importers: set, floor: tuple) -> list:
    return sorted(f for f in importers if not any(fnmatch(f, pattern) for pattern in floor))


def test_only_codegen_and_the_kinds_loops_import_llvmlite():
    importers = importers_of("llvmlite", modules())
    assert {"compiler/native/codegen/jit.py", "compiler/native/kernels/reduce/loops.py"} <= importers  # it sees them
    outside = off_the_floor(importers, LLVM_FLOOR)
    assert not outside, f"modules that import llvmlite off its floor ({', '.join(LLVM_FLOOR)}): {outside}"


def test_the_planning_floor_imports_nothing_of_codegen():
    files = modules()
    planning = {
        f for f in files if any(fnmatch(f, p) for p in PLANNING) and "/codegen/" not in f and "/kernels/" not in f
    }
    assert "compiler/native/lower.py" in planning and "compiler/native/rules/views.py" in planning
    found = sorted(importers_of("dlc.compiler.native.codegen", {f: files[f] for f in planning}))
    assert not found, f"planning modules that import compiler/native/codegen/: {found}"


def test_a_module_off_the_floor_is_found():
    planted = {"compiler/native/lower.py", "compiler/native/kernels/map/__init__.py", "runtime/engines/cache.py"}
    assert off_the_floor(planted | {"compiler/native/codegen/builder.py"}, LLVM_FLOOR) == sorted(planted)
