"""Early stopping: the `early_stop = patience(...)` setting of a train block, and the
monitored value it follows from epoch to epoch (kept in checkpoints, so a resumed run
goes on counting). It is a callback (callbacks.py): one that stops a run."""

from __future__ import annotations

from dlc.compiler.errors import DlcError, plural
from dlc.runtime.training.callbacks import Callback, StopTraining
from dlc.compiler.frontend.settings import Symbol, as_call, choice, flag, integer, show


class EarlyStop(Callback):
    """patience(n = 5, monitor = val_loss, mode = none, restore_best = true): stop after n
    epochs without improvement of `monitor` (val_loss, else loss, by default). `mode` says
    whether improving is going down ("min") or up ("max"); without it, a monitor whose name
    contains "acc" goes up, any other down. Without early stopping, `best` still tracks the
    monitored value (`improved`: whether the last epoch improved it, when the run writes
    best.npz). `metrics` (the model's loss and metrics), when given, checks the monitor."""

    def __init__(self, spec, span, has_validation: bool, metrics: list | None = None):
        self.patience, self.restore_best, mode = None, False, None
        self.monitor = "val_loss" if has_validation else "loss"
        if spec is not None:
            call = as_call(spec, "early_stop", "patience(5, monitor = val_loss)", span)
            if call.name != "patience":
                raise DlcError(
                    f"early_stop takes patience(n, monitor = val_loss, mode = min, restore_best = true), "
                    f"got {call.name}",
                    call.span,
                )
            args = call.bind({"n": 5, "monitor": None, "mode": None, "restore_best": True})
            self.patience = args.check("n", integer, low=1)
            monitor = args["monitor"]
            if isinstance(monitor, Symbol):
                monitor = monitor.name
            if monitor is not None and not isinstance(monitor, str):
                raise DlcError(
                    f"patience: 'monitor' must be a metric name such as val_loss, got {show(monitor)}",
                    args.span("monitor"),
                )
            self.monitor, span = monitor or self.monitor, args.span("monitor")
            if args["mode"] is not None:
                mode = args.check("mode", choice, options=("min", "max"))
            self.restore_best = args.check("restore_best", flag)
        self.mode = mode or ("max" if "acc" in self.monitor else "min")
        if metrics is not None:
            known = metrics + [f"val_{m}" for m in metrics if has_validation]
            if self.monitor not in known:
                raise DlcError(
                    f"early_stop monitors '{self.monitor}', which is not among {', '.join(known)}"
                    + ("" if has_validation else " (val_ values need validation data)"),
                    span,
                )
        self.best, self.bad, self.improved = None, 0, False

    def on_epoch_end(self, epoch: int, row: dict):
        self.improved, done = self.update(row)
        if done:
            raise StopTraining(
                f"early stop: {self.monitor} did not improve for {plural(self.patience, 'epoch')}", "early stop"
            )

    def update(self, row: dict) -> tuple[bool, bool]:
        value = row[self.monitor]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return better, self.patience is not None and self.bad >= self.patience

    def state(self):
        return {"best": self.best, "bad": self.bad}

    def restore(self, state):
        if state:
            self.best, self.bad = state.get("best"), state.get("bad", 0)
