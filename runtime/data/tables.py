"""Tables as data: Parquet files and folders of part files, Arrow IPC files (.arrow, .feather,
the file or the streaming format) and Hugging Face `datasets` folders (`save_to_disk`), read
through pyarrow (the optional extra dlc[tables]).

    parquet(path, label = none, columns = none, split = none, stream = none)
    arrow(...)                                                    the same source, by its other name

What the path holds is told by its content, not its name. Only the chosen columns are read
(`columns`, default every column but the label; then the label). A table is read whole into
memory, or, when its decoded columns are larger than row_groups.STREAM_ABOVE or `stream =
true`, streamed by row group (runtime/data/row_groups.py); `stream = false` reads it whole
whatever its size. Each column becomes arrays of the data set under its own name
(runtime/data/table_values.py):

    numbers (bool, integers, floats)    as stored; the binding casts them to the input's dtype
    strings, dictionaries of strings    int32 ids of the categories: a string column's sorted, a
                                        dictionary's in its order, a datasets ClassLabel's names
    lists (token ids, tags, ...)        [N, longest] padded with 0 (a label's with -1, the loss's
                                        ignore index) and "<name>_lengths" int32 [N]; a fixed-size
                                        list [N, size]

and two columns the binding may ask for by name (`Dataset.stacked`): "x", the numeric feature
columns stacked in the order given, and "y", the label. meta: "features" (x's columns),
"label" and "categories" (each categorical column's names by id), which checkpoints keep
(`kept_meta`); `as_trained` and `recode` read other data as the training data was. A null,
a nested record or a value of another type is an error naming the column (and the row).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from dlc.compiler.errors import DlcError, did_you_mean, json_document
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.formats import numbers, reason
from dlc.runtime.data.row_groups import STREAM_ABOVE, ArrowGroups, ParquetGroups, StreamedTable, TableColumn
from dlc.runtime.data.source import source
from dlc.runtime.data.table_values import convert, few, no_nulls
from dlc.compiler.frontend.settings import REQUIRED, Args, flag, show

INSTALL = 'pip install "dlc[tables]"'
HF_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes
PARAMS = dict(path=REQUIRED, label=None, columns=None, split=None, stream=None)


@source(**PARAMS)
def parquet(base_dir, args: Args) -> Dataset:
    """A table: a Parquet file or a folder of part files, an Arrow IPC file or stream, or a
    `datasets` folder (`split = "train"` of a DatasetDict's). Each column under its name
    (strings as category ids, lists padded with NAME_lengths), "x" the numeric columns of
    `columns` stacked, "y" the `label` column."""
    return _read(args, base_dir)


@source(**PARAMS)
def arrow(base_dir, args: Args) -> Dataset:
    """parquet(...) by the name of the Arrow formats: any table, told by its content."""
    return _read(args, base_dir)


def is_table_folder(p: pathlib.Path) -> bool:
    """Whether a folder is one table: a `datasets` folder or a folder of Parquet part files."""
    return p.is_dir() and (any((p / f).is_file() for f in HF_FILES) or any(p.rglob("*.parquet")))


def _read(args: Args, base_dir: pathlib.Path) -> Dataset:
    """The data set of a table source's call (both sources read every kind of table)."""
    src = args.src
    p = _locate(args, base_dir)
    pa = _pyarrow(src)
    stream = args["stream"] if args["stream"] is None else args.check("stream", flag)
    try:
        opened = _open(pa, src, p, args)
        label = _label(args, opened.schema.names)
        chosen = _columns(args, opened.schema.names, label) + ([label] if label else [])  # in that order
        streamed = stream if stream is not None else opened.size() > STREAM_ABOVE
        if streamed:
            table = StreamedTable(pa, opened.groups(chosen), (src, p), chosen, label, opened.classes)
            converted = [(name, table.columns_of(name), table.names[name]) for name in chosen]
        else:
            table = opened.read(chosen)
            place = f"{src}: {p}:"
            converted = [
                (name, *convert(pa, place, name, table.column(name), opened.classes.get(name), name == label))
                for name in table.column_names
            ]
    except (pa.ArrowException, OSError) as e:
        raise DlcError(
            f"{src}: {p} is not a Parquet or Arrow table that pyarrow reads ({reason(e)})", args.span("path")
        ) from None
    data, categories, features = {}, {}, []
    for name, arrays, names_of_ids in converted:
        for key in arrays:
            if key != name and key in chosen:
                raise DlcError(
                    f"{src}: {p}: the lengths of list column '{name}' would be column '{key}', "
                    f"which the table has: rename one of them"
                )
        data.update(arrays)
        if names_of_ids is not None:
            categories[name] = names_of_ids
        elif name != label and arrays[name].ndim == 1:
            features.append(name)
    meta = {
        key: value for key, value in (("features", features), ("label", label), ("categories", categories)) if value
    }
    stacked = {
        view: members
        for view, members in (("x", features), ("y", [label] if label else []))
        if members and view not in data
    }
    return Dataset(data if streamed else numbers(src, p, data), meta, stacked=stacked)


def read_columns(args: Args, base_dir: pathlib.Path, chosen: dict) -> tuple[dict, dict]:
    """({column: its values as a Python list}, {column: a datasets folder's ClassLabel names}) of
    the columns of a table that `chosen` names ({argument: the column's name}, each an error at its
    argument when the table lacks it), for a source that reads values other than numbers (texts).
    A null is an error naming the column and the row."""
    src = args.src
    p = _locate(args, base_dir)
    pa = _pyarrow(src)
    try:
        opened = _open(pa, src, p, args)
        for arg, name in chosen.items():
            _known_column(args, arg, name, opened.schema.names)
        table = opened.read(list(chosen.values()))
    except (pa.ArrowException, OSError) as e:
        raise DlcError(
            f"{src}: {p} is not a Parquet or Arrow table that pyarrow reads ({reason(e)})", args.span("path")
        ) from None
    values = {}
    for name in chosen.values():
        col = table.column(name)
        no_nulls(pa, f"{src}: {p}:", name, col)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        values[name] = col.to_pylist()
    return values, {name: opened.classes[name] for name in chosen.values() if name in opened.classes}


def as_trained(ds: Dataset, trained: dict, label: bool = True) -> Dataset:
    """`ds` with the columns the data a model was trained on gave it (`trained`: that data's
    meta): "x" stacks the trained features in their order (whatever other columns the data
    has; one it lacks is an error when x is bound), "y" is the trained label column, and, with
    `label` false (new rows to predict), that column, if the data has it, is left out: its
    values may be any."""
    gone = trained.get("label") if not label else None
    features = trained.get("features")
    stacked = {view: [m for m in members if m != gone] for view, members in ds.stacked.items()}
    if "x" in stacked and features:
        stacked["x"] = list(features)
    if label and trained.get("label") in ds.columns and "y" not in ds.columns:
        stacked.setdefault("y", [trained["label"]])  # a table read without its label named
    stacked = {view: members for view, members in stacked.items() if members}
    if gone not in ds.columns and stacked == ds.stacked:
        return ds
    return Dataset({k: a for k, a in ds.columns.items() if k != gone}, ds.meta, ds.named, stacked)


def recode(ds: Dataset, trained: dict, columns: set, span=None) -> Dataset:
    """`ds` with the ids of each categorical column of `columns` (the columns a model reads)
    those of the trained names (`trained`: the meta of the data the model was trained on); a
    category the training data did not have is an error at `span`."""
    known = trained.get("categories") or {}
    own = ds.meta.get("categories") or {}
    changed = {name for name in columns & own.keys() & known.keys() if own[name] != known[name]}
    if not changed:
        return ds
    data, categories = dict(ds.columns), dict(own)
    for name in sorted(changed):
        categories[name] = list(known[name])
        if isinstance(data[name], TableColumn):  # streamed: its rows converted with the trained names when read
            data[name] = data[name].recoded(known[name], span)
            continue
        names = own[name]
        index = {c: i for i, c in enumerate(known[name])}
        lookup = np.array([index.get(c, -1) for c in names] + [-1], np.int64)  # [-1]: a negative id stays
        ids = data[name]
        inside = _inside(ids, data.get(f"{name}_lengths")) & (ids >= 0)
        mapped = np.where(inside, lookup[np.where(inside, ids, len(names))], ids)
        unknown = inside & (mapped < 0)
        if unknown.any():
            where = tuple(int(i) for i in np.argwhere(unknown)[0])
            raise DlcError(
                f"column '{name}' has '{names[ids[where]]}' at row {where[0]} (from 0), a category the "
                f"model was not trained on (it knows {few(known[name])})",
                span,
            )
        data[name] = mapped.astype(np.int32)
    return Dataset(data, dict(ds.meta) | {"categories": categories}, ds.named, ds.stacked)


def kept_meta(meta: dict, columns: set) -> dict:
    """What a checkpoint keeps of a data set's meta: a table's categories of `columns` alone (the
    columns the model reads; an id column no input reads would fill it with every id)."""
    if "categories" not in meta:
        return meta
    kept = {name: names for name, names in meta["categories"].items() if name in columns}
    return {k: v for k, v in meta.items() if k != "categories"} | ({"categories": kept} if kept else {})


def _inside(ids: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Which entries of an id column are values, not padding after a list's length."""
    if lengths is None or ids.ndim != 2:
        return np.ones(ids.shape, bool)
    return np.arange(ids.shape[1])[None, :] < lengths[:, None]


# ---- finding and opening a table -----------------------------------------------------------------
def _pyarrow(src: str):
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.dataset
        import pyarrow.ipc
    except ImportError:
        raise DlcError(f"{src}: reading Parquet and Arrow tables needs pyarrow: {INSTALL}") from None
    return pyarrow


def _locate(args: Args, base_dir: pathlib.Path) -> pathlib.Path:
    path = args["path"]
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise DlcError(
            f"{args.src}: 'path' must be a file or folder name in quotes, got {show(path)}", args.span("path")
        )
    p = pathlib.Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if not p.exists():
        raise DlcError(f"{args.src}: data file not found: {p}", args.span("path"))
    return p


class _Opened:
    """A table's schema, known before any column is read; `read(columns)`, which reads those
    alone, whole; `groups(columns)`, its row groups to stream them (runtime/data/row_groups.py);
    `size()`, the bytes of its columns decoded (Parquet's metadata; an Arrow file's length);
    `classes`: a `datasets` folder's ClassLabel names by column."""

    def __init__(self, schema, read, groups, size, classes: dict | None = None):
        self.schema, self.read, self.groups, self.size, self.classes = schema, read, groups, size, classes or {}


def _open(pa, src: str, p: pathlib.Path, args: Args) -> _Opened:
    split = args["split"]
    if split is not None and not isinstance(split, str):
        raise DlcError(
            f"{src}: 'split' must be a split's name in quotes, such as \"train\", got {show(split)}", args.span("split")
        )
    if p.is_dir() and any((p / f).is_file() for f in HF_FILES):
        return _open_hf(pa, src, p, split, args)
    if split is not None:
        raise DlcError(
            f"{src}: 'split' chooses a split of a datasets folder (save_to_disk's), but {p} is not one",
            args.span("split"),
        )
    if p.is_dir():
        if not any(p.rglob("*.parquet")):
            raise DlcError(
                f"{src}: {p} is a folder of no Parquet files (*.parquet) and not a datasets folder "
                f"(save_to_disk's, with {' or '.join(HF_FILES)})",
                args.span("path"),
            )
        return _open_parquet(pa, p)
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PAR1":
        return _open_parquet(pa, p)
    return _open_ipc(pa, p, stream=magic != b"ARROW1")


def _open_parquet(pa, p: pathlib.Path) -> _Opened:
    """A Parquet file, or a folder of part files (names starting with _ or ., Spark's _SUCCESS,
    are skipped; key=value folders are columns, as Spark and pandas partition)."""
    dataset = pa.dataset.dataset(p, format="parquet", partitioning="hive")

    def size():
        return sum(
            f.metadata.row_group(k).total_byte_size for f in dataset.get_fragments() for k in range(f.num_row_groups)
        )

    return _Opened(
        dataset.schema,
        lambda columns: dataset.to_table(columns=columns),
        lambda columns: ParquetGroups(dataset, columns),
        size,
    )


def _open_ipc(pa, p: pathlib.Path, stream: bool) -> _Opened:
    """An Arrow IPC file (Feather 2) or stream, memory-mapped: the columns not chosen are not read."""
    mapped = pa.memory_map(str(p))
    reader = pa.ipc.open_stream(mapped) if stream else pa.ipc.open_file(mapped)
    return _Opened(
        reader.schema,
        lambda columns: reader.read_all().select(columns),
        lambda columns: ArrowGroups(pa, [(p, stream)], columns),
        lambda: p.stat().st_size,
    )


def _open_hf(pa, src: str, p: pathlib.Path, split: str | None, args: Args) -> _Opened:
    """A `datasets` folder: state.json's data files (Arrow streams) and dataset_info.json's
    features; a DatasetDict's folder (dataset_dict.json) holds a folder per split."""
    if (p / "dataset_dict.json").is_file():
        splits = _json(src, p / "dataset_dict.json").get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DlcError(f"{src}: {p / 'dataset_dict.json'} does not list the splits")
        if split is None:
            if len(splits) != 1:
                raise DlcError(
                    f"{src}: {p} holds the splits {', '.join(splits)}: choose one with split = \"{splits[0]}\"",
                    args.span("path"),
                )
            split = splits[0]
        if split not in splits:
            raise DlcError(
                f"{src}: {p} has no split '{split}'{did_you_mean(split, splits)} (it has {', '.join(splits)})",
                args.span("split"),
            )
        return _open_hf(pa, src, p / split, None, args)
    if split is not None:
        raise DlcError(
            f"{src}: {p} is a datasets folder of one split (no dataset_dict.json): leave out 'split'",
            args.span("split"),
        )
    state = _json(src, p / "state.json")
    files = [f.get("filename") for f in state.get("_data_files", []) if isinstance(f, dict)]
    if not files or not all(isinstance(f, str) for f in files):
        raise DlcError(f"{src}: {p / 'state.json'} names no data files (_data_files)")
    missing = [f for f in files if not (p / f).is_file()]
    if missing:
        raise DlcError(f"{src}: {p} lacks the data file {missing[0]} that its state.json names")
    info = _json(src, p / "dataset_info.json") if (p / "dataset_info.json").is_file() else {}
    parts = [_open_ipc(pa, p / f, stream=True) for f in files]

    def read(columns):
        return pa.concat_tables([part.read(columns) for part in parts])

    return _Opened(
        parts[0].schema,
        read,
        lambda columns: ArrowGroups(pa, [(p / f, True) for f in files], columns),
        lambda: sum(part.size() for part in parts),
        _class_labels(info.get("features") or {}),
    )


def _json(src: str, p: pathlib.Path) -> dict:
    try:
        doc = json_document(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DlcError(f"{src}: cannot read {p} ({reason(e)})") from None
    if not isinstance(doc, dict):
        raise DlcError(f"{src}: {p} is not a JSON object")
    return doc


def _class_labels(features: dict) -> dict:
    """The names of each ClassLabel column of a `datasets` folder's features (a Sequence of
    ClassLabel's too: tags), as stored: ids with their names."""
    out = {}
    for name, feature in features.items():
        if isinstance(feature, dict) and feature.get("_type") in ("Sequence", "List"):
            feature = feature.get("feature")
        if (
            isinstance(feature, dict)
            and feature.get("_type") == "ClassLabel"
            and isinstance(feature.get("names"), list)
        ):
            out[name] = [str(n) for n in feature["names"]]
    return out


# ---- choosing the columns ------------------------------------------------------------------------
def _label(args: Args, names: list) -> str | None:
    label = args["label"]
    if label is None:
        return None
    if not isinstance(label, str):
        raise DlcError(f"{args.src}: 'label' must be a column's name in quotes, got {show(label)}", args.span("label"))
    _known_column(args, "label", label, names)
    return label


def _columns(args: Args, names: list, label: str | None) -> list:
    chosen = args["columns"]
    if chosen is None:
        chosen = [n for n in names if n != label]
        for c in chosen:
            _known_column(args, "path", c, names)  # each once in the table
        return chosen
    if isinstance(chosen, str):
        chosen = [chosen]
    if not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) for c in chosen):
        raise DlcError(
            f"{args.src}: 'columns' must be a list of column names in quotes, such as [\"a\", \"b\"], got "
            f"{show(args['columns'])}",
            args.span("columns"),
        )
    for c in chosen:
        _known_column(args, "columns", c, names)
        if c == label:
            raise DlcError(f"{args.src}: '{c}' is the label; leave it out of 'columns'", args.span("columns"))
    twice = [c for i, c in enumerate(chosen) if c in chosen[:i]]
    if twice:
        raise DlcError(f"{args.src}: column '{twice[0]}' is named twice in 'columns'", args.span("columns"))
    return chosen


def _known_column(args: Args, arg: str, name: str, names: list):
    if name not in names:
        raise DlcError(
            f"{args.src}: the table has no column '{name}'{did_you_mean(name, names)} (its columns: {few(names, 20)})",
            args.span(arg),
        )
    if names.count(name) > 1:
        raise DlcError(
            f"{args.src}: the table has {names.count(name)} columns named '{name}': rename them in the file",
            args.span(arg),
        )
