"""Labelled texts, tokenized: the source `texts(...)`.

    texts(path, tokenizer, text = "text", label = "label", length = none, special = true, split = none)

`path` is a table with a text column and a label column, named by `text` and `label`: a CSV
(.csv, comma-separated) or TSV (.tsv) file with a header row (optionally gzipped), JSON Lines
(.jsonl, .ndjson: an object a line), or a table pyarrow reads (.parquet, .arrow, .feather, a
folder of Parquet files, a `datasets` folder; runtime/data/tables.py) — or a folder with a
subfolder of `.txt` files per class (Keras' text_dataset_from_directory: the sorted folder names
are the classes, a file's whole text one example). `label = none` reads texts alone.

`tokenizer` is a tokenizer.json or a folder holding one (runtime/data/tokenizer.py). The columns:

    x        i32 [N, length]  the token ids, special tokens included, padded with the pad id
    y        i32 [N]          the label: integers as written, or names numbered in sorted order
    lengths  i32 [N]          the tokens of each text
    mask     i32 [N, length]  the attention mask: 1 on a token, 0 on padding
    types    i32 [N, length]  the token type ids (0 for a single text)

and the same under transformers' names (input_ids, attention_mask, token_type_ids, label), which
the inputs of a model imported from a Hugging Face folder bind to by name (`Dataset.stacked`).

`length` cuts longer texts (the tokenizer keeps its special tokens); by default it is the
tokenizer's own truncation, else the longest text's. meta: "tokenizer" (with that length) and
"class_names", which checkpoints keep, so `dlc predict --text` (and a texts(...) given to predict
or eval without a tokenizer: `with_model_tokenizer`) encodes as training did and names the class; "vocab_size" and "token_columns", which the binding checks the model's embedding against.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

import numpy as np

from dlc.compiler.errors import DlcError, Span, did_you_mean, json_document
from dlc.compiler.frontend.settings import REQUIRED, Args, Call, flag, integer, show
from dlc.runtime.data import tables, tokenizer
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.files import class_folders
from dlc.runtime.data.formats import label_column, read_utf8
from dlc.runtime.data.source import source
from dlc.runtime.data.tokenizer import Encoded

TABLE_SUFFIXES = (".parquet", ".arrow", ".feather")


@source(path=REQUIRED, tokenizer=REQUIRED, text="text", label="label", length=None, special=True, split=None)
def texts(base_dir, args: Args) -> Dataset:
    """Texts of a table's column or of class folders of .txt files, tokenized: "x" ids, "y" the
    label, "lengths", "mask"."""
    length = args.check("length", integer, low=1) if args["length"] is not None else None
    special = args.check("special", flag)
    names = {arg: _column_name(args, arg) for arg in ("text", "label")}
    tok = tokenizer.load(args["tokenizer"], base_dir, args.span("tokenizer"), length)
    strings, labels, classes = _read(args, base_dir, names)
    if not strings:
        raise DlcError(f"texts: {args['path']} holds no texts", args.span("path"))
    tok.special = special
    encoded = tok.encode(strings)
    tok.length = encoded.ids.shape[1]  # what predict encodes new texts to
    meta = {"tokenizer": tok.to_meta(), "vocab_size": tok.vocab_size, "token_columns": ["x"]}
    y = None
    if labels is not None:
        y, class_names = class_ids(labels, classes, args.src, args.span("label"))
        meta["classes"] = int(y.max()) + 1 if len(y) else 0
        if class_names is not None:
            meta["class_names"] = class_names
    return encoded_dataset(encoded, meta, y)


def with_model_tokenizer(spec, base_dir, model_tokenizer):
    """A data setting as predict, eval and quantize read it for a model with a tokenizer
    (`model_tokenizer()`: the one its weights were trained with, else the one imported beside
    its program): a texts(...) call that names no tokenizer takes that one (and its `special`);
    one that names another is an error at it, its ids being other tokens than the model's."""
    if not isinstance(spec, Call) or spec.name != "texts":
        return spec
    if "tokenizer" not in spec.kwargs and len(spec.args) < 2:
        try:
            kept = model_tokenizer()
        except DlcError as e:
            e.notes.append(('or name one: texts(..., tokenizer = "tokenizer.json")', None))
            raise
        special = {} if "special" in spec.kwargs else {"special": kept.special}
        return dataclasses.replace(spec, kwargs=spec.kwargs | special | {"tokenizer": kept})
    named = spec.kwargs["tokenizer"] if "tokenizer" in spec.kwargs else spec.args[1]
    where = spec.arg_spans.get("tokenizer", spec.arg_spans.get(1, spec.span))
    try:
        kept = model_tokenizer()
    except DlcError:  # a model without a tokenizer reads the texts with the one named
        return spec
    if not tokenizer.load(named, base_dir, where).same_ids(kept):
        raise DlcError(
            f"texts: {show(named)} is not {kept.source}: its ids are other tokens than those the model "
            "learned; leave the tokenizer out to read the texts with the model's",
            where,
        )
    return spec


