"""The `scan` primitive: a loop over a body graph, with its type rule, numpy reference and
FLOPs beside its record. Its VJP differentiates the body, so it lives with autodiff, in
compiler/passes/scan_vjp.py, which adds it to this record.

Operands: carries, sequences (sliced at t along xs_axes), then invariants.
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.graph import Pattern, TensorType, primitive


def _scan_type(
    ctx, types, body, length, reverse, n_carry, xs_axes, ys_axes, history=(), checkpoint=None, segment_of=None
):
    """Operands: carries, sequences (sliced at t along xs_axes), then invariants.
    Results: final carries, then the body's per-step outputs stacked along ys_axes.
    `history` lists the results that stack the carry entering each step (autodiff
    adds them for the backward pass). `segment_of = (k, front)`: the scan runs segment s
    of the enclosing scan's (a checkpointed scan's, below): its step t is step
    k·s + t − front of the scan it came from, which is the step its random draws see."""
    n_xs = len(xs_axes)
    for i, (t, a) in enumerate(zip(types[:n_carry], body.args[:n_carry])):
        if t.dtype != a.dtype or t.shape != a.shape:
            ctx.fail(f"carry {i + 1} starts as {t} but the body takes {a.type}")
    for t, axis in zip(types[n_carry : n_carry + n_xs], xs_axes):
        if t.shape[axis] != length:
            ctx.fail(f"the sequence {t} has length {t.shape[axis]} on axis {axis}, the scan runs {length} steps")
    outs = list(body.outputs.values())
    results = [t.type for t in outs[:n_carry]]
    for t, axis in zip(outs[n_carry:], ys_axes):
        shape = list(t.shape)
        shape.insert(axis, length)
        results.append(TensorType(t.dtype, tuple(shape)))
    return results


def _scan_flops(ins, outs, body, length, **_):
    return length * body.flops()


@primitive("scan", Pattern.CONTROL, _scan_type, flops=_scan_flops)  # its VJP: compiler/passes/scan_vjp.py
def _scan(ctx, xs, body, length, reverse, n_carry, xs_axes, ys_axes, history=(), checkpoint=None, segment_of=None):
    carries = list(xs[:n_carry])
    seqs = xs[n_carry : n_carry + len(xs_axes)]
    invariants = xs[n_carry + len(xs_axes) :]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    ys = None
    enclosing = ctx.steps
    for t in steps:
        sliced = [np.take(s, t, axis=a) for s, a in zip(seqs, xs_axes)]
        if segment_of:
            k, front = segment_of
            ctx.steps = enclosing[:-1] + (enclosing[-1] * k + t - front,)
        else:
            ctx.steps = enclosing + (t,)
        try:
            outs = ctx.run(body, carries + sliced + list(invariants))
        finally:
            ctx.steps = enclosing
        carries = outs[:n_carry]
        if ys is None:
            ys = [np.empty(y.shape[:a] + (length,) + y.shape[a:], y.dtype) for y, a in zip(outs[n_carry:], ys_axes)]
        for buf, y, a in zip(ys, outs[n_carry:], ys_axes):
            idx = [slice(None)] * buf.ndim
            idx[a] = t
            buf[tuple(idx)] = y
    if ys is None:  # zero steps
        ys = []
        for y, a in zip(list(body.outputs.values())[n_carry:], ys_axes):
            shape = [ctx.size(d) for d in y.shape]
            shape.insert(a, 0)
            ys.append(np.zeros(shape, ctx.np_dtype(y.dtype)))
    return carries + ys
