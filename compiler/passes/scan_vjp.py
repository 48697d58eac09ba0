"""The VJP of `scan` (compiler/ir/scan.py), added to its record when the passes are
imported: a reverse scan (backprop through time, not unrolled). The forward scan also
stacks the carry entering every step, and the reverse scan's body recomputes one forward
step from it and applies the body's own VJP (autodiff.backward on the body); with
`checkpoint = k`, only every k-th carry is kept and the steps between are recomputed.
"""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.ir import ops
from dlc.compiler.ir.dims import Dim, ceil_div
from dlc.compiler.ir.graph import Graph, Tensor, TensorType
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.passes.autodiff import backward, copy_graph, prune, reachable


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


def _scan_vjp(n, cts, init_acc=None):
    """The reverse scan. `init_acc`: the accumulators of the invariants' cotangents start
    from these (a segment of a checkpointed scan continues the sums of the later ones)."""
    if n.attrs.get("checkpoint"):
        return _checkpointed_vjp(n, cts)
    attrs, graph = n.attrs, n.graph
    body, nc = attrs["body"], attrs["n_carry"]
    nx_ = len(attrs["xs_axes"])
    ny = len(cts) - nc  # stacked results: the body's yields, and any history or saved values
    carries0 = n.inputs[:nc]
    seqs = n.inputs[nc : nc + nx_]
    invs = n.inputs[nc + nx_ :]
    for c in carries0:
        if not c.type.is_float:
            raise DlcError(f"cannot differentiate a scan with a {c.type} carry", n.span)
    history = _carry_history(n)
    d_final = cts[:nc]
    d_ys = cts[nc : nc + ny]
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
        x_t = [arg(a.type) for a in body.args[nc : nc + nx_]]
        dy_t = [arg(list(body.outputs.values())[nc + i].type) for i in live_ys]
        inv_t = [arg(a.type) for a in body.args[nc + nx_ :]]
        _, mapping = copy_graph(body, bwd, carry_t + x_t + inv_t)
        outs = [mapping[t.key()] for t in list(body.outputs.values())[: nc + ny]]
        seeds = list(zip(outs[:nc], d_carry)) + [(outs[nc + i], d) for i, d in zip(live_ys, dy_t)]
        wrt = carry_t + [x_t[i] for i in float_seqs] + [inv_t[i] for i in float_invs]
        grads = backward(bwd, seeds, wrt)
        g_carry = grads[:nc]
        g_seq = grads[nc : nc + len(float_seqs)]
        g_inv = grads[nc + len(float_seqs) :]
        new_carry = [g if g is not None else ops.zeros_like(c) for g, c in zip(g_carry, carry_t)]
        new_acc = [acc + g if g is not None else acc for acc, g in zip(d_acc, g_inv)]
        per_step = [g if g is not None else ops.zeros_like(x_t[i]) for g, i in zip(g_seq, float_seqs)]
    bwd.outputs = {f"carry{i}": t for i, t in enumerate(new_carry + new_acc)}
    bwd.outputs.update({f"y{i}": t for i, t in enumerate(per_step)})
    saved = _save_residuals(n, body, bwd, mapping, len(inv_t))
    prune(bwd)

    init_carry = [d if d is not None else ops.zeros_like(c) for d, c in zip(d_final, carries0)]
    if init_acc is None:
        init_acc = [ops.zeros_like(invs[i]) for i in float_invs]
    operands = init_carry + init_acc + history + list(seqs) + [d_ys[i] for i in live_ys] + saved + list(invs)
    xs_axes = (0,) * nc + tuple(attrs["xs_axes"]) + tuple(attrs["ys_axes"][i] for i in live_ys) + (0,) * len(saved)
    outs = graph.add(
        "scan",
        operands,
        body=bwd,
        length=attrs["length"],
        reverse=not attrs["reverse"],
        n_carry=nc + len(float_invs),
        xs_axes=xs_axes,
        ys_axes=tuple(attrs["xs_axes"][i] for i in float_seqs),
        **{a: attrs[a] for a in ("segment_of",) if a in attrs},
    )
    d_carries0 = outs[:nc]
    d_invs = dict(zip(float_invs, outs[nc : nc + len(float_invs)]))
    d_seqs = dict(zip(float_seqs, outs[nc + len(float_invs) :]))
    return d_carries0 + [d_seqs.get(i) for i in range(nx_)] + [d_invs.get(i) for i in range(len(invs))]


