"""check_numerics (`dlc train --check-numerics`): the first non-finite value of a train
step, traced to the operation that made it from finite inputs.

The reference engine evaluates its step with `Watching`, which tests every node's values
as the interpreter computes them. The native engine tests each kernel's outputs after it
runs (runtime/engines/native.py); at the first non-finite one it stops and evaluates the
step again here (`locate`) to find, among the nodes the fusion put in that kernel (or in
a scan's body, for a scan), the one that made the value. A node that only passes a NaN on has a
non-finite input, so it is never the one named: the origin is the first node whose
values are not finite while its inputs are. The report (`NonFinite`) names its `.dl`
line (the user's call for a line of the standard library, as compile errors do), the
operation, for a node of the backward pass the forward operation it differentiates, the
scan step it ran in and the ranges of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import Graph, nested_graphs
from dlc.runtime.engines import interpreter


# the largest magnitude whose square float32 holds: a product of two values beyond it overflows
PRODUCT_LIMIT = float(np.sqrt(np.finfo(np.float32).max))


def beyond_products(params: dict) -> dict:
    """The largest magnitude of each float parameter beyond PRODUCT_LIMIT, by name: the
    parameters of a run that has diverged (a NaN has no magnitude and is left to the loss's check)."""
    out = {}
    for name, v in params.items():
        if v.dtype.kind == "f" and v.size:
            largest = max(abs(float(v.max())), abs(float(v.min())))
            if largest > PRODUCT_LIMIT:
                out[name] = largest
    return out


class NonFinite(DlcError):
    """A step's first non-finite value, at the line of the operation that made it; the
    trainer adds the step and the batch."""


@dataclass
class Origin:
    """The node that made a non-finite value from finite inputs: its graph (a scan's body
    for a node in a loop), its float inputs and outputs, and the steps of the scans it
    ran in, outermost first."""

    graph: Graph
    node: int
    inputs: list
    outputs: list
    steps: tuple

    def error(self) -> NonFinite:
        g, data = self.graph, self.graph.nx.nodes[self.node]
        kinds = [
            kind
            for kind, test in (("nan", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf))
            if any(test(v).any() for v in self.outputs)
        ]
        bad = " and ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        op, span = data["op"], data["span"]
        if op in ("input", "param"):
            kind = "input" if op == "input" else "parameter"
            return NonFinite.at_user_line(f"the {kind} '{data['attrs']['name']}' holds {bad}", span)
        line = (span.caller or span).line if span is not None else "?"
        of = data.get("grad_of")
        if of is not None and of in g.nx:
            what, stage = f"the gradient of line {line}'s `{g.op(of)}` (its `{op}`)", "backward"
        else:
            what, stage = f"line {line}'s `{op}`", "forward"
        inside = f" ({span.place()} in the standard library)" if span is not None and span.caller else ""
        step = ""
        if self.steps:
            step = (
                f" at step {self.steps[0]} of its scan"
                if len(self.steps) == 1
                else f" at steps {', '.join(map(str, self.steps))} of its nested scans"
            )
        ranges = " and ".join(f"[{v.min():.4g}, {v.max():.4g}]" if v.size else "[] (empty)" for v in self.inputs)
        given = f"from finite inputs in {ranges}" if ranges else "from no inputs"
        return NonFinite.at_user_line(f"{bad} first came from {what}{inside}{step}, in the {stage} pass, {given}", span)


class OriginFound(Exception):
    """Stops the evaluation at the origin."""

    def __init__(self, origin: Origin):
        super().__init__(origin)
        self.origin = origin


def _floats(arrays) -> list:
    return [a for a in arrays if np.issubdtype(a.dtype, np.floating)]


def finite(a: np.ndarray) -> bool:
    return not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all())


class Watching(Eval):
    """An evaluation that stops (`OriginFound`) at the first node whose values are not finite
    while its inputs are, among those `allowed(graph, node)` names (None: any)."""

    def __init__(self, *args, allowed=None):
        super().__init__(*args)
        self.allowed = allowed

    def computed(self, graph: Graph, n: int, inputs: list, values: dict):
        outputs = _floats(values[(n, j)] for j in range(len(graph.types(n))))
        if all(map(finite, outputs)):
            return
        given = _floats(values[k] for k in inputs)
        if all(map(finite, given)) and (self.allowed is None or self.allowed(graph, n)):
            raise OriginFound(Origin(graph, n, given, outputs, self.steps))


def run(graph: Graph, feeds: dict, params: dict, replicas=None, allowed=None, bf16=None) -> dict:
    """interpreter.run, watched (Watching): raises the NonFinite of the first non-finite value."""
    try:
        return interpreter.run(
            graph, feeds, params, replicas=replicas, bf16=bf16, evaluator=lambda *args: Watching(*args, allowed=allowed)
        )
    except OriginFound as found:
        raise found.origin.error() from None


def locate(graph: Graph, feeds: dict, params: dict, nodes: set) -> NonFinite | None:
    """The NonFinite of a step in which the native engine found a non-finite value that the
    kernels computing `nodes` of `graph` wrote: the reference evaluation of the step, on
    the same batch and parameters, stopped at the first of those nodes (or a node of a
    scan's body among them) that makes a non-finite value from finite inputs; an input or
    a parameter that holds one is named too. None when that evaluation stays finite
    there. Only those nodes may be named: elsewhere a value may be non-finite on purpose
    and masked before memory (`select(x > 0, log(x), 0)`), which the kernels never store."""
    bodies = {
        id(body)
        for n in nodes
        if n in graph.nx and graph.op(n) == "scan"
        for body in nested_graphs(graph.attrs(n)["body"])
    }

    def allowed(g: Graph, n: int) -> bool:
        return g.op(n) in ("input", "param") or (n in nodes if g is graph else id(g) in bodies)

    try:
        run(graph, feeds, params, allowed=allowed)
    except NonFinite as e:
        return e
    return None
