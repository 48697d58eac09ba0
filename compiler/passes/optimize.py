"""Graph passes run before lowering, each graph -> graph, and the pass manager.

- **fold**: a node whose operands are all constants is computed now. A result whose
  elements are all equal becomes a scalar `constant` (broadcast to its shape, which may
  be symbolic: `1 - 0` over [B, 256]); another small one a constant tensor.
- **simplify**: rewrites that change no value: x + 0, x - 0, x * 1, x / 1, -(-x),
  views that do nothing or compose (transpose of transpose, reshape of reshape,
  broadcast of broadcast), and a sum of zero-padded pieces with disjoint supports —
  the gradient of slicing a tensor into parts (an LSTM's gates) — which becomes one
  `concat` of the pieces.
- **narrow**: a value read only through one slice is computed only in that slice
  (compiler/passes/narrow.py); the train step narrows its forward pass before it is
  differentiated.
- **cse**: one node for every (op, attributes, operands).
- **dce**: remove what no output needs, including the results and arguments of a
  `scan` that nothing reads (the forward scan then stops stacking them).

Every pass also rewrites the bodies of scans. Nodes keep their numbers and a rewritten
node keeps its source place, so kernels still point at the right source line.
"""

from __future__ import annotations

import sys

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import copy_graph, prune
from dlc.compiler.ir.dims import numel
from dlc.compiler.errors import DlcError
from dlc.compiler.passes.hoist import hoist_accumulators
from dlc.compiler.passes.narrow import narrow
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import Graph, Pattern, Tensor, collector_paused, nested_graphs, to_text
from dlc.compiler.ir.primitives import PRIMITIVES

FOLD_LIMIT = 4096  # elements of the largest constant tensor folding writes into the code
ROUNDS = 4  # the pipeline repeats while it changes something, at most this often


# ---- editing a graph ------------------------------------------------------------------------------
def _rewrite(graph: Graph, n: int, rule) -> bool:
    """Replace node n by rule(graph, n), a tensor of the same type (None: no rewrite).
    New nodes get n's source place; a new node that is the result takes n's place and
    number, an existing one takes over n's readers."""
    start = graph._next
    saved, graph.span = graph.span, graph.nx.nodes[n]["span"]
    try:
        t = rule(graph, n)
    finally:
        graph.span = saved
    if t is None:
        return False
    assert t.type == graph.types(n)[0], f"{graph.op(n)} rewritten to {t.type}"
    if t.node >= start:
        data = graph.nx.nodes[t.node]
        graph.nx.nodes[n].update(op=data["op"], attrs=data["attrs"], types=data["types"])
        graph.nx.remove_edges_from(list(graph.nx.in_edges(n, keys=True)))
        for u, _, k, out in graph.nx.in_edges(t.node, keys=True, data="out"):
            graph.nx.add_edge(u, n, key=k, out=out)
        graph.nx.remove_node(t.node)
    else:
        graph.redirect(n, [t])
        graph.nx.remove_node(n)
    return True


# ---- constants ------------------------------------------------------------------------------------
# Folding computes floats in double precision, rounded once, where used, to the float width
# of the run (as the frontend's own constants are). A constant is the same on every rank,
# so its replica mean is itself.
_FOLDING = Eval()


def _value(graph: Graph, n: int) -> np.ndarray:
    """The value of a constant node, in the dtype folding computes with."""
    return np.asarray(graph.attrs(n)["value"], _FOLDING.np_dtype(graph.types(n)[0].dtype))


def _is_uniform(v: np.ndarray) -> bool:
    """All elements bit-for-bit equal (so -0.0 and 0.0 differ, and NaNs are equal)."""
    flat = np.ascontiguousarray(v).reshape(-1)
    if flat.size == 0:
        return False
    return bool((flat.view(np.uint8).reshape(flat.size, -1) == flat[:1].view(np.uint8)).all())


def _scalar(graph: Graph, t: Tensor):
    """The one value of every element of t, when t is a constant or a broadcast of one
    whose elements are all equal; else None."""
    n = t.node
    if graph.op(n) == "broadcast":
        n = graph.inputs(n)[0].node
    if graph.op(n) != "constant":
        return None
    v = _value(graph, n)
    return v.reshape(-1)[0] if _is_uniform(v) else None


