"""How an int8 program's integer convolution is computed (kernels/int8): an ordered list
(`INT8_CONV2D`), the first that applies chosen (`chosen`). Both lower to an Int8Kernel reading
its windows in place from the u8 image channels last; the choice is the weights' packing
(Int8Weights) and so the loops that read them. An integer matmul has one implementation."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native.choose import Implementation, first
from dlc.compiler.passes.int8 import depthwise


@dataclass(frozen=True)
class Int8Conv:
    """An integer conv2d as its list reads it: its weights' shape [O, C / groups, kh, kw] and
    its groups."""

    weight_shape: tuple
    groups: int


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
        "int8 windows",
        "int8",
        lambda c: True,
        "a window's taps, four channels a step, times 16 channels' weights a vector (vpdpbusd, the AMX tiles)",
    ),
)
