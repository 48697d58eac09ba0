"""Photos in files: the source `images(path, size = 224)`, streamed (runtime/data/streamed.py).

    images(path, size = 224, mean = none, std = none, skip_bad = false, cache = false)

`path` is a folder with a subfolder per class (the sorted folder names are the classes 0..K-1,
the images anywhere below each), or a listing: a .csv of `file,label` rows (an optional
`file,label` header) or a .json list of {"file": ..., "label": ...}, the files relative to the
listing. Labels that are all integers are the class ids; names are sorted into ids. The data
set is "x", a column of [C, size, size] float32 examples (C: 3, or 1 for a model whose input
has one channel), and "y", the class ids; meta holds the class names, which checkpoints keep.

Nothing is decoded when the source is read: only the files' paths and labels are kept, and a
batch decodes its examples (runtime/data/prefetch.py), with Pillow: JPEG, PNG, BMP, GIF (its
first frame), WebP and TIFF, in any mode (grey, RGBA, palette, CMYK, 16-bit), turned upright by
their EXIF orientation and converted to the model's channels (an alpha channel dropped, as
torchvision's ImageFolder does). A JPEG larger than needed is decoded at a reduced size (its
DCT scaling, Image.draft). Values are 0..1, then (x - mean) / std per channel when given.
Transforms: runtime/data/transforms.py. A file that cannot be decoded is an error naming it;
with `skip_bad = true` every file is decoded once when the source is read and the bad ones are
left out and counted (meta "skipped"). `cache = true` keeps each example's evaluation
transform once decoded, its pixels (for folders that fit in memory).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pathlib

import numpy as np

from dlc.compiler.errors import DlcError, json_document
from dlc.compiler.frontend.settings import REQUIRED, Args, flag, integer, number, show
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.files import class_folders
from dlc.runtime.data.source import source
from dlc.runtime.data.streamed import Streamed, row_indices
from dlc.runtime.data.transforms import (
    center_box,
    evaluation_short_side,
    flip_and_jitter,
    random_resized_box,
    resized_size,
)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey: PNG, TIFF
AUGMENT_KEY = 0x9807  # an example's draws: default_rng([seed, epoch, example, AUGMENT_KEY])


def pillow():
    """PIL.Image, or an error that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise DlcError(
            'images(...) decodes photos with Pillow, which is not installed: pip install "dlc[images]"'
        ) from None
    return Image


# ---- the source ---------------------------------------------------------------------------------------------
@source(path=REQUIRED, size=224, mean=None, std=None, skip_bad=False, cache=False)
def images(base_dir, args: Args) -> Dataset:
    """Photos in class folders or a listing: "x" streamed [C, size, size], "y" class ids."""
    pillow()
    size = args.check("size", integer, low=1)
    mean = _per_channel(args, "mean", positive=False)
    std = _per_channel(args, "std", positive=True)
    skip_bad, cache = args.check("skip_bad", flag), args.check("cache", flag)
    path = args["path"]
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise DlcError(
            f"images: 'path' must be a folder or a listing (.csv, .json) in quotes, got {show(path)}", args.span("path")
        )
    root = pathlib.Path(path).expanduser()
    root = root if root.is_absolute() else base_dir / root
    if root.is_dir():
        files, labels, names = folder_examples(root)
    elif root.is_file():
        files, labels, names = listing_examples(root)
    else:
        raise DlcError(f"images: {root} is neither a folder of class folders nor a listing file", args.span("path"))
    meta = {"classes": len(names), "class_names": names, "image": {"size": size, "mean": mean, "std": std}}
    if skip_bad:
        good = [i for i, f in enumerate(files) if readable(f)]
        meta["skipped"] = len(files) - len(good)
        if not good:
            raise DlcError(f"images: none of the {len(files)} files under {root} is an image Pillow can decode")
        files, labels = [files[i] for i in good], labels[good]
    column = PhotoColumn(files, np.arange(len(files)), size, 3, mean, std, cache={} if cache else None)
    return Dataset({"x": column, "y": labels}, meta)


