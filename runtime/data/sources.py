"""Data sets for training: the value of a `train` block's `data` setting.

A setting such as

    data = idx("data/train-images-idx3-ubyte", "data/train-labels-idx1-ubyte", scale = 1/255)
    data = digits()
    data = text("data/genesis.txt", seq = 100)
    data = reverse(min_len = 8, max_len = 12, symbols = 11, n = 20000)
    data = "data/points.csv"

is evaluated by `runtime.training.settings` into a `Call` (or a plain string, a file name) and
turned into a `Dataset` here by `load`. A data set is a dict of aligned arrays (the
first axis indexes the examples) in a fixed order, features first and targets last,
so the trainer can bind them to a model's inputs and targets by position, plus `meta`
(the vocabulary of a text, the special token ids of a sequence task, ...).

Every problem with the data (a missing or corrupt file, a wrong format, an unknown
source, a bad argument) is a `DlcError` with a one-line message; when the data came
from a `Call`, the error points at it. A column read from a file must hold real numbers
(bool, integers or floats: `not_numbers`), and a float column finite float32 numbers
(`_numbers`, one check for every file source).

Sources, by the name a `.dl` file uses (see `SOURCES`):

    npz(path)                                        every array of the archive, in file order
    csv(path, label = -1, header = auto, scale = 1)  "x" features, "y" the label column
    idx(images, labels = none, scale = 1)            MNIST's IDX format: "x" images, "y" labels
    text(path, seq = 100, vocab = none)              character ids: "x" windows, "y" next characters
    sentences(path, vocab, length = none, lower = true)   word ids of labelled sentences, "vocab" a word vector file
    digits(scale = 1/16, image = true)               the 8x8 UCI digits shipped in examples/data
    mnist / fashion_mnist(split = "train", scale = 1/255)      28x28 grey images, fetched by `dlc data fetch`
    cifar10(split = "train", scale = 1/255)          32x32 colour images, fetched by `dlc data fetch`
    cifar100(split = "train", labels = "fine", scale = 1/255)  the same, 100 classes (or 20 "coarse")
    xor(repeat = 1)                                  the four XOR points
    spirals(n = 300, classes = 3, noise = 0.2)       interleaved spirals, one per class
    blobs(n = 200, centers = 2, std = 1.0, labels = "index")   gaussian clusters
    sine(window = 20, n = 2000, noise = 0, frequencies = 1)    next-value forecasting
    copy / reverse / sort(min_len = 8, max_len = 12, symbols = 10, n = 10000)   seq2seq tasks

The synthetic sources also take `seed` (default 0): the same arguments give the same data.
Relative paths are resolved against the `.dl` file's folder; a file that is missing but has a
gzipped twin (`train-images-idx3-ubyte` -> `train-images-idx3-ubyte.gz`) is read from the twin.
A plain file name is loaded by its extension: .npz, .csv / .csv.gz, .txt, IDX (.idx*, *-ubyte[.gz]).
Images come as stored (IDX: [N, 28, 28] for MNIST); the trainer reshapes to the model's input.
"""
from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pathlib
import re
from importlib import resources
import zlib
from dataclasses import dataclass, field

import numpy as np

from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.runtime.training.settings import REQUIRED, Args, Call, Symbol, choice, flag, integer, number, show

__all__ = ["Dataset", "load", "SOURCES", "augment", "encode", "decode", "digits_path", "not_numbers", "read_text",
           "words"]


