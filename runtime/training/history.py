"""The history of a training run, a row per epoch, or per `eval_every` steps with its step
(loss, metrics, their val_ twins, lr, time): `History` (a run's result), and in the run's folder history.json, history.csv and,
with matplotlib and two rows or more, history.png."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from dlc.compiler.errors import did_you_mean

# the columns of a row that say where and when it was taken, not what the run measured
WHERE = ("step", "epoch", "time", "lr", "data_wait")


class History(list):
    """A row per epoch, a dict each; by a name, that column over the epochs, as Keras'
    History.history: history["loss"] == [row["loss"] for row in history]. `as_dict()`: every
    column, {"epoch": [1, 2], "loss": [...], ...}."""

    def __getitem__(self, key):
        if not isinstance(key, str):
            return super().__getitem__(key)
        names = column_names(self)
        if key not in names:
            raise KeyError(
                f"the history has no column '{key}'{did_you_mean(key, names)} "
                f"(its columns: {', '.join(names) or 'none, no epoch ran'})"
            )
        return [row.get(key) for row in self]

    def as_dict(self) -> dict:
        return {name: self[name] for name in column_names(self)}


def column_names(history: list) -> list:
    """The names of the history's columns, in the order the rows first have them."""
    return list(dict.fromkeys(k for row in history for k in row))


def save_history(out: Path, history: list, log, plot: bool = True):
    """history.json and history.csv in `out`, each replaced at once; history.png with `plot`,
    of a history of two rows or more (a curve needs two points: a run of one epoch, often a
    trial, does not wait half a second for matplotlib to draw none), unless DLC_PLOT=0 (runs
    started by a script or a test suite, which read the numbers, not the picture). A file
    that cannot be written is a note to `log`: the checkpoints matter more."""
    keys = column_names(history)
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    for name, text in (("history.json", json.dumps(history, indent=1)), ("history.csv", table.getvalue())):
        tmp = out / f".{name}.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, out / name)
        except OSError as e:
            log(f"note: cannot write {out / name}: {e.strerror}")
    if plot and len(history) > 1 and os.environ.get("DLC_PLOT") != "0":
        _plot(out / "history.png", history, keys)


def _plot(path: Path, history: list, keys: list):
    """The curves as a PNG, drawn on a Figure of its own with the Agg canvas: pyplot and the
    caller's backend (a notebook's inline one) are never touched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    metrics = [k for k in keys if k not in WHERE and not k.startswith("val_")]
    axis = "step" if "step" in keys else "epoch"  # a run by steps has a row every eval_every steps
    # a panel per metric (with its val_ twin), and one of the learning rate: the schedule beside its effect
    fig = Figure(figsize=(4 * (len(metrics) + 1), 3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics) + 1, squeeze=False)
    epochs = [r[axis] for r in history]
    for ax, m in zip(axes[0], metrics):
        ax.plot(epochs, [r.get(m) for r in history], label=m)
        if f"val_{m}" in keys:
            ax.plot(epochs, [r.get(f"val_{m}") for r in history], label=f"val_{m}")
        ax.set_xlabel(axis)
        ax.legend()
    lr = axes[0][-1]
    lr.plot(epochs, [r.get("lr") for r in history], label=f"lr (the {axis}'s last step)")
    lr.set_xlabel(axis)
    lr.set_ylabel("lr")
    lr.legend()
    fig.tight_layout()
    fig.savefig(path)
