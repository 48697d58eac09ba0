"""Model summaries: parameter table, binding shapes, totals and forward FLOPs."""
from __future__ import annotations

from dlc.compiler.ir.dims import Dim, numel
from dlc.compiler.ir.graph import PRIMITIVES, Graph
from dlc.compiler.frontend.model import Model


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


def _table(headers, rows) -> list:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).ljust(w) if i == 0 or i == 1 else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * max(len(line(r)) for r in [headers] + rows)
    return [rule, line(headers), rule] + [line(r) for r in rows] + [rule]


def summary(model: Model, frozen=()) -> str:
    out = [f"Model: {model.name}", ""]
    rows = []
    for p in model.params:
        trainable = p.trainable and p.name not in frozen
        rows.append((p.name, str(p.type), f"{numel(p.type.shape):,}", "yes" if trainable else "no"))
    out += _table(("Parameter", "Shape", "Count", "Trainable"), rows)
    out.append("")
    brows = [(name, str(t)) for name, t, _ in model.bindings]
    for key, t in model.graph.outputs.items():
        if key.startswith("output:") or key == "loss":
            brows.append((key.replace("output:", "output "), str(t.type)))
    out += _table(("Binding", "Output shape"), brows)
    total = sum(numel(p.type.shape) for p in model.params)
    trainable = sum(numel(p.type.shape) for p in model.params if p.trainable and p.name not in frozen)
    out.append(f"Total parameters:         {total:,}")
    out.append(f"Trainable parameters:     {trainable:,}")
    out.append(f"Non-trainable parameters: {total - trainable:,}")
    out.append(f"Forward FLOPs:            {count_text(flops(model.graph))}")
    return "\n".join(out)
