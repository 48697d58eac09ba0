"""Folding at import time: how large a folded value may be, and the shape arithmetic of
exported models (Shape -> Gather -> Concat -> Reshape) on shapes that hold symbolic dims
(Dims), which ONNX's reference evaluator cannot compute. `Node.fold` (node.py) calls them
with the node and its inputs' values."""

from __future__ import annotations

from math import ceil, isfinite, prod

import numpy as np

from dlc.compiler.ir.dims import Dim, exact_div, sign
from dlc.compiler.onnx.rule_api.values import INT


# the most entries a value computed when importing may have (512 MiB of f64): a folded value
# is held in memory and written to the checkpoint, and the importer runs on the machine that
# converts the model, whatever the model's own run needs. A larger one stays a run-time value.
MAX_FOLDED = 1 << 26


def foldable(count) -> bool:
    """Whether a value of `count` entries may be computed when importing."""
    return count <= MAX_FOLDED


def range_count(start, limit, delta) -> int:
    """The numbers of Range(start, limit, delta); 0 when it has none or no count (delta 0, nan)."""
    steps = (limit - start) / delta if delta else 0
    return max(ceil(steps), 0) if isfinite(steps) else 0


def _expanded(c) -> int:
    """The entries of Expand(c[0], shape c[1]): the two shapes broadcast."""
    shape, to = c[0].shape, tuple(c[1].tolist())
    rank = max(len(shape), len(to))
    return prod(max(a, b) for a, b in zip((1,) * (rank - len(shape)) + shape, (1,) * (rank - len(to)) + to))


# the entries of the output of the ops whose output size is set by their inputs' values, for
# when ONNX's shape inference does not tell it; computed before the op is evaluated
_OUTPUT_ENTRIES = {
    "ConstantOfShape": lambda c: prod(c[0].tolist()),
    "Range": lambda c: range_count(*(v.item() for v in c)),
    "Expand": _expanded,
    "Tile": lambda c: c[0].size * prod(c[1].tolist()),
}


def too_large_to_propagate(onnx, graphs) -> bool:
    """Whether a node of `graphs` (the model's graph and its bodies) makes from constant
    inputs (initializers, Constant nodes) a value larger than MAX_FOLDED: ONNX's shape
    inference with data propagation computes such values whole (a Range of 10^12 numbers)."""
    known = {t.name: t for g in graphs for t in g.initializer}
    known.update(
        {
            node.output[0]: a.t
            for g in graphs
            for node in g.node
            if node.op_type == "Constant"
            for a in node.attribute
            if a.name == "value"
        }
    )
    for node in (node for g in graphs for node in g.node if node.op_type in _OUTPUT_ENTRIES):
        if all(i in known for i in node.input):
            consts = [onnx.numpy_helper.to_array(known[i]) for i in node.input]
            if not foldable(_OUTPUT_ENTRIES[node.op_type](consts)):
                return True
    return False


def too_large_to_fold(n, consts: list) -> bool:
    """Whether an output of node `n` (a Node) on the known inputs `consts` would have more
    entries than MAX_FOLDED: by ONNX's inferred shapes, or by the inputs that set its size."""
    counts = [
        prod(v.shape)
        for v in map(n.out, range(len(n.results)))
        if v.shape is not None and all(isinstance(d, int) for d in v.shape)
    ]
    if n.op in _OUTPUT_ENTRIES:
        counts.append(_OUTPUT_ENTRIES[n.op](consts))
    return not foldable(max(counts, default=0))


def fold_symbolic(n, consts: list) -> dict | None:
    """The outputs by name of node `n` (a Node) whose inputs `consts` hold Dims, or None for
    another op than shape arithmetic (its rule decides)."""
    out = _symbolic(n, consts)
    return None if out is None else {n.proto.output[0]: out}


def _symbolic(n, consts: list):
    x = consts[0]
    op = n.op
    if op in ("Concat", *_ARITHMETIC, "Equal"):
        data, rest = consts, []
    else:  # the values a shape op moves; Where's condition is not one
        data, rest = (consts[1:], consts[:1]) if op == "Where" else (consts[:1], consts[1:])
    if not all(c is None or _is_shape(c) for c in data) or any(has_dims(c) for c in rest):
        return None  # not shape arithmetic (a weight sliced to a symbolic length): the op's rule
    if op in ("Identity", "Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Flatten"):
        if op in ("Cast", "CastLike") and n.out_dtype() not in INT:
            return None  # a dim as a number (a mean's divisor): the cast of its tensor
        shape = n.out().shape
        if shape is None or None in shape:
            shape = {
                "Unsqueeze": lambda: np.expand_dims(x, tuple(n.setting("axes", 1))).shape,
                "Squeeze": lambda: np.squeeze(x, tuple(n.setting("axes", 1, [])) or None).shape,
            }.get(op, lambda: x.shape)()
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
    if op in _ARITHMETIC or op == "Equal":
        a, b = (
            np.vectorize(lambda v: v if isinstance(v, Dim) else int(v), otypes=[object])(c)
            for c in np.broadcast_arrays(*consts[:2])
        )
        out = [_ARITHMETIC[op](n, p, q) if op in _ARITHMETIC else _equal(p, q) for p, q in zip(a.ravel(), b.ravel())]
        if None in out:
            return None  # dims that are equal for some sizes only: a run-time comparison
        return np.array(out, dtype=object if op in _ARITHMETIC else bool).reshape(a.shape)
    if op == "Where":
        return np.where(x, *consts[1:])
    if op == "ReduceProd":
        return np.array(prod(x.ravel()), dtype=object).reshape((1,) * x.ndim if n.attr("keepdims", 1) else ())
    return None


def _is_shape(c: np.ndarray) -> bool:
    """Integers, possibly Dims: what the symbolic shape arithmetic computes on."""
    return c.dtype == object or np.issubdtype(c.dtype, np.integer)


def has_dims(c) -> bool:
    return c is not None and c.dtype == object


def _divided(n, p, q):
    """ONNX's integer Div of two dims: numbers truncate toward zero; a symbolic dim divides
    where its polynomial does (2*B by 2), for every size of its symbols."""
    if isinstance(p, int) and isinstance(q, int) and q:
        return abs(p) // abs(q) * (1 if (p < 0) == (q < 0) else -1)
    out = exact_div(p, q) if isinstance(p, Dim) else None
    if out is None:
        n.refuse(f"the division of the dim {p} by {q}, which is not exact for every size of {p}", "input")
    return out


_ARITHMETIC = {
    "Add": lambda n, p, q: p + q,
    "Sub": lambda n, p, q: p - q,
    "Mul": lambda n, p, q: p * q,
    "Div": _divided,
}


def _equal(p, q) -> bool | None:
    """Whether two dims are equal for every size of their symbols, not for any, or None: it
    depends on the sizes."""
    difference = sign(p - q)
    return None if difference is None else difference == 0
