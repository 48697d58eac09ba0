"""Folding the shape arithmetic of exported models (Shape -> Gather -> Concat -> Reshape)
on shapes that hold symbolic dims (Dims), which ONNX's reference evaluator cannot compute.
`Node.fold` (node.py) calls it with the node and its inputs' values."""
from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.ir.dims import Dim, exact_div
from dlc.compiler.onnx.values import INT


def fold_symbolic(n, consts: list) -> dict | None:
    """The outputs by name of node `n` (a Node) whose inputs `consts` hold Dims, or None for
    another op than shape arithmetic (its rule decides)."""
    out = _symbolic(n, consts)
    return None if out is None else {n.proto.output[0]: out}


def _symbolic(n, consts: list):
    x = consts[0]
    op = n.op
    data = consts if op in ("Concat", "Add", "Sub", "Mul", "Div") else consts[:1]
    if not all(c is None or _is_shape(c) for c in data) or any(has_dims(c) for c in consts[len(data):]):
        return None     # not shape arithmetic (a weight sliced to a symbolic length): the op's rule
    if op in ("Identity", "Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Flatten"):
        if op in ("Cast", "CastLike") and n.out_dtype() not in INT:
            return None     # a dim as a number (a mean's divisor): the cast of its tensor
        shape = n.out().shape
        if shape is None or None in shape:
            shape = {"Unsqueeze": lambda: np.expand_dims(x, tuple(n.setting("axes", 1))).shape,
                     "Squeeze": lambda: np.squeeze(x, tuple(n.setting("axes", 1, [])) or None).shape}.get(
                         op, lambda: x.shape)()
        return x.reshape(shape)
    if op == "Gather":
        return np.take(x, consts[1].astype(np.int64), axis=n.attr("axis", 0))
    if op == "Concat":
        return np.concatenate([c for c in consts if c is not None], axis=n.attr("axis", 0))
    if op == "Slice":
        starts, ends = n.setting("starts", 1), n.setting("ends", 2)
        axes = n.setting("axes", 3, list(range(len(starts))))
        steps = n.setting("steps", 4, [1] * len(starts))
        index = [slice(None)] * x.ndim
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a] = slice(s, e, st)
        return x[tuple(index)]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = (np.vectorize(lambda v: v if isinstance(v, Dim) else int(v), otypes=[object])(c)
                for c in np.broadcast_arrays(*consts[:2]))
        f = {"Add": lambda p, q: p + q, "Sub": lambda p, q: p - q, "Mul": lambda p, q: p * q,
             "Div": lambda p, q: _exact_div(n, p, q)}[op]
        return np.array([f(p, q) for p, q in zip(a.ravel(), b.ravel())], dtype=object).reshape(a.shape)
    if op == "ReduceProd":
        return np.array(prod(x.ravel()), dtype=object).reshape((1,) * x.ndim if n.attr("keepdims", 1) else ())
    return None


def _is_shape(c: np.ndarray) -> bool:
    """Integers, possibly Dims: what the symbolic shape arithmetic computes on."""
    return c.dtype == object or np.issubdtype(c.dtype, np.integer)


def has_dims(c) -> bool:
    return c is not None and c.dtype == object


def _exact_div(n, p, q):
    out = exact_div(p, q) if isinstance(p, Dim) or not isinstance(q, Dim) else None
    if out is None:
        n.refuse(f"the division of the dim {p} by {q}", "input")
    return out
