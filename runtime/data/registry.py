"""Data sets for training: the value of a `train` block's `data` setting.

A setting such as

    data = idx("data/train-images-idx3-ubyte", "data/train-labels-idx1-ubyte", scale = 1/255)
    data = digits()
    data = text("data/genesis.txt", seq = 100)
    data = reverse(min_len = 8, max_len = 12, symbols = 11, n = 20000)
    data = "data/points.csv"
    data = parquet("data/iris.parquet", label = "species")

is evaluated by compiler/frontend/settings.py into a `Call` (or a plain string, a file name)
and turned into a `Dataset` (runtime/data/dataset.py) here by `load`: a call by the source
of its name in `SOURCES`, a file name by its extension (.npz, .csv / .csv.gz, .txt, IDX:
.idx*, *-ubyte[.gz], tables: .parquet, .arrow, .feather), a folder that is a table (Parquet
part files, a `datasets` folder) as one.

Every problem with the data (a missing or corrupt file, a wrong format, an unknown source, a
bad argument) is a `DlcError` with a one-line message; when the data came from a `Call`, the
error points at it. The sources, each in the module of its kind:

    files.py       npz, csv, idx
    tables.py      parquet, arrow
    text.py        text, sentences
    text_tables.py texts (labelled texts of tables and class folders, tokenized)
    images.py      digits, mnist, fashion_mnist, cifar10, cifar100
    photos.py      images (photos in class folders, streamed)
    synthetic.py   xor, spirals, blobs, sine, copy, reverse, sort
"""

from __future__ import annotations

import os
import pathlib

from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.runtime.data import files, images, photos, synthetic, tables, text, text_tables
from dlc.runtime.data.dataset import Dataset
from dlc.compiler.frontend.settings import Call, Symbol, show

SOURCES: dict = {
    source.__name__: source
    for source in (
        files.npz,
        files.csv,
        files.idx,
        tables.parquet,
        tables.arrow,
        text.text,
        text.sentences,
        text.skipgram,
        text_tables.texts,
        images.digits,
        images.mnist,
        images.fashion_mnist,
        images.cifar10,
        images.cifar100,
        photos.images,
        synthetic.xor,
        synthetic.spirals,
        synthetic.blobs,
        synthetic.sine,
        synthetic.copy,
        synthetic.reverse,
        synthetic.sort,
    )
}


def load(spec, base_dir, span: Span | None = None) -> Dataset:
    """The data set of a `data = ...` setting: a source call or a file name (relative to `base_dir`).
    `span` (the setting's place) locates errors about a plain file name, which has no span of its own."""
    base_dir = pathlib.Path(base_dir)
    if isinstance(spec, (str, os.PathLike)):
        try:
            return _load_path(os.fspath(spec), base_dir)
        except DlcError as e:
            if e.span is None:
                e.span = span
            raise
    source, call = _source_call(spec, span)
    try:
        return source.read(base_dir, call)
    except DlcError as e:
        if e.span is None:
            e.span = call.span or span
        raise


def check(spec, span: Span | None = None):
    """Check a data setting that names a source, without reading any data: the source's name
    (an unknown one with the nearest known names) and its arguments' names. A file name, or
    arrays given in Python, are checked when they are read."""
    if isinstance(spec, (Symbol, Call)):
        source, call = _source_call(spec, span)
        call.bind(source.params)


def _source_call(spec, span: Span | None):
    """(the source, its call) of a setting that is not a file name: a bare source name is its
    call without arguments."""
    if isinstance(spec, Symbol) and spec.name in SOURCES:
        spec = Call(spec.name, [], {}, spec.span)
    if not isinstance(spec, Call):
        span = getattr(spec, "span", None) or span
        raise DlcError(
            f"data must be a file name such as \"train.npz\" or a source such as digits(), got "
            f"{show(spec)} (sources: {_known()})",
            span,
        )
    source = SOURCES.get(spec.name)
    if source is None:
        hint = (
            " (split(...) belongs in `validation = split(0.1)`)"
            if spec.name == "split"
            else did_you_mean(spec.name, SOURCES)
        )
        raise DlcError(
            f"unknown data source '{spec.name}'{hint} (known: {_known()}; or a file name such as \"train.npz\")",
            spec.span or span,
        )
    return source, spec


def _known() -> str:
    return ", ".join(SOURCES)


def _load_path(path: str, base_dir: pathlib.Path) -> Dataset:
    name = path.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if name.endswith(".npz"):
        return files.npz(base_dir, path)
    if stem.endswith(".csv"):
        return files.csv(base_dir, path)
    if stem.endswith(".txt"):
        return text.text(base_dir, path)
    if _is_idx_name(stem):
        return files.idx(base_dir, path)
    if name.endswith((".arrow", ".feather")):
        return tables.arrow(base_dir, path)
    if name.endswith(".parquet") or tables.is_table_folder(base_dir / pathlib.Path(path).expanduser()):
        return tables.parquet(base_dir, path)
    raise DlcError(
        f"cannot tell the format of data file '{path}' from its name: expected .npz, .csv, .csv.gz, "
        f".txt, an IDX file (.idx*, *-ubyte, optionally .gz), a table (.parquet, .arrow, .feather, or a "
        f"folder of Parquet files or a datasets folder), or a source such as digits()"
    )


def _is_idx_name(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = base.rsplit(".", 1)[-1] if "." in base else ""
    return base.endswith("-ubyte") or suffix.startswith("idx")
