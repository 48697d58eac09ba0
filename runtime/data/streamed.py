"""Columns read by example: a data set too large to hold decoded (a folder of photos,
runtime/data/photos.py) keeps only what finds its examples, and a batch decodes its rows when
the run needs them.

A `Streamed` column stands where an array of examples would in a `Dataset`: it has a length,
`shape` (the examples' count, then an example's shape, as an array's), `dtype`, and is indexed
as an array is (a slice, integer rows, a mask) into another column of those examples, without
reading any. `read(rows, epoch)` decodes rows into an array: with the epoch of a training run
the column's training transform (random, a function of the seed, the epoch and the example
alone), with None its evaluation transform. `batches` (runtime/data/prefetch.py) reads them
ahead of the steps; `read_rows` is the one place code that takes `v[rows]` of a column goes
through."""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError


class Streamed:
    """A column of examples decoded when read (see the module's docstring)."""

    shape: tuple  # (examples, *an example's shape)
    dtype: np.dtype
    in_order = False  # examples read in their stored order cost less than apart (a table's row groups)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> "Streamed":
        """The examples at `index` (a slice, integer rows or a mask) as a column, none read."""
        raise NotImplementedError

    def read(self, rows, epoch: int | None) -> np.ndarray:
        """The examples at `rows` decoded: [len(rows), *shape[1:]] of `dtype`."""
        raise NotImplementedError

    def read_into(self, rows, epoch: int | None, out: np.ndarray):
        """`read` into `out`, a part of a batch's array, which threads fill side by side."""
        out[...] = self.read(rows, epoch)

    def shaped(self, example: tuple) -> "Streamed | None":
        """This column giving examples of shape `example` (an input's, without the batch axis),
        or None when it cannot."""
        return self if tuple(example) == tuple(self.shape[1:]) else None

    def shuffled(self, rng: np.random.Generator) -> np.ndarray:
        """A random order of this column's examples for an epoch (a permutation; a table's
        Parquet row groups, runtime/data/row_groups.py, keep their rows near one another)."""
        return rng.permutation(len(self))

    def stacked(self, members: list) -> "Streamed":
        """`members` (this column among them, each of one value an example) side by side, [N, k]."""
        return Stacked(members)

    def augmented(self, options: dict, seed: int, span=None) -> "Streamed":
        """This column with a training transform (`augment = ...` of a train block), or an error at `span`."""
        raise DlcError(f"augment = {options.get('form', 'this form')}(...) does not apply to this data", span)

    def __array__(self, *args, **kwargs):
        # a column read whole would undo what streaming is for: every reader goes through read_rows
        raise TypeError("a streamed column is read by rows (runtime/data/streamed.py read_rows), not as one array")


class Stacked(Streamed):
    """Streamed columns of one value an example side by side: [N, k] (a table's "x")."""

    def __init__(self, members: list):
        self.members = members
        self.shape = (len(members[0]), len(members))
        self.dtype = np.result_type(*(m.dtype for m in members))

    def __getitem__(self, index) -> "Stacked":
        return Stacked([m[index] for m in self.members])

    def read(self, rows, epoch: int | None) -> np.ndarray:
        return np.stack([read_rows(m, rows, epoch) for m in self.members], axis=1).astype(self.dtype, copy=False)

    def shuffled(self, rng: np.random.Generator) -> np.ndarray:
        return self.members[0].shuffled(rng)


class Mapped(Streamed):
    """A streamed column whose batches, once read, go through `fit` (an array of `dtype` out:
    the checks and cast of the model's input it is bound to)."""

    def __init__(self, column: Streamed, fit, dtype):
        self.column, self.fit, self.dtype, self.shape = column, fit, np.dtype(dtype), column.shape

    def __getitem__(self, index) -> "Mapped":
        return Mapped(self.column[index], self.fit, self.dtype)

    def read(self, rows, epoch: int | None) -> np.ndarray:
        return self.fit(self.column.read(rows, epoch))

    def shuffled(self, rng: np.random.Generator) -> np.ndarray:
        return self.column.shuffled(rng)


def shuffled(columns: dict, rng: np.random.Generator) -> np.ndarray:
    """A random order of the examples of `columns` for an epoch: a streamed column's own, else a permutation."""
    first = next((v for v in columns.values() if isinstance(v, Streamed)), None)
    return first.shuffled(rng) if first is not None else rng.permutation(len(next(iter(columns.values()))))


def read_rows(column, rows, epoch: int | None = None) -> np.ndarray:
    """The examples at `rows` (a slice or integer rows) of an array or a streamed column."""
    return column.read(rows, epoch) if isinstance(column, Streamed) else column[rows]


def first_rows(columns: dict, n: int) -> dict:
    """The first `n` examples of every column, streamed ones decoded (evaluation transform):
    what reads a few batches in order, as int8 calibration does, takes them as arrays."""
    return {k: read_rows(v, slice(0, n)) for k, v in columns.items()} if is_streamed(columns) else columns


def is_streamed(columns: dict) -> bool:
    """Whether any column of `columns` is read by example."""
    return any(isinstance(v, Streamed) for v in columns.values())


def row_indices(n: int, index) -> np.ndarray:
    """The integer rows of n examples that `index` (a slice, integer rows or a mask) selects."""
    # a slice's or integer rows taken as they are: not an index of every example made for each batch
    if isinstance(index, slice):
        rows = np.arange(*index.indices(n))
    else:
        index = np.asarray(index)
        rows = np.arange(n)[index] if index.dtype == bool else index
    if rows.ndim != 1:
        raise DlcError(f"examples are selected by a slice, integer rows or a mask, not {type(index).__name__}")
    return rows
