"""The lowering rules of pooling: the implementation its list chooses
(compiler/native/choose/pooling.py), which kernels/pool registers by name; the max-pool's
gather of a second tensor at its maxima."""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.choose.pooling import Pool, chosen
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.kernels.pool import taps
from dlc.compiler.native.program import Affine, Op, contiguous, row_major
from dlc.compiler.native.program.registry import IMPLEMENTATIONS, register_lowering


@register_lowering("maxpool2d", "avgpool2d", floats=("f32",))
def _pool(lw, n, ins, attrs, typ):
    x = ins[0]
    pool = Pool(x.shape, attrs, lw.channels_last(x, lw.expr(x)))
    IMPLEMENTATIONS[lw.graph.op(n), chosen(pool).name](lw, n, ins, attrs, typ)


@register_lowering("maxpool2d_gather", floats=("f32",))
def _maxpool2d_gather(lw, n, ins, attrs, typ):
    """A map over the outputs: a running maximum of x's taps carries y's tap along (a
    later tap wins only when greater: the first maximum, as maxpool2d_grad)."""
    (x, y), (kh, kw) = ins, attrs["kernel"]
    xs = taps(lw.windows(x, attrs["stride"], attrs["padding"], -np.inf, order="nchwij"), kh, kw)
    ys = taps(lw.windows(y, attrs["stride"], attrs["padding"], 0.0, order="nchwij"), kh, kw)
    best, picked = xs[0], ys[0]
    for xv, yv in zip(xs[1:], ys[1:]):
        picked = Op("select", (Op("gt", (xv, best), "bool"), yv, picked), "f32")
        best = Op("maximum", (best, xv), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(MapKernel(typ.shape, out.id, Affine(0, row_major(typ.shape)), picked, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
