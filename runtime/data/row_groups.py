"""A table read by row group: a table larger than memory (runtime/data/tables.py, `stream`) keeps
only where its row groups start, and a batch converts the rows it reads (runtime/data/streamed.py).

A first pass over every group checks its values and gathers each column's categories and longest
list (table_values.py `scan`: pyarrow's compute, no row converted), so that any group converts
to the arrays the whole table would give. Then:

- Parquet (a file or a folder of part files): a row group is decoded, its chosen columns alone,
  when a batch reads a row of it, and kept in a cache of the CACHED groups read last. A
  shuffled epoch takes the groups in a random order, WINDOW groups at a time, the rows of each
  window shuffled among them: each group is decoded about once an epoch, where rows drawn from
  the whole table would decode a group for nearly every row.
- Arrow IPC files and streams (and `datasets` folders): memory-mapped, each record batch a group
  read in place, with no decoding, so an epoch's order is a permutation of every row. The pages
  of the file a read touched are let go after it (madvise), so the resident memory does not
  grow with the file.

A batch's rows are taken from their groups (`take`) and converted alone: memory holds the
cache's groups (Parquet) and the batches being read, whatever the table's length."""

from __future__ import annotations

import collections
import mmap
import threading

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.runtime.data.formats import reason
from dlc.runtime.data.streamed import Streamed, row_indices
from dlc.runtime.data.table_values import ColumnFacts, convert, few, scan

STREAM_ABOVE = 1 << 30  # bytes of a table's decoded columns above which it is streamed unless `stream` says
WINDOW = 4  # Parquet row groups whose rows a shuffled epoch mixes
CACHED = 2 * WINDOW  # decoded Parquet row groups kept: a window's, and the next one's the threads read ahead


class ParquetGroups:
    """The row groups of a pyarrow Parquet dataset, each decoded when read, a few cached."""

    random_access = False  # a row costs its group's decoding

    def __init__(self, dataset, columns: list):
        self.pieces = [piece for fragment in dataset.get_fragments() for piece in fragment.split_by_row_group()]
        self.schema, self.columns = dataset.schema, columns
        self.starts = np.cumsum([0] + [piece.row_groups[0].num_rows for piece in self.pieces])
        self.cache: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def whole(self, k: int):
        """Group k's chosen columns, decoded (not cached: the first pass reads each once)."""
        return self.pieces[k].to_table(columns=self.columns, schema=self.schema)

    def let_go(self, k: int, table):
        """Nothing: a decoded group is memory of its own, freed with the table."""

    def rows(self, k: int, local: np.ndarray, names: list):
        """Columns `names` at rows `local` of group k (a pyarrow Table)."""
        with self.lock:
            group = self.cache.get(k)
            if group is not None:
                self.cache.move_to_end(k)
        if group is None:  # decoded outside the lock, so threads decode groups side by side
            group = self.whole(k)
            with self.lock:
                self.cache[k] = group
                while len(self.cache) > CACHED:
                    self.cache.popitem(last=False)
        return group.select(names).take(local)


