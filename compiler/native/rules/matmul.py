"""The lowering rule of matmul: the implementation its list chooses
(compiler/native/choose/matmul.py), which kernels/gemm registers by name."""

from __future__ import annotations

from dlc.compiler.native.choose.matmul import Matmul, chosen
from dlc.compiler.native.program.registry import IMPLEMENTATIONS, register_lowering


@register_lowering("matmul", floats=("f32",))
def _matmul(lw, n, ins, attrs, typ):
    mm = Matmul.lowered(lw, tuple(ins), attrs, typ)
    IMPLEMENTATIONS["matmul", chosen(mm).name](lw, n, ins, attrs, typ, mm)
