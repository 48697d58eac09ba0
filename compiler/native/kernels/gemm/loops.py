"""The GEMM kinds' code: calls of the library's routines (compiler/native/codegen/gemm.py),
each at the place of the kernel builder it is given."""
from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.gemm import FEW_ROWS, PACK_TYPE, gemm_name, gemm_type, pack_name

i32 = ir.IntType(32)


def gemm_call(kb: KernelBuilder, f, k):
    """A GemmKernel's call of the library's GEMM, which runs its own thread team; with a
    pack whose flag is clear, a null pack: the GEMM reads B."""
    packed = k.packed is not None
    args = [kb.dim(k.m), kb.dim(k.n), kb.dim(k.k)]
    for bid, off, ld, stride in (k.a, k.b, k.c):
        args += [kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld), kb.dim(stride)]
    args += [kb.dim(k.batch), kb.fn.args[2]]
    if packed:
        pack = kb.buffer(k.packed, "f32")
        if k.ready is not None:
            flags, i = k.ready
            made = kb.b.load(kb.b.gep(kb.buffer(flags, "i32"), [ir.Constant(i32, i)]))
            pack = kb.b.select(kb.b.icmp_signed("!=", made, ir.Constant(i32, 0)), pack, ir.Constant(pack.type, None))
        args.append(pack)
    kb.b.call(f.library(gemm_name(k.trans_a, k.trans_b, False, packed, k.bf16), gemm_type(packed)), args)


def pack_call(kb: KernelBuilder, f, k):
    """A PackKernel's call of the library's packing."""
    bid, off, ld = k.b
    kb.b.call(f.library(pack_name(k.trans_b, k.bf16), PACK_TYPE),
              [kb.dim(k.k), kb.dim(k.n), kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld),
               kb.buffer(k.out, "f32")])


def weight_packs(kb: KernelBuilder, f, k):
    """A WeightPacksKernel's code: each pack whose flag is clear and that a GEMM of this call
    reads (more than FEW_ROWS rows, or transposed, or `one_row`) is made, and its flag set."""
    for i, (p, rows) in enumerate(zip(k.packs, k.rows)):
        flag = kb.b.gep(kb.buffer(k.ready, "i32"), [ir.Constant(i32, i)])
        read = ir.Constant(ir.IntType(1), 1)
        if not (p.trans_b or k.one_row):
            read = kb.b.icmp_signed(">", kb.dim(rows[0]), kb.dim(FEW_ROWS))
            for m in rows[1:]:
                read = kb.b.or_(read, kb.b.icmp_signed(">", kb.dim(m), kb.dim(FEW_ROWS)))
        with kb.b.if_then(kb.b.and_(read, kb.b.icmp_signed("==", kb.b.load(flag), ir.Constant(i32, 0)))):
            pack_call(kb, f, p)
            kb.b.store(ir.Constant(i32, 1), flag)