def _array(graph: Graph, t: Tensor):
    """The value of t when it is a constant, or a broadcast of one to a known shape."""
    n = t.node
    if graph.op(n) == "constant":
        return _value(graph, n)
    if (
        graph.op(n) == "broadcast"
        and graph.op(graph.inputs(n)[0].node) == "constant"
        and _known(t.shape)
        and numel(t.shape) <= 16 * FOLD_LIMIT
    ):  # (a sum over it may still be small)
        return np.broadcast_to(_value(graph, graph.inputs(n)[0].node), t.shape)
    return None


def _known(x) -> bool:
    """No symbolic dim anywhere in an attribute or a shape."""
    if isinstance(x, (tuple, list)):
        return all(_known(v) for v in x)
    if isinstance(x, dict):
        return all(_known(v) for v in x.values())
    return isinstance(x, (int, float, str, bool, np.ndarray, np.generic, type(None)))


def _splat(graph: Graph, n: int) -> bool:
    """A broadcast scalar constant: the form folding gives uniform tensors."""
    return (
        graph.op(n) == "broadcast" and graph.op(graph.inputs(n)[0].node) == "constant" and graph.inputs(n)[0].rank == 0
    )


def _evaluate(graph: Graph, n: int, arrays: list):
    try:
        with np.errstate(all="ignore"):
            out = PRIMITIVES[graph.op(n)].impl(_FOLDING, arrays, **graph.attrs(n))[0]
    except DlcError:  # an error of the run (an index out of range): leave it to the run
        return None
    return np.asarray(out, _FOLDING.np_dtype(graph.types(n)[0].dtype))


def _fold_node(graph: Graph, n: int):
    op, ins, typ = graph.op(n), graph.inputs(n), graph.types(n)[0]
    scalars = [_scalar(graph, x) for x in ins]
    prim = PRIMITIVES[op]
    if all(s is not None for s in scalars) and (prim.view or prim.pattern is Pattern.ELEMENTWISE):
        # uniform operands give a uniform result, whatever the (symbolic) shape
        if prim.view:
            return ops.full(graph, typ.shape, scalars[0], typ.dtype)
        value = _evaluate(graph, n, [np.asarray(s) for s in scalars])
        return None if value is None else ops.full(graph, typ.shape, value, typ.dtype)
    arrays = [_array(graph, x) for x in ins]
    if any(a is None for a in arrays) or not _known((typ.shape, graph.attrs(n))) or numel(typ.shape) > FOLD_LIMIT:
        return None
    value = _evaluate(graph, n, arrays)
    if value is None:
        return None
    if _is_uniform(value):
        return ops.full(graph, typ.shape, value.reshape(-1)[0], typ.dtype)
    # the lowering keeps constant tensors as f32 or i32 data
    return ops.constant(graph, value, typ.dtype) if typ.dtype in ("f32", "i32") else None


def fold(graph: Graph) -> Graph:
    """Constant folding. Sources (`random` among them) are left alone."""
    for g in nested_graphs(graph):
        for n in g.order():
            if PRIMITIVES[g.op(n)].pattern not in (Pattern.SOURCE, Pattern.CONTROL) and not _splat(
                g, n
            ):  # sources, loops
                _rewrite(g, n, _fold_node)
    return graph


# ---- algebraic simplification -----------------------------------------------------------------------
# primitive name -> its rewrite: (graph, node) -> a tensor of the node's value, or None. The
# rules are registered by name, beside each rule, as the lowering and export rules are: they
# use this pass's reading of constants, which the records do not hold.
_SIMPLIFY: dict = {}


def _simplifies(name: str):
    def register(rule):
        _SIMPLIFY[name] = rule
        return rule

    return register


def _is(value, target) -> bool:
    return value is not None and value == target


@_simplifies("add")
def _add(g: Graph, n: int):
    x, y = g.inputs(n)
    if _is(_scalar(g, y), 0):  # exact but for the sign of a zero: -0 + 0 is +0
        return x
    if _is(_scalar(g, x), 0):
        return y
    return _disjoint_sum(g, n)


@_simplifies("sub")
def _sub(g: Graph, n: int):
    x, y = g.inputs(n)
    return x if _is(_scalar(g, y), 0) else None


