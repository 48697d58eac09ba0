"""`dlc train --tensorboard DIR` (`model.train(tensorboard=DIR)`): a run's curves as
TensorBoard event files, written with tensorboardX (the `tensorboard` extra).

Two runs in DIR, as Keras writes them, so that TensorBoard draws each curve beside its
validation twin: DIR/train holds the learning rate of every step (`step/lr`, by step) and
the loss and metrics of every epoch (`epoch/loss`, `epoch/accuracy`, ..., by epoch);
DIR/validation the validation values of every epoch under the same names. A resumed run
adds event files to the same runs, its steps and epochs continuing the numbering."""

from __future__ import annotations

from pathlib import Path

from dlc.compiler.errors import DlcError, optional_package
from dlc.runtime.training.callbacks import Callback
from dlc.runtime.training.history import WHERE


class EventLog(Callback):
    """A callback (callbacks.py), as the displays of runtime/training/progress.py are."""

    def __init__(self, folder):
        self.tensorboardX = optional_package("tensorboardX", "tensorboard", "--tensorboard")
        self.folder = Path(folder)
        try:  # before anything is compiled: a folder that cannot be made fails the run at once
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DlcError(
                f"cannot write TensorBoard events to {self.folder}: "
                + ("it is a file" if self.folder.is_file() else e.strerror)
            ) from None
        self.writers: dict = {}

    def writer(self, run: str):
        if run not in self.writers:
            self.writers[run] = self.tensorboardX.SummaryWriter(str(self.folder / run))
        return self.writers[run]

    def on_batch_end(self, step: int, logs):
        self.writer("train").add_scalar("step/lr", logs["lr"], step)

    def on_epoch_end(self, epoch: int, row: dict):
        for name, value in row.items():
            if name not in WHERE:
                run, name = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
                if "step" in row:  # a run by steps: a row every eval_every steps
                    self.writer(run).add_scalar(f"step/{name}", value, row["step"])
                else:
                    self.writer(run).add_scalar(f"epoch/{name}", value, row["epoch"])
        for w in self.writers.values():  # a TensorBoard watching the run shows the epoch now
            w.flush()

    def on_train_end(self, logs: dict):
        for w in self.writers.values():
            w.close()
        self.writers = {}