def _per_channel(args: Args, name: str, positive: bool) -> list | None:
    """`mean` or `std`: none, or a number per channel (1 or 3)."""
    v = args[name]
    if v is None:
        return None
    if not isinstance(v, list) or len(v) not in (1, 3):
        raise DlcError(
            f"images: '{name}' must be a number per channel, such as [0.485, 0.456, 0.406], got {show(v)}",
            args.span(name),
        )
    return [number("images", name, x, positive=positive, span=args.span(name)) for x in v]


def is_image_name(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def folder_examples(root: pathlib.Path) -> tuple[list, np.ndarray, list]:
    """(files, class ids, class names) of a folder of class folders, every image below each."""
    return class_folders(
        root,
        "images",
        "images",
        is_image_name,
        ", ".join(EXTENSIONS),
        "photos/cat/1.jpg, photos/dog/2.jpg",
        "a listing of file,label rows",
    )


def listing_examples(listing: pathlib.Path) -> tuple[list, np.ndarray, list]:
    """(files, class ids, class names) of a .csv of file,label rows or a .json list of them."""
    suffix = listing.suffix.lower()
    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DlcError(f"images: cannot read the listing {listing}: {getattr(e, 'strerror', None) or e}") from None
    if suffix == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
        if rows and [c.strip().lower() for c in rows[0]] == ["file", "label"]:
            rows = rows[1:]
        bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
        if bad is not None:
            raise DlcError(f"images: {listing}: a row must be file,label, got {','.join(rows[bad])!r}")
        pairs = [(f.strip(), lab.strip()) for f, lab in rows]
    elif suffix == ".json":
        try:
            items = json_document(text)
        except ValueError as e:
            raise DlcError(f"images: {listing} is not JSON: {e}") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) and {"file", "label"} <= set(i) for i in items):
            raise DlcError(f'images: {listing} must be a list of {{"file": ..., "label": ...}} objects')
        pairs = [(str(i["file"]), i["label"]) for i in items]
    else:
        raise DlcError(f"images: {listing} is not a folder, a .csv or a .json listing of file,label rows")
    if not pairs:
        raise DlcError(f"images: the listing {listing} names no images")
    files = [str(listing.parent / f) for f, _ in pairs]
    missing = next((f for f in files if not os.path.isfile(f)), None)
    if missing is not None:
        raise DlcError(f"images: {listing} names {missing}, which is not a file")
    labels = [lab for _, lab in pairs]
    if all(isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in labels):
        ids = np.array([int(v) for v in labels], np.int32)
        if ids.min() < 0:
            raise DlcError(f"images: {listing}: class ids start at 0, got {ids.min()}")
        return files, ids, [str(k) for k in range(int(ids.max()) + 1)]
    names = sorted({str(v) for v in labels})
    index = {name: k for k, name in enumerate(names)}
    return files, np.array([index[str(v)] for v in labels], np.int32), names


# ---- photos to predict on --------------------------------------------------------------------------------------
def photo_paths(data) -> list | None:
    """The image files `data` names: an image file, a folder (every image below it, sorted), or
    a list of image files; None when `data` is none of these (another kind of data)."""
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        paths = [os.fspath(p) for p in data]
        if not all(is_image_name(os.path.basename(p)) for p in paths):
            return None
    elif isinstance(data, (str, os.PathLike)) and is_image_name(os.path.basename(os.fspath(data))):
        paths = [os.fspath(data)]
    elif isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        paths = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(data, followlinks=True) for f in fs if is_image_name(f)
        )
        if not paths:
            raise DlcError(f"{os.fspath(data)} holds no images ({', '.join(EXTENSIONS)})")
        return paths
    else:
        return None
    missing = next((p for p in paths if not os.path.isfile(p)), None)
    if missing is not None:
        raise DlcError(f"{missing}: no such image file")
    return paths


