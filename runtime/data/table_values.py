"""A table's column (a pyarrow ChunkedArray) as numpy arrays, the conversion both ways of reading a
table share (runtime/data/tables.py): the table whole, or its row groups one at a time as a batch
reads them (runtime/data/row_groups.py).

    numbers (bool, integers, floats)    as stored
    strings, dictionaries of strings    int32 ids of the categories: a string column's sorted, a
                                        dictionary's in its order, a datasets ClassLabel's names
    lists                               [N, longest] padded with 0 (a label's -1, the loss's
                                        ignore index) and "<name>_lengths" int32 [N]; a fixed-size
                                        list [N, size]

A row group alone does not hold a column's categories or its longest list: `scan` gathers them
(`ColumnFacts`) from every group, with pyarrow's compute (each group's unique strings, its
dictionary, its lengths), without converting a row, and checks each group's values on the way
(nulls, NaN); `convert` given them turns any group into the arrays the whole table would give
at its rows."""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.runtime.data.formats import numbers


class ColumnFacts:
    """What converting a column's row groups alike needs from all its rows: its categories (a
    dictionary's in their order of first appearance, strings sorted) and its longest list."""

    def __init__(self):
        self.ordered: dict = {}  # a dictionary column's names, in order (a dict: an ordered set)
        self.strings: set = set()
        self.longest = 0

    @property
    def names(self) -> list | None:
        if self.ordered:
            return list(self.ordered)
        return sorted(self.strings) if self.strings else None


def scan(pa, where: tuple, name: str, col, first: int, known: ColumnFacts):
    """Check rows `first`.. of column `name` (a piece of it: one row group) and add their
    categories and longest list to `known`; `where`: (source, path) for messages."""
    place = f"{where[0]}: {where[1]}:"
    no_nulls(pa, place, name, col, first)
    t = col.type
    if pa.types.is_dictionary(t):
        if _is_string(pa, t.value_type):
            for chunk in col.chunks:
                known.ordered.update(dict.fromkeys(str(v) for v in chunk.dictionary.to_pylist()))
            return
        col, t = col.cast(t.value_type), t.value_type
    if _is_number(pa, t):
        if pa.types.is_floating(t):
            numbers(*where, {name: col.to_numpy()}, first=first)  # a NaN or infinity named with its row
    elif _is_string(pa, t):
        known.strings.update(pa.compute.unique(col).to_pylist())
    elif _is_list(pa, t):
        _list_type(pa, place, name, t)
        if not pa.types.is_fixed_size_list(t) and len(col):
            known.longest = max(known.longest, int(pa.compute.max(pa.compute.list_value_length(col)).as_py() or 0))
        flat = _flat(pa, place, name, col, first)
        if _is_number(pa, flat.type):
            if pa.types.is_floating(flat.type) and not pa.compute.all(pa.compute.is_finite(flat)).as_py():
                numbers(*where, convert(pa, place, name, col, None, False, first=first)[0], first=first)  # [row, place]
        else:
            scan(pa, where, name, flat, first, known)  # its strings' categories
    else:
        _unread(pa, place, name, t)


def convert(
    pa,
    place: str,
    name: str,
    col,
    classes: list | None,
    is_label: bool,
    known: ColumnFacts | None = None,
    first: int = 0,
) -> tuple[dict, list | None]:
    """({array name: array}, the names of its ids or None) of table column `name` (a
    ChunkedArray, its first row the table's row `first`); `classes`: the ids' names a datasets
    folder gives; `known`: the categories and longest list of every row (`scan`), else this
    column's own."""
    pc, t = pa.compute, col.type
    no_nulls(pa, place, name, col, first)
    if pa.types.is_dictionary(t):
        if _is_string(pa, t.value_type) and known is None:
            col = pa.table({name: col}).unify_dictionaries().column(0)  # one dictionary for every chunk
            names = col.chunk(0).dictionary.to_pylist() if col.num_chunks else []
            ids = (
                np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks])
                if col.num_chunks
                else np.zeros(0, np.int32)
            )
            return {name: ids.astype(np.int32)}, [str(n) for n in names]
        col, t = col.cast(t.value_type), t.value_type
    if _is_number(pa, t):
        return {name: col.to_numpy()}, classes
    if _is_string(pa, t):
        names = (known.names or []) if known is not None else sorted(pc.unique(col).to_pylist())
        ids = pc.index_in(col, value_set=pa.array(names, t))  # every string is among the names
        return {name: ids.to_numpy(zero_copy_only=False).astype(np.int32)}, names
    if _is_list(pa, t):
        return _list(pa, place, name, col, classes, is_label, known, first)
    _unread(pa, place, name, t)


