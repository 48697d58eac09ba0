"""The lowering rules of conv2d and its two gradients: the implementation their list
chooses (compiler/native/choose/conv.py), which the kinds of kernels/ register by name."""

from __future__ import annotations

from dlc.compiler.native.choose.conv import Conv, chosen
from dlc.compiler.native.program.registry import IMPLEMENTATIONS, register_lowering


@register_lowering("conv2d", "conv2d_input_grad", "conv2d_weight_grad", floats=("f32",))
def _convolution(lw, n, ins, attrs, typ):
    c = Conv.of(lw.graph, lw.graph.op(n), tuple(ins), typ.shape, attrs, lw.bf16)
    IMPLEMENTATIONS[c.op, chosen(c).name](lw, n, ins, attrs, typ, c.s)