def _save_residuals(n, body: Graph, bwd: Graph, mapping: dict, n_invariant_args: int) -> list:
    """Let the forward scan stack the step values the gradient reads (gates, activations)
    instead of the backward body recomputing them: each becomes a new sequence of the
    backward scan. Values that do not change with the step, or are free to recompute
    (views, constants), are still recomputed. Returns the stacked values, in the order of
    the new sequence arguments."""
    attrs, graph = n.attrs, n.graph
    nc, nx_ = attrs["n_carry"], len(attrs["xs_axes"])
    varying = reachable(body, [a.node for a in body.args[: nc + nx_]], upstream=False)
    copies = {m.key(): k for k, m in mapping.items() if m.graph is bwd and bwd.op(m.node) != "arg"}
    copy_nodes = {key[0] for key in copies}
    residuals = []
    for key, body_key in copies.items():
        if body_key[0] not in varying or PRIMITIVES[body.op(body_key[0])].cheap:
            continue
        users = [
            (v, k)
            for _, v, k, out in bwd.nx.out_edges(key[0], keys=True, data="out")
            if out == key[1] and v not in copy_nodes
        ]
        if users or any(t.key() == key for t in bwd.outputs.values()):
            residuals.append((key, body_key, users))
    if not residuals:
        return []
    # forward: stack each residual along a new leading axis
    first = len(graph.types(n.node))
    earlier = sum(name.startswith("saved") for name in body.outputs)  # saved for a first derivative
    for i, (_, body_key, _) in enumerate(residuals):
        t = Tensor(body, *body_key)
        body.outputs[f"saved{earlier + i}"] = t
        graph.types(n.node).append(TensorType(t.dtype, (attrs["length"],) + t.shape))
    attrs["ys_axes"] = attrs["ys_axes"] + (0,) * len(residuals)
    # backward: a sequence argument per residual, placed before the invariant arguments
    invariant_args = bwd.args[len(bwd.args) - n_invariant_args :]
    bwd.args = bwd.args[: len(bwd.args) - n_invariant_args]
    for key, body_key, users in residuals:
        t = Tensor(body, *body_key)
        with bwd.at(bwd.span):
            a = bwd.add1("arg", type=t.type, index=len(bwd.args))
        bwd.args.append(a)
        for v, k in users:
            bwd.nx.remove_edge(key[0], v, key=k)
            bwd.nx.add_edge(a.node, v, key=k, out=0)
        bwd.outputs = {name: (a if o.key() == key else o) for name, o in bwd.outputs.items()}
    bwd.set_args(bwd.args + invariant_args)
    return [Tensor(graph, n.node, first + i) for i in range(len(residuals))]