def encoded_dataset(encoded: Encoded, meta: dict, labels: np.ndarray | None = None) -> Dataset:
    """The columns of encoded texts (and their labels): x, y, lengths, mask, types, and the same
    under transformers' names, which a model imported from a Hugging Face folder declares:
    input_ids, attention_mask, token_type_ids, label."""
    columns = {"x": encoded.ids} | ({"y": label_column(labels)} if labels is not None else {})
    columns |= {"lengths": encoded.lengths, "mask": encoded.mask, "types": encoded.types}
    named = {"x": "input_ids", "y": "label", "lengths": "lengths", "mask": "attention_mask", "types": "token_type_ids"}
    # every column named, in the columns' order: data bound in order takes x, y, lengths, ... as before
    return Dataset(columns, meta, stacked={named[c]: [c] for c in columns})


def _column_name(args: Args, arg: str) -> str | None:
    name = args[arg]
    if name is None and arg == "label":
        return None
    if not isinstance(name, str) or not name:
        none = " (or none)" if arg == "label" else ""
        raise DlcError(f"{args.src}: '{arg}' must be a column's name in quotes{none}, got {show(name)}", args.span(arg))
    return name


def _read(args: Args, base_dir: pathlib.Path, names: dict) -> tuple[list, list | None, list | None]:
    """(the texts, their labels or None, the labels' names when the data names its ids) of `path`."""
    path = args["path"]
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise DlcError(
            f"{args.src}: 'path' must be a file or a folder name in quotes, got {show(path)}", args.span("path")
        )
    p = pathlib.Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    lower = p.name.lower().removesuffix(".gz")
    if p.is_dir() and not tables.is_table_folder(p):
        files, ids, class_names = class_folders(
            p,
            args.src,
            "text files",
            lambda f: f.endswith(".txt") and not f.startswith("."),
            ".txt",
            "reviews/good/1.txt, reviews/bad/2.txt",
            "a table of a text and a label column (.csv, .tsv, .jsonl, .parquet)",
        )
        return [read_utf8(args.src, pathlib.Path(f)) for f in files], ids.tolist(), class_names
    if p.is_dir() or lower.endswith(TABLE_SUFFIXES):
        chosen = {arg: name for arg, name in names.items() if name is not None}
        values, classes = tables.read_columns(args, base_dir, chosen)
        rows = [dict(zip(values, row)) for row in zip(*values.values())]
        strings, labels = _columns(args, rows, names, lambda i: (None, f"{p}, row {i} (from 0)"))
        return strings, labels, classes.get(names["label"])
    if not p.is_file():
        raise DlcError(f"{args.src}: data file not found: {p}", args.span("path"))
    if lower.endswith((".csv", ".tsv")):
        rows, lines = _delimited(args, p, "\t" if lower.endswith(".tsv") else ",")
    elif lower.endswith((".jsonl", ".ndjson")):
        rows, lines = _json_lines(args, p)
    else:
        raise DlcError(
            f"{args.src}: cannot tell the format of {p} from its name: expected .csv, .tsv, .jsonl (optionally "
            f".gz), .parquet, .arrow, .feather, a table folder, or a folder of class folders of .txt files",
            args.span("path"),
        )
    return (*_columns(args, rows, names, lambda i: (Span(str(p), lines[i], 1), f"{p}, line {lines[i]}")), None)


