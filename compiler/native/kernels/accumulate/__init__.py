"""Accumulation: sums into windows of a zeroed output (col2im, average-pool gradients), and
the lowering rule of avgpool2d_grad. The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.program import (
    Affine,
    Const,
    Kernel,
    Op,
    contiguous,
    expr_reads,
    expr_renamed,
    render,
    row_major,
)
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class AccumulateKernel(Kernel):
    """out[at(i)] += expr(i) for every i in shape whose guards hold (out zeroed first):
    the adjoint of reading windows (col2im, average-pool gradients). Axis 0 is the batch:
    iteration n touches only example n of out, at.coeffs[0] elements from n * at.coeffs[0]."""

    shape: tuple
    out: int
    at: Affine
    guards: tuple
    expr: object

    def text(self) -> list:
        return [
            f"accumulate {render.shape(self.shape)}: b{self.out}[{self.at.text()}] += "
            f"{self.expr.text()}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return expr_reads(self.expr), {self.out}

    def renamed(self, names: dict) -> "AccumulateKernel":
        return replace(self, out=names[self.out], expr=expr_renamed(self.expr, names))

    def emit(self, f):
        """The examples on a thread team."""
        from dlc.compiler.native.kernels.accumulate.loops import accumulate

        return f.team(lambda kb, first: accumulate(kb, self, first), self.shape[0], numel(self.shape))


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("avgpool2d_grad", floats=("f32",))
def _avgpool2d_grad(lw, n, ins, attrs, typ):
    g = ins[0]
    N, C, H, W = typ.shape
    Ho, Wo = g.shape[2:]
    (kh, kw), (st_h, st_w), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
    sn, sc, sh, sw = row_major(typ.shape)
    at = Affine(-ph * sh - pw * sw, (sn, sc, st_h * sh, st_w * sw, sh, sw))
    guards = ((Affine(-ph, (0, 0, st_h, 0, 1, 0)), H), (Affine(-pw, (0, 0, 0, st_w, 0, 1)), W))
    share = lw.use(g).remap(lambda a: Affine(a.offset, a.coeffs + (0, 0)))
    share = Op("mul", (share, Const(1.0 / (kh * kw), "f32")), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(AccumulateKernel((N, C, Ho, Wo, kh, kw), out.id, at, guards, share, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
