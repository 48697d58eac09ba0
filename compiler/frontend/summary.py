"""Model summaries: one table of the model's layers, nested as its calls are, with their
types, output shapes, parameters and forward FLOPs; the totals.

The layers are the graph's own (graph.layer_tree: what the graph page and `dlc graph
--format dot` draw); their types are the defs whose calls made them (Model.layer_types).
A layer's parameters and FLOPs include those of the layers in it."""
from __future__ import annotations

from dlc.compiler.ir.dims import Dim, numel, subs
from dlc.compiler.ir.graph import PRIMITIVES, Graph, layer_tree
from dlc.compiler.frontend.model import Model
from dlc.compiler.native.memory import ITEMSIZE


def flops(graph: Graph):
    """Floating-point operations of one run of the graph, as a polynomial in its dims."""
    total = 0
    for n in graph.g.nodes:
        total = total + node_flops(graph, n)
    return total


def node_flops(graph: Graph, n: int):
    """Floating-point operations of node n (0 for an op that counts none)."""
    prim = PRIMITIVES[graph.op(n)]
    if prim.flops is None:
        return 0
    return prim.flops([t.type for t in graph.inputs(n)], graph.types(n), **graph.attrs(n))


def count_text(d) -> str:
    """1070848*B -> '1,070,848·B'."""
    if not isinstance(d, Dim):
        return f"{d:,}"
    parts = []
    for m in sorted(d.terms, key=lambda m: (-len(m), m)):
        c = d.terms[m]
        parts.append(f"{c:,}" + "".join(f"·{s}" for s in m))
    return " + ".join(parts).replace("+ -", "- ")


def size_text(n: int) -> str:
    """Bytes in the largest binary unit that keeps a digit before the point: 241.0 KiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def signature(model: Model) -> str:
    lines = [f"model {model.name}"]
    for inp in model.inputs:
        kind = "target" if inp.is_target else "input"
        lines.append(f"  {kind:<7} {inp.name}: {inp.type}")
    for key, t in model.graph.outputs.items():
        kind, _, name = key.partition(":")
        if kind in ("output", "metric"):
            lines.append(f"  {kind:<7} {name}: {t.type}")
    if "loss" in model.graph.outputs:
        lines.append(f"  loss    {model.graph.outputs['loss'].type}")
    trainable = sum(numel(p.type.shape) for p in model.params if p.trainable)
    total = sum(numel(p.type.shape) for p in model.params)
    lines.append(f"  parameters: {total:,} in {len(model.params)} tensors ({trainable:,} trainable)")
    return "\n".join(lines)


def table(headers, rows, left: int = 2) -> list:
    """Rows under a header between rules; the first `left` columns read from the left."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).ljust(w) if i < left else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * max(len(line(r)) for r in [headers] + rows)
    return [rule, line(headers), rule] + [line(r) for r in rows] + [rule]


def in_layer(name: str, layer: str) -> bool:
    """A parameter's or layer's dotted name lies in `layer` (itself, or under it)."""
    return name == layer or name.startswith(layer + ".")


def layer_output(graph: Graph, tree: dict, layer: str):
    """The type of the value a layer hands on: the last of its nodes (its layers' included)
    that a node outside it reads or that is an output of the graph (state updates aside)."""
    mine = set()
    stack = [layer]
    while stack:
        layers, nodes = tree[stack.pop()]
        mine.update(nodes)
        stack += layers
    shown = {(t.node, t.out) for key, t in graph.outputs.items() if not key.startswith("update:")}
    last = None
    for n in graph.order():
        if n in mine:
            for _, v, out in graph.g.out_edges(n, data="out"):
                if v not in mine:
                    last = (n, out)
            for j in range(len(graph.types(n))):
                if (n, j) in shown:
                    last = (n, j)
    return graph.types(last[0])[last[1]] if last else None


def layer_rows(model: Model, sizes: dict, frozen=(), depth: int | None = None) -> list:
    """(indented name, type, output shape, parameters, FLOPs) of every layer down to `depth`
    levels (None: all), a parameter a level below its layer; FLOPs at `sizes` (dims not
    given stay symbols)."""
    graph = model.graph
    tree = layer_tree(graph)
    per_node = {n: node_flops(graph, n) for n in graph.g.nodes}

    def layer_flops(layer: str):
        layers, nodes = tree[layer]
        return sum((per_node[n] for n in nodes), 0) + sum((layer_flops(c) for c in layers), 0)

    def param_row(p, level: int) -> tuple:
        kind = "param" if p.trainable and p.name not in frozen else ("frozen" if p.trainable else "state")
        return ("  " * level + p.name, kind, str(p.type), f"{numel(p.type.shape):,}", "")

    rows = []

    def visit(layer: str, level: int):
        if depth is not None and level >= depth:
            return
        for p in model.params:
            if p.name.rpartition(".")[0] == layer:
                rows.append(param_row(p, level))
        for child in tree[layer][0]:
            count = sum(numel(p.type.shape) for p in model.params if in_layer(p.name, child))
            out = layer_output(graph, tree, child)
            rows.append(("  " * level + child, model.layer_types.get(child, ""), str(out or ""),
                         f"{count:,}", count_text(subs(layer_flops(child), sizes))))
            visit(child, level + 1)
    visit("", 0)
    return rows


def summary(model: Model, frozen=(), depth: int | None = None, sizes: dict | None = None) -> str:
    """The layer table and the totals; FLOPs at `sizes` ({"B": 128}), else as polynomials."""
    sizes = sizes or {}
    at = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    out = [f"Model: {model.name}", ""]
    out += table(("Layer", "Type", "Output shape", "Params", f"FLOPs ({at})" if at else "FLOPs"),
                 layer_rows(model, sizes, frozen, depth), left=3)
    total = sum(numel(p.type.shape) for p in model.params)
    trainable = sum(numel(p.type.shape) for p in model.params if p.trainable and p.name not in frozen)
    nbytes = sum(numel(p.type.shape) * ITEMSIZE[p.type.dtype] for p in model.params)
    out.append(f"Total parameters:         {total:,} ({size_text(nbytes)})")
    out.append(f"Trainable parameters:     {trainable:,}")
    out.append(f"Non-trainable parameters: {total - trainable:,}")
    out.append(f"Forward FLOPs:            {count_text(subs(flops(model.graph), sizes))}" + (f" at {at}" if at else ""))
    return "\n".join(out)
