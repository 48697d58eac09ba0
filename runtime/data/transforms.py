"""The transforms of photos (runtime/data/photos.py), each the algorithm of torchvision's
transform of the same name on a Pillow image, so that the same crop box gives the same pixels:

    training   `augment = photos(crop = "random_resized", scale = [0.08, 1.0], ratio = [0.75, 1.3333],
               flip = true, brightness = 0.0, contrast = 0.0, saturation = 0.0)`:
               RandomResizedCrop(size, scale, ratio) (10 tries, then a centre crop),
               RandomHorizontalFlip(), ColorJitter(brightness, contrast, saturation)
    evaluation Resize(int(size / 0.875)) + CenterCrop(size): validation, test, `dlc eval`, `dlc predict`,
               and training without `augment = photos(...)`

Crops and resizes are Pillow's (bilinear, antialiased as Pillow always is: torchvision's PIL
path). The random draws of an example come from its own generator, made from (seed, epoch,
example) by the caller, in a fixed order: the crop's tries, the flip, the jitter's factors
and order."""

from __future__ import annotations

import math

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import Args, Call, choice, flag, number, show

CENTER_FRACTION = 0.875  # evaluation: the centre crop's share of the resized short side (224 of 256)
CROPS = ("random_resized", "center")
PHOTOS = {
    "crop": "random_resized",
    "scale": [0.08, 1.0],
    "ratio": [0.75, 4 / 3],
    "flip": True,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
}


# ---- the setting ------------------------------------------------------------------------------------------
def photo_options(call: Call) -> dict:
    """photos(...) of an `augment` setting, every argument checked where it is written."""
    args = call.bind(PHOTOS)
    options = {"form": "photos", "crop": args.check("crop", choice, options=CROPS), "flip": args.check("flip", flag)}
    options["scale"] = _range(args, "scale", 0, 1)
    options["ratio"] = _range(args, "ratio", 0, math.inf)
    for name in ("brightness", "contrast", "saturation"):
        options[name] = args.check(name, number, low=0)
    return options


def _range(args: Args, name: str, low: float, high: float) -> tuple:
    """[a, b] with low < a <= b <= high."""
    v = args[name]
    if not isinstance(v, list) or len(v) != 2:
        raise DlcError(f"{args.src}: '{name}' must be a range [low, high], got {show(v)}", args.span(name))
    a, b = (number(args.src, name, x, span=args.span(name)) for x in v)
    if not low < a <= b <= high:
        bounds = f"0 < low <= high <= {high:g}" if high < math.inf else "0 < low <= high"
        raise DlcError(
            f"{args.src}: '{name}' must be a range [low, high] with {bounds}, got {show(v)}", args.span(name)
        )
    return a, b


# ---- geometry ------------------------------------------------------------------------------------------------
def random_resized_box(width: int, height: int, scale: tuple, ratio: tuple, rng: np.random.Generator) -> tuple:
    """(left, top, right, bottom) of torchvision's RandomResizedCrop.get_params: an area of
    `scale` of the image's and an aspect ratio log-uniform in `ratio`, 10 tries to fit one,
    else the centre crop of the image clamped to `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def resized_size(width: int, height: int, short: int) -> tuple:
    """(width, height) of torchvision's Resize(short): the shorter side made `short`, the
    longer in proportion (rounded down)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def evaluation_short_side(size: int) -> int:
    """The short side the evaluation transform resizes to before its centre crop of `size`."""
    return int(size / CENTER_FRACTION)


def center_box(width: int, height: int, size: int) -> tuple:
    """(left, top, right, bottom) of torchvision's CenterCrop(size) of an image at least that large."""
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return left, top, left + size, top + size


# ---- flip and colour ----------------------------------------------------------------------------------------
def flip_and_jitter(img, options: dict, rng: np.random.Generator):
    """The image flipped left-right with probability 1/2 (`flip`), then its brightness,
    contrast and saturation each scaled by a factor uniform in [max(0, 1 - x), 1 + x], in a
    random order (torchvision's ColorJitter, hue aside)."""
    from PIL import Image, ImageEnhance  # the caller checked that Pillow is installed

    if options["flip"] and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    amounts = [options[name] for name in ("brightness", "contrast", "saturation")]
    if any(amounts):
        factors = [rng.uniform(max(0.0, 1 - x), 1 + x) if x else None for x in amounts]
        for k in rng.permutation(3):
            if factors[k] is not None:
                img = enhancers[k](img).enhance(factors[k])
    return img
