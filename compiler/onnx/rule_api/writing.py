"""The .dl text that rules of several families write: float and keyword arguments, reshapes,
transposes, slices, gathers along an axis, running sums and products (scans), and the
names and activations of layers."""

from __future__ import annotations

import re

import numpy as np

from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.onnx.rule_api.node import Expr, Node
from dlc.compiler.onnx.rule_api.values import Value, literal, shape_tuple


def flt(v) -> str:
    """A float attribute as a .dl literal."""
    return literal(np.float32(v), "f32")


def axes_text(axes) -> str:
    axes = list(axes)
    return str(axes[0]) if len(axes) == 1 else shape_tuple(axes)


def kw(**settings) -> str:
    """Keyword arguments that differ from their defaults, as `, name = value` text."""
    return "".join(f", {k} = {v}" for k, v in settings.items() if v is not None)


def dims_args(dims) -> str:
    """Dims as a call's arguments: 2, 3."""
    return ", ".join(str(d) for d in dims)


def reshaped(x: str, dims) -> Expr:
    """x reshaped to `dims` (no -1: the shape is known)."""
    return Expr(f"reshape({x}, {dims_args(dims) if dims else '()'})", shape=tuple(dims))


def slice_text(x: str, axis: int, start, stop, step=1) -> str:
    """x sliced along one axis: x[:, :, start:stop:step]."""
    bounds = f"{start if start else ''}:{'' if stop is None else stop}" + (f":{step}" if step != 1 else "")
    return f"{x}[{', '.join([':'] * axis + [bounds])}]"


def transposed(n: Node, i: int, perm) -> Expr | Value:
    """Input i with its axes permuted; a transpose of a transpose is one transpose, or none."""
    source, first = n.value(i).transposed or (n.proto.input[i], tuple(range(len(perm))))
    perm = tuple(first[p] for p in perm)
    if perm == tuple(range(len(perm))):
        return n.imp.values[source]
    shape = n.imp.values[source].shape
    known = None if shape is None or None in shape else [shape[p] for p in perm]
    return Expr(f"transpose({n.imp.operand(source)}, {dims_args(perm)})", transposed=(source, perm), shape=known)


def take(n: Node, x: str, rank: int, axis: int, index: str, index_rank: int) -> str:
    """The entries of x at `index` (a rank-`index_rank` integer tensor) along `axis`: gather
    works on axis 0, so the axis goes first and the index's axes come back to its place."""
    if axis == 0:
        return f"gather({x}, {index})"
    front = [axis] + [k for k in range(rank) if k != axis]
    moved = n.let(f"transpose({x}, {dims_args(front)})", n.label + "_moved")
    got = n.let(f"gather({moved}, {index})", n.label + "_rows")
    k = index_rank
    back = list(range(k, k + axis)) + list(range(k)) + list(range(k + axis, rank - 1 + k))
    return f"transpose({got}, {dims_args(back)})"


def matches(index: str, size) -> str:
    """Whether each entry of `index` is each position 0 .. size - 1, along a new last axis: a
    one-hot of a fixed size, a comparison with the positions for a symbolic one (which
    one_hot does not take)."""
    if isinstance(size, int):
        return f"one_hot({index}, {size}, \"bool\")"
    return f"expand_dims({index}, -1) == arange({size})"


def scan_along(n: Node, shape, axis: int, op: str, steps: bool, exclusive=False, reverse=False, x=None) -> str:
    """A scan over input 0's `axis` that folds its slices with `op` (+ or *): the running
    results stacked along the axis (`steps`), or the final one."""
    size = shape[axis]
    if not isinstance(size, int):
        n.refuse("a running sum or product along a symbolic axis", "shape")
    dtype = n.dtype(0)
    start = literal(0 if op == "+" else 1, dtype)
    rest = [d for k, d in enumerate(shape) if k != axis]
    piece = f"{x or n.x(0)}[{', '.join([':'] * axis + ['t'])}]"
    options = [f"axis = {axis}"] if steps and axis != 1 else []
    options += ["reverse = true"] if reverse else []
    head = (
        f"scan t in {size}{' (' + ', '.join(options) + ')' if options else ''} carry s = "
        f"full({shape_tuple(rest)}, {start}, \"{dtype}\") {{"
    )
    if not steps:
        return f"{head}\n    s = s {op} {piece}\n}}"
    if exclusive:
        return f"{head}\n    before = s\n    s = s {op} {piece}\n    yield before\n}}"
    return f"{head}\n    s = s {op} {piece}\n    yield s\n}}"


# the ONNX activations a layer absorbs as its `act`, by their .dl names: the library's relu,
# and the builtins of the primitives that compute Tanh and Sigmoid (their records name both)
ACTIVATIONS = {"Relu": "relu", **{p.onnx: p.builtin for p in PRIMITIVES.values() if p.onnx in ("Tanh", "Sigmoid")}}
_LAYER_SUFFIX = re.compile(r"[._/:]?(weight|bias|W|B|kernel|w|b)$")


def _layer_hint(initializer_name: str) -> str:
    """'fc1.weight' -> 'fc1': a layer named after its weights' module."""
    return _LAYER_SUFFIX.sub("", initializer_name)


def weights_hint(n: Node, i: int) -> str:
    """A layer's binding named after its weights' module ('fc1.weight' -> fc1), else after
    its node's module ('/fc1/Gemm' -> fc1), else its output."""
    if n.has(i) and n.value(i).weight and not n.proto.input[i].startswith("onnx::"):
        hint = _layer_hint(n.proto.input[i])
        if hint and hint != n.proto.input[i]:
            return hint
    return module_name(n) or n.results[0]


def module_name(n: Node) -> str:
    """The module of an exporter's node name: '/ff/ff.0/Gemm' -> ff.0 (PyTorch's scopes end
    with the module's full name, TensorFlow's with its own)."""
    parts = [p for p in n.proto.name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == n.op:
        return parts[-2]
    return "_".join(parts)
