"""The file formats data comes in, read from a file already found: gzip, UTF-8 text, .npz
archives, numeric CSV and MNIST's IDX; and the checks of the columns read from them.

A column read from a file must hold real numbers (bool, integers or floats: `not_numbers`),
and a float column finite float32 numbers (`numbers`, one check for every file format).
Every problem is a `DlcError` with a one-line message naming the reader (`src`) and the file.
Where a file is found (relative to the .dl file, a gzipped twin) is runtime/data/files.py's.
"""

from __future__ import annotations

import gzip
import io
import math
import pathlib
import zipfile
import zlib

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.runtime.data.dataset import Dataset


# ---- bytes and text ---------------------------------------------------------------------------------
def read_bytes(src: str, p: pathlib.Path) -> bytes:
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


def read_utf8(src: str, p: pathlib.Path) -> str:
    """The text of a UTF-8 file (optionally gzipped), without a byte order mark, lines ending in \\n."""
    raw = read_bytes(src, p)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DlcError(f"{src}: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    if s.startswith("\ufeff"):
        s = s[1:]
    return s.replace("\r\n", "\n").replace("\r", "\n")


def reason(e: Exception) -> str:
    """The first line of an exception's message: why a library could not read a file."""
    return str(e).split("\n")[0] or type(e).__name__


# ---- the columns read from a file -----------------------------------------------------------------
def float32(a: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """a * scale as float32 (values beyond float32 become infinities, which `numbers` refuses)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if a.dtype.itemsize <= 4 and a.dtype.kind in "uif":  # no float64 copy of a big image file
            out = a.astype(np.float32)
            if scale != 1:
                out *= np.float32(scale)
        else:
            out = (a.astype(np.float64) * scale).astype(np.float32)
    return out


def label_column(y: np.ndarray) -> np.ndarray:
    """A label column: int32 when its values are whole numbers within int32, else float32 (so
    no label is ever wrapped around)."""
    whole = bool(np.all(y == np.round(y))) and bool(np.all(np.abs(y) < 2**31))
    return y.astype(np.int32) if whole else y.astype(np.float32)


FLOAT32_MAX = np.finfo(np.float32).max  # a float32 scalar: a float16 array compares in float32
_NOT_NUMBERS = {
    "U": "strings",
    "S": "bytes",
    "c": "complex numbers",
    "O": "Python objects",
    "M": "dates",
    "m": "time spans",
    "V": "records",
}


def not_numbers(a: np.ndarray) -> str | None:
    """What `a` holds when it is not real numbers (bool, integers, floats), e.g. "strings (<U1)",
    else None: such values would be converted with a loss (a complex number's imaginary part
    dropped, a string parsed), so data of them is refused, from a file (`numbers`) or not
    (runtime/training/inputs.py fit_input)."""
    if a.dtype.kind in "biuf":
        return None
    return f"{_NOT_NUMBERS.get(a.dtype.kind, 'values')} ({a.dtype})"


def numbers(src: str, p, columns: dict, kind: str = "column", first: int = 0) -> dict:
    """The columns of a file (`src`: its reader, `p`: its path; or `p` None for arrays given in
    Python, `kind` "array"), refusing a column that is not real numbers (`not_numbers`) and a
    float column with a NaN, an infinity or a value beyond float32 (what training computes in);
    `first`: the file's row of the columns' first (a table's row group read alone).
    Every reader of a file, and runtime/training/inputs.py for arrays, checks its columns here."""
    place = f"{src}: {p}:" if p is not None else f"{src}:"
    for name, a in columns.items():
        what = not_numbers(a)
        if what:
            raise DlcError(f"{place} {kind} '{name}' holds {what}, not numbers")
        if a.dtype.kind != "f":
            continue
        # a float of 32 bits or fewer fits float32 when it is finite: one pass where the bound takes two
        if np.isfinite(a).all() if a.dtype.itemsize <= 4 else (np.abs(a) <= FLOAT32_MAX).all():
            continue
        bad = ~(np.abs(a) <= FLOAT32_MAX)  # NaN compares false (and warns of nothing)
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DlcError(
            f"{place} {kind} '{name}' holds a value that is not a finite float32 number "
            f"at index {[first + where[0], *where[1:]]} ({float(a[where]):g})"
        )
    return columns


# ---- npz ------------------------------------------------------------------------------------------
class BadNpz(Exception):
    """Why an .npz file cannot be read, for its reader to word: `kind` is "npy" (it holds a single
    .npy array), "not zip", "archive" (the zip itself is damaged), "objects" (a member holds Python
    objects), "not npy" (a member is not an .npy array), "member" (a member is damaged: its CRC, its
    compression, its header, cut short) or "memory" (a member's header claims a shape larger than
    memory); `member` names the array, `reason` is what numpy or zipfile said."""

    def __init__(self, kind: str, member: str | None = None, reason: str = ""):
        super().__init__(kind, member, reason)
        self.kind, self.member, self.reason = kind, member, reason


def npz_arrays(p: pathlib.Path) -> dict:
    """Every array of an .npz archive, in file order, named as in the file; a file that is not one,
    or a damaged member, is a BadNpz (an unreadable file an OSError)."""
    arrays = {}
    with open(p, "rb") as f:  # our handle, closed whatever numpy makes of the file
        magic = f.read(6)
        f.seek(0)
        if magic.startswith(b"\x93NUMPY"):
            raise BadNpz("npy")
        if not magic.startswith(b"PK"):
            raise BadNpz("not zip")
        try:
            z = np.load(f, allow_pickle=False)
        except Exception as e:  # whatever a damaged archive makes numpy or zipfile raise
            raise BadNpz("archive", reason=reason(e)) from None
        with z:
            for name in z.files:
                try:
                    arrays[name] = z[name]
                except MemoryError:  # numpy allocates the shape a header claims before reading it
                    raise BadNpz("memory", name) from None
                except ValueError as e:
                    raise BadNpz("objects" if "pickle" in str(e) else "member", name, reason(e)) from None
                except zipfile.BadZipFile as e:
                    raise BadNpz("member", name, "CRC mismatch" if "CRC" in str(e) else reason(e)) from None
                except Exception as e:  # a damaged member: bad compression, bad header, cut short
                    raise BadNpz("member", name, reason(e)) from None
                if not isinstance(arrays[name], np.ndarray):  # numpy gives a member not .npy as bytes
                    raise BadNpz("not npy", name)
    return arrays


def read_npz(p: pathlib.Path) -> dict:
    """Every array of an .npz archive, in file order, named as in the file, checked (`numbers`)."""
    try:
        columns = npz_arrays(p)
    except BadNpz as e:
        raise DlcError(
            {
                "npy": f"npz: {p} is not an .npz archive (it holds a single .npy array; save with np.savez)",
                "not zip": f"npz: {p} is not a valid .npz archive (expected a zip file of arrays, as np.savez writes)",
                "archive": f"npz: {p} is not a valid .npz archive ({e.reason})",
                "objects": f"npz: array '{e.member}' of {p} holds Python objects, which dlc does not load (save "
                "numeric arrays)",
                "not npy": f"npz: '{e.member}' of {p} is not an .npy array (np.savez writes only arrays)",
                "member": f"npz: array '{e.member}' of {p} is corrupt ({e.reason})",
                "memory": f"npz: array '{e.member}' of {p} claims a shape larger than memory",
            }[e.kind]
        ) from None
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
    return numbers("npz", p, columns)


# ---- csv ------------------------------------------------------------------------------------------
def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_csv(p: pathlib.Path, header: str) -> tuple[np.ndarray, list[str] | None]:
    """The float64 table of a numeric CSV file (comma, tab or semicolon separated; blank lines and
    lines starting with # skipped) and the names of its header row: `header` true, false or auto
    (a first row that is not numeric)."""
    lines = read_utf8("csv", p).split("\n")
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
                    raise DlcError(
                        f"csv: {p}, line {lineno}, column {col}: {what} is not a number"
                        f" (dlc reads numeric CSV files only)"
                    )
        raise DlcError(f"csv: {p} is not a numeric CSV file")
    if not np.all(np.isfinite(table)):
        r, c = np.argwhere(~np.isfinite(table))[0]
        raise DlcError(f"csv: {p}, line {body[r][0]}, column {c + 1}: '{table[r, c]}' is not a finite number")
    return table, names


def table_dataset(src: str, p, table: np.ndarray, names, label, scale: float) -> Dataset:
    """A table's data set: "x" float32 (every column but the label, * scale), "y" the label
    column (`label_column`; none when `label` is None); the header's names in meta."""
    width = table.shape[1]
    meta = {}
    if label is None:
        x = table
        y = None
    else:
        if not -width <= label < width:
            raise DlcError(f"{src}: label column {label} is out of range: {p} has {width} columns")
        if width < 2:
            raise DlcError(
                f"{src}: {p} has a single column; with a label column there would be no features (write label = none)"
            )
        col = label % width
        y = table[:, col]
        x = np.delete(table, col, axis=1)
        if names:
            meta["label"] = names[col]
            names = names[:col] + names[col + 1 :]
    if names:
        meta["features"] = names
    columns = {"x": float32(x, scale)}
    if y is not None:
        columns["y"] = label_column(y)
    return Dataset(numbers(src, p, columns), meta)


# ---- idx (MNIST) ----------------------------------------------------------------------------------
_IDX_TYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}


_IDX_MAX_DIMS = 32  # numpy's limit (1.x; 2.x allows 64); MNIST's files have 1 or 3


def read_idx(p: pathlib.Path, src: str = "idx") -> np.ndarray:
    """The array of an IDX file (optionally gzipped), checked against its header."""
    raw = read_bytes(src, p)
    if len(raw) < 4:
        raise DlcError(f"{src}: {p} is not an IDX file: it is only {len(raw)} bytes long")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DlcError(
            f"{src}: {p} is not an IDX file: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTDD:"
            f" type 08/09/0B/0C/0D/0E and a number of dimensions)"
        )
    dtype, _ = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    if ndim > _IDX_MAX_DIMS:
        raise DlcError(
            f"{src}: {p} is not a valid IDX file: its header declares {ndim} dimensions (at most "
            f"{_IDX_MAX_DIMS} make an array)"
        )
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DlcError(f"{src}: {p} is truncated: its header declares {ndim} dimensions but the file ends first")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims) * np.dtype(dtype).itemsize
    found = len(raw) - head
    if found < expected:
        raise DlcError(
            f"{src}: {p} is truncated: dims {'x'.join(map(str, dims))} need {expected} bytes of data, found {found}"
        )
    if found > expected:
        raise DlcError(
            f"{src}: {p} is not a valid IDX file: {found - expected} bytes follow the {'x'.join(map(str, dims))} data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)
