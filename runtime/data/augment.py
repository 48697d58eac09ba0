"""Augmentation of image batches: the `augment = images(shift = 1, flip = false, noise = 0.0)`
setting of a train block, and the randomly moved, flipped and noised copies it asks for; or
`augment = photos(...)`, the transforms of photos read from files (runtime/data/transforms.py),
which the data's streamed column applies to each example as it decodes it."""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import as_call, flag, integer, number
from dlc.runtime.data.transforms import photo_options


def augment_options(spec, span=None) -> dict | None:
    """images(shift = 0, flip = false, noise = 0.0) as keyword arguments of `augment`; or
    photos(...)'s options, with "form": "photos"."""
    if spec is None:
        return None
    call = as_call(spec, "augment", "images(shift = 1, flip = false, noise = 0.0)", span)
    if call.name == "photos":
        return photo_options(call)
    if call.name != "images":
        raise DlcError(
            f"augment takes images(shift = 1, flip = false, noise = 0.0) or photos(crop = "
            f"\"random_resized\", flip = true, ...), got {call.name}",
            call.span,
        )
    args = call.bind({"shift": 0, "flip": False, "noise": 0.0})
    return {
        "shift": args.check("shift", integer, low=0),
        "flip": args.check("flip", flag),
        "noise": args.check("noise", number, low=0),
    }


def augment(
    x: np.ndarray, rng: np.random.Generator, shift: int = 0, flip: bool = False, noise: float = 0.0
) -> np.ndarray:
    """Randomly shifted (zero fill, up to `shift` pixels each way), flipped (left-right) and noised
    copies of images [N, C, H, W] or [N, H, W]."""
    x = np.asarray(x)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if x.ndim not in (3, 4):
        raise DlcError(f"augment: expected images [N, C, H, W] or [N, H, W], got an array of shape {list(x.shape)}")
    shift = integer("augment", "shift", shift, low=0)
    flip = flag("augment", "flip", flip)
    noise = number("augment", "noise", noise, low=0)
    h, w = x.shape[-2:]
    if shift >= max(h, w):
        raise DlcError(f"augment: shift = {shift} is not smaller than the {h}x{w} images")
    out = x.astype(np.float32) if noise and not np.issubdtype(x.dtype, np.floating) else x.copy()
    n = x.shape[0]
    if shift and n:
        s = shift
        pad = [(0, 0)] * (x.ndim - 2) + [(s, s), (s, s)]
        padded = np.pad(out, pad)
        dy = rng.integers(-s, s + 1, n)
        dx = rng.integers(-s, s + 1, n)
        for a, b in set(zip(dy.tolist(), dx.tolist())):
            m = (dy == a) & (dx == b)
            # the image moves by (a, b): output pixel (i, j) is input pixel (i - a, j - b)
            out[m] = padded[m, ..., s - a : s - a + h, s - b : s - b + w]
    if flip and n:
        m = rng.random(n) < 0.5
        out[m] = out[m][..., ::-1]
    if noise:
        out = out + rng.normal(0.0, noise, out.shape).astype(out.dtype)
    return out
