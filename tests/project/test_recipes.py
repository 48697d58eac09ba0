"""The recipes of docs/architecture.md ("How to add ..."), walked in a copy of the tree: a new
kind of kernel is its package in compiler/native/kernels/ and its loops.py named in the module
map, and nothing else: the project's checks of layers, LLVM's floor and packaging pass with
it as it is, its lowering rule is found, and only the module map asks for a line. A new way
to compute a convolution is a package in kernels/ and a line of its choice list
(compiler/native/choose/conv.py), and nothing else: the model it takes computes by it, as
the reference engine does, and every check passes; a new way to compute a matmul likewise
(compiler/native/choose/matmul.py). A new optimizer is a class and its name in
runtime/optim/optimizers.py, a row of docs/training.md and the test cases the recipe names,
and nothing else: the checks it names refuse it until the row and the cases are there, and
then it trains on both engines and in a built library as numpy computes its rule."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.runtime.interop import checkpoint

ROOT = Path(__file__).resolve().parents[2]
COPIED = (
    "__init__.py",
    "__main__.py",
    "setup.py",
    "pyproject.toml",
    "README.md",
    "compiler",
    "runtime",
    "grammar",
    "tools",
    "editors",
    "docs",
    "tests/project",
    "tests/helpers",
    "tests/conftest.py",
)
CHECKS = [
    "tests/project/test_imports.py",
    "tests/project/test_llvm_floor.py",
    "tests/project/test_packaging.py::test_every_package_of_the_tree_is_installed",
    "tests/project/test_packaging.py::test_every_folder_of_the_package_is_a_package",
    "tests/project/test_docs.py::test_the_module_map_names_every_module",
]

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

# a matmul of 3 terms a sum as a reduction: y[m, n] = sum over k of op(A)[m, k] * op(B)[k, n]
MATMUL_KIND = '''"""A way of computing a matmul made by following the recipe: a reduction."""
from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.program import Affine, Load, Op, contiguous
from dlc.compiler.native.program.registry import register_implementation


@register_implementation("matmul", "recipe")
def _recipe(lw, n, ins, attrs, typ, mm):
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    (a, a_at, lda, _, a_stored_t), (b, b_at, ldb, _, b_stored_t) = mm.a, mm.b
    a_coeffs = (1, 0, lda) if attrs["ta"] != a_stored_t else (lda, 0, 1)
    b_coeffs = (0, ldb, 1) if attrs["tb"] != b_stored_t else (0, 1, ldb)
    terms = Op("mul", (Load(a, Affine(a_at, a_coeffs), "f32"), Load(b, Affine(b_at, b_coeffs), "f32")), "f32")
    lw.emit(ReduceKernel((mm.m, mm.n, mm.k), (2,), "sum", out.id, terms, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
'''
MATMUL_ENTRY = '''    Implementation("recipe", "reduction", lambda mm: mm.batch == 1 and mm.k == 3, "a recipe"),\n'''
# a prediction of that matmul (a dense layer's) on both engines: which implementation computes it, and the largest difference
MATMUL_MODEL = '''
import numpy as np
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.choose.matmul import Matmul, chosen
from dlc.runtime.engines.interpreter import run
from dlc.runtime.engines.native import Executable
from dlc.runtime.engines.reference import predict_graph

graph = predict_graph(load_text("model m { input x: f32[B, 3]\\n output y = dense(x, 4) }", "m.dl").build(training=False))
(node,) = graph.nodes_with("matmul")
print(chosen(Matmul.of_graph(graph, node)).name)
rng = np.random.default_rng(0)
x = rng.standard_normal((5, 3)).astype(np.float32)
params = {"y.W": rng.standard_normal((3, 4)).astype(np.float32), "y.b": rng.standard_normal(4).astype(np.float32)}
exe = Executable(graph)
arrays, _ = exe.run({"x": x}, {bid: params[name] for name, bid in exe.program.params.items()})
want = run(graph, {"x": x}, params)["output:y"]
got = arrays[exe.program.outputs["output:y"]][:want.size].reshape(want.shape)
print(float(np.abs(got - want).max()), "+".join(sorted({type(k).__name__ for k in exe.program.kernels})))
'''


def copy_tree(to: Path, also: tuple = ()) -> Path:
    """The package's tree and the project's checks (and the test files `also`), in a folder
    named dlc (importable as it)."""
    tree = to / "dlc"
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", ".*")
    for name in COPIED + also:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(
            ROOT / name, tree / name, **({"ignore": ignore} if (ROOT / name).is_dir() else {})
        )
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
    found = run(
        tree,
        "-c",
        "from dlc.compiler.native.rules import lowering_rule; print(lowering_rule('recipe_primitive').__module__)",
    )
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


def walk_a_way_to_compute(tmp_path, model: str, default: str, kind: str, choices: str, head: str, entry: str):
    """The recipe of a way to compute (docs/architecture.md) walked in a copy of the tree: the
    script `model` prints the implementation its node takes (`default` before), the largest
    difference from the reference engine and the program's kinds; then the kind package `kind`
    (recipe_<name>) and the line `entry` after `head` in choose/<choices>.py, and nothing else:
    the node computes by the "recipe" implementation (a ReduceKernel) as the reference engine
    does, and the project's checks pass."""
    tree = copy_tree(tmp_path)
    run_model = tmp_path / "recipe_model.py"
    run_model.write_text(model)
    before = run(tree, str(run_model))
    name, (_, kinds) = before.stdout.splitlines()[0], before.stdout.splitlines()[1].split()
    assert name == default and "ReduceKernel" not in kinds, before.stdout + before.stderr
    package = tree / "compiler" / "native" / "kernels" / f"recipe_{choices}"
    package.mkdir()
    (package / "__init__.py").write_text(kind)
    listed = tree / "compiler" / "native" / "choose" / f"{choices}.py"
    text = listed.read_text(encoding="utf-8")
    assert text.count(head) == 1
    listed.write_text(text.replace(head, head + entry), encoding="utf-8")
    after = run(tree, str(run_model))
    name, (error, kinds) = after.stdout.splitlines()[0], after.stdout.splitlines()[1].split()
    assert name == "recipe" and "ReduceKernel" in kinds.split("+") and float(error) < 1e-5, after.stdout + after.stderr
    checks = run(tree, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *CHECKS)
    assert checks.returncode == 0, checks.stdout[-3000:]


