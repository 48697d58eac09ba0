"""Callbacks: objects a training run calls as it runs (`model.train(callbacks=[...])`).

A callback has any of these methods; the run calls those it has, the display and the
TensorBoard event log first, then the caller's in the order given, then early stopping and
the checkpoints:

    on_train_begin(logs)          logs: epochs, batches (a whole epoch's), examples, initial_epoch
                                  (epochs done before a resume), initial_step, steps (the run's last
                                  step: max_steps, or epochs x batches)
    on_epoch_begin(epoch, logs)   epoch from 0; logs: batch (batches of it done before a resume)
    on_batch_end(step, logs)      step: the run's steps so far, from 1; logs: the epoch's running
                                  mean loss and metrics, and lr (progress.Step, which also says where
                                  the run is: epoch, batch, timing)
    on_epoch_end(epoch, logs)     epoch from 0; logs: the epoch's row of the history (epoch from 1,
                                  loss, metrics, their val_ twins, lr, time); with eval_every, called
                                  for each row by steps instead (its step too)
    on_train_end(logs)            logs: stopped ("done", "early stop", "stopped", "interrupted" or
                                  "error"), epochs (the epochs done); called however the run ends

A callback stops the run by raising `StopTraining(message)` (or, as in Keras, by setting
`self.model.stop_training = True`, which the Python API turns into one): from on_epoch_end, after that
epoch (its checkpoints written, as early stopping does); from on_batch_end, after that step
(last.npz written with the epoch's place, as Ctrl-C does: `resume` continues it). The other
callbacks still see the event that stopped it. Any other exception fails the run.

What a run shows (progress.py's displays), its TensorBoard events (tensorboard.py), early
stopping (early_stop.py) and its checkpoints (`Checkpoints`, below: the files of
runtime/interop/checkpoint.py) are callbacks of this interface.
"""

from __future__ import annotations

from pathlib import Path

from dlc.compiler.errors import DlcError
from dlc.runtime.interop.checkpoint import copy, save

HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")
STOPPING = ("on_batch_end", "on_epoch_end")  # the hooks that may raise StopTraining


class Callback:
    """A callback that does nothing: a base for one that overrides some of the hooks. In a run
    of `model.train(callbacks=[...])` its `model` is that model (dlc.runtime.api.DlcModel),
    and setting `self.model.stop_training = True` stops the run as raising StopTraining does."""

    model = None

    def on_train_begin(self, logs: dict):
        pass

    def on_epoch_begin(self, epoch: int, logs: dict):
        pass

    def on_batch_end(self, step: int, logs):
        pass

    def on_epoch_end(self, epoch: int, logs: dict):
        pass

    def on_train_end(self, logs: dict):
        pass


class StopTraining(Exception):
    """Raised by a callback to stop the run; its message is logged. `reason` is the run's
    `stopped` (Result.stopped): "stopped" for a user's callback, "early stop" for early stopping."""

    def __init__(self, message: str = "", reason: str = "stopped"):
        super().__init__(message)
        self.reason = reason


def check(callbacks) -> list:
    """The callbacks given, each with at least one of the hooks."""
    callbacks = list(callbacks)
    for c in callbacks:
        if not any(callable(getattr(c, hook, None)) for hook in HOOKS):
            raise DlcError(f"a callback has one or more of the methods {', '.join(HOOKS)}; {type(c).__name__} has none")
    return callbacks


class Callbacks:
    """The callbacks of a run, called in order. An event returns the first StopTraining raised
    (or None) after every callback has seen it."""

    def __init__(self, callbacks: list):
        self.callbacks = check(callbacks)

    def call(self, hook: str, *args) -> StopTraining | None:
        stop = None
        for c in self.callbacks:
            method = getattr(c, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except StopTraining as e:
                if hook not in STOPPING:
                    raise DlcError(
                        f"{type(c).__name__}.{hook} raised StopTraining: a callback stops a run from "
                        f"{' or '.join(STOPPING)}"
                    ) from None
                if e.reason == "stopped":  # the log says which callback
                    e.args = (f"stopped by {type(c).__name__}" + (f": {e}" if str(e) else ""),)
                stop = stop or e
        return stop


class Checkpoints(Callback):
    """The checkpoints of a run in its folder `out` (runtime/interop/checkpoint.py): last.npz
    after every epoch (or every row of a run by steps, at the place in the epoch `place` says), best.npz after one that improved early stopping's monitored value
    (`stop`, an EarlyStop, called before this), and last.npz at the place in an epoch where
    the run stopped inside it (`inside`, from the loop). `params`, `opt_state` and `history`
    are the run's own, which its steps and epochs update in place; `meta` what every
    checkpoint of the run records. Only a process that `writes` (rank 0) writes; with
    `whole_state` (a run with `shard_optimizer = true`, where each rank holds a share of the
    optimizer state), every rank calls it before a checkpoint and rank 0 writes what it
    returns instead of `opt_state`."""

    def __init__(
        self, out: Path, params: dict, opt_state: dict, history: list, stop, meta: dict, writes: bool, whole_state=None
    ):
        self.out, self.params, self.opt_state, self.history, self.stop = out, params, opt_state, history, stop
        self.meta, self.writes, self.whole_state = meta, writes, whole_state
        self.step = 0
        self.place = None  # (epoch, batch) of a row by steps, which the loop sets before its on_epoch_end
        self.written: list = []  # "last.npz", "best.npz": what this run wrote

    def on_train_begin(self, logs: dict):
        self.step = logs["initial_step"]

    def on_batch_end(self, step: int, logs):
        self.step = step

    def on_epoch_end(self, epoch: int, logs: dict):
        epoch, batch = self.place or (epoch + 1, 0)
        self.place = None
        self.save_last(epoch, batch)
        if self.stop.improved and self.writes:  # the same checkpoint: copied, not encoded again
            copy(self.out / "last.npz", self.out / "best.npz")
            self.wrote("best.npz")

    def inside(self, epoch: int, batch: int, partial: dict):
        """last.npz of a run stopped after `batch` of `epoch` (from 0), with the loss and metric
        sums of its batches so far (`partial`), which a resumed run continues."""
        self.save_last(epoch, batch, partial)

    def wrote(self, name: str):
        if name not in self.written:
            self.written.append(name)

    def save_last(self, epoch: int, batch: int, partial: dict | None = None):
        opt_state = self.whole_state() if self.whole_state else self.opt_state  # a collective: every rank
        if not self.writes:
            return
        self.wrote("last.npz")
        save(
            self.out / "last.npz",
            self.params,
            opt_state,
            {
                **self.meta,
                "epoch": epoch,
                "step": self.step,
                "batch": batch,
                "partial": partial,
                "history": self.history,
                "early_stop": self.stop.state(),
            },
        )
