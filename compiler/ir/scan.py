"""The `scan` primitive: a loop over a body graph, with its type rule, numpy reference,
FLOPs and VJP, beside its record.

Operands: carries, sequences (sliced at t along xs_axes), then invariants. The VJP is a
reverse scan (backprop through time, not unrolled): the forward scan also stacks the
carry entering every step, and the reverse scan's body recomputes one forward step
from it and applies the body's own VJP (autodiff.backward on the body).
"""
from __future__ import annotations

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import backward, copy_graph, prune, reachable
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import PRIMITIVES, Graph, Tensor, TensorType, primitive


def _scan_type(ctx, types, body, length, reverse, n_carry, xs_axes, ys_axes, history=()):
    """Operands: carries, sequences (sliced at t along xs_axes), then invariants.
    Results: final carries, then the body's per-step outputs stacked along ys_axes.
    `history` lists the results that stack the carry entering each step (autodiff
    adds them for the backward pass)."""
    n_xs = len(xs_axes)
    for i, (t, a) in enumerate(zip(types[:n_carry], body.args[:n_carry])):
        if t.dtype != a.dtype or t.shape != a.shape:
            ctx.fail(f"carry {i + 1} starts as {t} but the body takes {a.type}")
    for t, axis in zip(types[n_carry:n_carry + n_xs], xs_axes):
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
    from dlc.compiler.frontend.summary import flops
    return length * flops(body)


def _carry_history(n) -> list:
    """Make the forward scan also stack the carry entering each step (axis 0)."""
    attrs, graph = n.attrs, n.graph
    body, nc = attrs["body"], attrs["n_carry"]
    if "history" in attrs:
        return [Tensor(graph, n.node, j) for j in attrs["history"]]
    first = len(graph.types(n.node))
    for i in range(nc):
        body.outputs[f"carry_in{i}"] = body.args[i]
    attrs["ys_axes"] = attrs["ys_axes"] + (0,) * nc
    types = graph.types(n.node)
    for a in body.args[:nc]:
        types.append(TensorType(a.dtype, (attrs["length"],) + a.shape))
    attrs["history"] = tuple(range(first, first + nc))
    return [Tensor(graph, n.node, j) for j in attrs["history"]]


def _scan_vjp(n, cts):
    attrs, graph = n.attrs, n.graph
    body, nc = attrs["body"], attrs["n_carry"]
    nx_ = len(attrs["xs_axes"])
    ny = len(cts) - nc      # stacked results: the body's yields, and any history or saved values
    carries0 = n.inputs[:nc]
    seqs = n.inputs[nc:nc + nx_]
    invs = n.inputs[nc + nx_:]
    for c in carries0:
        if not c.type.is_float:
            raise DlcError(f"cannot differentiate a scan with a {c.type} carry", n.span)
    history = _carry_history(n)
    d_final = cts[:nc]
    d_ys = cts[nc:nc + ny]
    float_invs = [i for i, t in enumerate(invs) if t.type.is_float]
    float_seqs = [i for i, t in enumerate(seqs) if t.type.is_float]
    live_ys = [i for i in range(ny) if d_ys[i] is not None]

    bwd = Graph(f"{body.name}_vjp", parent=graph)
    bwd.span = n.span

    def arg(typ):
        t = bwd.add1("arg", type=typ, index=len(bwd.args))
        bwd.args.append(t)
        return t

    with bwd.at(n.span):
        d_carry = [arg(c.type) for c in carries0]
        d_acc = [arg(invs[i].type) for i in float_invs]
        carry_t = [arg(a.type) for a in body.args[:nc]]
        x_t = [arg(a.type) for a in body.args[nc:nc + nx_]]
        dy_t = [arg(list(body.outputs.values())[nc + i].type) for i in live_ys]
        inv_t = [arg(a.type) for a in body.args[nc + nx_:]]
        _, mapping = copy_graph(body, bwd, carry_t + x_t + inv_t)
        outs = [mapping[t.key()] for t in list(body.outputs.values())[:nc + ny]]
        seeds = list(zip(outs[:nc], d_carry)) + [(outs[nc + i], d) for i, d in zip(live_ys, dy_t)]
        wrt = carry_t + [x_t[i] for i in float_seqs] + [inv_t[i] for i in float_invs]
        grads = backward(bwd, seeds, wrt)
        g_carry = grads[:nc]
        g_seq = grads[nc:nc + len(float_seqs)]
        g_inv = grads[nc + len(float_seqs):]
        new_carry = [g if g is not None else ops.zeros_like(c) for g, c in zip(g_carry, carry_t)]
        new_acc = [acc + g if g is not None else acc for acc, g in zip(d_acc, g_inv)]
        per_step = [g if g is not None else ops.zeros_like(x_t[i]) for g, i in zip(g_seq, float_seqs)]
    bwd.outputs = {f"carry{i}": t for i, t in enumerate(new_carry + new_acc)}
    bwd.outputs.update({f"y{i}": t for i, t in enumerate(per_step)})
    saved = _save_residuals(n, body, bwd, mapping, len(inv_t))
    prune(bwd)

    init_carry = [d if d is not None else ops.zeros_like(c) for d, c in zip(d_final, carries0)]
    init_acc = [ops.zeros_like(invs[i]) for i in float_invs]
    operands = init_carry + init_acc + history + list(seqs) + [d_ys[i] for i in live_ys] + saved + list(invs)
    xs_axes = (0,) * nc + tuple(attrs["xs_axes"]) + tuple(attrs["ys_axes"][i] for i in live_ys) + (0,) * len(saved)
    outs = graph.add("scan", operands, body=bwd, length=attrs["length"], reverse=not attrs["reverse"],
                     n_carry=nc + len(float_invs), xs_axes=xs_axes,
                     ys_axes=tuple(attrs["xs_axes"][i] for i in float_seqs))
    d_carries0 = outs[:nc]
    d_invs = dict(zip(float_invs, outs[nc:nc + len(float_invs)]))
    d_seqs = dict(zip(float_seqs, outs[nc + len(float_invs):]))
    return d_carries0 + [d_seqs.get(i) for i in range(nx_)] + [d_invs.get(i) for i in range(len(invs))]


