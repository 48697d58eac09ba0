"""Synthetic data sets, made from their arguments: the same arguments give the same data.

    xor(repeat = 1)                                  the four XOR points
    spirals(n = 300, classes = 3, noise = 0.2)       interleaved spirals, one per class
    blobs(n = 200, centers = 2, std = 1.0, labels = "index")   gaussian clusters
    sine(window = 20, n = 2000, noise = 0, frequencies = 1)    next-value forecasting
    copy / reverse / sort(min_len = 8, max_len = 12, symbols = 10, n = 10000)   seq2seq tasks:
        "src" padded with 0 after its "src_lengths" symbols, "dec_in" BOS and the target,
        "dec_out" the target and EOS

All but xor also take `seed` (default 0).
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.source import source
from dlc.compiler.frontend.settings import Args, choice, integer, number


@source(repeat=1)
def xor(base_dir, args: Args) -> Dataset:
    """The four XOR points: "x" [4 * repeat, 2], "y" [4 * repeat, 1] (both float32)."""
    repeat = args.check("repeat", integer, low=1)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    return Dataset({"x": np.tile(x, (repeat, 1)), "y": np.tile(y, (repeat, 1))}, {})


def _counts(n: int, k: int) -> list[int]:
    return [n // k + (i < n % k) for i in range(k)]


@source(n=300, classes=3, noise=0.2, seed=0)
def spirals(base_dir, args: Args) -> Dataset:
    """`classes` interleaved spiral arms in the plane: "x" [n, 2] float32, "y" [n] int32 (shuffled)."""
    n = args.check("n", integer, low=1)
    classes = args.check("classes", integer, low=2)
    noise = args.check("noise", number, low=0)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    xs, ys = [], []
    for c, m in enumerate(_counts(n, classes)):
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, m) + rng.normal(0.0, noise, m)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(m, c))
    order = rng.permutation(n)
    x = np.concatenate(xs)[order].astype(np.float32)
    y = np.concatenate(ys)[order].astype(np.int32)
    return Dataset({"x": x, "y": y}, {"classes": classes})


@source(n=200, centers=2, std=1.0, labels="index", seed=0)
def blobs(base_dir, args: Args) -> Dataset:
    """Gaussian clusters around `centers` points: "x" [n, 2], "y" class index (or -1/+1)."""
    n = args.check("n", integer, low=1)
    centers = args.check("centers", integer, low=1)
    std = args.check("std", number, low=0)
    labels = args.check("labels", choice, options=("index", "sign"))
    if labels == "sign" and centers != 2:
        raise DlcError(f"blobs: labels = \"sign\" needs centers = 2, got centers = {centers}")
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    # centers evenly spaced on a circle of radius 5, at a random rotation
    angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(centers) / centers
    mid = 5.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    cls = np.concatenate([np.full(m, c) for c, m in enumerate(_counts(n, centers))])
    cls = cls[rng.permutation(n)]
    x = (mid[cls] + rng.normal(0.0, std, (n, 2))).astype(np.float32)
    if labels == "sign":
        y = np.where(cls == 0, -1.0, 1.0).astype(np.float32)
        return Dataset({"x": x, "y": y}, {"centers": mid.tolist()})
    return Dataset({"x": x, "y": cls.astype(np.int32)}, {"classes": centers, "centers": mid.tolist()})


@source(window=20, n=2000, noise=0.0, frequencies=1, seed=0)
def sine(base_dir, args: Args) -> Dataset:
    """Next-value forecasting on a sum of sines: "x" [n, window, 1] past values, "y" [n, 1] the next."""
    window = args.check("window", integer, low=1)
    n = args.check("n", integer, low=1)
    noise = args.check("noise", number, low=0)
    frequencies = args.check("frequencies", integer, low=1)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    periods = rng.uniform(max(4.0, window / 4), max(8.0, 2.0 * window), frequencies)
    phases = rng.uniform(0, 2 * np.pi, frequencies)
    t = np.arange(n + window, dtype=np.float64)
    series = np.sin(2 * np.pi * t[:, None] / periods + phases).sum(axis=1) / frequencies
    if noise:
        series = series + rng.normal(0.0, noise, series.shape)
    rows = np.arange(n)[:, None] + np.arange(window)
    x = series[rows][:, :, None].astype(np.float32)
    y = series[window : window + n][:, None].astype(np.float32)
    return Dataset({"x": x, "y": y}, {"periods": periods.tolist()})


# ---- sequence to sequence ----------------------------------------------------------------------------
PAD, BOS, EOS = 0, 1, 2


SEQ_TASK = dict(min_len=8, max_len=12, symbols=10, n=10000, seed=0)  # the parameters of copy, reverse, sort


def _seq_task(transform, args: Args) -> Dataset:
    task = args.src
    min_len = args.check("min_len", integer, low=1)
    max_len = args.check("max_len", integer, low=1)
    if min_len > max_len:
        raise DlcError(f"{task}: min_len ({min_len}) must not exceed max_len ({max_len})")
    symbols = args.check("symbols", integer, low=1)
    n = args.check("n", integer, low=1)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    lengths = rng.integers(min_len, max_len + 1, n)
    tokens = rng.integers(3, symbols + 3, (n, max_len))
    live = np.arange(max_len) < lengths[:, None]
    src = np.where(live, tokens, PAD)
    tgt = transform(tokens, lengths, live)
    dec_in = np.full((n, max_len + 1), PAD)
    dec_out = np.full((n, max_len + 1), PAD)
    dec_in[:, 0] = BOS
    dec_in[:, 1:] = tgt
    dec_out[:, :max_len] = tgt
    dec_out[np.arange(n), lengths] = EOS
    meta = {"pad": PAD, "bos": BOS, "eos": EOS, "vocab_size": symbols + 3, "max_len": max_len, "task": task}
    return Dataset(
        {
            "src": src.astype(np.int32),
            "dec_in": dec_in.astype(np.int32),
            "dec_out": dec_out.astype(np.int32),
            "src_lengths": lengths.astype(np.int32),
        },
        meta,
    )


def _copy(tokens, lengths, live):
    return np.where(live, tokens, PAD)


def _reverse(tokens, lengths, live):
    j = np.arange(tokens.shape[1])
    src_j = np.clip(lengths[:, None] - 1 - j, 0, None)
    return np.where(live, np.take_along_axis(tokens, src_j, axis=1), PAD)


def _sort(tokens, lengths, live):
    big = np.iinfo(np.int64).max
    s = np.sort(np.where(live, tokens, big), axis=1)
    return np.where(live, s, PAD)


@source(**SEQ_TASK)
def copy(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source."""
    return _seq_task(_copy, args)


@source(**SEQ_TASK)
def reverse(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source reversed."""
    return _seq_task(_reverse, args)


@source(**SEQ_TASK)
def sort(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source sorted."""
    return _seq_task(_sort, args)
