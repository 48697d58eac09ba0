"""The small GEMM's loop (kernels/small_gemm), in LLVM IR: the GEMM's micro-kernel without packing."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.gemm.blocking import default_config
from dlc.compiler.native.codegen.intrinsics import declare, masked, splat, vec_ptr
from dlc.compiler.native.codegen.shared_loops import operand
from dlc.compiler.native.codegen.types import f32, i1, i32, i64


def small_gemm(kb: KernelBuilder, k, first):
    """The parts `first` = (lo, hi) of the batch, each summed into its slice of k.partial.
    Each MR x NR tile of C is a set of vector accumulators over a part's examples and K:
    A broadcast, a row of B loaded as vectors (masked past N), llvm.fma — the GEMM's
    micro-kernel without packing, which pays off only when C is this small. A part's
    examples (a few, the whole batch over the parts) stay in cache while its tiles sweep them."""
    b, cfg = kb.b, default_config()
    VW = cfg.vw
    vty, mty = ir.VectorType(f32, VW), ir.VectorType(i1, VW)
    fma = declare(kb.m, f"llvm.fma.v{VW}f32", vty, [vty] * 3)
    mload, mstore = masked(kb.m, vty)
    zero = ir.Constant(vty, [0.0] * VW)
    (ab, aoff, lda, sa), (bb, boff, ldb, sb) = k.a, k.b
    A, B, P = kb.buffer(ab, "f32"), kb.buffer(bb, "f32"), kb.buffer(k.partial, "f32")

    def vec(ptr, at, lanes, value=None):
        p = vec_ptr(b, b.gep(ptr, [at]), vty)
        if lanes == VW:
            return b.load(p, align=4) if value is None else b.store(value, p, align=4)
        mask = ir.Constant(mty, [int(j < lanes) for j in range(VW)])
        if value is None:
            return b.call(mload, [p, ir.Constant(i32, 4), mask, zero])
        return b.call(mstore, [value, p, ir.Constant(i32, 4), mask])

    def part(pidx):
        p = pidx[0]
        share = lambda q: b.sdiv(b.mul(kb.dim(k.batch), q), ir.Constant(i64, k.parts))
        start = share(p)
        count = b.sub(share(b.add(p, ir.Constant(i64, 1))), start)
        out = b.mul(p, ir.Constant(i64, k.m * k.n))
        for i0 in range(0, k.m, cfg.mr):
            rows = range(i0, min(i0 + cfg.mr, k.m))
            for j0 in range(0, k.n, cfg.nr):
                lanes = [min(VW, k.n - j) for j in range(j0, min(j0 + cfg.nr, k.n), VW)]
                acc = {(r, v): kb.alloca(vty) for r in rows for v in range(len(lanes))}
                for slot in acc.values():
                    b.store(zero, slot)

                def step(idx, rows=rows, lanes=lanes, acc=acc, j0=j0):
                    n, kk = b.add(start, idx[0]), idx[1]
                    brow = b.add(b.add(b.mul(n, kb.dim(sb)), b.mul(kk, kb.dim(ldb))), kb.dim(boff + j0))
                    bv = [operand(b, k, vec(B, b.add(brow, ir.Constant(i64, v * VW)), w)) for v, w in enumerate(lanes)]
                    acol = b.add(b.add(b.mul(n, kb.dim(sa)), kk), kb.dim(aoff))
                    for r in rows:
                        a = splat(b, operand(b, k, b.load(b.gep(A, [b.add(acol, kb.dim(r * lda))]))), vty)
                        for v in range(len(lanes)):
                            b.store(b.call(fma, [a, bv[v], b.load(acc[r, v])]), acc[r, v])

                kb.loops((count, k.k), step)
                for r in rows:
                    for v, w in enumerate(lanes):
                        vec(P, b.add(out, ir.Constant(i64, r * k.n + j0 + v * VW)), w, b.load(acc[r, v]))

    kb.loops((k.parts,), part, first=first)
