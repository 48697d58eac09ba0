"""Reverse-mode automatic differentiation, graph -> graph.

`backward` walks a graph from its seeds towards the values we differentiate with
respect to, calling each primitive's VJP rule; the rules emit the gradient nodes into
the same graph. `train_step` turns a model's forward graph into the train-step graph:
loss, metrics, state updates and the gradient of every trainable parameter.

`scan` is differentiated into a reverse scan (backprop through time, not unrolled):
the forward scan also stacks the carry entering every step, and the reverse scan's
body recomputes one forward step from it and applies the body's own VJP (scan.py).
"""

from __future__ import annotations

from dlc.compiler.ir import ops
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import PRIMITIVES, Graph, Tensor, collector_paused
from dlc.compiler.passes.narrow import narrow


def backward(graph: Graph, seeds: list, wrt: list) -> list:
    """Cotangents of `wrt` given (tensor, cotangent) seeds, emitted into `graph`."""
    relevant = reachable(graph, [t.node for t, _ in seeds], upstream=True) & reachable(
        graph, [t.node for t in wrt], upstream=False
    )
    cts: dict = {}
    for t, ct in seeds:
        if ct is not None and t.node in relevant:
            _accumulate(cts, t, ct)
    for n in reversed(graph.order()):
        if n not in relevant or PRIMITIVES[graph.op(n)].given:
            continue
        outs = [cts.get((n, j)) for j in range(len(graph.types(n)))]
        if all(c is None for c in outs):
            continue
        prim = PRIMITIVES[graph.op(n)]
        view = graph.view(n)
        if prim.vjp is None:
            raise _not_differentiable(graph, n)
        first = graph._next
        with graph.at(view.span):
            in_cts = prim.vjp(view, outs)
            for x, ct in zip(view.inputs, in_cts):
                if ct is not None and x.node in relevant and x.type.is_float:
                    _accumulate(cts, x, ct)
        for m in range(first, graph._next):  # what differentiates n (graph.layer_of); a node
            if "layer" not in graph.nx.nodes[m]:  # with a layer computes n's forward again (scan.py)
                graph.nx.nodes[m]["grad_of"] = n
    return [cts.get(t.key()) for t in wrt]


def _not_differentiable(graph: Graph, n: int) -> DlcError:
    """The error for node n, whose primitive has no VJP, at the user's line: a node a VJP
    rule made is refused as the second derivative of the op that rule differentiates."""
    data = graph.nx.nodes[n]
    if "grad_of" not in data:
        return DlcError.at_user_line(f"cannot differentiate through {data['op']}", data["span"])
    of = graph.op(data["grad_of"]) if data["grad_of"] in graph.nx else data["op"]
    span = data["span"] and (data["span"].caller or data["span"])
    line = f" (line {span.line})" if span else ""
    return DlcError.at_user_line(
        f"the second derivative of {of}{line} is not available: {data['op']}, in its gradient, has no VJP", data["span"]
    )


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
        dst._next = src._next  # nodes added to the copy get numbers the original never used
    mapping: dict = {}
    for n in src.order():
        data = src.nx.nodes[n]
        if data["op"] == "arg" and args is not None:
            mapping[(n, 0)] = args[data["attrs"]["index"]]
            continue
        attrs = {
            k: (copy_graph(v, keep_ids=keep_ids)[0] if isinstance(v, Graph) else v) for k, v in data["attrs"].items()
        }
        new = n if keep_ids else dst._next
        dst._next = max(dst._next, new + 1)
        dst.nx.add_node(new, **{**data, "attrs": attrs, "types": list(data["types"])})
        for i, x in enumerate(src.inputs(n)):
            m = mapping[x.key()]
            dst.nx.add_edge(m.node, new, key=i, out=m.out)
        for j in range(len(data["types"])):
            mapping[(n, j)] = Tensor(dst, new, j)
    if not keep_ids:  # a gradient node names the node it differentiates by its number in dst
        for n, of in src.nx.nodes(data="grad_of"):
            if of is not None:
                dst.nx.nodes[mapping[(n, 0)].node]["grad_of"] = mapping[(of, 0)].node if (of, 0) in mapping else None
    if args is None:
        dst.args = [mapping[a.key()] for a in src.args]
        dst.outputs = {k: mapping[t.key()] for k, t in src.outputs.items()}
    return dst, mapping


