"""The data set a source gives: aligned arrays (the first axis indexes the examples) in a
fixed order, features first and targets last, so the trainer can bind them to a model's
inputs and targets by position, plus `meta` (the vocabulary of a text, the special token
ids of a sequence task, ...). A data set whose column names are the data's own (`named`: a
dict of arrays, an .npz saved with keywords) binds by those names instead
(runtime/training/inputs.py). `stacked` names columns made of others when the binding asks
for them: a table's numeric columns stacked as "x", its label column as "y"
(runtime/data/tables.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dlc.compiler.errors import DlcError, did_you_mean
from dlc.compiler.frontend.settings import show
from dlc.runtime.data.streamed import Streamed


@dataclass(repr=False)
class Dataset:
    """Aligned arrays (first axis = examples), or columns read by example (streamed.py), and facts about them."""

    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    named: bool = False  # the columns must match inputs by name (else a source's x, y bind by order)
    stacked: dict = field(default_factory=dict)  # name -> the columns it stacks (one: that column as it is)

    def __post_init__(self):
        self.columns = dict(self.columns)
        lengths = {}
        for name, a in self.columns.items():
            a = a if isinstance(a, Streamed) else np.asarray(a)
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
        meta = {
            k: (v if not isinstance(v, str) or len(v) <= 20 else f"<{len(v)} characters>") for k, v in self.meta.items()
        }
        stacked = "".join(f"; {k} stacks {', '.join(v)}" for k, v in self.stacked.items())
        return f"Dataset({len(self)} examples; {cols}{stacked}; meta {meta})"

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str, span=None) -> np.ndarray:
        """A column, or the one `stacked` makes: its columns side by side, [N, k] (one: as it is);
        a column it stacks that the data lacks is an error at `span`."""
        if name in self.columns:
            return self.columns[name]
        missing = [m for m in self.stacked[name] if m not in self.columns]
        if missing:
            raise DlcError(
                f"{name} stacks the columns {', '.join(self.stacked[name])}, but the data has no column "
                f"'{missing[0]}'{did_you_mean(missing[0], self.columns)}",
                span,
            )
        members = [self.columns[m] for m in self.stacked[name]]
        if len(members) == 1:
            return members[0]
        streamed = next((m for m in members if isinstance(m, Streamed)), None)
        return streamed.stacked(members) if streamed is not None else np.stack(members, axis=1)

    def reads(self, names) -> set:
        """The columns that `names` (columns, or names `stacked` makes) read."""
        return {m for name in names for m in ([name] if name in self.columns else self.stacked.get(name, [name]))}

    def take(self, index) -> "Dataset":
        """The examples at `index` (integer indices or a boolean mask), same meta."""
        index = np.asarray(index)
        if index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
            if index.size == 0:
                index = index.astype(np.int64)
            else:
                raise DlcError(f"take: rows must be selected by integer indices or a mask, got {index.dtype}")
        try:
            return Dataset({k: a[index] for k, a in self.columns.items()}, dict(self.meta), self.named, self.stacked)
        except IndexError as e:
            raise DlcError(f"take: {e}") from None

    def split(self, fraction: float, seed: int = 0, tail: bool = False, span=None) -> tuple["Dataset", "Dataset"]:
        """Shuffled (rest, held_out) with round(len * fraction) examples held out; with `tail`,
        the last ones, in order. The windows at every offset of a text (meta "windows": their
        length, text(windows = "random")) split at a place of the text: the rest keeps the
        windows that end before it, and the held-out part is its windows that do not overlap."""
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float, np.floating, np.integer))
            or not 0 <= fraction <= 1
            or math.isnan(fraction)
        ):
            raise DlcError(f"split: the held-out fraction must be a number between 0 and 1, got {show(fraction)}")
        n = len(self)
        k = int(round(n * float(fraction)))
        block = self.meta.get("windows")
        if block and not tail:
            raise DlcError(
                "random windows overlap, so a shuffled split would hold out text the training windows "
                "read: use split(fraction, tail = true), which holds out the end of the text",
                span,
            )
        if not tail:
            order = np.random.default_rng(seed).permutation(n)
            rest, held = order[k:], order[:k]
            if any(isinstance(a, Streamed) and a.in_order for a in self.columns.values()):  # each part in file order
                rest, held = np.sort(rest), np.sort(held)
            return self.take(rest), self.take(held)
        if not block:
            return self.rows(slice(0, n - k)), self.rows(slice(n - k, n))
        held = self.rows(slice(n - k, n, block))
        held.meta = {m: v for m, v in self.meta.items() if m != "windows"}  # fixed windows, read once each
        return self.rows(slice(0, max(n - k - block, 0))), held

    def rows(self, part: slice) -> "Dataset":
        """The examples of a range, views of the columns: a text's windows at every offset stay
        views of the text (copied, GPT-2's 256 characters a window of a 197 K text were 400 MB)."""
        return Dataset({k: a[part] for k, a in self.columns.items()}, dict(self.meta), self.named, self.stacked)
