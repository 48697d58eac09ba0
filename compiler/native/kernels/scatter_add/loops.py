"""The loop of a scatter-add (kernels/scatter_add), in LLVM IR."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.program import Affine, KernelProgram
from dlc.compiler.native.codegen.shared_loops import strides
from dlc.compiler.native.codegen.types import LL, i64


def scatter_add(kb: KernelBuilder, k, prog: KernelProgram):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    total = prog.buffers[k.out].size
    kb.loops((total,), lambda idx: kb.store(k.out, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))
    flat = strides(k.idx_shape)

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