def _delimited(args: Args, p: pathlib.Path, delimiter: str) -> tuple[list, list]:
    """(rows as {column: value}, the line each starts on) of a CSV or TSV file with a header row."""
    text = read_utf8(args.src, p)
    reader = csv.reader(text.split("\n"), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DlcError(f"{args.src}: {p} is empty: it needs a header row naming its columns", args.span("path"))
        header = [h.strip() for h in header]
        rows, lines = [], []
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DlcError(
                    f"{args.src}: expected {len(header)} fields as the header names, found {len(row)}",
                    Span(str(p), line, 1),
                )
            rows.append(dict(zip(header, row)))
            lines.append(line)
    except csv.Error as e:
        raise DlcError(f"{args.src}: {p} is not a valid CSV file ({e})", Span(str(p), reader.line_num, 1)) from None
    if not rows:
        _known(args, header, [n for n in (args["text"], args["label"]) if isinstance(n, str)])
    return rows, lines


def _json_lines(args: Args, p: pathlib.Path) -> tuple[list, list]:
    """(rows, the line of each) of a JSON Lines file: an object a line, blank lines skipped."""
    rows, lines = [], []
    for lineno, line in enumerate(read_utf8(args.src, p).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json_document(line)
        except ValueError as e:
            raise DlcError(f"{args.src}: the line is not JSON ({e})", Span(str(p), lineno, 1)) from None
        if not isinstance(row, dict):
            raise DlcError(
                f"{args.src}: a line of JSON Lines is an object such as {{\"text\": ..., \"label\": ...}}, "
                f"got {type(row).__name__}",
                Span(str(p), lineno, 1),
            )
        rows.append(row)
        lines.append(lineno)
    return rows, lines


def _columns(args: Args, rows: list, names: dict, where) -> tuple[list, list | None]:
    """(the texts, the labels or None) of rows of {column: value}; `where(i)`: (a span or None,
    the place in words) of row i. A missing column or a text that is not a string is an error there."""
    text, label = names["text"], names["label"]
    strings, labels = [], [] if label is not None else None
    for i, row in enumerate(rows):
        _known(args, list(row), [n for n in (text, label) if n is not None], where(i) if i else (None, ""))
        value = row[text]
        if not isinstance(value, str):
            span, place = where(i)
            raise DlcError(
                f"{args.src}: {'' if span else place + ': '}column '{text}' holds {show(value)}, not text (a string)",
                span,
            )
        strings.append(value)
        if label is not None:
            labels.append(row[label])
    return strings, labels


def _known(args: Args, columns: list, wanted: list, where=(None, "")):
    """Each of `wanted` among `columns`, else an error at `where` (a span, the place in words),
    by default at the argument that named it."""
    for arg in ("text", "label"):
        name = args[arg]
        if name in wanted and name not in columns:
            span, place = where
            raise DlcError(
                f"{args.src}: {place + ' has' if place else 'the data has'} no column '{name}'"
                f"{did_you_mean(name, columns)} (its columns: {', '.join(map(str, columns)) or 'none'})",
                span or args.span(arg),
            )


def class_ids(labels: list, classes: list | None, src: str, span: Span | None) -> tuple[np.ndarray, list | None]:
    """(class ids, their names or None) of labels: whole numbers (or their text) as written, with
    `classes` (a datasets ClassLabel's names) as their names; else names, numbered in sorted order."""
    whole = [v for v in labels if isinstance(v, int) and not isinstance(v, bool)]
    if len(whole) < len(labels) and all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in labels):
        whole = [int(v) for v in labels]
    if len(whole) == len(labels):
        ids = np.array(whole, np.int64)
        if ids.size and ids.min() < 0:
            raise DlcError(f"{src}: class ids start at 0, got {ids.min()}", span)
        return ids, classes
    bad = next((v for v in labels if not isinstance(v, (str, int)) or isinstance(v, bool)), None)
    if bad is not None:
        raise DlcError(f"{src}: a label is {show(bad)}: labels are class names or whole numbers", span)
    names = sorted({str(v).strip() for v in labels})
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[str(v).strip()] for v in labels], np.int64), names
