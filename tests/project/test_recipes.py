"""The recipes of docs/architecture.md ("How to add ..."), walked in a copy of the tree: a new
kind of kernel is its package in compiler/native/kernels/ and its loops.py named in the module
map, and nothing else: the project's checks of layers, LLVM's floor and packaging pass with
it as it is, its lowering rule is found, and only the module map asks for a line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("__init__.py", "__main__.py", "setup.py", "pyproject.toml", "README.md", "compiler", "runtime", "grammar",
          "tools", "editors", "docs", "tests/project", "tests/helpers", "tests/conftest.py")
CHECKS = ["tests/project/test_imports.py", "tests/project/test_llvm_floor.py",
          "tests/project/test_packaging.py::test_every_package_of_the_tree_is_installed",
          "tests/project/test_packaging.py::test_every_folder_of_the_package_is_a_package",
          "tests/project/test_docs.py::test_the_module_map_names_every_module"]

KIND = '''"""A kind of kernel made by following the recipe."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native.program import Kernel
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class RecipeKernel(Kernel):
    def text(self) -> list:
        return ["recipe"]

    def accesses(self) -> tuple:
        return set(), set()

    def emit(self, f):
        from dlc.compiler.native.kernels.recipe.loops import nothing
        kb = f.serial()
        nothing(kb)
        return kb


@register_lowering("recipe_primitive")
def _recipe(lw, n, ins, attrs, typ):
    lw.emit(RecipeKernel(node=n))
'''
LOOPS = '''"""The recipe kind's loops, in LLVM IR."""
from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder


def nothing(kb: KernelBuilder) -> ir.Value | None:
    return None
'''


def copy_tree(to: Path) -> Path:
    """The package's tree and the project's checks, in a folder named dlc (importable as it)."""
    tree = to / "dlc"
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", ".*")
    for name in COPIED:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(ROOT / name, tree / name, **(
            {"ignore": ignore} if (ROOT / name).is_dir() else {}))
    return tree


def run(tree: Path, *args) -> subprocess.CompletedProcess:
    """`python *args` in the copy; a pytest there runs in its one process (-n 0), beside this one's
    workers rather than starting its own."""
    env = dict(os.environ, PYTHONPATH=str(tree.parent), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)


def test_a_new_kind_of_kernel_is_its_package_and_a_line_of_the_module_map(tmp_path):
    tree = copy_tree(tmp_path)
    kind = tree / "compiler" / "native" / "kernels" / "recipe"
    kind.mkdir()
    (kind / "__init__.py").write_text(KIND)
    (kind / "loops.py").write_text(LOOPS)
    found = run(tree, "-c", "from dlc.compiler.native.rules import lowering_rule; "
                            "print(lowering_rule('recipe_primitive').__module__)")
    assert found.stdout.split() == ["dlc.compiler.native.kernels.recipe"], found.stderr
    checks = run(tree, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *CHECKS)
    failed = sorted(line.split()[1] for line in checks.stdout.splitlines() if line.startswith("FAILED"))
    assert failed == ["tests/project/test_docs.py::test_the_module_map_names_every_module"], checks.stdout[-3000:]
    assert "compiler/native/kernels/recipe/loops.py" in checks.stdout
    # the module map's row of the kinds' loops names it: then every check passes
    architecture = tree / "docs" / "architecture.md"
    row = "| `compiler/native/kernels/accumulate/loops.py`, "
    text = architecture.read_text(encoding="utf-8")
    assert text.count(row) == 1
    architecture.write_text(text.replace(row, row + "`compiler/native/kernels/recipe/loops.py`, "), encoding="utf-8")
    checks = run(tree, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *CHECKS)
    assert checks.returncode == 0, checks.stdout[-3000:]
