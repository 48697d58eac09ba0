"""The LLVM types of dlc's dtypes, and the dtype class of an LLVM value's type."""

from __future__ import annotations

from llvmlite import ir

i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
f32, f64 = ir.FloatType(), ir.DoubleType()
LL = {"f32": f32, "f64": f64, "i32": i32, "i64": i64, "bool": i1, "i8": i8}


def element(t: ir.Type) -> ir.Type:
    """The type of a vector's lanes; a scalar type itself (codegen/lanes.py)."""
    return t.element if isinstance(t, ir.VectorType) else t


def is_float(t: ir.Type) -> bool:
    """Whether t (or its lanes) is f32 or f64 (ir.DoubleType is not a subclass of ir.FloatType)."""
    return isinstance(element(t), (ir.FloatType, ir.DoubleType))


def dtype_class(t: ir.Type) -> str:
    """ "float", "int" or "bool": what the scalar rules are keyed by (scalar.py), a vector's
    by its lanes."""
    if is_float(t):
        return "float"
    return "bool" if element(t) == i1 else "int"
