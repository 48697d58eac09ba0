"""ONNX ops whose values are known when importing: Constant, ConstantOfShape, Range,
EyeLike, and the Shape and Size of a tensor (symbolic dims stay Dims)."""

from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.ir.dims import Dim, exact_div
from dlc.compiler.onnx.rule_api.folding import foldable, range_count
from dlc.compiler.onnx.rule_api.node import Expr, Node, rule
from dlc.compiler.onnx.rule_api.values import dtype_of, literal, shape_tuple
from dlc.compiler.onnx.rule_api.writing import dims_args


@rule("Shape", attrs=("start", "end"), shape_only=True)
def _shape(n: Node):
    shape = n.shape(0)
    dims = list(shape[slice(n.attr("start", 0), n.attr("end"))])
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, np.int64)
    return np.array(dims, dtype=object)


@rule("Size", shape_only=True)
def _size(n: Node):
    total = prod(n.shape(0), start=1)
    return np.array(total, np.int64 if isinstance(total, int) else object)


@rule("ConstantOfShape", static=(0,), attrs=("value",))
def _constant_of_shape(n: Node):
    value = n.attr("value", np.zeros(1, np.float32))
    dims = n.static(0, "shape").tolist()
    if any(isinstance(d, Dim) for d in dims) or not foldable(prod(dims)):  # too large: filled at run time
        dtype = dtype_of(value)
        fill = value.reshape(-1)[0]
        if literal(fill, dtype) is None:  # -inf (a causal mask): a constant, broadcast
            return Expr(
                f"broadcast_to({n.imp.constant(value.reshape(()), n.label + '_fill')}, {dims_args(dims)})",
                fill=fill,
                shape=dims,
            )
        return Expr(f"full({shape_tuple(dims)}, {literal(fill, dtype)}, \"{dtype}\")", fill=fill, shape=dims)
    return np.full(dims, value.reshape(-1)[0], value.dtype)


@rule("Constant", attrs=("value", "value_float", "value_floats", "value_int", "value_ints"))
def _constant(n: Node):
    for name, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if name in n.attrs:
            return np.array(n.attrs[name], dtype)
    if "value" not in n.attrs:
        n.refuse("a sparse or string constant", "dtype")
    return n.attrs["value"]


@rule("Range", static=(0, 1, 2))
def _range(n: Node):
    """Known bounds: the numbers; a symbolic limit (arange over T), or more numbers than an
    import computes: `arange` of the count."""
    start, limit, delta = (n.static(i).item() for i in range(3))
    symbolic = any(isinstance(v, Dim) for v in (start, limit, delta))
    if not symbolic and delta and foldable(range_count(start, limit, delta)):
        return np.arange(start, limit, delta).astype(n.static(0).dtype)
    count = None
    if isinstance(start, int) and isinstance(delta, int) and delta > 0:
        count = exact_div(limit - start, delta) if symbolic else -((start - limit) // delta)
    if count is None or isinstance(count, int) and count <= 0:
        why = "" if symbolic or not delta else ": too many numbers to compute when importing"
        n.refuse(f"a range from {start} to {limit} by {delta}{why}", "input")
    dtype = n.out_dtype()
    out = "arange(" + str(count) + ")" if dtype == "i32" else f"cast(arange({count}), \"{dtype}\")"
    out += f" * {delta}" if delta != 1 else ""
    return Expr(out + (f" + {start}" if start else ""), shape=(count,))


@rule("EyeLike", attrs=("dtype", "k"), shape_only=True)
def _eye_like(n: Node):
    rows, cols = n.shape(0)
    dtype = n.imp.onnx.helper.tensor_dtype_to_np_dtype(n.attr("dtype", n.value(0).onnx_type))
    if not isinstance(rows, int) or not isinstance(cols, int):
        n.refuse("a symbolic shape", "shape")
    return np.eye(rows, cols, n.attr("k", 0), dtype=dtype)
