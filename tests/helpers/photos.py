"""Folders of small generated photos, learnable: a red disc or a cyan square on a dark ground
of random size, colour and place, PNGs and JPEGs mixed; and a tiny classifier of them."""

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square")

MODEL = """
model photos {
    input  x: f32[B, CHANNELS, 8, 8]
    target y: i32[B]
    logits = dense(flatten(x), 2)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
    output probs = softmax(logits)
}
"""


def shape_photo(kind: str, rng: np.random.Generator, width: int = 24, height: int = 18):
    """A PIL image of a `kind` ("circle" or "square") near the centre of a width x height picture."""
    from PIL import Image, ImageDraw

    w, h = width + int(rng.integers(-4, 5)), height + int(rng.integers(-3, 4))
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 80, 3)))
    r = min(w, h) // 3
    cx, cy = w // 2 + int(rng.integers(-2, 3)), h // 2 + int(rng.integers(-2, 3))
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(220, 60, 60))
    else:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=(60, 200, 230))
    return img


def photo_folder(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """root/circle/0.png, root/circle/1.jpg, ...: `per_class` photos of each class."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_photo(kind, rng).save(root / kind / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def photo_model(tmp: Path, train: str, channels: int = 3, name: str = "m.dl") -> str:
    """A .dl file of a classifier of 8x8 photos with the train block `train`."""
    path = tmp / name
    path.write_text(MODEL.replace("CHANNELS", str(channels)) + train + "\n")
    return str(path)