def few(names: list, most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _list(
    pa, place: str, name: str, col, classes: list | None, is_label: bool, known: ColumnFacts | None, first: int
) -> tuple[dict, list | None]:
    """A list column as [N, longest] padded (0; a label's -1) and its lengths; a fixed-size list as [N, size]."""
    t = col.type
    _list_type(pa, place, name, t)
    flat, names = convert(pa, place, name, _flat(pa, place, name, col, first), classes, is_label, known, first)
    values = flat[name]
    n = len(col)
    if pa.types.is_fixed_size_list(t):
        return {name: values.reshape(n, t.list_size)}, names
    lengths = pa.compute.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int32)
    longest = known.longest if known is not None else int(lengths.max()) if n else 0
    signed = np.int64 if values.dtype.kind in "bu" else values.dtype  # room for the label's -1
    padded = np.full((n, longest), -1 if is_label else 0, signed)
    padded[np.arange(longest)[None, :] < lengths[:, None]] = values
    return {name: padded, f"{name}_lengths": lengths}, names


def _list_type(pa, place: str, name: str, t):
    if not (_is_number(pa, t.value_type) or _is_string(pa, t.value_type)):
        raise DlcError(
            f"{place} column '{name}' holds lists of {_type(t.value_type)}, which dlc does not read: "
            f"lists of numbers or strings are read"
        )


def _flat(pa, place: str, name: str, col, first: int):
    """The values of a list column's lists, one after another; a null among them is an error with its row."""
    t = col.type
    flat_col = pa.chunked_array([c.flatten() for c in col.chunks], t.value_type)
    if flat_col.null_count:
        starts = np.cumsum([0] + [len(c) for c in col.chunks])  # each chunk's first row
        parents = np.concatenate(
            [pa.compute.list_parent_indices(c).to_numpy() + start for c, start in zip(col.chunks, starts)]
        )
        row = first + int(parents[_first_null(pa, flat_col)])
        raise DlcError(
            f"{place} column '{name}' has a null inside its list at row {row} (from 0): dlc does not fill "
            f"missing values; drop or fill them before training"
        )
    return flat_col


def _unread(pa, place: str, name: str, t):
    if pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_union(t):
        raise DlcError(
            f"{place} column '{name}' holds nested records ({_type(t)}), which dlc does not read: leave it "
            f"out with columns = [...] or store its fields as columns of their own"
        )
    raise DlcError(
        f"{place} column '{name}' holds {_type(t)} values, which dlc does not read: numbers, strings or "
        f"lists of them are read (cast it in the file, or leave it out with columns = [...])"
    )


def no_nulls(pa, place: str, name: str, col, first: int = 0):
    """An error naming the first null of column `name` (rows from `first`), if it has one."""
    if col.null_count:
        raise DlcError(
            f"{place} column '{name}' has a null at row {first + _first_null(pa, col)} (from 0): dlc does not "
            f"fill missing values; drop or fill them before training"
        )


def _first_null(pa, col) -> int:
    return int(pa.compute.index(pa.compute.is_null(col), True).as_py())


def _is_number(pa, t) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_string(pa, t) -> bool:
    return (
        pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )  # pyarrow 16 on


def _is_list(pa, t) -> bool:
    return pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)


def _type(t) -> str:
    text = str(t)
    return text if len(text) <= 60 else text[:57] + "..."
