"""How a maxpool2d or avgpool2d is computed: an ordered list of implementations (`POOLING`),
the first that applies chosen (`chosen`)."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native.choose import Implementation, first


@dataclass(frozen=True)
class Pool:
    """A pooling as its list reads it: x's shape [N, C, H, W], its attributes (kernel,
    stride, padding), and whether x lies channels last (an int8 program's image between two
    integer convolutions: Lowering.channels_last)."""

    x_shape: tuple
    attrs: dict
    channels_last: bool


def chosen(p: Pool) -> Implementation:
    """The implementation that computes pooling p: the first of its list that applies."""
    return first(POOLING, p)


SMALL_WINDOW = 16  # kh * kw up to which pooling folds each window's taps (else a reduction)
ROW_TAPS = 8  # kw up to which a window's row of taps is taken from one load of x's row (as the direct convolution's)


def _small(p: Pool) -> bool:
    kh, kw = p.attrs["kernel"]
    return kh * kw <= SMALL_WINDOW


def _rows(p: Pool) -> bool:
    """A small window (_small) of at most ROW_TAPS columns, stride 1 or 2 along W (the
    rows' vectors, every other lane of two at stride 2), of an image laid out [N, C, H, W]
    (the map reads and writes a channels-last one in place, its loop along the channels)."""
    return _small(p) and p.attrs["kernel"][1] <= ROW_TAPS and p.attrs["stride"][1] in (1, 2) and not p.channels_last


POOLING = (
    Implementation(
        "rows",
        "pool",
        _rows,
        "each tap row of x loaded once as whole or masked vectors, every other lane at stride 2, the taps "
        "shifted lanes of them: the map's taps two columns apart were gathers of 64-bit indices",
    ),
    Implementation(
        "map",
        "map",
        _small,
        "a map over the outputs folding the window's loads: its loop over Wo vectorizes and runs on the "
        "map's team, and reads and writes an int8 program's channels-last images in place",
    ),
    Implementation(
        "reduction", "reduction", lambda p: True, "a window of many taps: a reduction over each window's kh x kw taps"
    ),
)
