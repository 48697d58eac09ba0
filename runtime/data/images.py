"""The image data sets: the 8x8 digits that ship with dlc, and the public ones `dlc data
fetch` downloads and converts (runtime/data/download.py).

    digits(scale = 1/16, image = true)               the 8x8 UCI digits shipped in runtime/data/datasets
    mnist / fashion_mnist(split = "train", scale = 1/255)      28x28 grey images, fetched by `dlc data fetch`
    cifar10(split = "train", scale = 1/255)          32x32 colour images, fetched by `dlc data fetch`
    cifar100(split = "train", labels = "fine", scale = 1/255)  the same, 100 classes (or 20 "coarse")
"""

from __future__ import annotations

import pathlib
from importlib import resources

from dlc.compiler.errors import DlcError
from dlc.runtime.data import download
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.formats import float32, label_column, parse_csv, read_npz, table_dataset
from dlc.runtime.data.source import source
from dlc.compiler.frontend.settings import Args, choice, flag, number


# ---- digits ---------------------------------------------------------------------------------------
def digits_path() -> pathlib.Path:
    """Where the 8x8 digits ship: package data of dlc.runtime, so any install has them."""
    return pathlib.Path(str(resources.files("dlc.runtime.data").joinpath("datasets", "digits.csv.gz")))


@source(scale=1 / 16, image=True)
def digits(base_dir, args: Args) -> Dataset:
    """The UCI 8x8 handwritten digits (1797 examples): "x" [N, 1, 8, 8] (or [N, 64]), "y" 0..9."""
    scale = args.check("scale", number)
    image = args.check("image", flag)
    p = digits_path()
    if not p.is_file():
        raise DlcError(
            f"digits: the digits data set is missing: expected {p}, which ships with dlc's"
            f" source in runtime/data/datasets (reinstall dlc from its repository)"
        )
    table, _ = parse_csv(p, "false")
    if table.shape[1] != 65:
        raise DlcError(f"digits: {p} is damaged: expected 65 columns (64 pixels and the label), found {table.shape[1]}")
    ds = table_dataset("digits", p, table, None, -1, scale)
    if image:
        ds.columns["x"] = ds.columns["x"].reshape(-1, 1, 8, 8)
    ds.meta["classes"] = 10
    return ds


# ---- public data sets, fetched by `dlc data fetch` -----------------------------------------------------
def _fetched(args: Args, labels: str = "y", classes: int = 10) -> Dataset:
    """A split of a data set `dlc data fetch` converted: "x" [N, C, H, W] float32 * scale, "y"
    the `labels` column."""
    split = args.check("split", choice, options=download.SPLITS)
    scale = args.check("scale", number)
    columns = read_npz(download.converted(args.src, split))
    return Dataset({"x": float32(columns["x"], scale), "y": label_column(columns[labels])}, {"classes": classes})


@source(split="train", scale=1 / 255)
def mnist(base_dir, args: Args) -> Dataset:
    """MNIST's handwritten digits: "x" [N, 1, 28, 28], "y" 0..9; 60000 to train, 10000 to test."""
    return _fetched(args)


@source(split="train", scale=1 / 255)
def fashion_mnist(base_dir, args: Args) -> Dataset:
    """Fashion-MNIST's clothes: "x" [N, 1, 28, 28], "y" 0..9; 60000 to train, 10000 to test."""
    return _fetched(args)


@source(split="train", scale=1 / 255)
def cifar10(base_dir, args: Args) -> Dataset:
    """CIFAR-10: "x" [N, 3, 32, 32] (RGB), "y" 0..9; 50000 to train, 10000 to test."""
    return _fetched(args)


@source(split="train", labels="fine", scale=1 / 255)
def cifar100(base_dir, args: Args) -> Dataset:
    """CIFAR-100: "x" [N, 3, 32, 32] (RGB), "y" the 100 classes (or labels = "coarse": the 20
    superclasses); 50000 to train, 10000 to test."""
    fine = args.check("labels", choice, options=("fine", "coarse")) == "fine"
    return _fetched(args, "y" if fine else "coarse", 100 if fine else 20)