class ArrowGroups:
    """The record batches of Arrow IPC files and streams, memory-mapped, read in place (a
    compressed file's batch decompressed when read)."""

    random_access = True

    def __init__(self, pa, files: list, columns: list):
        """`files`: (path, is a stream) pairs, their batches one after another."""
        self.pa, self.columns, self.batches, self.lock = pa, columns, [], threading.Lock()
        for path, stream in files:
            with open(path, "rb") as f:
                if not f.seek(0, 2):
                    raise OSError("the file is empty")
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            buffer = pa.py_buffer(mapped)
            reader = (pa.ipc.open_stream if stream else pa.ipc.open_file)(pa.BufferReader(buffer))
            self.schema = reader.schema
            if not stream:
                self.batches += [(reader, i, mapped, buffer.address) for i in range(reader.num_record_batches)]
                continue
            batches = [b.select(columns) for b in reader]  # views of the file, unless compressed
            first = [self.pa.Table.from_batches([b]) for b in batches[:1]]
            if any(len(self.in_file(t, mapped, buffer.address)) < len(self.in_file(t)) for t in first):
                raise DlcError(
                    f"{path} is a compressed Arrow stream, which is not read by row group: write it "
                    "uncompressed or as an Arrow file (pyarrow.feather.write_feather), or read it whole "
                    "(stream = false)"
                )
            self.batches += [(b, None, mapped, buffer.address) for b in batches]
        self.starts = np.cumsum([0] + [self.batch(k).num_rows for k in range(len(self.batches))])

    def batch(self, k: int):
        """Record batch k, its chosen columns."""
        batch, i, _, _ = self.batches[k]
        if i is None:
            return batch
        with self.lock:
            return batch.get_batch(i).select(self.columns)

    @staticmethod
    def in_file(table, mapped=None, base: int = 0) -> list:
        """The buffers of a table (with `mapped`, those that lie in that file: a compressed
        file's are decompressed into memory)."""
        return [
            b
            for column in table.columns
            for chunk in column.chunks
            for b in chunk.buffers()
            if b is not None and b.size and (mapped is None or base <= b.address < base + len(mapped))
        ]

    def whole(self, k: int):
        """Batch k's chosen columns as a table, in place: `let_go` after reading it."""
        return self.pa.Table.from_batches([self.batch(k)])

    def rows(self, k: int, local: np.ndarray, names: list):
        """Columns `names` at rows `local` of batch k, copied out of the file, whose pages are then let go."""
        columns = self.whole(k).select(names)
        taken = columns.take(local)
        self.let_go(k, columns)
        return taken

    def let_go(self, k: int, table):
        """The pages of the file that batch k's `table` lies in dropped from this process's memory
        (clean pages of a file: read again if asked), so reading the file does not grow it."""
        _, _, mapped, base = self.batches[k]
        buffers = self.in_file(table, mapped, base)
        if buffers:
            lo = min(b.address for b in buffers) - base
            hi = max(b.address + b.size for b in buffers) - base
            lo -= lo % mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class StreamedTable:
    """The columns of a table read by row group: what each array of the conversion is (its
    column, an example's shape, its dtype) and the reading of rows."""

    def __init__(self, pa, groups, where: tuple, columns: list, label: str | None, classes: dict):
        self.pa, self.groups, self.where, self.label, self.classes = pa, groups, where, label, classes
        self.place = f"{where[0]}: {where[1]}:"
        self.known = {name: ColumnFacts() for name in columns}
        for k in range(len(groups.starts) - 1):  # the first pass: every value checked, categories gathered
            group = groups.whole(k)
            for name in columns:
                scan(pa, where, name, group.column(name), int(groups.starts[k]), self.known[name])
            groups.let_go(k, group)
        self.every = Rows(np.arange(len(self)))  # every column's rows, one array
        empty = groups.schema.empty_table().select(columns)
        self.arrays, self.names = {}, {}  # array -> (column, example shape, dtype); column -> names of its ids
        for name in columns:
            arrays, self.names[name] = self.convert(name, empty.column(name), self.known[name])
            self.arrays.update({key: (name, a.shape[1:], a.dtype) for key, a in arrays.items()})

    def __len__(self) -> int:
        return int(self.groups.starts[-1])

    def convert(self, name: str, col, known: ColumnFacts) -> tuple:
        return convert(self.pa, self.place, name, col, self.classes.get(name), name == self.label, known)

    def columns_of(self, name: str) -> dict:
        """The arrays of table column `name` (its values; a list's lengths too), every row."""
        return {
            key: TableColumn(self, key, self.every) for key, (column, _, _) in self.arrays.items() if column == name
        }

    def read(self, keys: list, rows: np.ndarray, known: ColumnFacts | None = None) -> np.ndarray:
        """Arrays `keys` at table rows `rows`, each group they fall in read once: one key's
        array, or several of one value an example side by side, [len(rows), len(keys)]."""
        names = list(dict.fromkeys(self.arrays[key][0] for key in keys))
        _, example, dtype = self.arrays[keys[0]]
        if len(keys) > 1:
            example, dtype = (len(keys),), np.result_type(*(self.arrays[key][2] for key in keys))
        starts = self.groups.starts
        group = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), *example), dtype)
        for k in np.unique(group).tolist():
            at = np.flatnonzero(group == k)
            try:
                part = self.groups.rows(k, rows[at] - starts[k], names)
            except (self.pa.ArrowException, OSError) as e:
                raise DlcError(f"{self.place} cannot read its row group {k} ({reason(e)})") from None
            arrays = {}
            for name in names:
                arrays.update(self.convert(name, part.column(name), known or self.known[name])[0])
            out[at] = arrays[keys[0]] if len(keys) == 1 else np.stack([arrays[key] for key in keys], axis=1)
        return out

    def shuffled(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random order of table rows `rows` (positions into it): every row's for random
        access, else Parquet's windows of groups (the module's docstring)."""
        if self.groups.random_access:
            return rng.permutation(len(rows))
        group = np.searchsorted(self.groups.starts, rows, side="right") - 1
        place = rng.permutation(len(self.groups.starts) - 1)[group]  # each group's place in the epoch
        return np.lexsort((rng.random(len(rows)), place // WINDOW))


class Rows:
    """Rows of a table that its columns share: the columns of a data set, indexed alike
    (`Dataset.take` gives each the same index), share one array of rows, not one each (8 bytes
    a row for every column of the table)."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.last = ids, None

    def __getitem__(self, index) -> "Rows":
        if self.last is None or self.last[0] is not index:  # the index is held: `is` cannot mistake another
            self.last = (index, Rows(self.ids[row_indices(len(self.ids), index)]))
        return self.last[1]


