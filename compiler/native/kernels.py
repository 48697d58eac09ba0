"""The loop kernels of a kernel program, in LLVM IR: maps, reductions, scatter-add, the
small GEMM, accumulation (col2im), the max-pool gradient, and scan loops. Kernels are
loop nests over their iteration space; the innermost loop walks the last axis, where
loads are usually contiguous, so LLVM vectorizes it.
"""
from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.native.builder import KernelBuilder
from dlc.compiler.native.gemm import declare, default_config, masked, splat, vec_ptr
from dlc.compiler.native.program import (AccumulateKernel, Affine, FusedMapKernel, KernelProgram, MapKernel, MaxPoolGradKernel,
                      ReduceKernel, ScanKernel, ScatterAddKernel, SmallGemmKernel)
from dlc.compiler.native.types import LL, f32, f64, i1, i32, i64


def map_loop(kb: KernelBuilder, k: MapKernel | FusedMapKernel, prog: KernelProgram, first=None):
    maps = k.maps if isinstance(k, FusedMapKernel) else [k]

    registers = k.registers if isinstance(k, FusedMapKernel) else ()

    def body(idx):
        for m in maps:
            v = kb.expr(m.expr, idx)
            if m.out not in registers:
                kb.store(m.out, prog.buffers[m.out].dtype, kb.affine(m.out_at, idx), v)
            kb.stored[m.out, m.out_at] = v     # later members read it from the register
        kb.stored.clear()
    kb.loops(k.shape, body, first=first)


def _strides(shape) -> list:
    acc, out = 1, []
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return list(reversed(out))


def reduce(kb: KernelBuilder, k: ReduceKernel, prog: KernelProgram):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    kept = [d for r, d in enumerate(k.shape) if r not in k.axes]
    kept_strides = iter(_strides(kept))
    out_coeffs = tuple(0 if r in k.axes else next(kept_strides) for r in range(len(k.shape)))
    out_at = Affine(0, out_coeffs)
    t = LL[dtype]
    if k.op == "argmax":
        axis = k.axes[0]
        outer = [d for r, d in enumerate(k.shape) if r != axis]

        def per_row(oidx):
            idx_of = lambda j: oidx[:axis] + [j] + oidx[axis:]
            first = kb.expr(k.expr, idx_of(ir.Constant(i64, 0)))
            best = kb.alloca(first.type)
            where = kb.alloca(i64)
            b.store(first, best)
            b.store(ir.Constant(i64, 0), where)

            def step(jidx):
                v = kb.expr(k.expr, idx_of(jidx[0]))
                better = kb.replaces_max(v, b.load(best))
                b.store(b.select(better, v, b.load(best)), best)
                b.store(b.select(better, jidx[0], b.load(where)), where)
            kb.loops((k.shape[axis],), step)
            kb.store(k.out, "i32", kb.affine(Affine(0, tuple(_strides(outer))), oidx), b.trunc(b.load(where), i32))
        kb.loops(tuple(outer), per_row)
        return
    if t in (f32, f64):
        init = ir.Constant(t, 0.0 if k.op == "sum" else -math.inf)
    else:       # the least value: of a bool (an unsigned i1) false, of an integer its most negative
        init = ir.Constant(t, 0 if k.op == "sum" or t.width == 1 else -(1 << (t.width - 1)))

    kb.loops(tuple(kept), lambda idx: kb.store(k.out, dtype, kb.affine(Affine(0, tuple(_strides(kept))), idx), init))
    # the trailing reduced axes accumulate in a register; the rest into memory
    trail = len(k.shape)
    while trail > 0 and (trail - 1) in k.axes:
        trail -= 1
    head, tail = k.shape[:trail], k.shape[trail:]

    def combine(acc, v):
        if k.op == "sum":
            return b.fadd(acc, v, flags=("fast",)) if t in (f32, f64) else b.add(acc, v)
        if t in (f32, f64):
            return kb.intrinsic("llvm.maximum", acc, v)      # NaN propagates, as in numpy
        return b.select(kb.replaces_max(v, acc), v, acc)

    def outer(hidx):
        if not tail:
            at = kb.affine(out_at, hidx)
            ptr = b.gep(kb.buffer(k.out, dtype), [at])
            b.store(combine(b.load(ptr), kb.expr(k.expr, hidx)), ptr)
            return
        acc = kb.alloca(t)
        b.store(init, acc)
        kb.loops(tail, lambda tidx: b.store(combine(b.load(acc), kb.expr(k.expr, hidx + tidx)), acc))
        at = kb.affine(out_at, hidx + [ir.Constant(i64, 0)] * len(tail))
        ptr = b.gep(kb.buffer(k.out, dtype), [at])
        b.store(combine(b.load(ptr), b.load(acc)), ptr)
    kb.loops(head, outer)