def reachable(graph: Graph, nodes: list, upstream: bool) -> set:
    """`nodes` and every node they depend on (upstream) or that depends on them: one walk
    for all of them, where a union of per-node ancestors grows as nodes x graph size."""
    step = graph.nx.predecessors if upstream else graph.nx.successors
    seen, todo = set(nodes), list(nodes)
    while todo:
        for m in step(todo.pop()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def prune(graph: Graph, keep=()) -> Graph:
    """Remove nodes no output (and no node of `keep`) depends on; arguments stay: they are
    positional."""
    live = reachable(graph, [t.node for t in graph.outputs.values()] + list(keep), upstream=True)
    dead = [n for n in graph.nx.nodes if n not in live and graph.op(n) != "arg"]
    graph.nx.remove_nodes_from(dead)
    return graph


@collector_paused()
def train_step(forward: Graph) -> Graph:
    """The train-step graph: loss, metrics and state updates of the forward graph, plus
    `grad:<name>` for every trainable parameter."""
    if "loss" not in forward.outputs:
        raise DlcError("the model has no loss; add a `loss ...` statement to train or check gradients")
    g, _ = copy_graph(forward, keep_ids=True)  # node n of the forward graph is node n here
    g.name = "train_step"
    g.outputs = {k: t for k, t in g.outputs.items() if not k.startswith("output:")}
    params = [Tensor(g, n) for n in g.params() if g.attrs(n)["trainable"]]
    narrow(prune(g, keep=[p.node for p in params]))  # a value the loss reads in part is computed in part
    loss = g.outputs["loss"]
    with g.at(g.nx.nodes[loss.node]["span"]):  # (a narrowed loss is a node of its own)
        seed = ops.full(g, (), 1.0, loss.dtype)
    grads = backward(g, [(loss, seed)], params)
    for p, grad in zip(params, grads):
        if grad is None:
            with g.at(g.nx.nodes[p.node]["span"]):
                grad = ops.zeros_like(p)
        g.outputs[f"grad:{g.attrs(p.node)['name']}"] = grad
    return prune(g)


@collector_paused()
def hvp_graph(forward: Graph) -> Graph:
    """The Hessian-vector product graph of the forward graph's loss: for every trainable
    parameter an input `v:NAME`, its part of the direction v, and the outputs `grad:NAME`
    and `hvp:NAME`, its part of H v (H the Hessian of the loss), with `loss`.

    Reverse over reverse: H v is the gradient of <grad L, v> with respect to the
    parameters, one more `backward` through the train-step graph (the VJP of every
    primitive is built of differentiable primitives)."""
    g = train_step(forward)
    g.name = "hvp"
    g.outputs = {k: t for k, t in g.outputs.items() if k == "loss" or k.startswith("grad:")}
    trainable = [n for n in forward.params() if forward.attrs(n)["trainable"]]
    if not trainable:
        return prune(g)
    directional = []
    for n in trainable:
        name = forward.attrs(n)["name"]
        with g.at(forward.nx.nodes[n]["span"]):
            v = g.add1("input", type=forward.types(n)[0], name=f"v:{name}")
            directional.append(ops.sum_(g.outputs[f"grad:{name}"] * v))
    with g.at(forward.nx.nodes[forward.outputs["loss"].node]["span"]):
        total = directional[0]
        for d in directional[1:]:
            total = total + d
        seed = ops.full(g, (), 1.0, total.dtype)
    params = [Tensor(g, n) for n in trainable if n in g.nx]  # a parameter the loss does not read was pruned
    hvps = dict(zip([p.node for p in params], backward(g, [(total, seed)], params)))
    for n in trainable:
        hvp = hvps.get(n)
        if hvp is None:
            with g.at(forward.nx.nodes[n]["span"]):
                hvp = ops.full(g, forward.types(n)[0].shape, 0, forward.types(n)[0].dtype)
        g.outputs[f"hvp:{forward.attrs(n)['name']}"] = hvp
    return prune(g)
