"""Read-only data as an LLVM module: a built library's embedded weights and constants
(runtime/deploy/build.py), linked beside its step."""

from __future__ import annotations

from llvmlite import ir


def data_module(name: str, blobs: dict, align: int) -> ir.Module:
    """A module named `name` with a constant global per symbol of `blobs` (symbol: its
    bytes), each aligned to `align` bytes."""
    module = ir.Module(name)
    for symbol, data in blobs.items():
        g = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(data)), symbol)
        g.initializer = ir.Constant(g.value_type, bytearray(data))
        g.global_constant = True
        g.align = align
    return module
