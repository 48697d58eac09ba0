"""Each kind of kernel is one class that gives every rule the backend asks of a kernel
(compiler/native/program/__init__.py: Kernel), in its own package of compiler/native/kernels/
(the class and its lowering rules; its loops in the package's loops.py); the code that
renders, plans and compiles kernels never asks a kernel for its kind."""

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.native import kernels, rules
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.kernels.accumulate import AccumulateKernel
from dlc.compiler.native.kernels.attention import AttentionKernel
from dlc.compiler.native.kernels.conv import ConvKernel
from dlc.compiler.native.kernels.gemm import GemmKernel, PackKernel, WeightPacksKernel, WeightTransformKernel
from dlc.compiler.native.kernels.host_call import HostCallKernel
from dlc.compiler.native.kernels.int8 import Int8Kernel, Int8Weights
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.kernels.maxpool_grad import MaxPoolGradKernel
from dlc.compiler.native.kernels.im2col import PlanesIm2colKernel
from dlc.compiler.native.kernels.pool import PoolKernel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.kernels.scatter_add import ScatterAddKernel
from dlc.compiler.native.kernels.small_gemm import SmallGemmKernel
from dlc.compiler.native.kernels.winograd import WinogradInputKernel, WinogradOutputKernel
from dlc.compiler.native.program import Affine, Kernel, KernelProgram, Load

NATIVE = Path(kernels.__file__).parent.parent
ROWS = Affine(0, (8, 1))  # element (i, j) of a [4, 8] buffer


def kinds() -> list:
    """Every Kernel subclass defined in a package of compiler/native/kernels/."""
    found = []
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"{kernels.__name__}.{info.name}")
        found += [
            c
            for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, Kernel) and c.__module__ == module.__name__
        ]
    return sorted(found, key=lambda c: c.__name__)


def _int8_weights() -> Int8Weights:
    from dlc.compiler.ir.int8 import QuantizedProduct
    from dlc.compiler.passes.int8 import Product

    q = QuantizedProduct(np.ones((6, 3), np.int8), np.ones(3, np.float32), np.float32(1), np.uint8(3))
    return Int8Weights.of(Product(0, "matmul", "W", 1, (6, 3), 6, None), q, 1)


def sample(kind) -> tuple:
    """(program, kernel, reads, writes): a small kernel of each kind in a program of its
    buffers — b0, b1 f32 inputs, b2 an f32 output, b3 a temporary, b4 i32 indices — and
    the buffers it reads and writes."""
    p = KernelProgram(symbols=["$t0"])
    for dtype, kind_ in (("f32", "input"), ("f32", "input"), ("f32", "output"), ("f32", "temp"), ("i32", "input")):
        p.buffer(dtype, 64, kind_)
    x = Load(0, ROWS, "f32")
    copy = MapKernel((4, 8), 3, ROWS, x)
    made = {
        MapKernel: lambda: (copy, {0}, {3}),
        FusedMapKernel: lambda: (
            FusedMapKernel((4, 8), [copy, MapKernel((4, 8), 2, ROWS, Load(3, ROWS, "f32"))], registers=frozenset({3})),
            {0},
            {2},
        ),
        ReduceKernel: lambda: (ReduceKernel((4, 8), (1,), "sum", 2, x), {0}, {2}),
        GemmKernel: lambda: (
            GemmKernel(4, 4, 4, 1, (0, 0, 4, 0), (1, 0, 4, 0), (2, 0, 4, 0), False, True),
            {0, 1},
            {2},
        ),
        PackKernel: lambda: (PackKernel(4, 4, (1, 0, 4), False, 3), {1}, {3}),
        # b1 packed into b3 for a GEMM of 4 rows, unless its flag in b5 (i32) is set
        WeightPacksKernel: lambda: (
            WeightPacksKernel(
                [PackKernel(4, 4, (1, 0, 4), False, 3)], [[4]], p.buffer("i32", 1, "packed").id, flags=[0]
            ),
            {1, 5},
            {3, 5},
        ),
        SmallGemmKernel: lambda: (
            SmallGemmKernel(2, 3, 4, 2, (0, 0, 4, 8), (1, 0, 3, 12), (2, 0, 3), 3, 2),
            {0, 1},
            {2, 3},
        ),
        ConvKernel: lambda: (ConvKernel(0, 1, 2, (1, 1, 6, 6), (1, 1, 3, 3), (4, 4), 1, (0, 0)), {0, 1}, {2}),
        # a 1 x 1 x 4 x 4 image's 2 x 2 tiles, padded 1, into b3 (16 matrices of 1 x 4); those of
        # b1 (its products) into b2 [1, 1, 4, 4]
        # b0's weights transformed into b3 unless the flag b5[0] is set
        WeightTransformKernel: lambda: (
            WeightTransformKernel("filters", FusedMapKernel((4, 8), [copy]), (p.buffer("i32", 1, "packed").id, 0)),
            {0, 5},
            {3, 5},
        ),
        WinogradInputKernel: lambda: (WinogradInputKernel(0, 3, (1, 1, 4, 4), (2, 2), (1, 1)), {0}, {3}),
        WinogradOutputKernel: lambda: (WinogradOutputKernel(1, 2, (1, 1, 4, 4), (2, 2)), {1}, {2}),
        ScatterAddKernel: lambda: (
            ScatterAddKernel((4,), 8, 2, Load(4, Affine(0, (1,)), "i32"), 0, 8, p.fault("rows", 8, None)),
            {0, 4},
            {2},
        ),
        AccumulateKernel: lambda: (AccumulateKernel((4, 8), 2, ROWS, (), x), {0}, {2}),
        MaxPoolGradKernel: lambda: (
            MaxPoolGradKernel(0, 1, 2, (1, 1, 4, 4), (2, 2), (2, 2), (2, 2), (0, 0)),
            {0, 1},
            {2},
        ),
        # b0 [1, 1, 6, 6] max-pooled 3 x 3 at stride 2, padded 1, into b2 [1, 1, 3, 3]
        PoolKernel: lambda: (PoolKernel(0, 2, (1, 1, 6, 6), (3, 3), (3, 3), (2, 2), (1, 1), "max"), {0}, {2}),
        # b0 [1, 1, 2, 2]'s 3 x 3 windows, padded 1, into b2 [1, 2, 2, 1, 3, 3]
        PlanesIm2colKernel: lambda: (
            PlanesIm2colKernel(0, 2, Affine(0, (4, 4)), (1, 1, 2, 2), (2, 2), (3, 3), (1, 1), (1, 1), (1, 1)),
            {0},
            {2},
        ),
        HostCallKernel: lambda: (HostCallKernel(p.host("replica_mean").id, 3), {3}, {3}),
        # a [1 x 4 x 2] self-attention under an additive mask b1 [4, 4], its scratch b5
        AttentionKernel: lambda: (
            AttentionKernel(
                (1,),
                4,
                4,
                2,
                2,
                0.5,
                Load(1, Affine(0, (0, 4, 1)), "f32"),
                ((0, 0, (8,), 2),) * 3,
                ((2, 0, (8,), 2), (3, 0, (4,), 1)),
                p.buffer("f32", AttentionKernel.scratch_floats(2, 2), "temp").id,
            ),
            {0, 1},
            {2, 3, 5},
        ),
        ScanKernel: lambda: (ScanKernel(3, False, "$t0", [copy]), set(), set()),  # its body touches b0, b3
        # u8 rows b5 [4 x 6] times the s8 weights of 3 channels (b6, their offsets b7, multipliers b8) into b2
        Int8Kernel: lambda: (
            Int8Kernel(
                4,
                _int8_weights(),
                (p.buffer("i8", 24, "temp").id, 0, 6),
                *(p.buffer(t, 64, "const").id for t in ("i8", "i32", "f32")),
                (2, 0, 3),
            ),
            {5, 6, 7, 8},
            {2},
        ),
    }
    assert kind in made, f"{kind.__name__}: no sample kernel here; add one with the buffers it touches"
    k, reads, writes = made[kind]()
    p.kernels.append(k)
    return p, k, reads, writes


