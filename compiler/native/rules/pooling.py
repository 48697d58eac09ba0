"""The lowering rules of pooling: a map over the outputs folding each window's taps, or a
reduction over windows of many taps; the max-pool's gather of a second tensor at its maxima."""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.program import Affine, Const, Op, contiguous, row_major
from dlc.compiler.native.program.registry import register_lowering

SMALL_WINDOW = 16  # kh * kw up to which pooling is a map over its outputs (else a reduction)


@register_lowering("maxpool2d", floats=("f32",))
def _maxpool2d(lw, n, ins, attrs, typ):
    _pool(lw, n, ins, attrs, typ, "max")


@register_lowering("avgpool2d", floats=("f32",))
def _avgpool2d(lw, n, ins, attrs, typ):
    _pool(lw, n, ins, attrs, typ, "sum")


def _pool(lw, n, ins, attrs, typ, op):
    x = ins[0]
    N, C, Ho, Wo = typ.shape
    kh, kw = attrs["kernel"]
    fill = -np.inf if op == "max" else 0.0
    e = lw.windows(x, attrs["stride"], attrs["padding"], fill, order="nchwij")
    if op == "sum":
        e = Op("mul", (e, Const(1.0 / (kh * kw), "f32")), "f32")
    fresh = lambda: contiguous(lw.p.buffer("f32", numel(typ.shape), "temp").id, typ.shape, typ.dtype)
    if kh * kw <= SMALL_WINDOW:
        # a map over the outputs folding the window's loads: the loop over Wo vectorizes
        # (strided loads) and runs on the map's team, where a reduction's 2x2 inner loop did not;
        # in an int8 program between two convolutions, channels last as its input (Lowering.channels_last)
        at = _taps(e, kh, kw)
        total = at[0]
        for v in at[1:]:
            total = Op("maximum" if op == "max" else "add", (total, v), "f32")
        out = lw.channels_last_place(lw.graph.outputs_of(n)[0], total) or fresh()
        lw.emit(MapKernel(typ.shape, out.buffer, out.at, total, node=n))
    else:
        out = fresh()
        lw.emit(ReduceKernel((N, C, Ho, Wo, kh, kw), (4, 5), op, out.buffer, e, node=n))
    lw.set(n, out)


def _taps(windows, kh, kw) -> list:
    """The window's kh * kw taps, each an expression over the outputs [N, C, Ho, Wo]."""
    return [
        windows.remap(lambda a, i=i, j=j: Affine(a.offset + a.coeffs[4] * i + a.coeffs[5] * j, a.coeffs[:4]))
        for i in range(kh)
        for j in range(kw)
    ]


@register_lowering("maxpool2d_gather", floats=("f32",))
def _maxpool2d_gather(lw, n, ins, attrs, typ):
    """A map over the outputs: a running maximum of x's taps carries y's tap along (a
    later tap wins only when greater: the first maximum, as maxpool2d_grad)."""
    (x, y), (kh, kw) = ins, attrs["kernel"]
    xs = _taps(lw.windows(x, attrs["stride"], attrs["padding"], -np.inf, order="nchwij"), kh, kw)
    ys = _taps(lw.windows(y, attrs["stride"], attrs["padding"], 0.0, order="nchwij"), kh, kw)
    best, picked = xs[0], ys[0]
    for xv, yv in zip(xs[1:], ys[1:]):
        picked = Op("select", (Op("gt", (xv, best), "bool"), yv, picked), "f32")
        best = Op("maximum", (best, xv), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(MapKernel(typ.shape, out.id, Affine(0, row_major(typ.shape)), picked, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
