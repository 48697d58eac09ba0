"""The QDQ form of an integer product (`dlc export --int8`, docs/quantization.md "Export").

An integer product of a quantization (compiler/ir/int8.py) becomes, in ONNX:

    x --QuantizeLinear(s_x, z_x)--> u8 --DequantizeLinear(s_x, z_x)--> x'
    int8:P:weight --DequantizeLinear(s_w, 0, axis = the output channels)--> W'
    the float product (Gemm, MatMul or Conv) of x' and W'

with the weights stored in int8 (no float32 copy, unless another node reads them) and the
scales and zero points as initializers named as the quantized checkpoint names them. The
bias, the activation and the rest of the graph stay the float32 export's. QuantizeLinear
is dlc's quantization of an input (x / s_x in float32, rounded to even, saturated), and a
runtime may fuse the pattern into an integer kernel (onnxruntime makes a Gemm or MatMul a
QGemm); one that does not computes the product in float32 from the dequantized operands,
which differs from dlc's f32(acc) · M[o] by float32 roundings only. onnxruntime's fused
u8 · s8 kernels on an x86-64 CPU without VNNI add pairs of products in 16 bits, saturated
(`vpmaddubsw`), so there a fused product can be far from the exact integer sum
(`fused_int8_saturates`); with its graph optimizations off it runs the nodes unfused.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import numpy as np

from dlc.compiler.ir.int8 import QuantizedProduct
from dlc.compiler.passes.int8 import Product


def fused_int8_saturates() -> bool:
    """True on an x86-64 host without VNNI (AVX512_VNNI or AVX-VNNI), where onnxruntime's
    fused u8 · s8 products sum pairs of products in 16 bits with saturation."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    return not ("avx512_vnni" in flags or "avx_vnni" in flags)


def integer_product(b, p: Product, q: QuantizedProduct, x: str, float_rule: Callable, **attrs) -> list:
    """The QDQ nodes of product `p` (quantized as `q`) reading the activation `x`, whose
    product is the float export's `float_rule`; the names of its outputs."""
    export = b.export
    scale, zero = f"int8:{p.weight}:input_scale", f"int8:{p.weight}:input_zero_point"
    export.constant_initializer(scale, np.float32(q.input_scale))
    export.constant_initializer(zero, np.uint8(q.input_zero_point))
    x = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    names = [f"int8:{p.weight}:{part}" for part in ("weight", "weight_scale", "weight_zero_point")]
    export.constant_initializer(names[0], q.weight)
    export.constant_initializer(names[1], q.weight_scale)
    export.constant_initializer(names[2], np.zeros(q.weight_scale.shape, np.int8))  # symmetric
    w = b.op("DequantizeLinear", names, axis=p.channel_axis)
    if tuple(p.weight_shape) != q.weight.shape:  # conv1d's weights: the parameter reshaped, channels first
        w = b.op("Reshape", [w, b.const(list(p.weight_shape), "i64")])
    return float_rule(b, p.node, [x, w], **attrs)
