"""The optimizer update as a graph over flat arrays.

An optimizer's rule (runtime/optim/optimizers.py) builds, with compiler/ir/ops.py, the new parameter
and state from an `Update`: the flat float32 parameter and gradient of every trained
parameter, its state arrays, and the per-step scalars. The scalars arrive in double, as
torch.optim computes them in Python floats, and are rounded to float where the rule uses
them, as torch rounds them. With parameter groups (each group its own learning rate and
weight decay, runtime/training/groups.py) the graph also takes `group`, the group of every
element, and a scalar per group (`lr@0`, `lr@1`, ...); a value that differs between groups
is chosen per element with `select`, so each group computes exactly what torch's
param_groups compute. Where the flat arrays hold the groups one after another (`starts`:
the first element of each group after the first), the graph tells an element's group from
its index instead, and takes no `group` array (4 bytes a trained element: 325 MB for
GPT-2). `update_graph` adds the penalties and the clipping in front
of the rule. The reference engine runs that graph with the interpreter; the native
engine lowers it into its step (compiler/native/update.py): one definition, both engines.
"""

from __future__ import annotations

from typing import Callable

from dlc.compiler.ir import ops
from dlc.compiler.ir.graph import DTYPES, Graph, Tensor, TensorType

# the grad_norm output: the global norm of the gradient, penalties added, before clipping
NORM = "grad_norm"
GROUP = "group"  # the input holding each element's parameter group


class Update:
    """The inputs of an update graph: `param` and `grad` (f32[n], or f64 for checks by
    hand), `state[slot]` (alike), and `scalar(name)`, a per-step scalar (fed as f64 by name,
    `name@g` for group g when there are `groups` > 1; then `group`, i32[n], too, unless
    `starts` gives where groups 1, 2, ... begin, in order, in the flat arrays)."""

    def __init__(self, n: int, slots: tuple, dtype: str = "f32", groups: int = 1, starts: tuple | None = None):
        self.graph = Graph("update")
        self.dtype, self.groups, self.starts = dtype, groups, starts
        vector = TensorType(dtype, (n,))
        self.param = self._input("param", vector)
        self.grad = self._input("grad", vector)
        self.state = {s: self._input(s, vector) for s in slots}
        by_index = groups > 1 and starts is not None
        self.group = self._input(GROUP, TensorType("i32", (n,))) if groups > 1 and not by_index else None
        self.index = self.graph.add1("iota", shape=(n,), axis=0, dtype="i32") if by_index else None
        self._scalars: dict = {}

    def _input(self, name: str, typ: TensorType) -> Tensor:
        return self.graph.add1("input", type=typ, name=name)

    def scalar(self, name: str) -> Tensor:
        """A per-step scalar, rounded to the parameters' dtype (each element's group's)."""
        if name not in self._scalars:
            if self.groups == 1:
                self._scalars[name] = ops.cast(self._input(name, TensorType("f64", ())), self.dtype)
            else:
                self._scalars[name] = self.per_group(
                    [
                        ops.cast(self._input(f"{name}@{g}", TensorType("f64", ())), self.dtype)
                        for g in range(self.groups)
                    ]
                )
        return self._scalars[name]

    def per_group(self, values: list):
        """values[g] for the elements of group g: the value itself when every group has the
        same number, else an f[n] chosen element by element."""
        if all(not isinstance(v, Tensor) for v in values) and len(set(values)) == 1:
            return values[0]
        lift = lambda v: v if isinstance(v, Tensor) else ops.constant(self.graph, v, self.dtype)
        if self.index is not None:  # group g from starts[g - 1] on
            out = lift(values[0])
            for g, start in enumerate(self.starts, 1):
                out = ops.select(ops.compare("ge", self.index, start), lift(values[g]), out)
            return out
        out = lift(values[-1])
        for g in range(len(values) - 2, -1, -1):
            out = ops.select(ops.compare("eq", self.group, g), lift(values[g]), out)
        return out


def lerp(start: Tensor, end: Tensor, weight: float) -> Tensor:
    """torch.lerp with a constant weight: from the nearer end, in one fused multiply-add."""
    w = DTYPES[start.dtype](weight)
    return ops.fma(float(w), end - start, start) if abs(w) < 0.5 else ops.fma(float(w - 1), end - start, end)


def update_graph(
    rule: Callable,
    slots: tuple,
    n: int,
    l1: float = 0.0,
    l2: float = 0.0,
    clip: tuple | None = None,
    norm: bool = False,
    dtype: str = "f32",
    groups: int = 1,
    starts: tuple | None = None,
) -> Graph:
    """The update of n flat parameters: penalties (l1 * sum|p| + l2 * sum p^2), clipping
    (`clip`: ("global_norm", max) or ("value", max)), then the rule, which gives the new
    parameter and {slot: new state} (outputs "param" and each slot). With `norm`, the
    output grad_norm too. `groups`: how many parameter groups the elements fall in;
    `starts`: where each after the first begins, when they lie one after another."""
    u = Update(n, slots, dtype, groups, starts)
    g, p = u.grad, u.param
    if l1:
        g = g + l1 * ops.unary("sign", p)
    if l2:
        g = g + 2 * l2 * p
    total = None
    if norm or clip and clip[0] == "global_norm":
        # in double, over every trained parameter; two casts, each inlined: one would be
        # read twice, so written out to memory first
        total = ops.unary("sqrt", ops.sum_(ops.cast(g, "f64") * g.graph.add1("cast", [g], dtype="f64")))
    if clip and clip[0] == "global_norm":
        g = g * ops.cast(ops.binary("minimum", clip[1] / (total + 1e-6), 1.0), dtype)
    elif clip:
        g = ops.binary("maximum", ops.binary("minimum", g, clip[1]), -clip[1])
    u.grad = g
    new_param, new_state = rule(u)
    u.graph.outputs = {"param": new_param, **new_state, **({NORM: total} if norm else {})}
    return u.graph