# ---- checkpoint = k: rematerialization --------------------------------------------------------------
def _checkpointed_vjp(n, cts):
    """The VJP of a scan with `checkpoint = k`: only every k-th carry is kept, and the
    backward pass recomputes the steps between. The forward scan becomes a scan over
    ⌈T/k⌉ segments whose body is a scan of k steps, and it stacks the carry entering each
    segment. The backward scan runs over the segments the other way: its body recomputes
    the segment's k steps from that carry, saving their values as a plain scan does, and
    runs their reverse scan (_scan_vjp) from the cotangents and the invariants' sums the
    later segments left. Every step's VJP is the plain scan's, in the same order, on the
    same values, random draws included (`segment_of`): the gradients are the same bits.

    When k does not divide T the sequences are padded to whole segments before the first
    step the scan runs (at the start of the time axis, or at its end when `reverse`). The
    padded steps run the body on zeros and give the initial carries as theirs
    (`_segment_body`), so the first real step starts from them, the padded steps'
    cotangents are zero and add nothing, and the real steps' arithmetic is untouched."""
    attrs, graph = n.attrs, n.graph
    body, nc, k = attrs["body"], attrs["n_carry"], attrs["checkpoint"]
    length, rev, xs_axes, ys_axes = attrs["length"], attrs["reverse"], attrs["xs_axes"], attrs["ys_axes"]
    nx_, ny = len(xs_axes), len(ys_axes)
    segments = ceil_div(length, k)
    if segments is None:
        raise DlcError(f"checkpoint = {k} needs the scan's length to be a number or one symbol, not {length}", n.span)
    carries0, seqs, invs = n.inputs[:nc], n.inputs[nc : nc + nx_], list(n.inputs[nc + nx_ :])
    for c in carries0:
        if not c.type.is_float:
            raise DlcError(f"cannot differentiate a scan with a {c.type} carry", n.span)
    made = graph._next  # the forward's nodes from here on stay in n's layer (graph.layer_of)
    padding = segments * k - length
    front = 0 if padding == 0 or rev else padding  # the padded steps come first in the scan's order
    split = lambda x, axis: _segmented(x, axis, segments, k, front, padding - front)
    joined = lambda x, axis: _joined(x, axis, front, length)
    xr = [split(x, a) for x, a in zip(seqs, xs_axes)]
    padded = []  # whether each step is padding, [segments, k]
    if padding != 0:
        steps = graph.add1("iota", shape=(segments * k,), axis=0, dtype="i32")
        pad = (
            ops.compare("ge", steps, _dim_value(graph, length))
            if rev
            else ops.compare("lt", steps, _dim_value(graph, padding))
        )
        padded = [ops.reshape(pad, (segments, k))]
        invs += carries0  # what the padded steps give as their carries
    segment_axes = tuple(xs_axes) + (0,) * len(padded)

    def segment_forward(g: Graph, carries: list, xs: list, invariants: list) -> list:
        """The scan over one segment's k steps, in g."""
        return g.add(
            "scan",
            carries + xs + invariants,
            body=_segment_body(body, nc, nx_, bool(padded), g),
            length=k,
            reverse=rev,
            n_carry=nc,
            xs_axes=segment_axes,
            ys_axes=ys_axes,
            segment_of=(k, front),
        )

    # forward: the scan over segments, in place of n; it stacks the carry entering each
    outer = Graph(f"{body.name}_segments", parent=graph)
    outer.span = n.span
    with outer.at(n.span):
        c = [_new_arg(outer, t.type) for t in carries0]
        x = [_new_arg(outer, _step_type(t, a)) for t, a in zip(xr + padded, segment_axes)]
        v = [_new_arg(outer, t.type) for t in invs]
        outs = segment_forward(outer, c, x, v)
    outer.outputs = {f"carry{i}": t for i, t in enumerate(outs[:nc])} | {f"y{j}": t for j, t in enumerate(outs[nc:])}
    fwd = graph.add(
        "scan",
        list(carries0) + xr + padded + invs,
        body=outer,
        length=segments,
        reverse=rev,
        n_carry=nc,
        xs_axes=segment_axes,
        ys_axes=ys_axes,
    )
    graph.redirect(n.node, fwd[:nc] + [joined(y, a) for y, a in zip(fwd[nc:], ys_axes)])
    kept = _carry_history(graph.view(fwd[0].node))
    for m in range(made, graph._next):
        graph.nx.nodes[m]["layer"] = graph.nx.nodes[n.node].get("layer", "")

    # backward: over the segments the other way, each recomputed and run backwards
    float_invs = [i for i, t in enumerate(invs) if t.type.is_float]
    float_seqs = [i for i, t in enumerate(seqs) if t.type.is_float]
    live_ys = [j for j in range(ny) if cts[nc + j] is not None]
    dys = [split(cts[nc + j], ys_axes[j]) for j in live_ys]
    bwd = Graph(f"{body.name}_segments_vjp", parent=graph)
    bwd.span = n.span
    with bwd.at(n.span):
        d_carry = [_new_arg(bwd, c.type) for c in carries0]
        d_acc = [_new_arg(bwd, invs[i].type) for i in float_invs]
        start = [_new_arg(bwd, c.type) for c in carries0]
        x = [_new_arg(bwd, _step_type(t, a)) for t, a in zip(xr + padded, segment_axes)]
        dy = [_new_arg(bwd, _step_type(t, ys_axes[j])) for t, j in zip(dys, live_ys)]
        v = [_new_arg(bwd, t.type) for t in invs]
        recomputed = segment_forward(bwd, start, x, v)
        step_cts = d_carry + [dy[live_ys.index(j)] if j in live_ys else None for j in range(ny)]
        grads = _scan_vjp(bwd.view(recomputed[0].node), step_cts, init_acc=d_acc)
    d_x, d_v = grads[nc : nc + nx_], grads[nc + len(x) :]
    bwd.outputs = {f"carry{i}": t for i, t in enumerate(grads[:nc] + [d_v[i] for i in float_invs])} | {
        f"y{j}": d_x[i] for j, i in enumerate(float_seqs)
    }
    init = [d if d is not None else ops.zeros_like(c) for d, c in zip(cts[:nc], carries0)]
    outs = graph.add(
        "scan",
        init + [ops.zeros_like(invs[i]) for i in float_invs] + kept + xr + padded + dys + invs,
        body=bwd,
        length=segments,
        reverse=not rev,
        n_carry=nc + len(float_invs),
        xs_axes=(0,) * nc + segment_axes + tuple(ys_axes[j] for j in live_ys),
        ys_axes=tuple(xs_axes[i] for i in float_seqs),
    )
    d_invs = dict(zip(float_invs, outs[nc : nc + len(float_invs)]))
    d_seqs = {i: joined(d, xs_axes[i]) for i, d in zip(float_seqs, outs[nc + len(float_invs) :])}
    n_inv = len(n.inputs) - nc - nx_
    d_carries0 = outs[:nc] if not padded else [d + d_invs[n_inv + i] for i, d in enumerate(outs[:nc])]
    return d_carries0 + [d_seqs.get(i) for i in range(nx_)] + [d_invs.get(i) for i in range(n_inv)]


