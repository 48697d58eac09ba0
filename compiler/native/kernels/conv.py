"""The direct convolution, for few taps: no im2col buffer."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class ConvKernel(Kernel):
    """A direct convolution, for few taps (C*kh*kw): no im2col buffer. x [N, C, H, W]
    (0 outside), w [O, C, kh, kw], stride 1 or 2 along W. Without `g`:
    out [N, O, Ho, Wo] = sum over c, i, j of w[o, c, i, j] * x[n, c, ho*sh + i - ph, wo*sw + j - pw];
    `transposed`: w is [C, O, kh, kw] and read w[c, o, kh-1-i, kw-1-j] — with x the output
    gradient and padding k - 1 - p, the input gradient of a stride-1 convolution.
    With `g` [N, O, Ho, Wo] (`w` unused), the weight gradient: out [O, C, kh, kw] = sum over
    n, ho, wo of g[n, o, ho, wo] * x[...], the batch in `parts` runs summed apart into
    `partial` (parts x O x C*kh*kw) and then in order, as SmallGemmKernel. It multiplies in
    float32; for bf16 products its operands are rounded before (Lowering.rounded)."""
    x: int
    w: int | None
    out: int
    x_shape: tuple        # N, C, H, W
    w_shape: tuple        # O, C, kh, kw
    out_hw: tuple
    stride_h: int
    padding: tuple
    g: int | None = None
    partial: int | None = None
    parts: int = 1
    transposed: bool = False
    groups: int = 1
    stride_w: int = 1

    @property
    def channels(self):
        """The output's channels (O)."""
        return self.w_shape[1] * self.groups if self.transposed else self.w_shape[0]

    def flops(self, sizes: dict) -> int:
        """Every output, input gradient or weight gradient element sums over the taps of
        the others: one multiply-add per weight and output position."""
        return 2 * numel(self.w_shape) * numel([concrete(self.x_shape[0], sizes), *self.out_hw])

    def text(self) -> list:
        what = f"b{self.x} * b{self.w}" if self.g is None else f"weight gradient of b{self.x} * w from b{self.g}"
        what += f" in {self.groups} groups" if self.groups > 1 else ""
        return [f"direct conv {render.shape(self.x_shape)} by {render.shape(self.w_shape)}: b{self.out} = {what}"
                f"{render.located(self)}"]

    def accesses(self) -> tuple:
        return ({self.x, self.w}, {self.out}) if self.g is None else ({self.x, self.g}, {self.out, self.partial})

    def emit(self, f):
        """The examples times the groups on a thread team; the weight gradient's parts on
        a team, then their sum on the calling thread."""
        from dlc.compiler.native.loops import conv, conv_weight_grad, sum_parts
        work = numel(self.w_shape) * numel(self.x_shape[:1] + self.out_hw)
        if self.g is None:
            return f.team(lambda kb, first: conv(kb, self, first), self.x_shape[0] * self.groups, work)
        kb = f.team(lambda kb, first: conv_weight_grad(kb, self, first), self.parts, work)
        taps = numel(self.w_shape[1:])
        sum_parts(kb, self.partial, self.parts, self.w_shape[0], taps, (self.out, 0, taps))
        return kb
