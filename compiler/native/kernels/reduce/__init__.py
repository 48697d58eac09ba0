"""Reductions: sum, max or argmax over some axes of an expression; the lowering rules of
reduce_sum, reduce_max and argmax. The loop nests are in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.program import Kernel, contiguous, expr_reads, expr_renamed, render
from dlc.compiler.native.program.registry import register_lowering

# columns of a team's share of a reduction split along its last axis: whole cache lines
COLUMN_BLOCK = 64


@dataclass
class ReduceKernel(Kernel):
    """out[kept(i)] = op over the reduced axes of expr(i), for i in the input shape; and
    each (out, expr) of `also` likewise, in the same pass (fusion.fuse_sums: batchnorm's
    gradient sums three expressions of one tensor)."""

    shape: tuple
    axes: tuple
    op: str  # sum, max, argmax
    out: int
    expr: object
    also: tuple = ()

    column_block = COLUMN_BLOCK  # the columns of a team's share split along the last axis (loops.py)

    def text(self) -> list:
        return [
            f"reduce {self.op} over axes {list(self.axes)} of {render.shape(self.shape)}: b{self.out} <- "
            f"{self.expr.text()}{render.located(self)}"
        ] + [f"  and b{out} <- {expr.text()}" for out, expr in self.also]

    def accesses(self) -> tuple:
        return set().union(*(expr_reads(e) for _, e in self.sums())), {out for out, _ in self.sums()}

    def renamed(self, names: dict) -> "ReduceKernel":
        (out, expr), *also = [(names[o], expr_renamed(e, names)) for o, e in self.sums()]
        return replace(self, out=out, expr=expr, also=tuple(also))

    def sums(self) -> list:
        """Its (out, expr) pairs: its own, then those of `also`."""
        return [(self.out, self.expr), *self.also]

    def sum_space(self) -> tuple | None:
        """(shape, reduced axes, dtype): of a float sum with trailing reduced axes, which its
        loop sums in registers, lane by lane (lane_sums); None for others."""
        dtype = getattr(self.expr, "dtype", None)
        if self.op != "sum" or dtype not in ("f32", "f64") or self.reduced_tail() == len(self.shape):
            return None
        return self.shape, tuple(self.axes), dtype

    def with_sum(self, k) -> "ReduceKernel":
        return self.taking(k, also=self.also + tuple(k.sums()))

    def emit(self, f):
        from dlc.compiler.native.kernels.reduce.loops import reduce

        split = self.split_axis()
        if split is None:
            kb = f.serial()
            reduce(kb, self, f.prog)
            return kb
        extent = self.shape[split] if split < len(self.shape) - 1 else -(-self.shape[split] // COLUMN_BLOCK)
        return f.team(lambda kb, first: reduce(kb, self, f.prog, first), extent, numel(self.shape))

    def reduced_tail(self) -> int:
        """Where the trailing run of reduced axes starts."""
        trail = len(self.shape)
        while trail > 0 and (trail - 1) in self.axes:
            trail -= 1
        return trail

    def split_axis(self) -> int | None:
        """The axis a team splits a sum or max over, each output still summed in the same
        order (the same numbers on any team): the first kept one, when the reduction also
        has trailing reduced axes (summed in a register in the innermost loops), as a
        convolution's bias gradient [N, C, H, W] -> [C]; or the last, in blocks of
        COLUMN_BLOCK columns, when it is the only kept axis and of a static size, as a dense
        layer's bias gradient [B, n] -> [n] (each thread walks every row of its columns).
        None: the reduction runs on one thread."""
        trail = self.reduced_tail()
        kept = [a for a in range(trail) if a not in self.axes]
        if self.op == "argmax" or not kept:
            return None
        if trail < len(self.shape):
            return kept[0]
        last = len(self.shape) - 1
        wide = isinstance(self.shape[last], int) and self.shape[last] > COLUMN_BLOCK
        return last if kept == [last] and wide else None


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("reduce_sum", "reduce_max")
def _reduce(lw, n, ins, attrs, typ):
    x = ins[0]
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    lw.emit(ReduceKernel(x.shape, attrs["axes"], lw.graph.op(n)[7:], buf.id, lw.use(x), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("argmax")
def _argmax(lw, n, ins, attrs, typ):
    x = ins[0]
    buf = lw.p.buffer("i32", numel(typ.shape), "temp")
    lw.emit(ReduceKernel(x.shape, (attrs["axis"],), "argmax", buf.id, lw.use(x), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))
