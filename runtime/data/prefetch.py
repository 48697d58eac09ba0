"""Batches read ahead of the steps that take them: the examples of streamed columns
(runtime/data/streamed.py) decoded by a pool of threads while the native step runs.

`Batches(columns, plan)` yields, for each (rows, epoch) of the plan, the dict of the columns'
rows. Arrays held in memory are indexed as they always were, in the loop that takes them, with
no thread. When a column is streamed, each batch's rows are split among `threads` threads
(Pillow and numpy release the GIL while they decode and resize), each writing its rows into the
batch's array (`Streamed.read_into`: no copy joins them), and up to `ahead` batches
after the one being taken are read at once: with the batch the taker still holds while it
asks for the next, memory holds at most ahead + 2 decoded batches.
An example's value does not depend on which thread read it, so the batches are the same bits
on any number of threads."""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from dlc.runtime.data.streamed import Streamed, is_streamed, row_indices

AHEAD = 2  # batches read while the step takes the current one


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Batches:
    """The batches of `plan` ((rows, epoch) pairs: a slice or integer rows, the epoch of the
    training transform or None) of `columns`, read ahead by `threads` threads when streamed."""

    def __init__(self, columns: dict, plan: Iterable, threads: int | None = None, ahead: int = AHEAD):
        self.columns, self.plan = columns, plan
        self.threads = threads or default_threads()
        self.ahead = ahead
        self.streamed = is_streamed(columns)

    def __iter__(self) -> Iterator[dict]:
        if not self.streamed:
            for rows, _ in self.plan:
                yield {k: v[rows] for k, v in self.columns.items()}
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dlc-data")
        pending: collections.deque = collections.deque()
        try:
            for rows, epoch in self.plan:
                pending.append(self.submit(pool, rows, epoch))
                if len(pending) > self.ahead:
                    yield self.collect(pending.popleft())
            while pending:
                batch = self.collect(pending.popleft())
                if not pending:  # all read: no thread waits for a taker that may not come back
                    pool.shutdown()
                yield batch
        finally:  # the taker stopped (or failed): what is queued is dropped, what runs is awaited
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, pool: ThreadPoolExecutor, rows, epoch) -> dict:
        """A batch's columns: arrays' rows, or a streamed column's array and the futures of the
        threads that fill it, each a chunk of its rows (written in place: no copy to join them)."""
        batch = {}
        for name, v in self.columns.items():
            if not isinstance(v, Streamed):
                batch[name] = v[rows]
                continue
            picked = row_indices(len(v), rows)
            out = np.empty((len(picked),) + tuple(v.shape[1:]), v.dtype)
            bounds = np.linspace(0, len(picked), min(self.threads, max(len(picked), 1)) + 1).astype(int)
            batch[name] = (
                out,
                [pool.submit(v.read_into, picked[lo:hi], epoch, out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])],
            )
        return batch

    def collect(self, batch: dict) -> dict:
        """The batch's arrays, once its chunks are read: a reader's error is raised here."""
        for v in batch.values():
            for f in v[1] if isinstance(v, tuple) else ():
                f.result()
        return {name: v[0] if isinstance(v, tuple) else v for name, v in batch.items()}
