"""How an int8 program's integer convolution is computed (kernels/int8): an ordered list
(`INT8_CONV2D`), the first that applies chosen (`chosen`). Each lowers to an Int8Kernel reading
the u8 image channels last, in place; the choice is how it reads the image's rows (as a
matmul's or as windows) and how its weights are packed (Int8Weights), and so its loops. An
integer matmul has one implementation."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native.choose import Implementation, first
from dlc.compiler.native.kernels.int8 import TERMS
from dlc.compiler.passes.int8 import by_kernel_rows, depthwise


@dataclass(frozen=True)
class Int8Conv:
    """An integer conv2d as its list reads it: its weights' shape [O, C / groups, kh, kw] and
    its attributes."""

    weight_shape: tuple
    attrs: dict

    @property
    def groups(self) -> int:
        return self.attrs["groups"]


def chosen(c: Int8Conv) -> Implementation:
    """The implementation that computes integer convolution c: the first of its list that applies."""
    return first(INT8_CONV2D, c)


INT8_CONV2D = (
    Implementation(
        "int8 depthwise",
        "int8",
        lambda c: depthwise(c.weight_shape, c.groups),
        "each output channel sums its own channel's taps: a pixel's channels lie side by side in the "
        "channels-last image, so a vector of them is one load a tap, times a vector of their weights; "
        "the windows' dot products would sum one channel (padded to four) a step",
    ),
    Implementation(
        "int8 pointwise",
        "int8",
        lambda c: (
            c.weight_shape[2:] == (1, 1)
            and c.attrs["stride"] == (1, 1)
            and c.attrs["padding"] == (0, 0)
            and c.groups == 1
            and c.weight_shape[1] % TERMS == 0
        ),
        "a 1 x 1 convolution at stride 1 without padding, of whole steps of four channels, is a matmul "
        "of the image's pixels as they lie (channels last): its rows are read in place, with no window "
        "to find or test at each row",
    ),
    Implementation(
        "int8 kernel rows",
        "int8",
        lambda c: by_kernel_rows(c.weight_shape, c.attrs),
        "a window of few channels (a first layer's 1 to 3) is kh runs of kw · C bytes in the channels-last "
        "image, quantized into a copy padded with z_x: each run read in whole steps of four, with no test "
        "at the image's edges; a tap of its channels alone would be one short step, tested at every row",
    ),
    Implementation(
        "int8 windows",
        "int8",
        lambda c: True,
        "a window's taps, four channels a step, times 16 channels' weights a vector (vpdpbusd, the AMX tiles)",
    ),
)
