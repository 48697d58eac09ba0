"""ONNX values as the importer knows them and as .dl writes them: `Value`, the element types
dlc has (graph.DTYPES holds their numbers), and the literals of constants."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from dlc.compiler.errors import optional_package
from dlc.compiler.ir.graph import DTYPES, ONNX_ELEM_TYPES
from dlc.compiler.ir.graph import FLOAT_DTYPES as FLOAT

INT = ("i32", "i64")
NUMBER = FLOAT + INT
ANY = tuple(DTYPES)
# the largest finite float of each width: padding that never wins a max, the bound of IsInf
LARGEST = {"f32": "3.4028234663852886e38", "f64": "1.7976931348623157e308"}
SMALL = 16  # a constant of at most this many entries is written out as a tuple

# more entries than a 64-bit machine addresses at 8 bytes each: a shape no run can hold
MAX_ENTRIES = 1 << 60

# ONNX element type -> the .dl dtype of its values, for those dlc has
DL_DTYPES = {elem_type: dtype for dtype, elem_type in ONNX_ELEM_TYPES.items()}


def onnx_package():
    return optional_package("onnx", "onnx", "ONNX import")


def dtype_of(array: np.ndarray) -> str | None:
    """The .dl dtype of a numpy array's values (None for one dlc lacks)."""
    return next((dtype for dtype, numpy in DTYPES.items() if array.dtype == numpy), None)


def type_name(elem_type: int) -> str:
    """An ONNX element type's name, for messages: float16, string."""
    try:
        return onnx_package().TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"element type {elem_type}"


@dataclass
class Value:
    """An ONNX value as the importer knows it: its dtype and shape (dims are ints or Dims;
    None when shape inference could not tell), the .dl expression that names it once it
    is a tensor of the program, and its contents when known at import time."""

    dtype: str | None  # a .dl dtype; None for an element type dlc lacks
    shape: tuple | None
    expr: str | None = None
    const: np.ndarray | None = None
    weight: bool = False  # a float initializer: a trainable parameter when used as a tensor
    fill: float | None = None  # the one number a tensor is filled with, when the program says so
    transposed: tuple | None = None  # (the ONNX value it permutes, the permutation)
    onnx_type: int = 0


def too_large(shape) -> bool:
    """Whether a shape (dims are ints or Dims) has more entries than any machine holds, by its
    fixed dims alone."""
    return shape is not None and prod(d for d in shape if isinstance(d, int)) > MAX_ENTRIES


def shape_tuple(shape) -> str:
    """A static shape as a .dl tuple: (2, 3), (5,), ()."""
    items = [str(d) for d in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def literal(v, dtype: str) -> str | None:
    """A scalar as a .dl literal of its dtype's family (the shortest text that gives the same
    number in that dtype), or None for what no literal says (inf, nan)."""
    if dtype == "bool":
        return "true" if bool(v) else "false"
    if dtype in INT:
        text = str(int(v))
    else:
        v = DTYPES[dtype](v)
        if not np.isfinite(v):
            return None
        text = repr(v.item()) if dtype == "f64" else str(v)
        if "." not in text and "e" not in text:
            text += ".0"
    return f"({text})" if text.startswith("-") else text


def tuple_literal(a: np.ndarray, dtype: str) -> str | None:
    """A small array as nested .dl tuples, or None when an entry has no literal."""
    if a.ndim == 0:
        return literal(a.item(), dtype)
    items = [tuple_literal(b, dtype) for b in a]
    if None in items:
        return None
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
