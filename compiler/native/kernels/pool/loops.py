"""The pooling rows kernel's loops (kernels/pool), in LLVM IR."""

from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.image_rows import ConvRows
from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import i64


def pool(kb: KernelBuilder, k, first):
    """The (example, channel) planes `first` = (lo, hi): for each row chunk of an output
    row, each tap row of x loaded once as vectors (ConvRows.x_taps: whole or masked, every
    other lane at stride 2), the window's taps folded in registers in the map's order —
    the first tap, then each next one by `llvm.maximum` (max) or by adding it times
    1 / (kh·kw) (mean) — and the chunk stored under its row's mask. Every tap row is read,
    those outside x too (all lanes `fill`), as the map reads every tap."""
    b = kb.b
    fill = -math.inf if k.op == "max" else 0.0
    rows = ConvRows(kb, k, fill=fill)
    N, C, H, W = k.x_shape
    Ho, Wo = k.out_hw
    kh, kw = k.kernel
    maximum = declare(kb.m, f"llvm.maximum.v{rows.vw}f32", rows.vty, [rows.vty] * 2)
    scale = ir.Constant(rows.vty, [1.0 / (kh * kw)] * rows.vw)

    def tap_value(value):
        return value if k.op == "max" else b.fmul(value, scale)

    def chunk(n, c, ho, q):
        wo0 = b.mul(q, ir.Constant(i64, rows.chunk))
        folded = None
        for i in range(kh):
            tap = rows.x_taps(n, c, rows.tap_row(ho, ir.Constant(i64, i)), wo0)
            for j in range(kw):
                values = [tap_value(v) for v in tap(j)]
                if folded is None:
                    folded = values
                elif k.op == "max":
                    folded = [b.call(maximum, [s, v]) for s, v in zip(folded, values)]
                else:
                    folded = [b.fadd(s, v) for s, v in zip(folded, values)]
        for v in range(rows.nv):
            at, start = rows.out_at(n, c, ho, wo0, v)
            rows.store(k.out, at, folded[v], rows.mask(start, Wo))

    def plane(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        kb.loops((Ho, rows.chunks()), lambda hq: chunk(n, c, *hq))

    kb.loops((N * C,), plane, first=first)
