"""The LLVM types of dlc's dtypes, and the dtype class of an LLVM value's type."""

from __future__ import annotations

from llvmlite import ir

i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
f32, f64 = ir.FloatType(), ir.DoubleType()
LL = {"f32": f32, "f64": f64, "i32": i32, "i64": i64, "bool": i1, "i8": i8}


def is_float(t: ir.Type) -> bool:
    """Whether t is f32 or f64 (ir.DoubleType is not a subclass of ir.FloatType)."""
    return isinstance(t, (ir.FloatType, ir.DoubleType))


def dtype_class(t: ir.Type) -> str:
    """ "float", "int" or "bool": what the scalar rules are keyed by (scalar.py)."""
    if is_float(t):
        return "float"
    return "bool" if t == i1 else "int"
