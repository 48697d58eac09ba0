"""im2col's columns of an image of small planes (PlanesIm2colKernel): each (example, channel)
plane loaded once as one vector, and each output pixel's taps a constant shuffle of it.
The map over the same windows ([N, Ho, Wo, C, kh, kw]) has an innermost loop of kw taps, too
short to vectorize, each tap read with an index and a guard of its own. The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.native.program import Affine, Kernel, render


@dataclass
class PlanesIm2colKernel(Kernel):
    """out [N, Ho, Wo, C, kh, kw] = x[n, c, ho·sh + i·dh - ph, wo·sw + j·dw - pw], 0 outside x:
    the bits of the map over the same windows (each a copy). x's planes are H x W contiguous,
    the plane (n, c) at `plane_at` (its offset, and the strides of n and c); out contiguous."""

    x: int
    out: int
    plane_at: Affine
    x_shape: tuple  # N, C, H, W
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple

    def text(self) -> list:
        window = "x".join(map(str, self.kernel))
        return [
            f"im2col {window} stride {'x'.join(map(str, self.stride))} of {render.shape(self.x_shape)}, "
            f"by planes: b{self.out} <- b{self.x}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return {self.x}, {self.out}

    def renamed(self, names: dict) -> "PlanesIm2colKernel":
        return replace(self, x=names[self.x], out=names[self.out])

    def taps(self) -> list:
        """For each output pixel (ho, wo), in order, the element of the plane that each tap
        (i, j) reads, in order; None for a tap outside the image."""
        _, _, H, W = self.x_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        pixels = []
        for ho in range(self.out_hw[0]):
            for wo in range(self.out_hw[1]):
                taps = []
                for i in range(kh):
                    for j in range(kw):
                        h, w = ho * sh + i * dh - ph, wo * sw + j * dw - pw
                        taps.append(h * W + w if 0 <= h < H and 0 <= w < W else None)
                pixels.append(taps)
        return pixels

    def emit(self, f):
        """The (example, channel) planes on a thread team."""
        from dlc.compiler.native.kernels.im2col.loops import planes_im2col

        N, C, _, _ = self.x_shape
        Ho, Wo = self.out_hw
        planes = N * C
        return f.team(lambda kb, first: planes_im2col(kb, self, first), planes, planes * Ho * Wo * self.taps_per_pixel)

    @property
    def taps_per_pixel(self) -> int:
        return self.kernel[0] * self.kernel[1]
