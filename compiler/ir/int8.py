"""int8 arithmetic, exactly as docs/quantization.md ("The arithmetic") writes it: the oracle
every engine that runs integer products must agree with bit for bit.

Weights are symmetric int8 per output channel, activations u8 with a zero point; a
product's sums are int32 (exact), and its value returns to float32 as f32(acc) · M[o].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAST_SCALE = 2.0**-60  # a scale below it is refused (M[o] would leave float32's normal range)
MOST_SCALE = 2.0**40  # and above it (f32(acc) · M[o] could overflow)
WEIGHT_MAX = 127  # symmetric: -127..127, never -128
LONGEST_SUM = (2**31 - 1) // (255 * WEIGHT_MAX)  # the most terms whose int32 sum cannot overflow


def weight_scales(w: np.ndarray, channel_axis: int) -> np.ndarray:
    """s_w[o] = max(f32(max|W[o]| / 127), 2^-60), float32 [channels]."""
    a = np.moveaxis(np.abs(np.asarray(w, np.float64)), channel_axis, 0).reshape(w.shape[channel_axis], -1)
    largest = a.max(axis=1) if a.shape[1] else np.zeros(len(a))
    return np.maximum((largest / WEIGHT_MAX).astype(np.float32), np.float32(LEAST_SCALE))


def quantize_weights(w: np.ndarray, scales: np.ndarray, channel_axis: int) -> np.ndarray:
    """q_w = clip(rint(W / s_w[o]) in float64, -127, 127), int8 of W's shape."""
    shape = [1] * w.ndim
    shape[channel_axis] = -1
    q = np.rint(np.asarray(w, np.float64) / np.asarray(scales, np.float64).reshape(shape))
    return np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)


def activation_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """(s_x, z_x) of the range [lo, hi] widened to hold 0: s_x = max(f32((hi - lo) / 255), 2^-60),
    z_x = clip(rint(-lo / s_x) in float64, 0, 255)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(np.float32((hi - lo) / 255), np.float32(LEAST_SCALE))
    zero = np.clip(np.rint(-lo / np.float64(scale)), 0, 255)
    return np.float32(scale), np.uint8(zero)


def quantize(x: np.ndarray, scale: np.float32, zero: np.uint8) -> np.ndarray:
    """q = clip(rint(x / s_x) + z_x, 0, 255) in float32, uint8; NaN quantizes as 0.0 does."""
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        t = np.rint(np.where(np.isnan(x), np.float32(0), x) / np.float32(scale)) + np.float32(zero)
    return np.clip(t, 0, 255).astype(np.uint8)


def dequantize(acc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """y = f32(acc) · M[o], M broadcast along the value's channel axis by the caller."""
    return acc.astype(np.float32) * m


def check_sum(acc: np.ndarray) -> np.ndarray:
    """The int64 sums as int32: they fit by construction (K <= LONGEST_SUM); a sum that did not
    would be a bug of the selection, never a value to wrap."""
    if acc.size and (acc.max() > np.iinfo(np.int32).max or acc.min() < np.iinfo(np.int32).min):
        raise AssertionError("an int8 product's sum overflowed int32")
    return acc.astype(np.int32)


def centered(q: np.ndarray, zero: np.uint8) -> np.ndarray:
    """q - z_x as int64: a product of these with q_w by the float primitive's own numpy code
    (matmul, conv2d, whose padding then adds 0) is the exact integer sum."""
    return q.astype(np.int64) - int(zero)


@dataclass
class QuantizedProduct:
    """One integer product's numbers, as the quantized checkpoint holds them: the weights'
    parameter in int8, its per-channel scales, and its input's scale and zero point."""

    weight: np.ndarray  # int8, the parameter's shape
    weight_scale: np.ndarray  # float32 [channels]
    input_scale: np.float32
    input_zero_point: np.uint8

    @classmethod
    def calibrated(cls, w: np.ndarray, channel_axis: int, lo: float, hi: float) -> "QuantizedProduct":
        """The quantization of weights `w` and of an input observed in [lo, hi]."""
        scales = weight_scales(w, channel_axis)
        return cls(quantize_weights(w, scales, channel_axis), scales, *activation_params(lo, hi))

    def multipliers(self) -> np.ndarray:
        """M[o] = f32(s_x · s_w[o] in float64)."""
        return (np.float64(self.input_scale) * self.weight_scale.astype(np.float64)).astype(np.float32)
