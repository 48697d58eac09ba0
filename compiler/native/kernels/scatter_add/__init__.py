"""Scatter-add: rows added into a zeroed output at integer indices (an embedding's
gradient), and the lowering rule of scatter_add. The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.program import Kernel, contiguous, expr_reads, render
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class ScatterAddKernel(Kernel):
    """out = 0; then out[idx(i), r] += upd[flat(i), r] for every index i of idx_shape.
    An index outside [0, count) adds nothing and reports fault `site`."""

    idx_shape: tuple
    row: object
    out: int
    idx: object  # integer expression over idx_shape
    upd: int
    count: object  # rows of out
    site: int

    def text(self) -> list:
        return [
            f"scatter_add {render.shape(self.idx_shape)}: b{self.out}[{self.idx.text()}] += b{self.upd}"
            f"{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return expr_reads(self.idx) | {self.upd}, {self.out}

    def emit(self, f):
        """On one thread: two indices may name one row."""
        from dlc.compiler.native.kernels.scatter_add.loops import scatter_add

        kb = f.serial()
        scatter_add(kb, self, f.prog)
        return kb


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("scatter_add")
def _scatter_add(lw, n, ins, attrs, typ):
    idx, upd = ins
    u = lw.materialize(upd)
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    site = lw.p.fault("gather", typ.shape[0], lw.graph.nx.nodes[n]["span"])
    lw.emit(
        ScatterAddKernel(idx.shape, numel(typ.shape[1:]), buf.id, lw.use(idx), u.buffer, typ.shape[0], site, node=n)
    )
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))