@_simplifies("mul")
def _mul(g: Graph, n: int):
    # x * 0 is not 0 when x is inf or nan, so it stays
    x, y = g.inputs(n)
    if _is(_scalar(g, y), 1):
        return x
    return y if _is(_scalar(g, x), 1) else None


@_simplifies("div")
def _div(g: Graph, n: int):
    x, y = g.inputs(n)
    return x if _is(_scalar(g, y), 1) else None


@_simplifies("neg")
def _neg(g: Graph, n: int):
    x = g.inputs(n)[0]
    return g.inputs(x.node)[0] if g.op(x.node) == "neg" else None


@_simplifies("cast")
def _cast(g: Graph, n: int):
    x = g.inputs(n)[0]
    return x if x.dtype == g.attrs(n)["dtype"] else None


def _one_element(x: Tensor, rank: int) -> bool:
    """x holds one value and broadcasts to any shape of this rank."""
    return numel(x.shape) == 1 and x.rank <= rank


@_simplifies("broadcast")
def _broadcast(g: Graph, n: int):
    x, shape = g.inputs(n)[0], g.attrs(n)["shape"]
    if x.shape == shape:
        return x
    if g.op(x.node) == "broadcast":
        return ops.broadcast_to(g.inputs(x.node)[0], shape)
    if g.op(x.node) == "reshape" and _one_element(g.inputs(x.node)[0], len(shape)):
        return ops.broadcast_to(g.inputs(x.node)[0], shape)
    return None


@_simplifies("reshape")
def _reshape(g: Graph, n: int):
    x, shape = g.inputs(n)[0], g.attrs(n)["shape"]
    if x.shape == shape:
        return x
    if g.op(x.node) == "reshape":
        return ops.reshape(g.inputs(x.node)[0], shape)
    if g.op(x.node) == "broadcast" and _one_element(g.inputs(x.node)[0], len(shape)):
        return ops.broadcast_to(g.inputs(x.node)[0], shape)
    return None


@_simplifies("transpose")
def _transpose(g: Graph, n: int):
    x, perm = g.inputs(n)[0], g.attrs(n)["perm"]
    if perm == tuple(range(len(perm))):
        return x
    if g.op(x.node) == "transpose":
        inner = g.attrs(x.node)["perm"]
        return ops.transpose(g.inputs(x.node)[0], tuple(inner[p] for p in perm))
    return None


@_simplifies("slice")
def _slice(g: Graph, n: int):
    x, a = g.inputs(n)[0], g.attrs(n)
    whole = a["starts"] == (0,) * x.rank and a["stops"] == x.shape and a["steps"] == (1,) * x.rank
    return x if whole else None


@_simplifies("pad")
def _pad(g: Graph, n: int):
    a = g.attrs(n)
    return g.inputs(n)[0] if all(v == 0 for v in (*a["lo"], *a["hi"], *a["interior"])) else None


@_simplifies("concat")
def _concat(g: Graph, n: int):
    ins, axis = g.inputs(n), g.attrs(n)["axis"]
    if len(ins) == 1:
        return ins[0]
    nested = lambda x: g.op(x.node) == "concat" and g.attrs(x.node)["axis"] == axis and g.uses(x) == 1
    if not any(nested(x) for x in ins):
        return None
    return g.add1("concat", [y for x in ins for y in (g.inputs(x.node) if nested(x) else [x])], axis=axis)


@_simplifies("select")
def _select(g: Graph, n: int):
    _, a, b = g.inputs(n)
    return a if a.key() == b.key() else None


def _padded_axis(g: Graph, t: Tensor):
    """The one axis along which t is a zero-padded piece, else None."""
    if g.op(t.node) != "pad":
        return None
    a = g.attrs(t.node)
    if any(i != 0 for i in a["interior"]):
        return None
    axes = [i for i, (lo, hi) in enumerate(zip(a["lo"], a["hi"])) if lo != 0 or hi != 0]
    return axes[0] if len(axes) == 1 else None


def _sum_terms(g: Graph, n: int) -> list:
    """The terms of the sum rooted at add node n (through adds nothing else reads)."""
    terms = []
    for x in g.inputs(n):
        if g.op(x.node) == "add" and g.uses(x) == 1:
            terms += _sum_terms(g, x.node)
        else:
            terms.append(x)
    return terms