class TableColumn(Streamed):
    """An array of a streamed table (a column, or a list column's lengths) at table rows `rows`;
    `known`: the categories its ids are of when not the table's own (`recoded`)."""

    in_order = True

    def __init__(self, table: StreamedTable, key: str, rows: Rows, known: ColumnFacts | None = None):
        self.table, self.key, self.rows, self.known = table, key, rows, known
        _, example, self.dtype = table.arrays[key]
        self.shape = (len(rows.ids), *example)

    def __getitem__(self, index) -> "TableColumn":
        return TableColumn(self.table, self.key, self.rows[index], self.known)

    def read(self, rows, epoch: int | None) -> np.ndarray:
        return self.table.read([self.key], self.rows.ids[row_indices(len(self), rows)], self.known)

    def shuffled(self, rng: np.random.Generator) -> np.ndarray:
        return self.table.shuffled(self.rows.ids, rng)

    def recoded(self, names: list, span=None) -> "TableColumn":
        """This column of categories with the ids of `names` (a model's trained ones): a
        category of the table not among them is an error at `span`."""
        name = self.table.arrays[self.key][0]
        own = self.table.names[name] or []
        if not self.table.known[name].names:  # a datasets ClassLabel: ids stored, their names another's
            raise DlcError(
                f"{self.table.place} column '{name}' holds class ids named {own[:3]}..., not the "
                f"{names[:3]}... the model was trained on: read the table whole (stream = false) to recode them",
                span,
            )
        unknown = sorted(set(own) - set(names))
        if unknown:
            raise DlcError(
                f"{self.table.place} column '{name}' has '{unknown[0]}', a category the model was not trained on "
                f"(it knows {few(names)})",
                span,
            )
        known = ColumnFacts()
        known.ordered, known.longest = dict.fromkeys(names), self.table.known[name].longest
        return TableColumn(self.table, self.key, self.rows, known)

    def stacked(self, members: list) -> Streamed:
        """`members` (this column among them) side by side: read together when they are columns of
        this table at the same rows, each group's rows taken once for all of them."""
        if all(isinstance(m, TableColumn) and m.table is self.table and m.rows is self.rows for m in members):
            if all(m.known is None for m in members):
                return TableStack(self.table, [m.key for m in members], self.rows)
        return super().stacked(members)


class TableStack(Streamed):
    """Arrays of one value an example of a streamed table side by side ([N, k]: a table's "x"), at rows `rows`."""

    in_order = True

    def __init__(self, table: StreamedTable, keys: list, rows: Rows):
        self.table, self.keys, self.rows = table, keys, rows
        self.shape = (len(rows.ids), len(keys))
        self.dtype = np.result_type(*(table.arrays[key][2] for key in keys))

    def __getitem__(self, index) -> "TableStack":
        return TableStack(self.table, self.keys, self.rows[index])

    def read(self, rows, epoch: int | None) -> np.ndarray:
        return self.table.read(self.keys, self.rows.ids[row_indices(len(self), rows)])

    def shuffled(self, rng: np.random.Generator) -> np.ndarray:
        return self.table.shuffled(self.rows.ids, rng)