def test_a_new_way_to_compute_a_convolution_is_its_package_and_a_line_of_the_choice_list(tmp_path):
    walk_a_way_to_compute(tmp_path, CONV_MODEL, "pointwise per example", CONV_KIND, "conv", "CONV2D = (\n", CONV_ENTRY)


def test_a_new_way_to_compute_a_matmul_is_its_package_and_a_line_of_the_choice_list(tmp_path):
    walk_a_way_to_compute(
        tmp_path, MATMUL_MODEL, "packed by the GEMM", MATMUL_KIND, "matmul", "MATMUL = (\n", MATMUL_ENTRY
    )


# a newcomer's optimizer: signSGD with the weight decay every optimizer takes from `Optimizer`
SIGN_SGD = '''class SignSGD(Optimizer):
    """signSGD (Bernstein et al. 2018): the step is lr times the sign of the gradient."""
    name = "sign_sgd"
    options = {"lr": REQUIRED, "weight_decay": 0.0}

    def rule(self, u):
        return ops.fma(ops.unary("sign", u.grad), -u.scalar("lr"), u.param), {}


'''
SIGN_SGD_ROW = "| `sign_sgd` | `lr`, `weight_decay = 0`: the step is `lr` times the sign of the gradient (signSGD) |\n"
SIGN_SGD_CASE = '    "sign_sgd-constant": "optimizer = sign_sgd(lr = 0.01, weight_decay = 0.01)",\n'
SIGN_SGD_UPDATE = '("sign_sgd", {"lr": 1e-3}), ("sign_sgd", {"lr": 1e-3, "weight_decay": 0.1}), '
OPTIMIZER_CHECKS = [
    "tests/project/test_registries.py",
    "tests/deploy/test_train_settings.py",
    "tests/native/test_update_rule.py",
    "-k",
    "test_registries or test_the_cases_take_every_optimizer_and_schedule or sign_sgd",
]
# the tiny model the optimizer trains: its loss's gradient is the batch's g itself (one row a batch)
LR, WEIGHT_DECAY, SEED = 0.25, 0.5, 2
SUMS = f"""
model sums {{
    input g: f32[B, 40]
    param w: f32[40]
    loss sum(w * g)
    output y = g * w
}}
train sums {{
    data = npz("sums.npz")
    batch = 1
    epochs = 2
    optimizer = sign_sgd(lr = {LR}, weight_decay = {WEIGHT_DECAY})
}}
"""
# run in the copy: the model trained by `dlc train` on each engine and by a built library,
# from the same initial parameters and on the batches the trainer feeds, in that order
TRAIN = f"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "tests")
from helpers.c_api import Api, train_steps, trainer_batches
from dlc.compiler.frontend.loader import load
from dlc.runtime.deploy.build import build
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.trainer import Trainer, initial_parameters