def photo_column(paths: list, image: dict | None) -> PhotoColumn:
    """The evaluation transform of image files as the weights were trained (`image`: the
    images(...) facts a checkpoint keeps: size, mean, std)."""
    pillow()
    if image is None:
        raise DlcError(
            "these weights were not trained on images(...): their checkpoint does not say the size and "
            "normalization of the photos, so predict on arrays instead"
        )
    return PhotoColumn(list(paths), np.arange(len(paths)), image["size"], 3, image.get("mean"), image.get("std"))


def top_classes(probs: np.ndarray, names: list | None, k: int = 3) -> list:
    """The `k` highest classes of each row of scores [N, classes] as (name, score) pairs, best
    first (a class without a name is `class i`)."""
    probs = probs.reshape(len(probs), -1)
    name = lambda i: names[i] if names is not None and i < len(names) else f"class {i}"
    return [[(name(int(i)), float(row[i])) for i in np.argsort(-row, kind="stable")[:k]] for row in probs]


# ---- decoding -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def opened(path: str):
    """The image file, open: a file that is gone, not an image, or damaged (found while it is
    read in the `with`) is an error naming it."""
    Image = pillow()
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise DlcError(f"images: {path} is gone: it was deleted or moved after the folder was listed") from None
    except Image.UnidentifiedImageError:
        raise DlcError(f"images: {path} is not an image Pillow can read (JPEG, PNG, BMP, GIF, WebP, TIFF)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DlcError(f"images: cannot decode {path}: {e}") from None


def readable(path: str) -> bool:
    """Whether Pillow decodes the file (a JPEG at its smallest reduced size)."""
    try:
        with opened(path) as img:
            loaded(img, (1, 1), "RGB")
    except DlcError:
        return False
    return True


def _orientation(img) -> int:
    return img.getexif().get(0x0112, 1)


def upright_size(img) -> tuple:
    """(width, height) of an opened image once turned by its EXIF orientation."""
    w, h = img.size
    return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)


def loaded(img, need: tuple, mode: str):
    """The pixels of an opened image, upright (EXIF orientation) in `mode` ("RGB" or "L"): a
    JPEG at the smallest reduced size at least `need` (width, height, upright), else whole;
    16-bit grey scaled to 8 bits, a palette through RGBA (its transparency), alpha dropped."""
    from PIL import ImageOps

    orientation = _orientation(img)
    if img.format == "JPEG":
        img.draft(img.mode, need[::-1] if orientation in (5, 6, 7, 8) else need)
    if orientation != 1:  # upright already: exif_transpose would copy the decoded image
        img = ImageOps.exif_transpose(img)
    if img.mode in SIXTEEN_BIT:
        a = np.asarray(img, np.float64) * (255 / 65535)
        img = pillow().fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == mode else img.convert(mode)


def pixels(path: str, size: int, mode: str, options: dict | None, rng: np.random.Generator | None) -> np.ndarray:
    """One example's pixels, uint8 [size, size, C] (RGB) or [size, size] (L): the training
    transform of `options` (transforms.py) drawn from `rng`, or without them the evaluation
    transform."""
    Image = pillow()
    random_crop = options is not None and options["crop"] == "random_resized"
    with opened(path) as img:
        width, height = upright_size(img)
        if random_crop:
            box = random_resized_box(width, height, options["scale"], options["ratio"], rng)
            need = (math.ceil(width * size / (box[2] - box[0])), math.ceil(height * size / (box[3] - box[1])))
        else:
            need = resized_size(width, height, evaluation_short_side(size))
        img = loaded(img, need, mode)
        if random_crop:
            sx, sy = img.width / width, img.height / height  # 1 unless a JPEG was decoded reduced
            box = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
            img = img.crop(box).resize((size, size), Image.Resampling.BILINEAR)
        else:
            img = img.resize(need, Image.Resampling.BILINEAR)
            img = img.crop(center_box(img.width, img.height, size))
    if options is not None:
        img = flip_and_jitter(img, options, rng)
    return np.asarray(img)