def scatter_add(kb: KernelBuilder, k: ScatterAddKernel, prog: KernelProgram):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    total = prog.buffers[k.out].size
    kb.loops((total,), lambda idx: kb.store(k.out, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))
    flat = _strides(k.idx_shape)

    def each(idx):
        row = b.sext(kb.expr(k.idx, idx), i64)
        ok = kb.in_range(row, k.count, k.site)
        src = b.mul(kb.affine(Affine(0, tuple(flat)), idx), kb.dim(k.row))
        dst = b.mul(b.select(ok, row, ir.Constant(i64, 0)), kb.dim(k.row))
        zero = ir.Constant(LL[dtype], 0.0)

        def inner(r):
            pd = b.gep(kb.buffer(k.out, dtype), [b.add(dst, r[0])])
            ps = b.gep(kb.buffer(k.upd, dtype), [b.add(src, r[0])])
            b.store(b.fadd(b.load(pd), b.select(ok, b.load(ps), zero)), pd)
        kb.loops((k.row,), inner)
    kb.loops(k.idx_shape, each)


def small_gemm(kb: KernelBuilder, k: SmallGemmKernel):
    """Each MR x NR tile of C is a set of vector accumulators over the whole batch and K:
    A broadcast, a row of B loaded as vectors (masked past N), llvm.fma — the GEMM's
    micro-kernel without packing, which pays off only when C is this small."""
    b, cfg = kb.b, default_config()
    VW = cfg.vw
    vty, mty = ir.VectorType(f32, VW), ir.VectorType(i1, VW)
    fma = declare(kb.m, f"llvm.fma.v{VW}f32", vty, [vty] * 3)
    mload, mstore = masked(kb.m, vty)
    zero = ir.Constant(vty, [0.0] * VW)
    (ab, aoff, lda, sa), (bb, boff, ldb, sb), (cb, coff, ldc) = k.a, k.b, k.c
    A, B, C = kb.buffer(ab, "f32"), kb.buffer(bb, "f32"), kb.buffer(cb, "f32")

    def vec(ptr, at, lanes, value=None):
        p = vec_ptr(b, b.gep(ptr, [at]), vty)
        if lanes == VW:
            return b.load(p, align=4) if value is None else b.store(value, p, align=4)
        mask = ir.Constant(mty, [int(j < lanes) for j in range(VW)])
        if value is None:
            return b.call(mload, [p, ir.Constant(i32, 4), mask, zero])
        return b.call(mstore, [value, p, ir.Constant(i32, 4), mask])

    for i0 in range(0, k.m, cfg.mr):
        rows = range(i0, min(i0 + cfg.mr, k.m))
        for j0 in range(0, k.n, cfg.nr):
            lanes = [min(VW, k.n - j) for j in range(j0, min(j0 + cfg.nr, k.n), VW)]
            acc = {(r, v): kb.alloca(vty) for r in rows for v in range(len(lanes))}
            for slot in acc.values():
                b.store(zero, slot)

            def step(idx, rows=rows, lanes=lanes, acc=acc, j0=j0):
                n, kk = idx
                brow = b.add(b.add(b.mul(n, kb.dim(sb)), b.mul(kk, kb.dim(ldb))), kb.dim(boff + j0))
                bv = [vec(B, b.add(brow, ir.Constant(i64, v * VW)), w) for v, w in enumerate(lanes)]
                acol = b.add(b.add(b.mul(n, kb.dim(sa)), kk), kb.dim(aoff))
                for r in rows:
                    a = splat(b, b.load(b.gep(A, [b.add(acol, kb.dim(r * lda))])), vty)
                    for v in range(len(lanes)):
                        b.store(b.call(fma, [a, bv[v], b.load(acc[r, v])]), acc[r, v])
            kb.loops((k.batch, k.k), step)
            for r in rows:
                for v, w in enumerate(lanes):
                    vec(C, kb.dim(coff + r * ldc + j0 + v * VW), w, b.load(acc[r, v]))


