"""The loop of a map or a fused map (kernels/map), in LLVM IR: each iteration stores every
member's value, in order. `first` = (lo, hi) limits the outermost loop to a thread's share."""

from __future__ import annotations

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.lanes import vectorizes
from dlc.compiler.native.program import KernelProgram, contiguous_along

# an innermost loop shorter than this stays scalar: a vector step of it would be mostly idle lanes
LANES_FROM = 4


def map_loop(kb: KernelBuilder, k, prog: KernelProgram, first=None):
    """A map's loop (MapKernel or FusedMapKernel): each iteration stores every member's
    value, in order; a member kept in a register is only read by the later ones. `first`
    limits its outermost loop, over the first two axes as one (`outer_extent`) where it
    has three or more. The axes in `loop_order`; the innermost loop computes in vectors where
    `lane_count` allows (codegen/lanes.py)."""
    order = loop_order(k)
    shape = tuple(k.shape[a] for a in order)

    def body(looped):  # the index in the loops' order -> the map's
        idx = [None] * len(order)
        for a, i in zip(order, looped):
            idx[a] = i
        map_body(kb, k, prog, idx)

    contiguous = bool(order) and contiguous_along(
        [m.out_at for m in k.maps if m.out not in k.registers] + [leaf for m in k.maps for leaf in m.expr.leaves()],
        order[-1],
    )
    lanes = lane_count(k, order[-1]) if order else None
    lanes = None if lanes is None else (lanes, order[-1])
    if first is None or len(shape) < 3:
        kb.loops(shape, body, first=first, contiguous=contiguous, lanes=lanes)
        return
    second = kb.dim(shape[1])

    def split(idx):
        t = idx[0]
        body([kb.b.sdiv(t, second), kb.b.srem(t, second)] + idx[1:])

    kb.loops((outer_extent(shape),) + tuple(shape[2:]), split, first=first, contiguous=contiguous, lanes=lanes)


def lane_count(k, axis: int, strided_stores: bool = False) -> int | None:
    """The lanes in which the map's loop along `axis`, its innermost, computes at once
    (codegen/lanes.py): the target's float lanes where every store is contiguous along it
    (`strided_stores`: or a whole step apart, each lane stored on its own), every load
    contiguous or invariant (and at the index it is stored at, for a buffer a member
    writes), and every operation built lane by lane (lanes.vectorizes); else None."""
    extent = k.shape[axis]
    if isinstance(extent, int) and extent < LANES_FROM:
        return None
    written = {m.out: m.out_at for m in k.maps}
    for m in k.maps:
        step = m.out_at.coeffs[axis]
        stored = isinstance(step, int) and (step == 1 or strided_stores and step > 1)
        if m.out not in k.registers and not stored:
            return None
        if not vectorizes(m.expr, axis, written):
            return None
    return jit.vector_width()


def loop_order(k) -> tuple:
    """The map's axes, outermost first: in order, but for the axis along which it stores
    contiguously when that is not the last (a map writing channels last, [N, C, H, W] at
    [N, H, W, C], as an int8 convolution's input is quantized), which goes innermost, so
    that the innermost loop's stores are contiguous and vectorize."""
    axes = tuple(range(len(k.shape)))
    stored = {m.out_at.coeffs for m in k.maps if m.out not in k.registers}
    if len(stored) != 1:
        return axes
    (coeffs,) = stored
    unit = [a for a, c in enumerate(coeffs) if isinstance(c, int) and c == 1]
    if len(unit) != 1 or unit[0] == axes[-1]:
        return axes
    return tuple(a for a in axes if a != unit[0]) + (unit[0],)


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
            step = m.out_at.coeffs[kb.lanes.axis] if kb.lanes is not None else 1
            kb.store(m.out, prog.buffers[m.out].dtype, kb.affine(m.out_at, idx), v, step)
        kb.stored[m.out, m.out_at] = v  # later members read it from the register
    kb.stored.clear()
