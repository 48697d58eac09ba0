"""The loop of im2col by planes (kernels/im2col), in LLVM IR."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.types import f32, i32


def planes_im2col(kb: KernelBuilder, k, first):
    """The (example, channel) planes `first` = (lo, hi): each plane one vector load of its
    H·W floats, then for each output pixel its kh·kw taps one shuffle of that vector (a tap
    outside the image takes a lane of zeros), stored whole at the pixel's columns."""
    b = kb.b
    N, C, H, W = k.x_shape
    Ho, Wo = k.out_hw
    taps = k.taps_per_pixel
    plane_type = ir.VectorType(f32, H * W)
    taps_type = ir.VectorType(f32, taps)
    zeros = ir.Constant(plane_type, [0.0] * (H * W))
    shuffles = [ir.Constant(ir.VectorType(i32, taps), [H * W if t is None else t for t in pixel]) for pixel in k.taps()]
    x = kb.buffer(k.x, "f32")
    out = kb.buffer(k.out, "f32")

    def plane(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        at = b.gep(x, [kb.affine(k.plane_at, [n, c])])
        values = kb.disjoint(b.load(b.bitcast(at, plane_type.as_pointer()), align=4), k.x)
        # out[n, 0, 0, c, 0, 0]; each next pixel C·kh·kw further
        first_column = b.mul(b.add(b.mul(n, kb.dim(Ho * Wo * C)), c), kb.dim(taps))
        for p, shuffle in enumerate(shuffles):
            column = b.add(first_column, kb.dim(p * C * taps))
            dest = b.bitcast(b.gep(out, [column]), taps_type.as_pointer())
            kb.disjoint(b.store(b.shuffle_vector(values, zeros, shuffle), dest, align=4), k.out)

    kb.loops((N * C,), plane, first=first)