def _zero(kb: KernelBuilder, bid: int, prog: KernelProgram):
    dtype = prog.buffers[bid].dtype
    kb.loops((prog.buffers[bid].size,), lambda idx: kb.store(bid, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))


def accumulate(kb: KernelBuilder, k: AccumulateKernel, prog: KernelProgram):
    b = kb.b
    _zero(kb, k.out, prog)

    def each(idx):
        ok = kb.inside(k.guards, idx)
        at = b.select(ok, kb.affine(k.at, idx), ir.Constant(i64, 0))
        v = kb.expr(k.expr, idx)
        ptr = b.gep(kb.buffer(k.out, "f32"), [at])
        b.store(b.fadd(b.load(ptr), b.select(ok, v, ir.Constant(f32, 0.0))), ptr)
    kb.loops(k.shape, each)


def maxpool_grad(kb: KernelBuilder, k: MaxPoolGradKernel, prog: KernelProgram):
    b = kb.b
    _zero(kb, k.out, prog)
    N, C, H, W = k.shape
    Ho, Wo = k.out_hw
    (kh, kw), (sh, sw), (ph, pw) = k.kernel, k.stride, k.padding
    best, where = kb.alloca(f32), kb.alloca(i64)
    plane_x = kb.dim(H * W)

    def each(idx):
        n, c, ho, wo = idx
        plane = b.mul(b.add(b.mul(n, kb.dim(C)), c), plane_x)
        b.store(ir.Constant(f32, -math.inf), best)
        b.store(ir.Constant(i64, -1), where)

        def window(ij):
            h = b.sub(b.add(b.mul(ho, kb.dim(sh)), ij[0]), kb.dim(ph))
            w = b.sub(b.add(b.mul(wo, kb.dim(sw)), ij[1]), kb.dim(pw))
            ok = b.and_(b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H))),
                        b.and_(b.icmp_signed(">=", w, ir.Constant(i64, 0)), b.icmp_signed("<", w, kb.dim(W))))
            pos = b.add(b.mul(h, kb.dim(W)), w)
            v = b.load(b.gep(kb.buffer(k.x, "f32"), [b.select(ok, b.add(plane, pos), ir.Constant(i64, 0))]))
            v = b.select(ok, v, ir.Constant(f32, -math.inf))
            better = kb.replaces_max(v, b.load(best))
            b.store(b.select(better, v, b.load(best)), best)
            b.store(b.select(better, pos, b.load(where)), where)
        kb.loops((kh, kw), window)
        hit = b.load(where)
        found = b.icmp_signed(">=", hit, ir.Constant(i64, 0))
        gi = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), idx)
        g = b.load(b.gep(kb.buffer(k.g, "f32"), [gi]))
        ptr = b.gep(kb.buffer(k.out, "f32"), [b.add(plane, b.select(found, hit, ir.Constant(i64, 0)))])
        b.store(b.fadd(b.load(ptr), b.select(found, g, ir.Constant(f32, 0.0))), ptr)
    kb.loops((N, C, Ho, Wo), each)


def scan_loop(kb: KernelBuilder, k: ScanKernel, prog: KernelProgram, run_body):
    """The step index goes into the sizes array, where the body's kernels read it."""
    b = kb.b
    length = kb.dim(k.length)
    slot = b.gep(kb.fn.args[1], [ir.Constant(i64, prog.symbols.index(k.var))])

    def step(idx):
        t = b.sub(b.sub(length, ir.Constant(i64, 1)), idx[0]) if k.reverse else idx[0]
        b.store(t, slot)
        run_body(b)
    kb.loops((k.length,), step)