# ---- the column ----------------------------------------------------------------------------------------------
class PhotoColumn(Streamed):
    """The examples of image files, decoded when read: `files` (every file of the source,
    shared by the columns of its splits) and `ids` (this column's examples among them, which
    also key their random draws)."""

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        files: list,
        ids: np.ndarray,
        size: int,
        channels: int,
        mean,
        std,
        options: dict | None = None,
        seed: int = 0,
        cache: dict | None = None,
    ):
        self.files, self.ids, self.size, self.channels = files, ids, size, channels
        self.mean, self.std, self.options, self.seed, self.cache = mean, std, options, seed, cache
        self.shape = (len(ids), channels, size, size)
        self.values = self.value_table()

    def _with(self, **changes) -> "PhotoColumn":
        fields = (
            dict(
                files=self.files,
                ids=self.ids,
                size=self.size,
                channels=self.channels,
                mean=self.mean,
                std=self.std,
                options=self.options,
                seed=self.seed,
                cache=self.cache,
            )
            | changes
        )
        return PhotoColumn(**fields)

    def __getitem__(self, index) -> "PhotoColumn":
        return self._with(ids=self.ids[row_indices(len(self), index)])

    def shaped(self, example: tuple) -> "PhotoColumn | None":
        if len(example) == 3 and example[0] in (1, 3) and tuple(example[1:]) == (self.size, self.size):
            if example[0] == self.channels:
                return self
            return self._with(channels=example[0], cache=None if self.cache is None else {})
        return None

    def augmented(self, options: dict, seed: int, span=None) -> "PhotoColumn":
        return self._with(options=options, seed=seed)

    def read(self, rows, epoch: int | None) -> np.ndarray:
        out = np.empty((len(row_indices(len(self), rows)),) + self.shape[1:], np.float32)
        self.read_into(rows, epoch, out)
        return out

    def read_into(self, rows, epoch: int | None, out: np.ndarray):
        for k, i in enumerate(self.ids[row_indices(len(self), rows)].tolist()):
            self.example(i, epoch, out[k])

    def per_channel(self, values: list) -> np.ndarray:
        """`mean` or `std` as [C, 1]: a grey model's one value is the mean of three given."""
        v = np.asarray(values, np.float32)
        return (v if self.channels == len(v) else np.full(self.channels, v.mean(), np.float32))[:, None]

    def value_table(self) -> np.ndarray:
        """[C, 256] float32: each channel's value of each byte, (byte / 255 - mean) / std, computed
        as torchvision's ToTensor and Normalize compute it on every pixel (divided, not scaled),
        so that a lookup gives the same bits in one pass over the pixels and no temporaries."""
        table = np.repeat((np.arange(256, dtype=np.float32) / np.float32(255))[None], self.channels, axis=0)
        if self.mean is not None:
            table -= self.per_channel(self.mean)
        if self.std is not None:
            table /= self.per_channel(self.std)
        return table

    def example(self, i: int, epoch: int | None, out: np.ndarray):
        """Example `i` of the files, normalized, into `out` [C, size, size]: at an epoch of a run
        with options, its training transform."""
        random = epoch is not None and self.options is not None
        a = self.cache.get(i) if not random and self.cache is not None else None
        if a is None:
            rng = np.random.default_rng([self.seed, epoch, i, AUGMENT_KEY]) if random else None
            mode = "L" if self.channels == 1 else "RGB"
            a = pixels(self.files[i], self.size, mode, self.options if random else None, rng)
            a = a[:, :, None] if a.ndim == 2 else a
            if not random and self.cache is not None:
                self.cache[i] = a  # its pixels: a quarter of its values' bytes
        for c in range(self.channels):
            np.take(self.values[c], a[:, :, c], out=out[c], mode="clip")  # clip: no buffered copy of out
