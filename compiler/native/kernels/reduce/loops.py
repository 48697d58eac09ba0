"""The loop nests of a reduction (kernels/reduce), in LLVM IR."""

from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.program import Affine, KernelProgram
from dlc.compiler.native.codegen.shared_loops import lane_sums, strides
from dlc.compiler.native.codegen.types import LL, f32, f64, i32, i64


def reduce(kb: KernelBuilder, k, prog: KernelProgram, first=None):
    """A ReduceKernel; with `first` = (lo, hi): the outputs at those indices of axis k.split_axis()."""
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    kept = [d for r, d in enumerate(k.shape) if r not in k.axes]
    kept_strides = iter(strides(kept))
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
            kb.store(k.out, "i32", kb.affine(Affine(0, tuple(strides(outer))), oidx), b.trunc(b.load(where), i32))

        kb.loops(tuple(outer), per_row)
        return
    if t in (f32, f64):
        init = ir.Constant(t, 0.0 if k.op == "sum" else -math.inf)
    else:  # the least value: of a bool (an unsigned i1) false, of an integer its most negative
        init = ir.Constant(t, 0 if k.op == "sum" or t.width == 1 else -(1 << (t.width - 1)))

    trail = k.reduced_tail()
    columns = first is not None and k.split_axis() == trail - 1 == len(k.shape) - 1
    if columns:  # first: blocks of k.column_block columns, the last block cut at the last column
        width = ir.Constant(i64, k.shape[-1])
        ends = [b.mul(x, ir.Constant(i64, k.column_block)) for x in first]
        first = tuple(b.select(b.icmp_signed("<", x, width), x, width) for x in ends)
    outs = [out for out, _ in k.sums()]

    def start(idx):
        at = kb.affine(Affine(0, tuple(strides(kept))), idx)
        for out in outs:
            kb.store(out, dtype, at, init)

    kb.loops(tuple(kept), start, first=first)
    # the trailing reduced axes accumulate in a register; the rest into memory, the split
    # axis (the first kept one: each thread's outputs are its own) outermost, or when split
    # by columns, every row of the thread's columns in order
    tail = k.shape[trail:]
    order = list(range(trail))
    if first is not None and not columns:
        split = k.split_axis()
        order = [split] + [a for a in order if a != split]
    head = tuple(k.shape[a] for a in order)

    def combine(acc, v):
        if k.op == "sum":
            return b.fadd(acc, v) if t in (f32, f64) else b.add(acc, v)
        if t in (f32, f64):
            return kb.intrinsic("llvm.maximum", acc, v)  # NaN propagates, as in numpy
        return b.select(kb.replaces_max(v, acc), v, acc)

    def outer(looped):
        hidx = [looped[order.index(a)] for a in range(trail)]
        if not tail:
            at = kb.affine(out_at, hidx)
            ptr = b.gep(kb.buffer(k.out, dtype), [at])
            b.store(combine(b.load(ptr), kb.expr(k.expr, hidx)), ptr)
            return
        if k.op == "sum" and t in (f32, f64):
            totals = lane_sums(kb, [expr for _, expr in k.sums()], t, hidx, tail)
        else:  # (a sum of integers, a max: never with others, fusion.fuse_sums)
            acc = kb.alloca(t)
            b.store(init, acc)
            kb.loops(tail, lambda tidx: b.store(combine(b.load(acc), kb.expr(k.expr, hidx + tidx)), acc))
            totals = [b.load(acc)]
        at = kb.affine(out_at, hidx + [ir.Constant(i64, 0)] * len(tail))
        for out, total in zip(outs, totals):
            ptr = b.gep(kb.buffer(out, dtype), [at])
            b.store(combine(b.load(ptr), total), ptr)

    if columns:
        kb.loops(head[:-1], lambda rows: kb.loops(head[-1:], lambda j: outer(rows + j), first=first))
    else:
        kb.loops(head, outer, first=first)
