"""The native int8 product (docs/quantization.md, "The arithmetic"): for rows a (u8, the
quantized input, K terms each) and output channels w (s8, K terms each),

    y[i, o] = f32(Σ_k a[i, k] · w[o, k] − z_x · Σ_k w[o, k]) · M[o]

with exact int32 sums (K ≤ LONGEST_SUM). The dot products widen u8 and s8 to i32 in
vectors of LANES: both fit in i16, so LLVM's x86 backend turns the multiply-adds into
vpmaddwd (u8·s8 pairs summed to i32, exact) on AVX2, and into plain vector code elsewhere.
The sums are integers, so their order is free; the float part is one int32 → f32
conversion (ties to even) and one float32 product, as the reference does. A pass computes
CHANNELS output channels of a row at once, each input load shared by them.
"""
from __future__ import annotations

import ctypes
import functools

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.gemm import _carrying_loop, _gep, _loop
from dlc.compiler.native.codegen.shared_loops import pairwise
from dlc.compiler.native.codegen.types import f32, i8, i32, i64

NAME = "dlc_int8_rows"
LANES = 16          # terms per vector step: 16 u8 = one xmm load, widened to two ymm of i16 pairs
CHANNELS = 4        # output channels per pass over a row
ARGUMENTS = (ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)


def _dot_pass(b: ir.IRBuilder, k, row, weights: list):
    """The exact int32 sums of the u8 row with each s8 channel of `weights` (pointers), K = k terms."""
    v8, v32 = ir.VectorType(i8, LANES), ir.VectorType(i32, LANES)
    zero = ir.Constant(v32, [0] * LANES)
    whole = b.mul(b.sdiv(k, ir.Constant(i64, LANES)), ir.Constant(i64, LANES))
    with _carrying_loop(b, whole, [zero] * len(weights), "k", 0, LANES) as (j, accs, nxt):
        a = b.zext(b.load(b.bitcast(_gep(b, row, j), v8.as_pointer()), align=1), v32)
        for acc, w in zip(accs, weights):
            nxt.append(b.add(acc, b.mul(a, b.sext(b.load(b.bitcast(_gep(b, w, j), v8.as_pointer()), align=1), v32))))
    sums = [pairwise(b, [b.extract_element(v, ir.Constant(i32, lane)) for lane in range(LANES)], b.add)
            for v in accs]
    with _carrying_loop(b, k, sums, "t", whole) as (j, accs, nxt):
        a = b.zext(b.load(_gep(b, row, j)), i32)
        nxt.extend(b.add(acc, b.mul(a, b.sext(b.load(_gep(b, w, j)), i32))) for acc, w in zip(accs, weights))
    return accs


def _channels(b, channels: int, start, stop, i, cols, k, row, w, wsum, m, y, zero):
    """y[i, o] for o from `start` to `stop` (a multiple of `channels` apart), `channels` at a time."""
    with _loop(b, start, stop, channels, "o") as o:
        sums = _dot_pass(b, k, row, [_gep(b, w, b.mul(b.add(o, ir.Constant(i64, c)), k)) for c in range(channels)])
        for c, acc in enumerate(sums):
            oc = b.add(o, ir.Constant(i64, c))
            centered = b.sub(acc, b.mul(zero, b.load(_gep(b, wsum, oc))))
            value = b.fmul(b.sitofp(centered, f32), b.load(_gep(b, m, oc)))
            b.store(value, _gep(b, y, b.add(b.mul(i, cols), oc)))


def int8_module() -> ir.Module:
    """`void dlc_int8_rows(i64 rows, i64 cols, i64 k, u8 *a [rows, k], i8 *w [cols, k],
    i32 *wsum [cols], f32 *m [cols], f32 *y [rows, cols], i32 zero)`."""
    module = ir.Module(NAME)
    module.triple = jit.target_machine().triple
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, i64, i64, i8.as_pointer(), i8.as_pointer(),
                                                            i32.as_pointer(), f32.as_pointer(), f32.as_pointer(), i32]),
                     NAME)
    rows, cols, k, a, w, wsum, m, y, zero = fn.args
    for p in (a, w, wsum, m, y):
        p.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    blocked = b.mul(b.sdiv(cols, ir.Constant(i64, CHANNELS)), ir.Constant(i64, CHANNELS))
    with _loop(b, ir.Constant(i64, 0), rows, 1, "i") as i:
        row = _gep(b, a, b.mul(i, k))
        _channels(b, CHANNELS, ir.Constant(i64, 0), blocked, i, cols, k, row, w, wsum, m, y, zero)
        _channels(b, 1, blocked, cols, i, cols, k, row, w, wsum, m, y, zero)
    b.ret_void()
    return module


@functools.cache
def _compiled(target: str) -> jit.CompiledModule:
    """One compilation per DLC_TARGET (the features it leaves decide the instructions)."""
    return jit.compile_module(int8_module())


def int8_rows():
    """The compiled kernel as a ctypes function (its arguments: int8_module's)."""
    return _compiled(jit.host_cpu()).function(NAME, None, *ARGUMENTS)
