"""narrow: a value that is only read in part is computed only in part.

A node whose every reader is the same slice of it is computed on the matching slices of its
operands instead (its primitive's `narrow` rule, compiler/ir/primitives.py; an elementwise
op's is `_elementwise` here), and the new slices move on towards the sources
until an op has no rule or another reader needs the value whole. A classifier that reads
the first token's state of a transformer (BERT's pooler, `h[:, 0]`) so computes its last
layer's feed-forward, output projection, queries and attention for that token alone, not
for the whole sequence; keys and values, which every query reads, stay whole. Its
gradient, differentiated after (passes/autodiff.py `train_step`), is narrow too.

Each element read is computed by the same operations on the same operands as in the whole
computation, so dlc's kernels, which sum each element of a product in one order whatever its
shape, give it the same bits (an engine whose products sum in another order for fewer rows,
numpy's BLAS, may round it otherwise); the gradient's sums no longer add the zeros the
slice's gradient was padded with, which changes only their rounding.
"""

from __future__ import annotations

from dlc.compiler.ir import ops
from dlc.compiler.ir.graph import Graph, Pattern, nested_graphs
from dlc.compiler.ir.primitives import PRIMITIVES


def narrow(graph: Graph) -> Graph:
    """Narrow every node read through slices only (module docstring), in place."""
    for g in nested_graphs(graph):
        work = [n for n in g.order() if g.op(n) == "slice"]
        while work:
            n = work.pop()
            if n not in g.nx or g.op(n) != "slice":
                continue
            start = g._next
            if _narrowed(g, n) is not None:
                work += [m for m in range(start, g._next) if m in g.nx and g.op(m) == "slice"]
    return graph


def _slicing(g: Graph, n: int) -> tuple:
    a = g.attrs(n)
    return tuple(a["starts"]), tuple(a["stops"]), tuple(a["steps"])


def _narrowed(g: Graph, n: int):
    """Slice n's operand computed narrow, in n's place, when its every reader is a slice like
    n (the others then read n); None when it stays whole."""
    x = g.inputs(n)[0]
    slicing = _slicing(g, n)
    readers = [v for _, v, out in g.nx.out_edges(x.node, data="out") if out == x.out]
    if (
        x.out != 0  # a rule gives a node's first result
        or g.uses(x) != len(readers)  # a graph output reads it whole
        or any(g.op(v) != "slice" or _slicing(g, v) != slicing for v in readers)
    ):
        return None
    prim = PRIMITIVES[g.op(x.node)]
    rule = prim.narrow or (_elementwise if prim.pattern is Pattern.ELEMENTWISE else None)
    if rule is None:
        return None
    saved, g.span = g.span, g.nx.nodes[x.node]["span"]  # the narrow nodes keep the source place
    try:
        t = rule(g.view(x.node), slicing)
    finally:
        g.span = saved
    if t is None:
        return None
    assert t.type == g.types(n)[0], f"{prim.name} narrowed to {t.type}"
    for v in set(readers):
        g.redirect(v, [t])
        g.nx.remove_node(v)
    _drop_unread(g, x.node)
    return t


def _drop_unread(g: Graph, n: int):
    """Node n, which nothing reads now, and the producers only it read: their readers must
    count true for the narrowings after."""
    work = [n]
    while work:
        m = work.pop()
        if m not in g.nx or g.nx.out_degree(m) or PRIMITIVES[g.op(m)].given:
            continue
        if any(g.outputs.readers(t.key()) for t in g.outputs_of(m)):
            continue
        work += list(g.nx.predecessors(m))
        g.nx.remove_node(m)


def _elementwise(n, slicing: tuple):
    """Each element from the same element of each operand (all of one shape)."""
    return n.graph.add1(n.graph.op(n.node), [ops.slice_axes(t, slicing, range(t.rank)) for t in n.inputs], **n.attrs)
