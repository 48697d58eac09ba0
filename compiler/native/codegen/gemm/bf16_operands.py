"""The bf16 routines' conversions: a packed panel of floats made into the micro-kernel's
bfloat16 pairs in place ("bf16-pairs": rows k and k+1 interleaved, `paired_rows`, which the
few-columns path pairs op(B) with too; the conversion path's panels are rounded as packs.py
stores them), and the rounding itself (`bf16_halves`), which the AMX packs use too."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.intrinsics import LLVMType, bf16_bits, declare
from dlc.compiler.native.codegen.types import f32, i32
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, ceil_div, gep, loop, smin


def to_pairs(gen, b, panel, kc, P):
    """A packed panel (kc rows of P floats) made into the micro-kernel's bfloat16 pairs,
    in place: rows k and k+1 rounded and interleaved into P 32-bit pairs (a zero row
    after an odd last row). Pair row q is written over the bytes of float row q, which
    rows 2q and 2q+1 (read first) are at or after."""
    fty = ir.VectorType(f32, P)
    row = lambda k: b.bitcast(gep(b, panel, b.mul(k, c64(P))), fty.as_pointer())
    with loop(b, 0, ceil_div(b, kc, 2), name="bp") as q:
        k0 = b.mul(q, c64(2))
        k1 = b.add(k0, c64(1))
        second = b.select(
            b.icmp_signed("<", k1, kc), b.load(row(smin(b, k1, b.sub(kc, c64(1)))), align=4), ir.Constant(fty, None)
        )
        pairs = paired_rows(gen, b, b.load(row(k0), align=4), second)
        b.store(pairs, b.bitcast(gep(b, panel, b.mul(q, c64(P))), pairs.type.as_pointer()), align=4)


def paired_rows(gen, b, first, second):
    """Rows k and k+1 of an operand (two vectors of P floats) as P bfloat16 pairs (2P
    halves, row k's first in each pair): side by side, rounded together (one conversion of
    2P lanes), then their halves interleaved."""
    P = first.type.count
    side_by_side = ir.Constant(ir.VectorType(i32, 2 * P), list(range(2 * P)))
    interleave = ir.Constant(ir.VectorType(i32, 2 * P), [p // 2 + (p % 2) * P for p in range(2 * P)])
    halves = bf16_halves(gen, b, b.shuffle_vector(first, second, side_by_side))
    return b.shuffle_vector(halves, halves, interleave)


def bf16_halves(gen, b, x):
    """The float vector x rounded to bfloat16 as bf16_bits does (to nearest even, a NaN
    quiet), the 16-bit halves only: where the target has AVX512_BF16 (the pairs' and the
    tiles' hosts) a vcvtneps2bf16 for 16 lanes, one vcvtne2ps2bf16 per 32 of 32 or 64,
    else nine integer operations a lane. Subnormals need not agree: the products that read these
    operands (vdpbf16ps, tdpbf16ps, BFDOT) take subnormal inputs as zero."""
    n = x.type.count
    f16, bf = ir.VectorType(f32, 16), lambda lanes: ir.VectorType(LLVMType("bfloat"), lanes)
    halves = lambda lanes: ir.VectorType(ir.IntType(16), lanes)
    part = lambda lo: b.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, 16), list(range(lo, lo + 16))))
    if not jit.host_has("avx512bf16") or n not in (16, 32, 64):
        return b.trunc(b.lshr(bf16_bits(b, x), ir.Constant(ir.VectorType(i32, n), [16] * n)), halves(n))
    if n == 16:
        cvt = declare(gen.m, "llvm.x86.avx512bf16.cvtneps2bf16.512", bf(16), [f16])
        return b.bitcast(b.call(cvt, [x]), halves(16))
    cvt = declare(gen.m, "llvm.x86.avx512bf16.cvtne2ps2bf16.512", bf(32), [f16, f16])
    # the second operand gives the lower 16 lanes
    pieces = [b.bitcast(b.call(cvt, [part(lo + 16), part(lo)]), halves(32)) for lo in range(0, n, 32)]
    if n == 32:
        return pieces[0]
    return b.shuffle_vector(*pieces, ir.Constant(ir.VectorType(i32, 64), list(range(64))))
