"""The native int8 product (compiler/native/codegen/int8_dot.py, runtime/engines/native_int8.py)
against the reference int8 engine bit for bit: the kernel on its own (row and channel tails,
K not a multiple of its vector), and dense, strided and padded, dilated, grouped and depthwise
convolutions in a model; on any DLC_TARGET."""
import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.codegen import int8_dot, jit
from dlc.compiler.passes.int8 import products
from dlc.runtime.engines.int8 import Int8Engine, calibrate
from dlc.runtime.engines.interpreter import run
from dlc.runtime.engines.native_int8 import NativeInt8Engine


@pytest.mark.parametrize("rows, cols, k", [(1, 1, 1), (3, 5, 7), (4, 9, 37), (17, 13, 300), (2, 4, 0), (5, 8, 16)])
def test_kernel_sums_exactly_and_rounds_as_the_reference(rows, cols, k):
    rng = np.random.default_rng(rows * 1000 + k)
    a = rng.integers(0, 256, (rows, k), dtype=np.uint8)
    a[0, :] = 255                                      # the largest terms: 255 · ±127
    w = rng.integers(-127, 128, (cols, k), dtype=np.int8)
    w[0, :] = -127
    sums = w.astype(np.int32).sum(axis=1, dtype=np.int32)
    m = rng.uniform(1e-4, 1, cols).astype(np.float32)
    y = np.full((rows, cols), np.nan, np.float32)
    int8_dot.int8_rows()(rows, cols, k, a.ctypes.data, w.ctypes.data, sums.ctypes.data, m.ctypes.data,
                         y.ctypes.data, 7)
    want = ((a.astype(np.int64) - 7) @ w.astype(np.int64).T).astype(np.int32).astype(np.float32) * m
    assert np.array_equal(y.view(np.int32), want.view(np.int32))


def test_the_dot_products_are_vpmaddwd_on_avx2_and_smlal_on_neon():
    """The widening multiply-adds LLVM makes of the portable IR: x86's vpmaddwd, and NEON's
    smlal/smlal2 (i16 products added into i32 lanes) on AArch64 (tools/arm64-root.sh)."""
    arm = jit.target_arch() == "aarch64"
    assert arm or jit.host_has("avx2"), "this test is for an AArch64 host or an x86 host with AVX2"
    assert ("smlal2" if arm else "vpmaddwd") in jit.assembly(int8_dot.int8_module())


PROGRAM = """
model m {
    input x: f32[B, 4, 9, 9]
    a = conv2d(x, 6, 3, padding = 1, stride = 2, act = relu)
    g = conv2d(a, 6, 3, padding = "same", groups = 3)
    d = conv2d(g, 6, 3, groups = 6)
    e = conv2d(x, 5, 3, dilation = 2, padding = 2)
    output y = dense(flatten(d), 5) + sum(e)
    output z = dense(x, 3)
}
"""


@pytest.mark.parametrize("target", ["host", "avx2"])
def test_native_int8_model_equals_the_reference_int8_engine_bit_for_bit(target, monkeypatch):
    if target == "avx2" and jit.target_arch() != "x86_64":
        pytest.skip("DLC_TARGET=avx2 is a target of x86-64 machines")
    monkeypatch.setenv("DLC_TARGET", target)
    model = load_text(PROGRAM, "m.dl").build("m", training=False)
    rng = np.random.default_rng(2)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    x = rng.normal(size=(3, 4, 9, 9)).astype(np.float32)
    quantization = calibrate(model.graph, params, [{"x": x}])
    assert len([p for p in products(model.graph) if p.integer]) == 6
    x[0, 0, 0, :3] = [np.nan, np.inf, -1e30]           # the input seen later holds what saturates
    x = np.concatenate([x, 3 * x])
    outs = []
    for engine in (Int8Engine, NativeInt8Engine):
        e = engine(model, model, quantization)
        outs.append(run(model.graph, {"x": x}, params, evaluator=e.evaluator))
    assert set(outs[0]) == set(outs[1]) == {"output:y", "output:z"}
    for name, want in outs[0].items():
        got = outs[1][name]
        assert got.dtype == want.dtype and np.array_equal(got.view(np.int32), want.view(np.int32)), name