def test_every_kind_is_a_package_that_the_rules_load():
    rules.load()
    for info in pkgutil.iter_modules(kernels.__path__):
        assert info.ispkg, f"kernels/{info.name}.py: a kind is a package (its class and rules, and its loops.py)"
        assert f"{kernels.__name__}.{info.name}" in sys.modules, f"rules.load() does not import kernels/{info.name}"
    assert len({c.__name__ for c in kinds()}) == len(kinds()), (
        "two kinds of one name: the graph page tells kinds by name"
    )


@pytest.mark.parametrize("kind", kinds(), ids=lambda c: c.__name__)
def test_every_kind_gives_every_rule(kind):
    missing = sorted(getattr(kind, "__abstractmethods__", ()))
    assert not missing, f"{kind.__name__} misses the rules {missing} (compiler/native/program/__init__.py: Kernel)"


def test_a_kind_that_misses_a_rule_cannot_be_made():
    class Incomplete(Kernel):
        def text(self):
            return []

        def accesses(self):
            return set(), set()

    with pytest.raises(TypeError, match="emit"):
        Incomplete()


@pytest.mark.parametrize("kind", kinds(), ids=lambda c: c.__name__)
def test_each_rule_of_each_kind_works(kind):
    p, k, reads, writes = sample(kind)
    lines = k.text()
    assert lines and all(isinstance(line, str) and "\n" not in line for line in lines)
    assert k.accesses() == (reads, writes)
    assert k.class_name == kind.__name__.removesuffix("Kernel")
    step = build_module(p)
    jit.parse(step.module)  # the function its emit rule built is valid LLVM IR
    assert step.functions[0] == "kernel0" and len(step.functions) == 1 + len(k.nested())


def test_the_backend_never_asks_a_kernel_for_its_kind():
    names = {c.__name__ for c in kinds()}
    files = [NATIVE / "memory.py", NATIVE / "program" / "render.py"] + sorted((NATIVE / "codegen").glob("*.py"))
    files += sorted((NATIVE / "kernels").glob("*/loops.py"))
    files.append(NATIVE.parent / "graph_page" / "kernels.py")
    found = [
        f"{path.name}:{node.lineno} names {node.id}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name) and node.id in names
    ]
    assert not found, f"kernel kinds named outside their classes: {found}"