def _disjoint_sum(g: Graph, n: int):
    """pad(a) + pad(b) + ... where the pieces sit side by side along one axis, without
    overlapping, is concat(a, zeros, b, ...) (padded at the ends): every element is one
    piece's value plus zeros. With at most one other term the sum keeps its values."""
    readers = [v for _, v in g.nx.out_edges(n)]
    if len(readers) == 1 and g.op(readers[0]) == "add" and g.uses(Tensor(g, n)) == 1:
        return None  # n is inside a larger sum; the rule runs at its root
    terms = _sum_terms(g, n)
    by_axis: dict = {}
    for t in terms:
        axis = _padded_axis(g, t)
        if axis is not None:
            by_axis.setdefault(axis, []).append(t)
    if not by_axis:
        return None
    axis, pads = max(by_axis.items(), key=lambda item: len(item[1]))
    rest = [t for t in terms if all(t is not p for p in pads)]
    if len(pads) < 2 or len(rest) > 1:
        return None
    lo = lambda p: g.attrs(p.node)["lo"][axis]
    offsets = [lo(p) - lo(pads[0]) for p in pads]
    if not all(isinstance(o, int) for o in offsets):
        return None
    pads = [p for _, _, p in sorted(zip(offsets, range(len(pads)), pads))]
    gaps = [lo(p) - (lo(prev) + g.inputs(prev.node)[0].shape[axis]) for prev, p in zip(pads, pads[1:])]
    if not all(isinstance(gap, int) and gap >= 0 for gap in gaps):
        return None  # overlapping pieces, or a gap of unknown size
    pieces = [g.inputs(pads[0].node)[0]]
    for p, gap in zip(pads[1:], gaps):
        piece = g.inputs(p.node)[0]
        if gap:
            shape = list(piece.shape)
            shape[axis] = gap
            pieces.append(ops.full(g, tuple(shape), 0, piece.dtype))
        pieces.append(piece)
    edge = lambda value: tuple(value if i == axis else 0 for i in range(pieces[0].rank))
    joined = ops.pad(
        g.add1("concat", pieces, axis=axis), edge(lo(pads[0])), edge(g.attrs(pads[-1].node)["hi"][axis]), edge(0)
    )
    return g.add1("add", [joined, rest[0]]) if rest else joined


def simplify(graph: Graph) -> Graph:
    """Algebraic simplification; a rewritten node is tried again until no rule applies."""
    for g in nested_graphs(graph):
        for n in g.order():
            while n in g.nx and g.op(n) in _SIMPLIFY and _rewrite(g, n, _SIMPLIFY[g.op(n)]):
                pass
    return graph


# ---- common subexpressions ---------------------------------------------------------------------------
def _hashable(v):
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, Graph):
        return ("body", id(v))
    if isinstance(v, (tuple, list)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, float):
        return ("float", v.hex())  # keeps -0.0 apart from 0.0
    return v


def cse(graph: Graph) -> Graph:
    """Common subexpression elimination by hash-consing in topological order. Inputs,
    parameters and arguments are never merged; `random` nodes are (their numbers are a
    function of the key, the stream and the index)."""
    for g in nested_graphs(graph):
        seen: dict = {}
        for n in g.order():
            op, attrs = g.op(n), g.attrs(n)
            prim = PRIMITIVES[op]
            if prim.given:
                continue
            operands = [t.key() for t in g.inputs(n)]
            if prim.commutative:
                operands.sort()
            if op == "constant":  # 0 and 0.0 are one f32 constant
                attrs = {**attrs, "value": _value(g, n)}
            key = (op, _hashable(sorted(attrs.items())), tuple(operands))
            first = seen.setdefault(key, n)
            if first == n:
                continue
            g.redirect(n, g.outputs_of(first))
            g.nx.remove_node(n)
    return graph


# ---- dead code --------------------------------------------------------------------------------------------
def dce(graph: Graph) -> Graph:
    """Dead code elimination (autodiff.prune), and scans lose the per-step results
    nothing reads and the non-carry arguments their body does not use."""
    prune(graph)
    for n in reversed(graph.order()):  # readers first: a scan sees which results are read
        if n in graph.nx and graph.op(n) == "scan" and _shrink_scan(graph, n):
            prune(graph)
    return graph


