"""int8 with `--backend native` (docs/quantization.md, "Engines"): the integer products in
generated code (compiler/native/codegen/int8_dot.py: u8 x s8 dot products, exact int32 sums,
f32(acc) · M[o] in the store), every other node as the reference int8 engine computes it.
The bits are the reference's: quantizing the input is int8.quantize itself, and a
convolution's windows are the quantized input padded with z_x, its rows the K terms of
each output position, per group."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dlc.compiler.frontend.model import Model
from dlc.compiler.ir import int8
from dlc.compiler.ir.primitives import _windows
from dlc.compiler.native.codegen.int8_dot import int8_rows
from dlc.compiler.passes.int8 import Product, products
from dlc.runtime.engines.cores import threads
from dlc.runtime.engines.int8 import Int8Engine

LEAST_ROWS = 64         # rows a thread takes at the least (fewer cost more to hand out than to compute)


@functools.cache
def _pool(size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(size, thread_name_prefix="dlc-int8")


class NativeProduct:
    """One integer product's weights as the kernel reads them: per group, [channels, K] s8
    rows and their int32 sums, with the multipliers M[o]."""

    def __init__(self, p: Product, q: int8.QuantizedProduct, groups: int = 1):
        w = q.weight.reshape(p.weight_shape)
        if p.op == "matmul":        # [K, N] (or [N, K] with tb): channel rows of K terms
            w = w if p.channel_axis == 0 else w.T
        rows = np.ascontiguousarray(w.reshape(w.shape[0], -1))
        self.groups = groups
        self.weights = np.split(rows, groups)
        self.sums = [g.astype(np.int32).sum(axis=1, dtype=np.int32) for g in self.weights]
        self.multipliers = np.split(q.multipliers(), groups)
        self.scale, self.zero = q.input_scale, q.input_zero_point
        self.kernel = int8_rows()       # compiled for DLC_TARGET as it is now

    def rows(self, a: np.ndarray, group: int) -> np.ndarray:
        """y [rows, channels] of u8 rows a [rows, K] and the channels of `group`, checked at
        the boundary: the kernel reads exactly these buffers' extents."""
        w, s, m = self.weights[group], self.sums[group], self.multipliers[group]
        a = np.ascontiguousarray(a, np.uint8)
        if a.ndim != 2 or a.shape[1] != w.shape[1]:
            raise AssertionError(f"int8 rows {a.shape} do not match weights {w.shape}")
        y = np.empty((a.shape[0], w.shape[0]), np.float32)

        def run(start: int, stop: int):     # rows [start, stop): each output row is its own, so any split gives these bits
            self.kernel(stop - start, w.shape[0], w.shape[1], a[start:].ctypes.data, w.ctypes.data, s.ctypes.data,
                        m.ctypes.data, y[start:].ctypes.data, int(self.zero))

        team = max(1, min(threads(), len(a) // LEAST_ROWS))
        cuts = [len(a) * t // team for t in range(team + 1)]
        if team == 1:
            run(0, len(a))
        else:       # ctypes lets go of the GIL during each call
            list(_pool(team).map(run, cuts[:-1], cuts[1:]))
        return y


def native_product(p: Product, prepared: NativeProduct, ctx, xs: list, **attrs) -> list:
    """A product node in int8 through the native kernel: the same bits as
    runtime/engines/int8.py's integer_product."""
    q = int8.quantize(xs[0], prepared.scale, prepared.zero)
    if p.op == "matmul":
        return [prepared.rows(q.reshape(-1, q.shape[-1]), 0).reshape(q.shape[:-1] + (-1,))]
    (ph, pw), kh, kw = attrs["padding"], p.weight_shape[2], p.weight_shape[3]
    padded = np.pad(q, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=prepared.zero)
    v = _windows(padded, kh, kw, attrs["stride"], (0, 0), attrs["dilation"])     # [N, C, Ho, Wo, kh, kw]
    n, c, ho, wo = v.shape[:4]
    per = c // prepared.groups
    out = []
    for g in range(prepared.groups):
        a = v[:, g * per:(g + 1) * per].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, per * kh * kw)
        out.append(prepared.rows(a, g).reshape(n, ho, wo, -1).transpose(0, 3, 1, 2))
    return [np.ascontiguousarray(np.concatenate(out, axis=1))]


class NativeInt8Engine(Int8Engine):
    """Int8Engine whose integer products run in the native kernel."""

    def __init__(self, train_model: Model, eval_model: Model, quantization: dict):
        super().__init__(train_model, eval_model, quantization)
        for g in (self.eval_graph, self.predict_graph):
            for p in products(g, eval_model.graph):
                if p.integer and p.weight in quantization:
                    groups = g.attrs(p.node)["groups"] if p.op == "conv2d" else 1
                    self.plans[id(g)][p.node] = functools.partial(
                        native_product, p, NativeProduct(p, quantization[p.weight], groups))