def _segment_body(body: Graph, nc: int, nx_: int, padded: bool, parent: Graph) -> Graph:
    """A copy of the body for a segment's scan. When `padded`, it has one more sequence, a
    bool per step, true at a padded step, and the initial carries as invariants after the
    body's: a padded step gives them as its carries, so the first real step starts from
    them as it would have without the padding."""
    g = Graph(f"{body.name}_segment", parent=parent)
    g.span = body.span
    with g.at(body.span):
        args = [_new_arg(g, a.type) for a in body.args[: nc + nx_]]
        pad = _new_arg(g, TensorType("bool", ())) if padded else None
        invs = [_new_arg(g, a.type) for a in body.args[nc + nx_ :]]
        _, mapping = copy_graph(body, g, args + invs)
        outs = {name: mapping[t.key()] for name, t in body.outputs.items()}
        if padded:
            for i, c in enumerate(args[:nc]):
                outs[f"carry{i}"] = ops.select(pad, _new_arg(g, c.type), outs[f"carry{i}"])
    g.outputs = outs
    return g


def _new_arg(g: Graph, typ: TensorType) -> Tensor:
    t = g.add1("arg", type=typ, index=len(g.args))
    g.args.append(t)
    return t


def _dim_value(graph: Graph, d) -> Tensor:
    """The value of a dim, an i32 scalar."""
    return graph.add1("dim_size", dim=d) if isinstance(d, Dim) else ops.constant(graph, d, "i32")


def _step_type(t: Tensor, axis: int) -> TensorType:
    """The type of one step of the sequence t (axis removed)."""
    return TensorType(t.dtype, t.shape[:axis] + t.shape[axis + 1 :])


def _segmented(x: Tensor, axis: int, segments, k: int, before, after) -> Tensor:
    """x's axis (the steps) padded with zeros, `before` and `after` steps, to segments·k and
    split into (segments, k)."""
    ends = lambda n: tuple(n if i == axis else 0 for i in range(x.rank))
    x = ops.pad(x, ends(before), ends(after), (0,) * x.rank)
    return ops.reshape(x, x.shape[:axis] + (segments, k) + x.shape[axis + 1 :])


def _joined(x: Tensor, axis: int, start, length) -> Tensor:
    """The inverse of _segmented: axes (segments, k) merged, the padding cut off."""
    x = ops.reshape(x, x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2 :])
    starts = tuple(start if i == axis else 0 for i in range(x.rank))
    stops = x.shape[:axis] + (start + length,) + x.shape[axis + 1 :]
    return ops.slice_(x, starts, stops, (1,) * x.rank)


PRIMITIVES["scan"].vjp = _scan_vjp