def _shrink_scan(graph: Graph, n: int) -> bool:
    """Drop unread stacked results and unused sequence / invariant arguments of scan n;
    True when operands went (their producers may be dead now)."""
    attrs, body = graph.attrs(n), graph.attrs(n)["body"]
    nc = attrs["n_carry"]
    read = {out for _, _, out in graph.nx.out_edges(n, data="out")} | {
        t.out for t in graph.outputs.values() if t.node == n
    }
    names = list(body.outputs)
    keep = [j for j in range(len(names)) if j < nc or j in read]
    if len(keep) < len(names):
        new_index = {j: i for i, j in enumerate(keep)}
        body.outputs = {names[j]: body.outputs[names[j]] for j in keep}
        graph.nx.nodes[n]["types"] = [graph.types(n)[j] for j in keep]
        attrs["ys_axes"] = tuple(attrs["ys_axes"][j - nc] for j in keep[nc:])
        history = tuple(new_index[j] for j in attrs.pop("history", ()) if j in new_index)
        if history:
            attrs["history"] = history
        for _, _, edge in graph.nx.out_edges(n, data=True):
            edge["out"] = new_index[edge["out"]]
        graph.outputs = {
            name: Tensor(graph, n, new_index[t.out]) if t.node == n else t for name, t in graph.outputs.items()
        }
    dce(body)
    returned = {t.key() for t in body.outputs.values()}
    unused = [
        i for i, a in enumerate(body.args) if i >= nc and body.nx.out_degree(a.node) == 0 and a.key() not in returned
    ]
    if not unused:
        return False
    body.nx.remove_nodes_from([body.args[i].node for i in unused])
    body.set_args([a for i, a in enumerate(body.args) if i not in unused])
    attrs["xs_axes"] = tuple(ax for i, ax in enumerate(attrs["xs_axes"]) if nc + i not in unused)
    operands = [t for i, t in enumerate(graph.inputs(n)) if i not in unused]
    graph.nx.remove_edges_from(list(graph.nx.in_edges(n, keys=True)))
    for k, t in enumerate(operands):
        graph.nx.add_edge(t.node, n, key=k, out=t.out)
    return True


# ---- the pass manager --------------------------------------------------------------------------------
PASSES = {"fold": fold, "simplify": simplify, "narrow": narrow, "cse": cse, "dce": dce, "hoist": hoist_accumulators}
PIPELINE = ("fold", "simplify", "narrow", "cse", "dce", "hoist")


def _fingerprint(graph: Graph) -> tuple:
    """Changes whenever a pass changed the graph: its nodes, edges and outputs."""
    return tuple(
        (
            sorted((n, d["op"], len(d["types"])) for n, d in g.nx.nodes(data=True)),
            sorted(g.nx.edges(keys=True, data="out")),
            tuple((k, t.key()) for k, t in g.outputs.items()),
        )
        for g in nested_graphs(graph)
    )


@collector_paused()
def optimize(graph: Graph, passes=PIPELINE, dump: str | None = None, dump_to=None) -> Graph:
    """Run `passes` (names of PASSES) in order on a copy of the graph, again while a
    round changes something (at most ROUNDS rounds). `dump` names a pass, or "all":
    the graph's text is written after it (when it changed the graph, and always in
    the first round) to `dump_to`, a stream or a function of the text (stderr)."""
    unknown = [p for p in passes if p not in PASSES] + ([dump] if dump not in (None, "all", *PASSES) else [])
    if unknown:
        raise ValueError(f"no graph pass {unknown[0]!r}; the passes are {', '.join(PASSES)}")
    write = dump_to if callable(dump_to) else (dump_to or sys.stderr).write
    g, _ = copy_graph(graph, keep_ids=True)
    start = _fingerprint(g)  # once a round (and around a dumped pass): a large graph's takes a tenth of a second
    for round_ in range(1, ROUNDS + 1):
        for name in passes:
            shown = dump in (name, "all")
            before = _fingerprint(g) if shown and round_ > 1 else None
            g = PASSES[name](g)
            if shown and (before is None or _fingerprint(g) != before):
                write(f"// {g.name} after {name} (round {round_})\n{to_text(g)}\n")
        end = _fingerprint(g)
        if end == start:
            break
        start = end
    return g
