"""check_numerics (`dlc train --check-numerics`): the first non-finite value of a train
step, traced to the operation that made it from finite inputs.

The reference engine evaluates its step with `Watching`, which tests every node's values
as the interpreter computes them. The native engine tests each kernel's outputs after it
runs (runtime/engines/native.py); at the first non-finite one it stops and evaluates the
step again here (`locate`), which finds the node inside that kernel's fused nodes, or
inside a scan's body, that made the value. A node that only passes a NaN on has a
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
from dlc.compiler.ir.graph import Graph
from dlc.runtime.engines import interpreter


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
        g, data = self.graph, self.graph.g.nodes[self.node]
        bad = " and ".join(kind for kind, test in (("nan", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf))
                           if any(test(v).any() for v in self.outputs))
        op, span = data["op"], data["span"]
        if op in ("input", "param"):
            kind = "input" if op == "input" else "parameter"
            return NonFinite.at_user_line(f"the {kind} '{data['attrs']['name']}' holds {bad}", span)
        line = (span.caller or span).line if span is not None else "?"
        of = data.get("grad_of")
        if of is not None and of in g.g:
            what, stage = f"the gradient of line {line}'s `{g.op(of)}` (its `{op}`)", "backward"
        else:
            what, stage = f"line {line}'s `{op}`", "forward"
        inside = f" ({span.place()} in the standard library)" if span is not None and span.caller else ""
        step = ""
        if self.steps:
            step = f" at step {self.steps[0]} of its scan" if len(self.steps) == 1 else \
                f" at steps {', '.join(map(str, self.steps))} of its nested scans"
        ranges = " and ".join(f"[{v.min():.4g}, {v.max():.4g}]" if v.size else "[] (empty)" for v in self.inputs)
        given = f"from finite inputs in {ranges}" if ranges else "from no inputs"
        return NonFinite.at_user_line(f"{bad} first came from {what}{inside}{step}, in the {stage} pass, {given}",
                                      span)


class Found(Exception):
    """Stops the evaluation at the origin."""

    def __init__(self, origin: Origin):
        super().__init__(origin)
        self.origin = origin


def _floats(arrays) -> list:
    return [a for a in arrays if np.issubdtype(a.dtype, np.floating)]


def finite(a: np.ndarray) -> bool:
    return not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all())


class Watching(Eval):
    """An evaluation that stops (`Found`) at the first node whose values are not finite
    while its inputs are."""

    def computed(self, graph: Graph, n: int, inputs: list, values: dict):
        outputs = _floats(values[(n, j)] for j in range(len(graph.types(n))))
        if all(map(finite, outputs)):
            return
        given = _floats(values[k] for k in inputs)
        if all(map(finite, given)):
            raise Found(Origin(graph, n, given, outputs, self.steps))


def run(graph: Graph, feeds: dict, params: dict, replicas=None) -> dict:
    """interpreter.run, watched: raises the NonFinite of the first non-finite value."""
    try:
        return interpreter.run(graph, feeds, params, replicas=replicas, evaluator=Watching)
    except Found as found:
        raise found.origin.error() from None


def locate(graph: Graph, feeds: dict, params: dict) -> NonFinite | None:
    """The NonFinite of a step the native engine found non-finite, from the reference
    evaluation of that step; None when that evaluation stays finite."""
    try:
        run(graph, feeds, params)
    except NonFinite as e:
        return e
    return None
