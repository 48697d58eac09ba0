"""Pooling over windows of an image: the rows kernel (PoolKernel: the direct convolution's
row chunks, each tap row loaded once), and the implementations of maxpool2d and avgpool2d,
each registered under the name of its entry in compiler/native/choose/pooling.py's list:
the rows kernel, a map over the outputs folding each window's taps, or a reduction over
windows of many taps. The loops are in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.program import Affine, Const, Kernel, Op, contiguous, render
from dlc.compiler.native.program.registry import register_implementation


@dataclass
class PoolKernel(Kernel):
    """out [N, C, Ho, Wo] = the window's taps x[n, c, ho*sh + i - ph, wo*sw + j - pw] folded
    in the order (i, j) — `op` "max": by `maximum` (outside x, -inf), "mean": by `add` of
    each tap times 1 / (kh·kw) (outside x, 0) — the same operations in the same order as
    the map's (`taps`), so the same bits. x and out contiguous; stride 1 or 2 along W (the
    rows are loaded as vectors, every other lane of two with stride 2: codegen/image_rows.py)."""

    x: int
    out: int
    x_shape: tuple  # N, C, H, W
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    op: str

    # what codegen/image_rows.py's ConvRows reads of a convolution: a channel's window is its filter
    @property
    def stride_h(self):
        return self.stride[0]

    @property
    def stride_w(self):
        return self.stride[1]

    @property
    def w_shape(self):
        return (self.x_shape[1], 1, *self.kernel)

    @property
    def channels(self):
        return self.x_shape[1]

    def text(self) -> list:
        window = "x".join(map(str, self.kernel))
        return [
            f"pool {self.op} {window} stride {'x'.join(map(str, self.stride))} of {render.shape(self.x_shape)}: "
            f"b{self.out} <- b{self.x}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return {self.x}, {self.out}

    def renamed(self, names: dict) -> "PoolKernel":
        return replace(self, x=names[self.x], out=names[self.out])

    def emit(self, f):
        """The (example, channel) planes on a thread team."""
        from dlc.compiler.native.kernels.pool.loops import pool

        planes = self.x_shape[0] * self.x_shape[1]
        return f.team(lambda kb, first: pool(kb, self, first), planes, planes * numel((*self.out_hw, *self.kernel)))


FOLDS = {"maxpool2d": "max", "avgpool2d": "mean"}


# ---- implementations: how compiler/native/choose/pooling.py's entries compute ------------------------
@register_implementation("maxpool2d", "rows")
@register_implementation("avgpool2d", "rows")
def _rows(lw, n, ins, attrs, typ):
    xm = lw.materialize(ins[0])
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    kernel = PoolKernel(
        xm.buffer,
        out.id,
        ins[0].shape,
        typ.shape[2:],
        attrs["kernel"],
        attrs["stride"],
        attrs["padding"],
        FOLDS[lw.graph.op(n)],
        node=n,
    )
    lw.emit(kernel)
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


def _windows(lw, n, x, attrs):
    """x's windows over [N, C, Ho, Wo, kh, kw] as the pooling folds them: each tap times
    1 / (kh·kw) for a mean; outside x, -inf for a max and 0 for a mean."""
    kh, kw = attrs["kernel"]
    op = FOLDS[lw.graph.op(n)]
    e = lw.windows(x, attrs["stride"], attrs["padding"], -np.inf if op == "max" else 0.0, order="nchwij")
    return op, e if op == "max" else Op("mul", (e, Const(1.0 / (kh * kw), "f32")), "f32")


@register_implementation("maxpool2d", "map")
@register_implementation("avgpool2d", "map")
def _map(lw, n, ins, attrs, typ):
    # a map over the outputs folding the window's loads: the loop over Wo vectorizes
    # (strided loads) and runs on the map's team, where a reduction's 2x2 inner loop did not;
    # in an int8 program between two convolutions, channels last as its input (Lowering.channels_last)
    op, e = _windows(lw, n, ins[0], attrs)
    at = taps(e, *attrs["kernel"])
    total = at[0]
    for v in at[1:]:
        total = Op("maximum" if op == "max" else "add", (total, v), "f32")
    out = lw.channels_last_place(lw.graph.outputs_of(n)[0], total) or _fresh(lw, typ)
    lw.emit(MapKernel(typ.shape, out.buffer, out.at, total, node=n))
    lw.set(n, out)


@register_implementation("maxpool2d", "reduction")
@register_implementation("avgpool2d", "reduction")
def _reduction(lw, n, ins, attrs, typ):
    op, e = _windows(lw, n, ins[0], attrs)
    out = _fresh(lw, typ)
    lw.emit(
        ReduceKernel((*typ.shape, *attrs["kernel"]), (4, 5), "max" if op == "max" else "sum", out.buffer, e, node=n)
    )
    lw.set(n, out)


def _fresh(lw, typ):
    return contiguous(lw.p.buffer("f32", numel(typ.shape), "temp").id, typ.shape, typ.dtype)


def taps(windows, kh, kw) -> list:
    """The window's kh * kw taps, each an expression over the outputs [N, C, Ho, Wo]."""
    return [
        windows.remap(lambda a, i=i, j=j: Affine(a.offset + a.coeffs[4] * i + a.coeffs[5] * j, a.coeffs[:4]))
        for i in range(kh)
        for j in range(kw)
    ]