out = Path(sys.argv[1])
dl = out / "sums.dl"
fed = trainer_batches(dl, {{"seed": {SEED}}}, out / "native")
Trainer(load(dl), None, {{"seed": {SEED}}}, out / "reference", backend="reference", progress="none").run(overwrite=True)
build(str(dl), out / "lib", train=True, overrides={{"seed": {SEED}}})
checkpoint.save(out / "init.npz", initial_parameters(load(dl).build(None, training=True), {SEED}), {{}}, {{}})
api = Api(out / "lib", "sums")
status, instance = api.create(out / "init.npz")
assert status == 0, api.error(instance)
train_steps(api, instance, fed)
assert api.f("save")(instance, str(out / "library.npz").encode()) == 0, api.error(instance)
np.save(out / "fed.npy", np.stack([batch["g"] for batch in fed]))
"""


def insert(path: Path, before: str, text: str):
    """`text` written into the file at `path` just before `before`, found there once."""
    content = path.read_text(encoding="utf-8")
    assert content.count(before) == 1, (path, before)
    path.write_text(content.replace(before, text + before), encoding="utf-8")


def failed_checks(tree: Path) -> tuple:
    """(the checks that failed, pytest's output) of the optimizer's checks in the copy."""
    checks = run(tree, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rA", *OPTIMIZER_CHECKS)
    return sorted(line.split()[1] for line in checks.stdout.splitlines() if line.startswith("FAILED")), checks


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_a_new_optimizer_is_a_class_a_row_and_its_test_cases(tmp_path):
    tree = copy_tree(tmp_path, ("tests/deploy/test_train_settings.py", "tests/native/test_update_rule.py"))
    recipe = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split("**An optimizer.**", 1)[1]
    named = set(re.findall(r"`((?:runtime|compiler|tests|docs)/[\w/.]+)`", recipe.split("\n\n", 1)[0]))
    written = {
        "runtime/optim/optimizers.py",
        "docs/training.md",
        "tests/deploy/test_train_settings.py",
        "tests/native/test_update_rule.py",
    }
    assert written <= named, written - named

    # the class, and its name in OPTIMIZERS: the checks ask for its row and its cases
    optimizers = tree / "runtime" / "optim" / "optimizers.py"
    insert(optimizers, "OPTIMIZERS = {", SIGN_SGD)
    insert(optimizers, "LBFGS, Newton)}", "SignSGD, ")
    failed, checks = failed_checks(tree)
    assert failed == [
        "tests/deploy/test_train_settings.py::test_the_cases_take_every_optimizer_and_schedule",
        "tests/project/test_registries.py::test_every_optimizer_is_documented_with_its_options[sign_sgd]",
    ], checks.stdout[-3000:]
    # its row and its cases: every check passes, its cases among them
    insert(tree / "docs" / "training.md", "\n`lr` must be positive", SIGN_SGD_ROW)
    insert(tree / "tests" / "deploy" / "test_train_settings.py", "}\n\n\ndef test_the_cases_take", SIGN_SGD_CASE)
    insert(tree / "tests" / "native" / "test_update_rule.py", '("lion", {"lr": 1e-3}), ("lion"', SIGN_SGD_UPDATE)
    failed, checks = failed_checks(tree)
    assert checks.returncode == 0, checks.stdout[-3000:]
    passed = [line.split()[1] for line in checks.stdout.splitlines() if line.startswith("PASSED")]
    assert len([p for p in passed if "test_native_update_is_the_reference_rule[sign_sgd" in p]) == 2, passed
    assert "tests/deploy/test_train_settings.py::test_a_library_trains_as_dlc_train[sign_sgd-constant]" in passed

    # trained by `dlc train` on both engines and by a built library: each step w - lr sign(g + wd w)
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "sums.npz", g=rng.standard_normal((5, 40)).astype(np.float32))
    (tmp_path / "sums.dl").write_text(SUMS)
    trained = run(tree, "-c", TRAIN, str(tmp_path))
    assert trained.returncode == 0, trained.stderr[-3000:]
    fed = np.load(tmp_path / "fed.npy")
    assert fed.shape == (10, 1, 40)
    w = plain = checkpoint.load(tmp_path / "init.npz")[0]["w"]
    for g in fed[:, 0]:
        w = w - np.float32(LR) * np.sign(w.astype(np.float64) * WEIGHT_DECAY + g).astype(np.float32)
        plain = plain - np.float32(LR) * np.sign(g)
    assert w.dtype == np.float32 and not np.array_equal(w, plain)  # the weight decay changed signs
    for who, path in [("native", "native/last.npz"), ("reference", "reference/last.npz"), ("library", "library.npz")]:
        params, _, meta = checkpoint.load(tmp_path / path)
        assert meta["step"] == 10, who
        np.testing.assert_array_equal(params["w"], w, err_msg=who)
