"""Image batches written as one PNG grid, with the standard library only (zlib, struct):
how `dlc predict --output NAME.png` shows a model's generated images (docs/cli.md).

A batch is [N, H, W], [N, 1, H, W] (grey) or [N, 3, H, W] (colour, channels first as
everywhere in dlc). Values in [0, 1] are written as they are; any other range is
stretched from its minimum to its maximum. Small images are enlarged by a whole factor
so that the grid is at least about 256 pixels wide."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from dlc.compiler.errors import DlcError


def image_batch(name: str, value: np.ndarray) -> np.ndarray:
    """`value` as [N, H, W, C] (C 1 or 3), or an error that says which shapes are images."""
    if value.ndim == 3:
        value = value[:, None]
    if value.ndim != 4 or value.shape[1] not in (1, 3):
        raise DlcError(
            f"output '{name}' is {list(value.shape)}, not a batch of images: a .png needs"
            f" [N, H, W], [N, 1, H, W] or [N, 3, H, W]"
        )
    if value.shape[0] == 0:
        raise DlcError(f"output '{name}' holds no images")
    return np.moveaxis(value, 1, -1)


def grid(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] floats → one uint8 [rows, cols, C] picture: a square-ish grid, 1-pixel gaps."""
    a = np.nan_to_num(images.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    n, h, w, c = a.shape
    zoom = max(1, 256 // (w * math.ceil(math.sqrt(n))))
    a = a.repeat(zoom, 1).repeat(zoom, 2)
    h, w = h * zoom, w * zoom
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.ones(((h + 1) * rows - 1, (w + 1) * cols - 1, c))
    for i in range(n):
        r, q = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = a[i]
    return np.round(out * 255).astype(np.uint8)


def write_png(path, picture: np.ndarray):
    """An 8-bit grey (C = 1) or RGB (C = 3) PNG of a [rows, cols, C] uint8 array."""
    rows, cols, c = picture.shape
    raw = b"".join(b"\0" + picture[r].tobytes() for r in range(rows))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", cols, rows, 8, 0 if c == 1 else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )
