"""What a training run shows while it runs (`dlc train`, `model.train()`): one display per
run, chosen by make_display from `progress`:

- "auto": on a terminal, one line redrawn in place (TerminalLine); in a Jupyter kernel with
  tqdm installed, tqdm's bar (Bar: the notebook widget, or its text bar without ipywidgets);
  anywhere else (a pipe, a log file, CI, a notebook without tqdm), a line per epoch;
- "bar": tqdm's bar wherever it runs (tqdm.auto picks the widget or the text bar);
- "epochs": a line per epoch;
- N (`--log-every N`): a plain line every N steps, and a line per epoch;
- "none" (`-q`): nothing; the caller prints the summary.

Lines go to the run's log (stderr by default); the redrawn line and tqdm's bar to stderr.
Only TerminalLine writes carriage returns, and only to a terminal. A display is a callback
(callbacks.py): the run calls it after every step and epoch as it calls a user's."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from dlc.compiler.errors import DlcError, did_you_mean, optional_package
from dlc.runtime.training.callbacks import Callback
from dlc.runtime.training.history import WHERE
from dlc.runtime.terminal import REDRAW_S, duration, span, terminal_width

MODES = ("auto", "bar", "epochs", "none")


@dataclass
class Step(Mapping):
    """Where a run is after a step: the `logs` of a callback's on_batch_end, a mapping of the
    epoch's running mean loss and metrics and lr, whose attributes say the rest."""

    step: int  # steps of the run, those before a resume included
    steps: int  # the step the run ends at: max_steps, or its epochs' batches
    epoch: int  # from 0
    epochs: int  # the epochs the run goes through (in a run by steps, the last cut at max_steps)
    first: int  # batches of this epoch done before this run (resumed inside it)
    done: int  # batches of this epoch this run has done
    total: int  # batches of this epoch this run does (fewer than per_epoch after a resume inside it,
    # or in the epoch max_steps ends)
    per_epoch: int  # batches of a whole epoch
    totals: dict  # the epoch's sums of the loss and metrics, weighted by batch size
    seen: int  # the epoch's examples so far
    fresh: int  # examples this run trained since `started`
    started: float  # time.perf_counter() when this run began the epoch
    lr: float
    waited: float | None = None  # seconds of the epoch's steps spent waiting for streamed data (else None)

    @property
    def batch(self) -> int:
        """The batch just done, from 1, of the whole epoch."""
        return self.first + self.done

    def means(self) -> dict:
        return {k: v / max(self.seen, 1) for k, v in self.totals.items() if k != "grad_norm"}

    def logs(self) -> dict:
        return {**self.means(), "lr": self.lr}

    def __getitem__(self, name: str) -> float:
        return self.logs()[name]

    def __iter__(self):
        return iter(self.logs())

    def __len__(self) -> int:
        return len(self.logs())

    def eta_epoch(self, now: float) -> float:
        """Seconds left in this epoch, at its pace."""
        return (self.total - self.done) * self.per_batch(now)

    def eta_run(self, now: float) -> float:
        """Seconds left in the whole run, at this epoch's pace."""
        return (self.steps - self.step) * self.per_batch(now)

    def per_batch(self, now: float) -> float:
        """Seconds a batch of this epoch has taken so far."""
        return (now - self.started) / max(self.done, 1)

    def data_share(self, now: float) -> str:
        """The share of the time spent waiting for streamed data."""
        return f"data {self.waited / (now - self.started):.0%}" if now > self.started else "data 0%"

    def rate(self, now: float) -> str:
        """Examples per second."""
        rate = self.fresh / (now - self.started) if now > self.started else 0.0
        return f"{rate / 1e3:.0f}k/s" if rate >= 1e4 else f"{rate:.0f}/s"


def values(means: dict) -> list:
    return [f"{k} {v:.4f}" for k, v in means.items()]


def row_values(row: dict) -> list:
    """The loss and metrics of an epoch's row of the history, validation ones too."""
    return values({k: v for k, v in row.items() if k not in WHERE})


def fitted(parts: list, width: int) -> list:
    """The texts of `parts`, (rank, text) pairs in the order shown, without the highest ranks
    (the least useful; the later of equal ranks first) until they fit `width` columns joined by
    two spaces. The first part is always kept."""
    parts = list(parts)
    while len(parts) > 1 and sum(len(text) + 2 for _, text in parts) - 2 > width:
        drop = max(range(1, len(parts)), key=lambda i: (parts[i][0], i))
        del parts[drop]
    return [text for _, text in parts]