def _save_residuals(n, body: Graph, bwd: Graph, mapping: dict, n_invariant_args: int) -> list:
    """Let the forward scan stack the step values the gradient reads (gates, activations)
    instead of the backward body recomputing them: each becomes a new sequence of the
    backward scan. Values that do not change with the step, or are free to recompute
    (views, constants), are still recomputed. Returns the stacked values, in the order of
    the new sequence arguments."""
    attrs, graph = n.attrs, n.graph
    nc, nx_ = attrs["n_carry"], len(attrs["xs_axes"])
    varying = reachable(body, [a.node for a in body.args[:nc + nx_]], upstream=False)
    copies = {m.key(): k for k, m in mapping.items() if m.graph is bwd and bwd.op(m.node) != "arg"}
    copy_nodes = {key[0] for key in copies}
    residuals = []
    for key, body_key in copies.items():
        if body_key[0] not in varying or PRIMITIVES[body.op(body_key[0])].cheap:
            continue
        users = [(v, k) for _, v, k, out in bwd.g.out_edges(key[0], keys=True, data="out")
                 if out == key[1] and v not in copy_nodes]
        if users or any(t.key() == key for t in bwd.outputs.values()):
            residuals.append((key, body_key, users))
    if not residuals:
        return []
    # forward: stack each residual along a new leading axis
    first = len(graph.types(n.node))
    earlier = sum(name.startswith("saved") for name in body.outputs)     # saved for a first derivative
    for i, (_, body_key, _) in enumerate(residuals):
        t = Tensor(body, *body_key)
        body.outputs[f"saved{earlier + i}"] = t
        graph.types(n.node).append(TensorType(t.dtype, (attrs["length"],) + t.shape))
    attrs["ys_axes"] = attrs["ys_axes"] + (0,) * len(residuals)
    # backward: a sequence argument per residual, placed before the invariant arguments
    invariant_args = bwd.args[len(bwd.args) - n_invariant_args:]
    bwd.args = bwd.args[:len(bwd.args) - n_invariant_args]
    for key, body_key, users in residuals:
        t = Tensor(body, *body_key)
        with bwd.at(bwd.span):
            a = bwd.add1("arg", type=t.type, index=len(bwd.args))
        bwd.args.append(a)
        for v, k in users:
            bwd.g.remove_edge(key[0], v, key=k)
            bwd.g.add_edge(a.node, v, key=k, out=0)
        bwd.outputs = {name: (a if o.key() == key else o) for name, o in bwd.outputs.items()}
    bwd.set_args(bwd.args + invariant_args)
    return [Tensor(graph, n.node, first + i) for i in range(len(residuals))]


@primitive("scan", "control", _scan_type, _scan_vjp, _scan_flops)
def _scan(ctx, xs, body, length, reverse, n_carry, xs_axes, ys_axes, history=()):
    carries = list(xs[:n_carry])
    seqs = xs[n_carry:n_carry + len(xs_axes)]
    invariants = xs[n_carry + len(xs_axes):]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    ys = None
    for t in steps:
        sliced = [np.take(s, t, axis=a) for s, a in zip(seqs, xs_axes)]
        ctx.steps += (t,)
        try:
            outs = ctx.run(body, carries + sliced + list(invariants))
        finally:
            ctx.steps = ctx.steps[:-1]
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
