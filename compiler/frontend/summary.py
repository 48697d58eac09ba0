"""Model summaries: one table of the model's layers, nested as its calls are, with their
types, output shapes, parameters and forward FLOPs; the totals.

The layers are the graph's own (graph.layer_tree: what the graph page and `dlc graph
--format dot` draw); their types are the defs whose calls made them (Model.layer_types).
A layer's parameters and FLOPs include those of the layers in it."""

from __future__ import annotations

from dlc.compiler.errors import plural
from dlc.compiler.ir.dims import Dim, numel, shape_str, subs
from dlc.compiler.ir.graph import ITEMSIZE, Graph, layer_of, layer_parent, layer_tree
from dlc.compiler.frontend.model import Model


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
    lines.append(f"  parameters: {total:,} in {plural(len(model.params), 'tensor')} ({trainable:,} trainable)")
    return "\n".join(lines)


def table(headers, rows, left: int = 2) -> list:
    """Rows under a header between rules; the first `left` columns read from the left."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(
        str(v).ljust(w) if i < left else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths))
    ).rstrip()
    rule = "-" * max(len(line(r)) for r in [headers] + rows)
    return [rule, line(headers), rule] + [line(r) for r in rows] + [rule]


def in_layer(name: str, layer: str) -> bool:
    """A parameter's or layer's dotted name lies in `layer` (itself, or under it)."""
    return name == layer or name.startswith(layer + ".")


def layer_outputs(graph: Graph) -> dict:
    """Each layer -> the type of the value it hands on: of the last of its nodes (its layers'
    included), in graph order, that a node outside it reads or that is an output of the
    graph (state updates aside)."""
    shown = {(t.node, t.out) for key, t in graph.outputs.items() if not key.startswith("update:")}
    found: dict = {}
    for n in graph.order():
        leaving = [(out, layer_of(graph, v)) for _, v, out in graph.nx.out_edges(n, data="out")]
        leaving += [(j, None) for j in range(len(graph.types(n))) if (n, j) in shown]
        for out, reader in leaving:
            layer = layer_of(graph, n)
            while layer and (reader is None or not in_layer(reader, layer)):  # the layers the value leaves
                found[layer] = graph.types(n)[out]
                layer = layer_parent(layer)
    return found


def layer_levels(graph: Graph, depth: int | None = None) -> list:
    """(layer, level) of every layer of graph.layer_tree down to `depth` levels (None: all),
    each before the layers it holds."""
    tree = layer_tree(graph)
    out = []

    def visit(layer: str, level: int):
        for child in tree[layer][0] if depth is None or level < depth else ():
            out.append((child, level))
            visit(child, level + 1)

    visit("", 0)
    return out


def layer_rows(model: Model, sizes: dict, frozen=(), depth: int | None = None) -> list:
    """(indented name, type, output shape, parameters, FLOPs) of every layer down to `depth`
    levels (None: all), a parameter a level below its layer; FLOPs at `sizes` (dims not
    given stay symbols)."""
    graph = model.graph
    tree = layer_tree(graph)
    per_node = {n: graph.node_flops(n) for n in graph.nx.nodes}
    outputs = layer_outputs(graph)

    def layer_flops(layer: str):
        layers, nodes = tree[layer]
        return sum((per_node[n] for n in nodes), 0) + sum((layer_flops(c) for c in layers), 0)

    own: dict = {}  # layer -> its own parameters
    counts: dict = {}  # layer -> its parameters' sizes, the layers' in it included
    for p in model.params:
        layer = p.name.rpartition(".")[0]
        own.setdefault(layer, []).append(p)
        while layer:
            counts[layer] = counts.get(layer, 0) + numel(p.type.shape)
            layer = layer_parent(layer)

    def param_rows(layer: str, level: int) -> list:
        if depth is not None and level >= depth:
            return []
        kind = lambda p: "param" if p.trainable and p.name not in frozen else ("frozen" if p.trainable else "state")
        return [
            ("  " * level + p.name, kind(p), str(p.type), f"{numel(p.type.shape):,}", "") for p in own.get(layer, [])
        ]

    rows = param_rows("", 0)
    for layer, level in layer_levels(graph, depth):
        rows.append(
            (
                "  " * level + layer,
                model.layer_types.get(layer, ""),
                str(outputs.get(layer, "")),
                f"{counts.get(layer, 0):,}",
                count_text(subs(layer_flops(layer), sizes)),
            )
        )
        rows += param_rows(layer, level + 1)
    return rows


def memory_table(model: Model, parts: dict, sizes: dict, depth: int | None = None, optimizer: str = "") -> str:
    """The peak memory of training by layer and in total: `parts` is budget.training_memory's
    (layer -> bytes by part; the activations polynomials in the dims), each row counting the
    layers in it; the last column at `sizes`."""
    at = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    names = ("activations", "parameters", "gradients", "optimizer state")
    sum_parts = lambda keep: {name: sum((p[name] for layer, p in parts.items() if keep(layer)), 0) for name in names}
    shown = lambda n: size_text(n) if n else "-"

    def row(name: str, level: int, part: dict) -> tuple:
        return (
            "  " * level + name,
            count_text(part["activations"]),
            *(shown(part[n]) for n in names[1:]),
            size_text(sum(subs(part[n], sizes) for n in names)),
        )

    rows = [
        row(layer, level, sum_parts(lambda k: in_layer(k, layer))) for layer, level in layer_levels(model.graph, depth)
    ]
    tops = [top for top, _ in layer_levels(model.graph, 1)]
    outside = sum_parts(lambda k: not any(in_layer(k, top) for top in tops))
    if any(outside.values()):
        rows.append(row("(no layer)", 0, outside))
    total = sum_parts(lambda k: True)
    out = [
        f"Model: {model.name}: the peak memory of training (native engine), located at {at}",
        "Activations: the values held at the train step's fullest kernel, the inputs, outputs and constants",
        "",
    ]
    out += table(
        ("Layer", "Activations (bytes)", "Parameters", "Gradients", "Optimizer state", f"At {at}"), rows, left=1
    )
    whole = sum((total[n] for n in names), 0)
    out.append(f"Activations:      {count_text(total['activations'])} bytes")
    out.append(f"Parameters:       {size_text(total['parameters'])}")
    out.append(f"Gradients:        {size_text(total['gradients'])}")
    out.append(f"Optimizer state:  {size_text(total['optimizer state'])}" + (f" ({optimizer})" if optimizer else ""))
    out.append(f"Peak:             {count_text(whole)} bytes: {size_text(subs(whole, sizes))} at {at}")
    return "\n".join(out)


def summary(model: Model, frozen=(), depth: int | None = None, sizes: dict | None = None) -> str:
    """The layer table and the totals; FLOPs at `sizes` ({"B": 128}), else as polynomials."""
    sizes = sizes or {}
    at = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    out = [f"Model: {model.name}", ""]
    out += table(
        ("Layer", "Type", "Output shape", "Params", f"FLOPs ({at})" if at else "FLOPs"),
        layer_rows(model, sizes, frozen, depth),
        left=3,
    )
    total = sum(numel(p.type.shape) for p in model.params)
    trainable = sum(numel(p.type.shape) for p in model.params if p.trainable and p.name not in frozen)
    nbytes = sum(numel(p.type.shape) * ITEMSIZE[p.type.dtype] for p in model.params)
    out.append(f"Total parameters:         {total:,} ({size_text(nbytes)})")
    out.append(f"Trainable parameters:     {trainable:,}")
    out.append(f"Non-trainable parameters: {total - trainable:,}")
    out.append(
        f"Forward FLOPs:            {count_text(subs(model.graph.flops(), sizes))}" + (f" at {at}" if at else "")
    )
    return "\n".join(out)


def int8_table(model: Model) -> str:
    """`dlc summary --int8`: each matmul and convolution of the evaluation graph at its line,
    integer or float32 and why (compiler/passes/int8.py)."""
    from dlc.compiler.passes.int8 import products, scanned_products

    found = products(model.graph)
    rows = [[_line(p.span), p.op, p.weight or "-", "int8" if p.integer else "float32", p.reason] for p in found]
    totals = [
        f"{sum(p.integer for p in found)} of {len(found)} products in int8; the rest of the graph runs in float32"
    ]
    inside = scanned_products(model.graph)
    if inside:
        totals.append(f"float32 too: {plural(inside, 'product')} inside scans (recurrences)")
    return _products_table(["Line", "Product", "Weights", "Runs in", "Why not int8"], rows, totals, model.graph)


def bf16_table(found: list, graph: Graph) -> str:
    """`dlc summary --bf16`: each matmul, convolution and convolution gradient of the train
    step `graph` (`found`: compiler/native/bf16.py `products`, which the front end cannot
    import) at its line, with its operands' shapes and the kernel that computes it, bf16 or
    float32 and why."""
    rows = [
        [
            _line(p.span),
            p.op,
            ", ".join(map(shape_str, p.operands)),
            p.kernel.replace("_", " "),
            "bf16" if p.bf16 else "float32",
            p.reason,
        ]
        for p in found
    ]
    totals = [
        f"{sum(p.bf16 for p in found)} of {len(found)} products in bf16 (operands rounded to bfloat16, sums in "
        "float32); the rest of the step runs in float32"
    ]
    return _products_table(["Line", "Product", "Operands", "Kernel", "Runs in", "Why float32"], rows, totals, graph)


def _line(span) -> str:
    """A product's line in the user's file."""
    return (span.caller or span).short() if span else "?"


def _products_table(headers: list, rows: list, totals: list, graph: Graph) -> str:
    """The table of `dlc summary --int8` or `--bf16`, its totals under it, and the fused
    attentions, whose products stay float32 either way."""
    lines = table(headers, rows, left=len(headers)) if rows else []
    lines += totals
    fused = len(graph.nodes_with("attention"))
    if fused:
        lines.append(f"float32 too: the products of {plural(fused, 'fused attention')} (softmax(q kᵀ) v)")
    return "\n".join(lines)
