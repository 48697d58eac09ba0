"""The recipes of docs/architecture.md ("How to add ..."), walked in a copy of the tree: a new
kind of kernel is its package in compiler/native/kernels/ and its loops.py named in the module
map, and nothing else: the project's checks of layers, LLVM's floor and packaging pass with
it as it is, its lowering rule is found, and only the module map asks for a line. A new way
to compute a convolution is a package in kernels/ and a line of its choice list
(compiler/native/choose/conv.py), and nothing else: the model it takes computes by it, as
the reference engine does, and every check passes."""
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


# a 1 x 1 convolution as a reduction over its channels: y[n, o, h, w] = sum over c of x[n, c, h, w] * w[o, c]
CONV_KIND = '''"""A way of computing a 1 x 1 convolution made by following the recipe: a reduction."""
from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.program import Affine, Load, Op, contiguous
from dlc.compiler.native.program.registry import register_implementation


@register_implementation("conv2d", "recipe")
def _recipe(lw, n, ins, attrs, typ, s):
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    xm, wm = lw.materialize(x), lw.materialize(w)
    (xn, xc, xh, xw), (wo, wc, _, _) = xm.at.coeffs, wm.at.coeffs
    xs = Load(xm.buffer, Affine(xm.at.offset, (xn, 0, xh, xw, xc)), "f32")
    ws = Load(wm.buffer, Affine(wm.at.offset, (0, wo, 0, 0, wc)), "f32")
    lw.emit(ReduceKernel((s.N, s.O, s.Ho, s.Wo, s.C), (4,), "sum", out.id, Op("mul", (xs, ws), "f32"), node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
'''
CONV_ENTRY = '    Implementation("recipe", "reduction", lambda c: c.s.kh == c.s.kw == c.s.groups == 1, "a recipe"),\n'
# a prediction of that convolution on both engines: which implementation computed it, and the largest difference
CONV_MODEL = '''
import numpy as np
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.choose.conv import Conv, chosen
from dlc.runtime.engines.interpreter import run
from dlc.runtime.engines.native import Executable
from dlc.runtime.engines.reference import predict_graph

graph = predict_graph(load_text("model m { input x: f32[B, 6, 5, 7]\\n output y = conv2d(x, 4, 1) }", "m.dl")
                      .build(training=False))
(node,) = graph.nodes_with("conv2d")
print(chosen(Conv.node(graph, node, bf16=False)).name)
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 6, 5, 7)).astype(np.float32)
params = {"y.W": rng.standard_normal((4, 6, 1, 1)).astype(np.float32), "y.b": rng.standard_normal(4).astype(np.float32)}
exe = Executable(graph)
arrays, _ = exe.run({"x": x}, {bid: params[name] for name, bid in exe.program.params.items()})
want = run(graph, {"x": x}, params)["output:y"]
got = arrays[exe.program.outputs["output:y"]][:want.size].reshape(want.shape)
print(float(np.abs(got - want).max()), "+".join(sorted({type(k).__name__ for k in exe.program.kernels})))
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


def test_a_new_way_to_compute_a_convolution_is_its_package_and_a_line_of_the_choice_list(tmp_path):
    tree = copy_tree(tmp_path)
    run_model = tmp_path / "recipe_model.py"
    run_model.write_text(CONV_MODEL)
    before = run(tree, str(run_model))
    name, (_, kinds) = before.stdout.splitlines()[0], before.stdout.splitlines()[1].split()
    assert name == "pointwise per example" and "ReduceKernel" not in kinds, before.stdout + before.stderr
    kind = tree / "compiler" / "native" / "kernels" / "recipe_conv"
    kind.mkdir()
    (kind / "__init__.py").write_text(CONV_KIND)
    choices = tree / "compiler" / "native" / "choose" / "conv.py"
    text = choices.read_text(encoding="utf-8")
    head = "CONV2D = (\n"
    assert text.count(head) == 1
    choices.write_text(text.replace(head, head + CONV_ENTRY), encoding="utf-8")
    after = run(tree, str(run_model))
    name, (error, kinds) = after.stdout.splitlines()[0], after.stdout.splitlines()[1].split()
    assert name == "recipe" and "ReduceKernel" in kinds.split("+") and float(error) < 1e-5, after.stdout + after.stderr
    checks = run(tree, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *CHECKS)
    assert checks.returncode == 0, checks.stdout[-3000:]
