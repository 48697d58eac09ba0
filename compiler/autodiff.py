"""Reverse-mode automatic differentiation, graph -> graph.

`backward` walks a graph from its seeds towards the values we differentiate with
respect to, calling each primitive's VJP rule; the rules emit the gradient nodes into
the same graph. `train_step` turns a model's forward graph into the train-step graph:
loss, metrics, state updates and the gradient of every trainable parameter.

`scan` is differentiated into a reverse scan (backprop through time, not unrolled):
the forward scan also stacks the carry entering every step, and the reverse scan's
body recomputes one forward step from it and applies the body's own VJP.
"""
from __future__ import annotations

from . import ops
from .errors import DlcError
from .graph import PRIMITIVES, Graph, Tensor, TensorType, collector_paused


def backward(graph: Graph, seeds: list, wrt: list) -> list:
    """Cotangents of `wrt` given (tensor, cotangent) seeds, emitted into `graph`."""
    relevant = reachable(graph, [t.node for t, _ in seeds], upstream=True) & \
        reachable(graph, [t.node for t in wrt], upstream=False)
    cts: dict = {}
    for t, ct in seeds:
        if ct is not None and t.node in relevant:
            _accumulate(cts, t, ct)
    for n in reversed(graph.order()):
        if n not in relevant or graph.op(n) in ("input", "param", "arg"):
            continue
        outs = [cts.get((n, j)) for j in range(len(graph.types(n)))]
        if all(c is None for c in outs):
            continue
        prim = PRIMITIVES[graph.op(n)]
        view = graph.view(n)
        if prim.vjp is None:
            raise DlcError(f"cannot differentiate through {graph.op(n)}", view.span)
        with graph.at(view.span):
            in_cts = prim.vjp(view, outs)
            for x, ct in zip(view.inputs, in_cts):
                if ct is not None and x.node in relevant and x.type.is_float:
                    _accumulate(cts, x, ct)
    return [cts.get(t.key()) for t in wrt]


def _accumulate(cts: dict, x: Tensor, ct: Tensor):
    ct = ops.cast(ct, x.dtype)
    assert ct.shape == x.shape, f"cotangent {ct.type} for {x.type}"
    key = x.key()
    cts[key] = ct if key not in cts else cts[key] + ct


def copy_graph(src: Graph, dst: Graph | None = None, args: list | None = None, keep_ids: bool = False) -> tuple:
    """Copy src's nodes into dst (a new graph by default); `arg` nodes become `args`
    when given. Nested bodies are copied too. Returns (dst, src key -> dst Tensor).
    `keep_ids` (into a new graph) keeps the node numbers, so what is later compiled from
    the copy still points at the original's nodes and their source places."""
    if dst is None:
        dst = Graph(src.name, parent=src.parent)
    if keep_ids:
        dst._next = src._next       # nodes added to the copy get numbers the original never used
    mapping: dict = {}
    for n in src.order():
        data = src.g.nodes[n]
        if data["op"] == "arg" and args is not None:
            mapping[(n, 0)] = args[data["attrs"]["index"]]
            continue
        attrs = {k: (copy_graph(v, keep_ids=keep_ids)[0] if isinstance(v, Graph) else v)
                 for k, v in data["attrs"].items()}
        new = n if keep_ids else dst._next
        dst._next = max(dst._next, new + 1)
        dst.g.add_node(new, **{**data, "attrs": attrs, "types": list(data["types"])})
        for i, x in enumerate(src.inputs(n)):
            m = mapping[x.key()]
            dst.g.add_edge(m.node, new, key=i, out=m.out)
        for j in range(len(data["types"])):
            mapping[(n, j)] = Tensor(dst, new, j)
    if args is None:
        dst.args = [mapping[a.key()] for a in src.args]
        dst.outputs = {k: mapping[t.key()] for k, t in src.outputs.items()}
    return dst, mapping


def reachable(graph: Graph, nodes: list, upstream: bool) -> set:
    """`nodes` and every node they depend on (upstream) or that depends on them: one walk
    for all of them, where a union of per-node ancestors grows as nodes x graph size."""
    step = graph.g.predecessors if upstream else graph.g.successors
    seen, todo = set(nodes), list(nodes)
    while todo:
        for m in step(todo.pop()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def prune(graph: Graph) -> Graph:
    """Remove nodes no output depends on (arguments stay: they are positional)."""
    live = reachable(graph, [t.node for t in graph.outputs.values()], upstream=True)
    dead = [n for n in graph.g.nodes if n not in live and graph.op(n) != "arg"]
    graph.g.remove_nodes_from(dead)
    return graph


@collector_paused()
def train_step(forward: Graph) -> Graph:
    """The train-step graph: loss, metrics and state updates of the forward graph, plus
    `grad:<name>` for every trainable parameter."""
    if "loss" not in forward.outputs:
        raise DlcError("the model has no loss; add a `loss ...` statement to train or check gradients")
    g, _ = copy_graph(forward)
    g.name = "train_step"
    g.outputs = {k: t for k, t in g.outputs.items() if not k.startswith("output:")}
    params = [Tensor(g, n) for n in g.params() if g.attrs(n)["trainable"]]
    loss = g.outputs["loss"]
    with g.at(forward.g.nodes[loss.node]["span"]):
        seed = ops.full(g, (), 1.0, loss.dtype)
    grads = backward(g, [(loss, seed)], params)
    for p, grad in zip(params, grads):
        if grad is None:
            with g.at(g.g.nodes[p.node]["span"]):
                grad = ops.zeros_like(p)
        g.outputs[f"grad:{g.attrs(p.node)['name']}"] = grad
    return prune(g)


# ---- scan ---------------------------------------------------------------------------------------
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
    ny = sum(k.startswith("y") for k in body.outputs)
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


_RECOMPUTE = {"constant", "iota", "dim_size", "broadcast", "reshape", "transpose", "slice", "stop_gradient", "arg"}


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
        if body_key[0] not in varying or body.op(body_key[0]) in _RECOMPUTE:
            continue
        users = [(v, k) for _, v, k, out in bwd.g.out_edges(key[0], keys=True, data="out")
                 if out == key[1] and v not in copy_nodes]
        if users or any(t.key() == key for t in bwd.outputs.values()):
            residuals.append((key, body_key, users))
    if not residuals:
        return []
    # forward: stack each residual along a new leading axis
    first = len(graph.types(n.node))
    for i, (_, body_key, _) in enumerate(residuals):
        t = Tensor(body, *body_key)
        body.outputs[f"saved{i}"] = t
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


PRIMITIVES["scan"].vjp = _scan_vjp  # registered here: it needs the differentiator itself
