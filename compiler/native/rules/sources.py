"""The lowering rules of the values a graph starts from: arguments of a scan's body, inputs
and parameters (buffers), constants, iota and sizes (free expressions), random draws."""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import numel
from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.native.program import Affine, Const, Index, Random, Size, contiguous, row_major
from dlc.compiler.native.program.registry import NotLowerable, register_lowering


@register_lowering("arg")
def _arg(lw, n, ins, attrs, typ):
    lw.set(n, lw.args[attrs["index"]])


@register_lowering("input", "param")
def _given(lw, n, ins, attrs, typ):
    op = lw.graph.op(n)
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), op, attrs["name"])
    (lw.p.inputs if op == "input" else lw.p.params)[attrs["name"]] = buf.id
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("constant")
def _constant(lw, n, ins, attrs, typ):
    value = np.asarray(attrs["value"])
    if value.ndim == 0:
        lw.set(n, Const(value.item(), typ.dtype))
    else:
        buf = lw.p.buffer(typ.dtype, value.size, "const", data=value.astype(DTYPES[typ.dtype]).ravel())
        lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("iota")
def _iota(lw, n, ins, attrs, typ):
    coeffs = tuple(1 if r == attrs["axis"] else 0 for r in range(typ.rank))
    lw.set(n, Index(Affine(0, coeffs), typ.dtype))


@register_lowering("dim_size")
def _dim_size(lw, n, ins, attrs, typ):
    lw.set(n, Size(attrs["dim"]))


@register_lowering("random")
def _random(lw, n, ins, attrs, typ):
    if attrs["dist"] not in ("uniform", "normal"):
        raise NotLowerable(
            f"the native backend does not compile random {attrs['dist']} yet", lw.graph.nx.nodes[n]["span"]
        )
    key = lw.materialize(ins[0])
    lw.set(n, Random(key.buffer, attrs["stream"], Affine(0, row_major(typ.shape)), typ.dtype, lw.steps, attrs["dist"]))
