"""The max-pool gradient: each window's gradient to its first maximum; the lowering rule
of maxpool2d_grad. The loops are in loops.py."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.program import Kernel, contiguous, render
from dlc.compiler.native.program.registry import register_lowering


@dataclass
class MaxPoolGradKernel(Kernel):
    """dx (zeroed) [window argmax] += g for every output position (first maximum wins)."""

    x: int
    g: int
    out: int
    shape: tuple  # N, C, H, W of x
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple

    def text(self) -> list:
        return [f"maxpool_grad: b{self.out} <- b{self.g} at argmax of b{self.x}{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.x, self.g}, {self.out}

    def emit(self, f):
        """The examples on a thread team."""
        from dlc.compiler.native.kernels.maxpool_grad.loops import maxpool_grad

        return f.team(lambda kb, first: maxpool_grad(kb, self, first), self.shape[0], numel(self.shape))


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("maxpool2d_grad", floats=("f32",))
def _maxpool2d_grad(lw, n, ins, attrs, typ):
    x, g = ins
    xm, gm = lw.materialize(x), lw.materialize(g)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(
        MaxPoolGradKernel(
            xm.buffer,
            gm.buffer,
            out.id,
            typ.shape,
            g.shape[2:],
            attrs["kernel"],
            attrs["stride"],
            attrs["padding"],
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