# ---- the data set -------------------------------------------------------------------------------
@dataclass(repr=False)
class Dataset:
    """Aligned arrays (first axis = examples) and facts about them."""
    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.columns = dict(self.columns)
        lengths = {}
        for name, a in self.columns.items():
            a = np.asarray(a)
            if a.ndim == 0:
                raise DlcError(f"data column '{name}' is a single value, not an array of examples")
            self.columns[name] = a
            lengths[name] = a.shape[0]
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"'{k}' has {v}" for k, v in lengths.items())
            raise DlcError(f"data columns have different numbers of examples: {shown}")

    def __len__(self) -> int:
        for a in self.columns.values():
            return int(a.shape[0])
        return 0

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.columns.items())
        meta = {k: (v if not isinstance(v, str) or len(v) <= 20 else f"<{len(v)} characters>")
                for k, v in self.meta.items()}
        return f"Dataset({len(self)} examples; {cols}; meta {meta})"

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def take(self, index) -> "Dataset":
        """The examples at `index` (integer indices or a boolean mask), same meta."""
        index = np.asarray(index)
        if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
            if index.size == 0:
                index = index.astype(np.int64)
            else:
                raise DlcError(f"take: rows must be selected by integer indices or a mask, got {index.dtype}")
        try:
            return Dataset({k: a[index] for k, a in self.columns.items()}, dict(self.meta))
        except IndexError as e:
            raise DlcError(f"take: {e}") from None

    def split(self, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Shuffled (rest, held_out) with round(len * fraction) examples held out."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
                or not 0 <= fraction <= 1 or math.isnan(fraction):
            raise DlcError(f"split: the held-out fraction must be a number between 0 and 1, got {show(fraction)}")
        n = len(self)
        k = int(round(n * float(fraction)))
        order = np.random.default_rng(seed).permutation(n)
        return self.take(order[k:]), self.take(order[:k])


# ---- entry point ----------------------------------------------------------------------------------
SOURCES: dict[str, callable] = {}


def _source(name: str, **params):
    """Register a source taking `params` (name -> default; REQUIRED when it must be given).
    The source gets its call's arguments bound as every spec's are (Call.bind) and checks
    them with Args.check, so a bad argument is reported where it is written. From Python,
    a source is called as source(base_dir, *args, **kwargs)."""
    def register(fn):
        def read(base_dir, call: Call) -> Dataset:
            return fn(pathlib.Path(base_dir), call.bind(params))

        @functools.wraps(fn)
        def wrapper(base_dir, *args, **kwargs):
            return read(base_dir, Call(name, list(args), kwargs))

        wrapper.read = read
        SOURCES[name] = wrapper
        return wrapper
    return register


def load(spec, base_dir, span: Span | None = None) -> Dataset:
    """The data set of a `data = ...` setting: a source call or a file name (relative to `base_dir`).
    `span` (the setting's place) locates errors about a plain file name, which has no span of its own."""
    base_dir = pathlib.Path(base_dir)
    if isinstance(spec, Symbol) and spec.name in SOURCES:
        spec = Call(spec.name, [], {}, spec.span)
    if isinstance(spec, (str, os.PathLike)):
        try:
            return _load_path(os.fspath(spec), base_dir)
        except DlcError as e:
            if e.span is None:
                e.span = span
            raise
    if not isinstance(spec, Call):
        span = getattr(spec, "span", None) or span
        raise DlcError(f"data must be a file name such as \"train.npz\" or a source such as digits(), got "
                       f"{show(spec)} (sources: {_known()})", span)
    fn = SOURCES.get(spec.name)
    if fn is None:
        hint = (" (split(...) belongs in `validation = split(0.1)`)" if spec.name == "split"
                else did_you_mean(spec.name, SOURCES))
        raise DlcError(f"unknown data source '{spec.name}'{hint}; known sources: {_known()}, "
                       f"or a file name such as \"train.npz\"", spec.span or span)
    try:
        return fn.read(base_dir, spec)
    except DlcError as e:
        if e.span is None:
            e.span = spec.span or span
        raise


def _known() -> str:
    return ", ".join(SOURCES)


def _load_path(path: str, base_dir: pathlib.Path) -> Dataset:
    name = path.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if name.endswith(".npz"):
        return npz(base_dir, path)
    if stem.endswith(".csv"):
        return csv(base_dir, path)
    if stem.endswith(".txt"):
        return text(base_dir, path)
    if _is_idx_name(stem):
        return idx(base_dir, path)
    raise DlcError(f"cannot tell the format of data file '{path}' from its name: expected .npz, .csv, .csv.gz, "
                   f".txt or an IDX file (.idx*, *-ubyte, optionally .gz), or a source such as digits()")


def _is_idx_name(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = base.rsplit(".", 1)[-1] if "." in base else ""
    return base.endswith("-ubyte") or suffix.startswith("idx")


# ---- files ----------------------------------------------------------------------------------------
def _resolve(src: str, name: str, path, base_dir: pathlib.Path, gz_ok: bool = True,
             span: Span | None = None) -> pathlib.Path:
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
        from dlc.runtime.data.download import hint
        raise DlcError(f"{src}: data file not found: {p}{hint(path)}", span)
    if not p.is_file():
        raise DlcError(f"{src}: {p} is not a file", span)
    return p


def _path_arg(args: Args, name: str, base_dir: pathlib.Path, gz_ok: bool = True) -> pathlib.Path:
    """The file a source's argument names (_resolve), errors at the argument."""
    return _resolve(args.src, name, args[name], base_dir, gz_ok, args.span(name))


def _read_bytes(src: str, p: pathlib.Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped (recognised by its magic number)."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DlcError(f"{src}: cannot read {p}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DlcError(f"{src}: {p} is a corrupt or truncated gzip file ({e})") from None
    if p.name.lower().endswith(".gz"):
        raise DlcError(f"{src}: {p} is named .gz but is not a gzip file")
    return raw


def read_text(path, base_dir, src: str) -> str:
    """The text of a UTF-8 file (optionally gzipped) named relative to `base_dir`; `src` names
    the reader in errors (a missing file, bytes that are not UTF-8)."""
    return _read_text(src, _resolve(src, "path", path, pathlib.Path(base_dir)))


def _read_text(src: str, p: pathlib.Path) -> str:
    raw = _read_bytes(src, p)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DlcError(f"{src}: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    if s.startswith("\ufeff"):
        s = s[1:]
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _reason(e: Exception) -> str:
    return str(e).split("\n")[0] or type(e).__name__


def _float32(a: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """a * scale as float32 (values beyond float32 become infinities, which `_numbers` refuses)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if a.dtype.itemsize <= 4 and a.dtype.kind in "uif":       # no float64 copy of a big image file
            out = a.astype(np.float32)
            if scale != 1:
                out *= np.float32(scale)
        else:
            out = (a.astype(np.float64) * scale).astype(np.float32)
    return out


_NOT_NUMBERS = {"U": "strings", "S": "bytes", "c": "complex numbers", "O": "Python objects", "M": "dates",
                "m": "time spans", "V": "records"}


def not_numbers(a: np.ndarray) -> str | None:
    """What `a` holds when it is not real numbers (bool, integers, floats), e.g. "strings (<U1)",
    else None: such values would be converted with a loss (a complex number's imaginary part
    dropped, a string parsed), so data of them is refused, from a file (`_numbers`) or not
    (trainer.fit_input)."""
    if a.dtype.kind in "biuf":
        return None
    return f"{_NOT_NUMBERS.get(a.dtype.kind, 'values')} ({a.dtype})"


def _numbers(src: str, p, columns: dict) -> dict:
    """The columns of a file, refusing a column that is not real numbers (`not_numbers`) and a
    float column with a NaN, an infinity or a value beyond float32 (what training computes in).
    Every source that reads a file checks its columns here."""
    limit = np.finfo(np.float32).max
    for name, a in columns.items():
        what = not_numbers(a)
        if what:
            raise DlcError(f"{src}: {p}: column '{name}' holds {what}, not numbers")
        if a.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~(np.abs(a) <= limit)         # NaN compares false
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DlcError(f"{src}: {p}: column '{name}' holds a value that is not a finite float32 number "
                               f"at index {list(where)} ({float(a[where]):g})")
    return columns


# ---- npz ------------------------------------------------------------------------------------------
@_source("npz", path=REQUIRED)
def npz(base_dir, args: Args) -> Dataset:
    """Every array of an .npz archive, in file order, named as in the file."""
    p = _path_arg(args, "path", base_dir, gz_ok=False)
    columns = {}
    try:
        with open(p, "rb") as f:       # our handle, closed whatever numpy makes of the file
            magic = f.read(6)
            f.seek(0)
            if magic.startswith(b"\x93NUMPY"):
                raise DlcError(f"npz: {p} is not an .npz archive (it holds a single .npy array; save with np.savez)")
            if not magic.startswith(b"PK"):
                raise DlcError(f"npz: {p} is not a valid .npz archive (expected a zip file of arrays, as np.savez"
                               f" writes)")
            try:
                z = np.load(f, allow_pickle=False)
            except Exception as e:      # whatever a damaged archive makes numpy or zipfile raise
                raise DlcError(f"npz: {p} is not a valid .npz archive ({_reason(e)})") from None
            with z:
                for name in z.files:
                    try:
                        columns[name] = z[name]
                    except ValueError as e:
                        if "pickle" in str(e):
                            raise DlcError(f"npz: array '{name}' of {p} holds Python objects, which dlc does not"
                                           f" load (save numeric arrays)") from None
                        raise DlcError(f"npz: array '{name}' of {p} is corrupt ({_reason(e)})") from None
                    except Exception as e:  # a damaged member: bad CRC, bad compression, bad header
                        raise DlcError(f"npz: array '{name}' of {p} is corrupt ({_reason(e)})") from None
                    if not isinstance(columns[name], np.ndarray):      # numpy gives a member not .npy as bytes
                        raise DlcError(f"npz: '{name}' of {p} is not an .npy array (np.savez writes only arrays)")
    except OSError as e:
        raise DlcError(f"npz: cannot read {p}: {e.strerror or e}") from None
    if not columns:
        raise DlcError(f"npz: {p} holds no arrays")
    for name, a in columns.items():
        if a.ndim == 0:
            raise DlcError(f"npz: array '{name}' of {p} is a single value, not an array of examples")
    lengths = {a.shape[0] for a in columns.values()}
    if len(lengths) > 1:
        shown = ", ".join(f"'{k}' has {a.shape[0]}" for k, a in columns.items())
        raise DlcError(f"npz: the arrays of {p} have different numbers of examples: {shown}")
    return Dataset(_numbers("npz", p, columns), {})


# ---- csv ------------------------------------------------------------------------------------------
def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


@_source("csv", path=REQUIRED, label=-1, header="auto", scale=1.0)
def csv(base_dir, args: Args) -> Dataset:
    """A numeric CSV file (optionally gzipped; comma, tab or semicolon separated; blank lines and lines
    starting with # skipped): "x" float32 (every column but the label, * scale) and "y" the label column
    (int32 when all its values are integers, else float32). `label = none`: no "y". `header = auto`
    skips the first row when it is not numeric; its names go to meta["features"] and meta["label"]."""
    p = _path_arg(args, "path", base_dir)
    label = args.check("label", integer) if args["label"] is not None else None
    header = args.check("header", choice, options=("auto", "true", "false"))
    scale = args.check("scale", number)
    table, names = _parse_csv(p, header)
    return _table_dataset("csv", p, table, names, label, scale)


def _parse_csv(p: pathlib.Path, header: str) -> tuple[np.ndarray, list[str] | None]:
    lines = _read_text("csv", p).split("\n")
    rows = [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise DlcError(f"csv: {p} is empty")
    first = rows[0][1]
    delim = "," if "," in first else "\t" if "\t" in first else ";" if ";" in first else None
    fields = [f.strip().strip('"') for f in (first.split(delim) if delim else first.split())]
    has_header = header == "true" or (header == "auto" and not all(_is_number(f) for f in fields))
    names = fields if has_header else None
    body = rows[1:] if has_header else rows
    if not body:
        raise DlcError(f"csv: {p} has a header but no rows")
    width = len(fields)
    text = "\n".join(line for _, line in body)
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=delim, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        table = None
    if table is None or table.shape[1] != width:
        # find the first bad line to say exactly what is wrong
        for lineno, line in body:
            parts = [f.strip() for f in (line.split(delim) if delim else line.split())]
            if len(parts) != width:
                raise DlcError(f"csv: {p}, line {lineno}: expected {width} values, found {len(parts)}")
            for col, f in enumerate(parts, 1):
                if not _is_number(f):
                    what = "an empty field" if not f else f"'{f[:30]}'"
                    raise DlcError(f"csv: {p}, line {lineno}, column {col}: {what} is not a number"
                                   f" (dlc reads numeric CSV files only)")
        raise DlcError(f"csv: {p} is not a numeric CSV file")
    if not np.all(np.isfinite(table)):
        r, c = np.argwhere(~np.isfinite(table))[0]
        raise DlcError(f"csv: {p}, line {body[r][0]}, column {c + 1}: '{table[r, c]}' is not a finite number")
    return table, names


def _table_dataset(src: str, p, table: np.ndarray, names, label, scale: float) -> Dataset:
    width = table.shape[1]
    meta = {}
    if label is None:
        x = table
        y = None
    else:
        if not -width <= label < width:
            raise DlcError(f"{src}: label column {label} is out of range: {p} has {width} columns")
        if width < 2:
            raise DlcError(f"{src}: {p} has a single column; with a label column there would be no features"
                           f" (write label = none)")
        col = label % width
        y = table[:, col]
        x = np.delete(table, col, axis=1)
        if names:
            meta["label"] = names[col]
            names = names[:col] + names[col + 1:]
    if names:
        meta["features"] = names
    columns = {"x": _float32(x, scale)}
    if y is not None:
        columns["y"] = _labels(y)
    return Dataset(_numbers(src, p, columns), meta)


def _labels(y: np.ndarray) -> np.ndarray:
    """A label column: int32 when its values are whole numbers within int32, else float32 (so
    no label is ever wrapped around)."""
    whole = bool(np.all(y == np.round(y))) and bool(np.all(np.abs(y) < 2 ** 31))
    return y.astype(np.int32) if whole else y.astype(np.float32)


# ---- idx (MNIST) ----------------------------------------------------------------------------------
_IDX_TYPES = {0x08: (">u1", "unsigned byte"), 0x09: (">i1", "signed byte"), 0x0B: (">i2", "short"),
              0x0C: (">i4", "int"), 0x0D: (">f4", "float"), 0x0E: (">f8", "double")}


_IDX_MAX_DIMS = 32         # numpy's limit (1.x; 2.x allows 64); MNIST's files have 1 or 3


def read_idx(p: pathlib.Path, src: str = "idx") -> np.ndarray:
    """The array of an IDX file (optionally gzipped), checked against its header."""
    raw = _read_bytes(src, p)
    if len(raw) < 4:
        raise DlcError(f"{src}: {p} is not an IDX file: it is only {len(raw)} bytes long")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DlcError(f"{src}: {p} is not an IDX file: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTDD:"
                       f" type 08/09/0B/0C/0D/0E and a number of dimensions)")
    dtype, _ = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    if ndim > _IDX_MAX_DIMS:
        raise DlcError(f"{src}: {p} is not a valid IDX file: its header declares {ndim} dimensions (at most "
                       f"{_IDX_MAX_DIMS} make an array)")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DlcError(f"{src}: {p} is truncated: its header declares {ndim} dimensions but the file ends first")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims) * np.dtype(dtype).itemsize
    found = len(raw) - head
    if found < expected:
        raise DlcError(f"{src}: {p} is truncated: dims {'x'.join(map(str, dims))} need {expected} bytes of data,"
                       f" found {found}")
    if found > expected:
        raise DlcError(f"{src}: {p} is not a valid IDX file: {found - expected} bytes follow the"
                       f" {'x'.join(map(str, dims))} data")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)


@_source("idx", images=REQUIRED, labels=None, scale=1.0)
def idx(base_dir, args: Args) -> Dataset:
    """MNIST-style IDX files: "x" the images as float32 * scale, "y" the labels as int32."""
    p = _path_arg(args, "images", base_dir)
    q = _path_arg(args, "labels", base_dir) if args["labels"] is not None else None
    scale = args.check("scale", number)
    x = read_idx(p)
    columns = _numbers("idx", p, {"x": _float32(x, scale)})
    if q is not None:
        y = _numbers("idx", q, {"y": read_idx(q)})["y"]
        if y.ndim != 1:
            raise DlcError(f"idx: the labels file {q} must hold one label per example, but its shape is"
                           f" {'x'.join(map(str, y.shape))}")
        if y.shape[0] != x.shape[0]:
            raise DlcError(f"idx: {p} has {x.shape[0]} images but {q} has {y.shape[0]} labels")
        columns["y"] = _labels(y)
    return Dataset(columns, {})


# ---- text -----------------------------------------------------------------------------------------
def _check_vocab(vocab, src: str = "vocab", span: Span | None = None) -> str:
    if not isinstance(vocab, str) or not vocab:
        raise DlcError(f"{src}: the vocabulary must be a non-empty string of characters, got {show(vocab)}", span)
    if len(set(vocab)) != len(vocab):
        dup = next(c for i, c in enumerate(vocab) if c in vocab[:i])
        raise DlcError(f"{src}: the vocabulary repeats the character {dup!r}", span)
    return vocab


def encode(text: str, vocab: str) -> np.ndarray:
    """The int32 ids of the characters of `text` in `vocab`."""
    vocab = _check_vocab(vocab, "encode")
    if not isinstance(text, str):
        raise DlcError(f"encode: expected a string, got {type(text).__name__}")
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    vcodes = np.frombuffer(vocab.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    order = np.argsort(vcodes, kind="stable")
    pos = np.searchsorted(vcodes[order], codes)
    pos_c = np.minimum(pos, len(vocab) - 1)
    ok = vcodes[order][pos_c] == codes
    if not np.all(ok):
        at = int(np.argmin(ok))
        line = text.count("\n", 0, at) + 1
        missing = sorted(set(text) - set(vocab))
        shown = "".join(missing[:10]) + ("..." if len(missing) > 10 else "")
        raise DlcError(f"encode: the character {text[at]!r} (line {line}) is not in the vocabulary"
                       f" ({len(missing)} unknown: {shown!r})")
    return order[pos_c].astype(np.int32)


def decode(ids, vocab: str) -> str:
    """The text of character ids (any shape; read in order)."""
    vocab = _check_vocab(vocab, "decode")
    a = np.asarray(ids)
    if a.size == 0:
        return ""
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise DlcError(f"decode: character ids must be integers, got {a.dtype}")
    a = a.ravel()
    bad = (a < 0) | (a >= len(vocab))
    if np.any(bad):
        raise DlcError(f"decode: id {int(a[np.argmax(bad)])} is outside the vocabulary of {len(vocab)} characters")
    return "".join(np.array(list(vocab), dtype=object)[a])


@_source("text", path=REQUIRED, seq=100, vocab=None)
def text(base_dir, args: Args) -> Dataset:
    """Character windows of a text: "x" [N, seq] ids, "y" the same windows one character later."""
    p = _path_arg(args, "path", base_dir)
    seq = args.check("seq", integer, low=1)
    vocab = args["vocab"]
    if vocab is not None:
        vocab = _check_vocab(vocab, "text", args.span("vocab"))
    s = _read_text("text", p)
    if not s:
        raise DlcError(f"text: {p} is empty")
    if vocab is None:
        vocab = "".join(sorted(set(s)))
    try:
        ids = encode(s, vocab)
    except DlcError as e:
        raise DlcError(f"text: {p}: {e.message[len('encode: '):]}") from None
    n = (len(ids) - 1) // seq
    if n < 1:
        raise DlcError(f"text: seq = {seq} is too long for {p}: it has {len(ids)} characters and one window"
                       f" needs seq + 1 = {seq + 1}")
    x = ids[: n * seq].reshape(n, seq)
    y = ids[1: n * seq + 1].reshape(n, seq)
    return Dataset({"x": x, "y": y}, {"vocab": vocab, "vocab_size": len(vocab)})


# ---- sentences (word level) -------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")     # words (don't, well-known) and single marks


def words(text: str) -> list:
    """The tokens of a sentence: runs of letters and digits (with inner apostrophes and
    hyphens) and every other mark on its own."""
    return _TOKEN.findall(text)


@_source("sentences", path=REQUIRED, vocab=REQUIRED, length=None, lower=True)
def sentences(base_dir, args: Args) -> Dataset:
    """Word-level text classification: one `LABEL<TAB>SENTENCE` per line (blank lines skipped).
    "x" [N, length] the ids of the sentence's words in the word vector file `vocab`
    (runtime.data.vectors: 0 <pad> after the last word, 1 <unk> for a word not in the file, the
    file's i-th word i + 2), lowercased first with `lower`; `length` (default: the longest
    sentence) cuts longer ones. "y" the labels: integers as written, or names numbered in
    sorted order (meta["labels"]). meta["words"] is the file's words, meta["unknown"] how many
    words of the sentences are not among them."""
    from dlc.runtime.data import vectors  # which reads its files with this module's readers
    p = _path_arg(args, "path", base_dir)
    q = _path_arg(args, "vocab", base_dir)
    length = args.check("length", integer, low=1) if args["length"] is not None else None
    lower = args.check("lower", flag)
    try:
        ids = vectors.read(q).ids
    except DlcError as e:
        e.notes.append(("read as the vocabulary of sentences(...) here", args.span("vocab")))
        raise
    labels, rows = [], []
    for lineno, line in enumerate(_read_text("sentences", p).split("\n"), 1):
        if not line.strip():
            continue
        label, tab, sentence = line.partition("\t")
        if not tab:
            raise DlcError("sentences: expected a label, a tab and a sentence", Span(str(p), lineno, 1))
        tokens = words(sentence.lower() if lower else sentence)
        if not tokens:
            raise DlcError("sentences: the sentence has no words", Span(str(p), lineno, 1))
        labels.append(label.strip())
        rows.append([ids.get(w, vectors.UNK) for w in tokens])
    if not rows:
        raise DlcError(f"sentences: {p} holds no sentences")
    width = length or max(map(len, rows))
    x = np.full((len(rows), width), vectors.PAD, np.int32)
    for i, row in enumerate(rows):
        x[i, :min(len(row), width)] = row[:width]
    meta = {"words": len(ids), "unknown": int(sum(w == vectors.UNK for row in rows for w in row))}
    if all(re.fullmatch(r"\d+", label) for label in labels):
        y = np.array([int(label) for label in labels])
    else:
        meta["labels"] = sorted(set(labels))
        y = np.searchsorted(meta["labels"], labels)
    meta["classes"] = int(y.max()) + 1
    return Dataset({"x": x, "y": _labels(y)}, meta)


# ---- digits ---------------------------------------------------------------------------------------
def digits_path() -> pathlib.Path:
    """Where the 8x8 digits ship: package data of dlc.runtime, so any install has them."""
    return pathlib.Path(str(resources.files("dlc.runtime.data").joinpath("datasets", "digits.csv.gz")))


@_source("digits", scale=1 / 16, image=True)
def digits(base_dir, args: Args) -> Dataset:
    """The UCI 8x8 handwritten digits (1797 examples): "x" [N, 1, 8, 8] (or [N, 64]), "y" 0..9."""
    scale = args.check("scale", number)
    image = args.check("image", flag)
    p = digits_path()
    if not p.is_file():
        raise DlcError(f"digits: the digits data set is missing: expected {p}, which ships with dlc's"
                       f" source in examples/data (reinstall dlc from its repository)")
    table, _ = _parse_csv(p, "false")
    if table.shape[1] != 65:
        raise DlcError(f"digits: {p} is damaged: expected 65 columns (64 pixels and the label), found"
                       f" {table.shape[1]}")
    ds = _table_dataset("digits", p, table, None, -1, scale)
    if image:
        ds.columns["x"] = ds.columns["x"].reshape(-1, 1, 8, 8)
    ds.meta["classes"] = 10
    return ds


# ---- public data sets, fetched by `dlc data fetch` -----------------------------------------------------
def _fetched(args: Args, labels: str = "y", classes: int = 10) -> Dataset:
    """A split of a data set `dlc data fetch` converted (runtime.data.download): "x" [N, C, H, W]
    float32 * scale, "y" the `labels` column."""
    from dlc.runtime.data import download as fetch  # which converts MNIST with this module's read_idx
    split = args.check("split", choice, options=fetch.SPLITS)
    scale = args.check("scale", number)
    p = fetch.converted(args.src, split)
    columns = npz(p.parent, p.name).columns
    return Dataset({"x": _float32(columns["x"], scale), "y": _labels(columns[labels])}, {"classes": classes})


@_source("mnist", split="train", scale=1 / 255)
def mnist(base_dir, args: Args) -> Dataset:
    """MNIST's handwritten digits: "x" [N, 1, 28, 28], "y" 0..9; 60000 to train, 10000 to test."""
    return _fetched(args)


@_source("fashion_mnist", split="train", scale=1 / 255)
def fashion_mnist(base_dir, args: Args) -> Dataset:
    """Fashion-MNIST's clothes: "x" [N, 1, 28, 28], "y" 0..9; 60000 to train, 10000 to test."""
    return _fetched(args)


@_source("cifar10", split="train", scale=1 / 255)
def cifar10(base_dir, args: Args) -> Dataset:
    """CIFAR-10: "x" [N, 3, 32, 32] (RGB), "y" 0..9; 50000 to train, 10000 to test."""
    return _fetched(args)


@_source("cifar100", split="train", labels="fine", scale=1 / 255)
def cifar100(base_dir, args: Args) -> Dataset:
    """CIFAR-100: "x" [N, 3, 32, 32] (RGB), "y" the 100 classes (or labels = "coarse": the 20
    superclasses); 50000 to train, 10000 to test."""
    fine = args.check("labels", choice, options=("fine", "coarse")) == "fine"
    return _fetched(args, "y" if fine else "coarse", 100 if fine else 20)


# ---- synthetic data -------------------------------------------------------------------------------
@_source("xor", repeat=1)
def xor(base_dir, args: Args) -> Dataset:
    """The four XOR points: "x" [4 * repeat, 2], "y" [4 * repeat, 1] (both float32)."""
    repeat = args.check("repeat", integer, low=1)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    return Dataset({"x": np.tile(x, (repeat, 1)), "y": np.tile(y, (repeat, 1))}, {})


def _counts(n: int, k: int) -> list[int]:
    return [n // k + (i < n % k) for i in range(k)]


@_source("spirals", n=300, classes=3, noise=0.2, seed=0)
def spirals(base_dir, args: Args) -> Dataset:
    """`classes` interleaved spiral arms in the plane: "x" [n, 2] float32, "y" [n] int32 (shuffled)."""
    n = args.check("n", integer, low=1)
    classes = args.check("classes", integer, low=2)
    noise = args.check("noise", number, low=0)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    xs, ys = [], []
    for c, m in enumerate(_counts(n, classes)):
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, m) + rng.normal(0.0, noise, m)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(m, c))
    order = rng.permutation(n)
    x = np.concatenate(xs)[order].astype(np.float32)
    y = np.concatenate(ys)[order].astype(np.int32)
    return Dataset({"x": x, "y": y}, {"classes": classes})


@_source("blobs", n=200, centers=2, std=1.0, labels="index", seed=0)
def blobs(base_dir, args: Args) -> Dataset:
    """Gaussian clusters around `centers` points: "x" [n, 2], "y" class index (or -1/+1)."""
    n = args.check("n", integer, low=1)
    centers = args.check("centers", integer, low=1)
    std = args.check("std", number, low=0)
    labels = args.check("labels", choice, options=("index", "sign"))
    if labels == "sign" and centers != 2:
        raise DlcError(f"blobs: labels = \"sign\" needs centers = 2, got centers = {centers}")
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    # centers evenly spaced on a circle of radius 5, at a random rotation
    angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(centers) / centers
    mid = 5.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    cls = np.concatenate([np.full(m, c) for c, m in enumerate(_counts(n, centers))])
    cls = cls[rng.permutation(n)]
    x = (mid[cls] + rng.normal(0.0, std, (n, 2))).astype(np.float32)
    if labels == "sign":
        y = np.where(cls == 0, -1.0, 1.0).astype(np.float32)
        return Dataset({"x": x, "y": y}, {"centers": mid.tolist()})
    return Dataset({"x": x, "y": cls.astype(np.int32)}, {"classes": centers, "centers": mid.tolist()})


@_source("sine", window=20, n=2000, noise=0.0, frequencies=1, seed=0)
def sine(base_dir, args: Args) -> Dataset:
    """Next-value forecasting on a sum of sines: "x" [n, window, 1] past values, "y" [n, 1] the next."""
    window = args.check("window", integer, low=1)
    n = args.check("n", integer, low=1)
    noise = args.check("noise", number, low=0)
    frequencies = args.check("frequencies", integer, low=1)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    periods = rng.uniform(max(4.0, window / 4), max(8.0, 2.0 * window), frequencies)
    phases = rng.uniform(0, 2 * np.pi, frequencies)
    t = np.arange(n + window, dtype=np.float64)
    series = np.sin(2 * np.pi * t[:, None] / periods + phases).sum(axis=1) / frequencies
    if noise:
        series = series + rng.normal(0.0, noise, series.shape)
    rows = np.arange(n)[:, None] + np.arange(window)
    x = series[rows][:, :, None].astype(np.float32)
    y = series[window: window + n][:, None].astype(np.float32)
    return Dataset({"x": x, "y": y}, {"periods": periods.tolist()})


PAD, BOS, EOS = 0, 1, 2


SEQ_TASK = dict(min_len=8, max_len=12, symbols=10, n=10000, seed=0)     # the parameters of copy, reverse, sort


def _seq_task(transform, args: Args) -> Dataset:
    task = args.src
    min_len = args.check("min_len", integer, low=1)
    max_len = args.check("max_len", integer, low=1)
    if min_len > max_len:
        raise DlcError(f"{task}: min_len ({min_len}) must not exceed max_len ({max_len})")
    symbols = args.check("symbols", integer, low=1)
    n = args.check("n", integer, low=1)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    lengths = rng.integers(min_len, max_len + 1, n)
    tokens = rng.integers(3, symbols + 3, (n, max_len))
    live = np.arange(max_len) < lengths[:, None]
    src = np.where(live, tokens, PAD)
    tgt = transform(tokens, lengths, live)
    dec_in = np.full((n, max_len + 1), PAD)
    dec_out = np.full((n, max_len + 1), PAD)
    dec_in[:, 0] = BOS
    dec_in[:, 1:] = tgt
    dec_out[:, :max_len] = tgt
    dec_out[np.arange(n), lengths] = EOS
    meta = {"pad": PAD, "bos": BOS, "eos": EOS, "vocab_size": symbols + 3, "max_len": max_len, "task": task}
    return Dataset({"src": src.astype(np.int32), "dec_in": dec_in.astype(np.int32),
                    "dec_out": dec_out.astype(np.int32)}, meta)


def _copy(tokens, lengths, live):
    return np.where(live, tokens, PAD)


def _reverse(tokens, lengths, live):
    j = np.arange(tokens.shape[1])
    src_j = np.clip(lengths[:, None] - 1 - j, 0, None)
    return np.where(live, np.take_along_axis(tokens, src_j, axis=1), PAD)


def _sort(tokens, lengths, live):
    big = np.iinfo(np.int64).max
    s = np.sort(np.where(live, tokens, big), axis=1)
    return np.where(live, s, PAD)


@_source("copy", **SEQ_TASK)
def copy(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source."""
    return _seq_task(_copy, args)


@_source("reverse", **SEQ_TASK)
def reverse(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source reversed."""
    return _seq_task(_reverse, args)


@_source("sort", **SEQ_TASK)
def sort(base_dir, args: Args) -> Dataset:
    """Sequence to sequence: the target is the source sorted."""
    return _seq_task(_sort, args)


# ---- augmentation ---------------------------------------------------------------------------------
def augment(x: np.ndarray, rng: np.random.Generator, shift: int = 0, flip: bool = False,
            noise: float = 0.0) -> np.ndarray:
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
            out[m] = padded[m, ..., s - a: s - a + h, s - b: s - b + w]
    if flip and n:
        m = rng.random(n) < 0.5
        out[m] = out[m][..., ::-1]
    if noise:
        out = out + rng.normal(0.0, noise, out.shape).astype(out.dtype)
    return out
