"""Pooling by rows (kernels/pool, compiler/native/choose/pooling.py): which poolings take it,
and its outputs against numpy's windows and, bit for bit, against the map it replaces —
over odd sizes, padding, stride 1 and 2, NaN and -inf among the values, at AVX2's and
AVX-512's vector widths, on one thread and two."""

from __future__ import annotations

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.choose import pooling
from dlc.compiler.native.codegen import parallel
from dlc.runtime.engines.native import NO_KEY, Executable
from helpers.native_cases import run_native

# (op, kernel, stride, padding, H, W)
CASES = {
    "resnet-3x3-s2-p1": ("max", 3, 2, 1, 17, 17),
    "3x3-s2-p1-wide-odd": ("max", 3, 2, 1, 9, 71),
    "3x3-s1-p1": ("max", 3, 1, 1, 6, 37),
    "2x2-s2-odd": ("max", 2, 2, 0, 7, 9),
    "3x2-s1x2-p1x0": ("max", (3, 2), (1, 2), (1, 0), 5, 12),
    "4x4-s2-p2-tiny": ("max", 4, 2, 2, 3, 2),
    "avg-3x3-s2-p1": ("avg", 3, 2, 1, 11, 19),
    "avg-2x2-s1": ("avg", 2, 1, 0, 5, 33),
}


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _model(op, kernel, stride, padding, h, w, channels=3):
    k, s, p = (f"({a}, {b})" for a, b in map(_pair, (kernel, stride, padding)))
    return load_text(
        f"model m {{\n    input x: f32[B, {channels}, {h}, {w}]\n    output y = {op}_pool(x, {k}, {s}, {p})\n}}\n",
        "m.dl",
    ).build(None, training=False)


def _numpy_pool(x, op, kernel, stride, padding):
    """The pooling in float32 in the map's order: the taps (i, j) folded from the first, a
    mean's each times 1 / (kh·kw); outside x, -inf for a max and 0 for a mean."""
    (kh, kw), (sh, sw), (ph, pw) = map(_pair, (kernel, stride, padding))
    fill = -np.inf if op == "max" else 0.0
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    scale = np.float32(1.0 / (kh * kw))
    total = None
    for i in range(kh):
        for j in range(kw):
            tap = padded[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            tap = tap if op == "max" else tap * scale
            if total is None:
                total = tap
            else:
                total = np.maximum(total, tap) if op == "max" else total + tap
    return total


def _feeds(name, h, w, channels=3):
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((2, channels, h, w)).astype(np.float32) - 1.0  # mostly negative: padding is not 0
    x.flat[rng.integers(0, x.size, 3)] = np.nan
    x.flat[rng.integers(0, x.size, 3)] = -np.inf
    return {"x": x, "rng": NO_KEY}


def _kernels(exe) -> list:
    return [k.text()[0] for k in exe.program.kernels]


def _predict(name):
    op, kernel, stride, padding, h, w = CASES[name]
    exe = Executable(_model(op, kernel, stride, padding, h, w).graph)
    feeds = _feeds(name, h, w)
    return exe, feeds, run_native(exe, feeds, {})["output:y"]


@pytest.mark.parametrize("width", ["host", "AVX2", "AVX512"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_pooling_by_rows_is_the_maps_bits(name, width, threads, monkeypatch, tmp_path):
    """By rows, the output is numpy's windows folded in the map's order, NaN where a window
    holds one, bit for bit; and the map's own output, its list's next entry, the same
    bits (AVX2's 8 lanes and AVX-512's 16 compiled here: LLVM splits a vector wider than
    the host's)."""
    from dlc.compiler.native.codegen import image_rows
    from dlc.compiler.native.codegen.gemm import blocking

    if width != "host":
        monkeypatch.setattr(image_rows, "vector_width", lambda: getattr(blocking, width).vw)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLC_NUM_THREADS", str(threads))
    monkeypatch.setattr(parallel, "PARALLEL_BELOW", 1)
    op, kernel, stride, padding, h, w = CASES[name]
    exe, feeds, rows = _predict(name)
    assert any(line.startswith(f"pool {'max' if op == 'max' else 'mean'}") for line in _kernels(exe)), _kernels(exe)
    want = _numpy_pool(feeds["x"], op, kernel, stride, padding)
    assert rows.shape == want.shape
    assert np.isnan(rows).any() and np.isnan(rows).sum() < rows.size / 2
    assert rows.tobytes() == want.tobytes(), np.nanmax(np.abs(rows - want))

    monkeypatch.setattr(pooling, "POOLING", tuple(i for i in pooling.POOLING if i.name != "rows"))
    exe, _, mapped = _predict(name)
    assert not any(line.startswith("pool ") for line in _kernels(exe)), _kernels(exe)
    assert mapped.tobytes() == rows.tobytes()


@pytest.mark.parametrize(
    "kernel, stride, channels_last, chosen",
    [
        ((3, 3), (2, 2), False, "rows"),  # ResNet's after its stem
        ((2, 2), (2, 2), False, "rows"),
        ((3, 3), (2, 3), False, "map"),  # a stride of 3 along W: the rows' vectors take every lane or every other
        ((1, 9), (1, 1), False, "map"),  # a row of taps longer than ROW_TAPS
        ((3, 3), (2, 2), True, "map"),  # an int8 program's image between integer convolutions
        ((5, 5), (1, 1), False, "reduction"),  # more taps than SMALL_WINDOW
    ],
)
def test_which_poolings_are_by_rows(kernel, stride, channels_last, chosen):
    attrs = {"kernel": kernel, "stride": stride, "padding": (0, 0)}
    assert pooling.chosen(pooling.Pool((1, 8, 32, 32), attrs, channels_last)).name == chosen
