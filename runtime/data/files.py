"""Data files: where a file argument points, and the sources that read one file format.

    npz(path)                                        every array of the archive, in file order
    csv(path, label = -1, header = auto, scale = 1)  "x" features, "y" the label column
    idx(images, labels = none, scale = 1)            MNIST's IDX format: "x" images, "y" labels

Relative paths are resolved against the `.dl` file's folder; a file that is missing but has a
gzipped twin (`train-images-idx3-ubyte` -> `train-images-idx3-ubyte.gz`) is read from the twin;
a missing file named like a public data set's says how to fetch it (runtime/data/download.py).
Images come as stored (IDX: [N, 28, 28] for MNIST); the trainer reshapes to the model's input.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.download import hint
from dlc.runtime.data.formats import (
    float32,
    label_column,
    numbers,
    parse_csv,
    read_idx,
    read_npz,
    read_utf8,
    table_dataset,
)
from dlc.runtime.data.source import source
from dlc.compiler.frontend.settings import REQUIRED, Args, choice, integer, number, show


# ---- where a file argument points -------------------------------------------------------------------
def resolve(
    src: str, name: str, path, base_dir: pathlib.Path, gz_ok: bool = True, span: Span | None = None
) -> pathlib.Path:
    """The file that argument `name` names, relative to `base_dir`; errors at `span`."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise DlcError(f"{src}: '{name}' must be a file name in quotes, got {show(path)}", span)
    p = pathlib.Path(path).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    if not p.exists() and gz_ok and not p.name.lower().endswith(".gz"):
        zipped = p.with_name(p.name + ".gz")
        if zipped.is_file():
            return zipped
    if not p.exists():
        raise DlcError(f"{src}: data file not found: {p}{hint(path)}", span)
    if not p.is_file():
        raise DlcError(f"{src}: {p} is not a file", span)
    return p


def path_arg(args: Args, name: str, base_dir: pathlib.Path, gz_ok: bool = True) -> pathlib.Path:
    """The file a source's argument names (`resolve`), errors at the argument."""
    return resolve(args.src, name, args[name], base_dir, gz_ok, args.span(name))


def read_text(path, base_dir, src: str) -> str:
    """The text of a UTF-8 file (optionally gzipped) named relative to `base_dir`; `src` names
    the reader in errors (a missing file, bytes that are not UTF-8)."""
    return read_utf8(src, resolve(src, "path", path, pathlib.Path(base_dir)))


def class_folders(root: pathlib.Path, src: str, noun: str, member, kinds: str, example: str, instead: str) -> tuple:
    """(files, class ids int32, class names) of a folder of class folders: the sorted folder names are
    the classes 0..K-1, every file below each that `member(name)` accepts its examples, sorted. Errors
    name the `noun` of its files (`kinds`: their extensions), an `example` of their places and what
    the source reads `instead` of class folders."""
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = sorted(f.name for f in root.iterdir() if f.is_file() and member(f.name))
    if not names:
        found = f" (it holds {len(loose)} {noun} but no class folders)" if loose else ""
        raise DlcError(
            f"{src}: {root} has no class folders{found}: put each class's {noun} in a folder of its "
            f"name ({example}), or give {instead}"
        )
    if loose:
        raise DlcError(f"{src}: {root / loose[0]} is not in a class folder: each file goes in the folder of its class")
    files, labels = [], []
    for k, name in enumerate(names):
        found = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(root / name, followlinks=True) for f in fs if member(f)
        )
        if not found:
            raise DlcError(
                f"{src}: the class folder {root / name} holds no {noun} ({kinds}): add its {noun} or remove it"
            )
        files += found
        labels += [k] * len(found)
    return files, np.array(labels, np.int32), names


# ---- the sources ------------------------------------------------------------------------------------
@source(path=REQUIRED)
def npz(base_dir, args: Args) -> Dataset:
    """Every array of an .npz archive, in file order, named as in the file: named columns
    unless np.savez numbered them (arr_0, arr_1, ...)."""
    columns = read_npz(path_arg(args, "path", base_dir, gz_ok=False))
    return Dataset(columns, {}, named=not all(re.fullmatch(r"arr_\d+", name) for name in columns))


@source(path=REQUIRED, label=-1, header="auto", scale=1.0)
def csv(base_dir, args: Args) -> Dataset:
    """A numeric CSV file (optionally gzipped; comma, tab or semicolon separated; blank lines and lines
    starting with # skipped): "x" float32 (every column but the label, * scale) and "y" the label column
    (int32 when all its values are integers, else float32). `label = none`: no "y". `header = auto`
    skips the first row when it is not numeric; its names go to meta["features"] and meta["label"]."""
    p = path_arg(args, "path", base_dir)
    label = args.check("label", integer) if args["label"] is not None else None
    header = args.check("header", choice, options=("auto", "true", "false"))
    scale = args.check("scale", number)
    table, names = parse_csv(p, header)
    return table_dataset("csv", p, table, names, label, scale)


@source(images=REQUIRED, labels=None, scale=1.0)
def idx(base_dir, args: Args) -> Dataset:
    """MNIST-style IDX files: "x" the images as float32 * scale, "y" the labels as int32."""
    p = path_arg(args, "images", base_dir)
    q = path_arg(args, "labels", base_dir) if args["labels"] is not None else None
    scale = args.check("scale", number)
    x = read_idx(p)
    columns = numbers("idx", p, {"x": float32(x, scale)})
    if q is not None:
        y = numbers("idx", q, {"y": read_idx(q)})["y"]
        if y.ndim != 1:
            raise DlcError(
                f"idx: the labels file {q} must hold one label per example, but its shape is"
                f" {'x'.join(map(str, y.shape))}"
            )
        if y.shape[0] != x.shape[0]:
            raise DlcError(f"idx: {p} has {x.shape[0]} images but {q} has {y.shape[0]} labels")
        columns["y"] = label_column(y)
    return Dataset(columns, {})
