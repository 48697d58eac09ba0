"""The loop of a map or a fused map (kernels/map), in LLVM IR: each iteration stores every
member's value, in order. `first` = (lo, hi) limits the outermost loop to a thread's share."""
from __future__ import annotations

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.program import KernelProgram


def map_loop(kb: KernelBuilder, k, prog: KernelProgram, first=None):
    """A map's loop (MapKernel or FusedMapKernel): each iteration stores every member's
    value, in order; a member kept in a register is only read by the later ones. `first`
    limits its outermost loop, over the first two axes as one (`outer_extent`) where it
    has three or more."""
    if first is None or len(k.shape) < 3:
        kb.loops(k.shape, lambda idx: map_body(kb, k, prog, idx), first=first)
        return
    second = kb.dim(k.shape[1])

    def body(idx):
        t = idx[0]
        map_body(kb, k, prog, [kb.b.sdiv(t, second), kb.b.srem(t, second)] + idx[1:])
    kb.loops((outer_extent(k.shape),) + tuple(k.shape[2:]), body, first=first)


def outer_extent(shape):
    """The iterations a thread team splits a map's loop into: its first two axes as one
    where it has three or more (a batch of one, its channels), else its first axis, whose
    loop around the innermost one stays as it is (that one vectorizes)."""
    return shape[0] * shape[1] if len(shape) > 2 else shape[0]


def map_body(kb: KernelBuilder, k, prog: KernelProgram, idx: list):
    """One iteration of a map's loop, at index `idx` (a GEMM's epilogue runs it too)."""
    for m in k.maps:
        v = kb.expr(m.expr, idx)
        if m.out not in k.registers:
            kb.store(m.out, prog.buffers[m.out].dtype, kb.affine(m.out_at, idx), v)
        kb.stored[m.out, m.out_at] = v     # later members read it from the register
    kb.stored.clear()