def epoch_parts(row: dict, epochs: int, batches: int, steps: int = 0) -> list:
    """An epoch's line (or, in a run by steps, `step 200/2000`'s) as (rank, text) parts (see
    fitted), left out in this order: ms/step, the training metrics other than the loss, the
    validation ones other than val_loss, the time; the epoch, loss and val_loss stay."""
    metrics = [
        (1 if k in ("loss", "val_loss") else 3 if k.startswith("val_") else 4, f"{k} {v:.4f}")
        for k, v in row.items()
        if k not in WHERE
    ]
    head = f"step {row['step']}/{steps}" if "step" in row else f"epoch {row['epoch']}/{epochs}"
    return [
        (0, head),
        *metrics,
        (2, span(row["time"])),
        *([(5, f"data wait {row['data_wait']:.0%}")] if "data_wait" in row else []),
        *([(5, f"{span(row['time'] / batches)}/step")] if batches and "step" not in row else []),
    ]


def epoch_line(row: dict, epochs: int, batches: int, steps: int = 0) -> str:
    return "  ".join(text for _, text in epoch_parts(row, epochs, batches, steps))


def bar_width(width: int) -> int:
    """The progress bar's characters on a line of `width` columns: 8 up to 88 columns, a
    character more for every two more, at most 30 (from 132 columns). A function of the width
    alone, so that the bar does not jitter as the texts after it change length."""
    return min(max((width - 72) // 2, 8), 30)


def progress_line(s: Step, now: float, width: int) -> str:
    """`2/5 [######      ] 20/41  loss 0.41  accuracy 0.87  12 ms/step  elapsed 0:03
    epoch eta 0:02  run eta 0:12  lr 0.001  5510/s`, no wider than `width`: the parts after the
    bar are left out, the first of this list first: samples/s, lr, elapsed, the run's ETA,
    ms/step, the metrics after the loss (from the last), the epoch's ETA, the loss."""
    bar = bar_width(width)
    head = f"{s.epoch + 1}/{s.epochs} [{'#' * int(bar * s.done / max(s.total, 1)):<{bar}}] {s.done}/{s.total}"
    metrics = [(1 if k == "loss" else 3, f"{k} {v:.4f}") for k, v in s.means().items()]
    tail = [
        (4, f"{span(s.per_batch(now))}/step"),
        (6, f"elapsed {duration(now - s.started)}"),
        (2, f"epoch eta {duration(s.eta_epoch(now))}"),
        (5, f"run eta {duration(s.eta_run(now))}"),
        (7, f"lr {s.lr:.3g}"),
        (8, s.rate(now)),
        *([(5, s.data_share(now))] if s.waited is not None else []),
    ]
    return "  ".join(fitted([(0, head), *metrics, *tail], width))[:width]


def wrap_items(items: list, width: int | None) -> str:
    """`items` joined by two spaces, on lines of at most `width` columns broken between items,
    never inside one (`val_loss 0.1302` stays whole), the next lines indented; one line
    without a width (output to a file or pipe, read by programs)."""
    lines = [items[0]] if items else [""]
    for item in items[1:]:
        if width is not None and len(lines[-1]) + 2 + len(item) > width:
            lines.append("    " + item)
        else:
            lines[-1] += "  " + item
    return "\n".join(lines)


class Quiet(Callback):
    """No display (`-q`): the run's summary is all that is printed."""

    def on_train_end(self, logs: dict):
        self.close()

    def close(self):
        """End what is on the screen before the run's next message (an interrupt, an error)."""


class EpochLines(Quiet):
    """A line per epoch, for logs: no carriage return, nothing between epochs."""

    def __init__(self, log):
        self.log = log
        self.epochs = self.steps = 0
        self.batches = 0  # of the epoch this run did: its ms/step

    def on_train_begin(self, logs: dict):
        self.epochs, self.steps = logs["epochs"], logs.get("steps", 0)

    def on_batch_end(self, step: int, s: Step):
        self.batches = s.total

    def on_epoch_end(self, epoch: int, row: dict):
        self.log(epoch_line(row, self.epochs, self.batches, self.steps))


class StepLines(EpochLines):
    """A plain line every `every` steps (`--log-every`), and a line per epoch."""

    def __init__(self, log, every: int):
        super().__init__(log)
        self.every = every

    def on_batch_end(self, step: int, s: Step):
        super().on_batch_end(step, s)
        if s.step % self.every == 0:
            now = time.perf_counter()
            self.log(
                "  ".join(
                    [
                        f"step {s.step}",
                        f"epoch {s.epoch + 1}/{s.epochs}",
                        f"batch {s.batch}/{s.per_epoch}",
                        *values(s.means()),
                        f"{span(s.per_batch(now))}/step",
                        f"lr {s.lr:.3g}",
                        s.rate(now),
                        f"epoch eta {duration(s.eta_epoch(now))}",
                        f"run eta {duration(s.eta_run(now))}",
                    ]
                )
            )


class TerminalLine(EpochLines):
    """One line on the terminal, redrawn at most every REDRAW_S (and at an epoch's last batch)
    and never wider than the terminal (progress_line). An epoch's line replaces it, so the
    screen keeps a line per epoch; where the terminal is too narrow for it, its least useful
    parts are left out (epoch_parts) rather than the line wrapping."""

    def __init__(self, log):
        super().__init__(log)
        self.drawn, self.width = -math.inf, 0  # when the line was last drawn, and how wide

    def on_batch_end(self, step: int, s: Step):
        super().on_batch_end(step, s)
        now = time.perf_counter()
        if now - self.drawn < REDRAW_S and s.done < s.total:
            return
        self.drawn = now
        self.width = terminal_width(sys.stderr) - 1
        sys.stderr.write("\r" + progress_line(s, now, self.width).ljust(self.width))
        sys.stderr.flush()

    def on_epoch_end(self, epoch: int, row: dict):
        width = terminal_width(sys.stderr) - 1
        line = "  ".join(fitted(epoch_parts(row, self.epochs, self.batches, self.steps), width))[:width]
        if self.width:  # over the progress line, to its end
            line = "\r" + line.ljust(self.width)
        self.log(line)
        self.width = 0

    def close(self):
        if self.width:
            sys.stderr.write("\n")
            self.width = 0


class Bar(Quiet):
    """tqdm's bar, one per epoch, left on screen with the epoch's values (validation ones too)."""

    def __init__(self, tqdm):
        self.tqdm, self.bar = tqdm, None

    def on_batch_end(self, step: int, s: Step):
        if self.bar is None:
            self.bar = self.tqdm(
                total=s.per_epoch,
                initial=s.batch - s.done,
                desc=f"epoch {s.epoch + 1}/{s.epochs}",
                unit="batch",
                dynamic_ncols=True,
            )
        self.bar.set_postfix_str("  ".join([*values(s.means()), f"lr {s.lr:.3g}"]), refresh=False)
        self.bar.update(s.batch - self.bar.n)

    def on_epoch_end(self, epoch: int, row: dict):
        if self.bar is not None:
            self.bar.set_postfix_str("  ".join(row_values(row)), refresh=False)
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_display(progress, log):
    """The display `progress` names (the module's docstring); True and False, as a Python
    caller writes them, are "auto" and "none"."""
    if isinstance(progress, bool):
        progress = "auto" if progress else "none"
    if isinstance(progress, int):
        if progress < 1:
            raise DlcError(f"progress: a line every {progress} steps; give a whole number of at least 1")
        return StepLines(log, progress)
    if progress not in MODES:
        hint = did_you_mean(progress, MODES) if isinstance(progress, str) else ""
        raise DlcError(
            f"progress must be {', '.join(MODES)} or a number of steps between lines, got {progress!r}{hint}"
        )
    if progress == "auto":
        if sys.stderr.isatty():
            return TerminalLine(log)
        if "ipykernel" in sys.modules:  # a Jupyter kernel: tqdm's widget, or lines when tqdm is missing
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return EpochLines(log)
            return Bar(tqdm)
        return EpochLines(log)
    if progress == "bar":
        optional_package("tqdm", "notebook", 'progress = "bar"')
        from tqdm.auto import tqdm

        return Bar(tqdm)
    return EpochLines(log) if progress == "epochs" else Quiet()
