"""A run's plan: what a training run is to do, set up once from its model, settings and data.

`dlc train` (trainer.py) and `dlc build --train` (runtime/deploy/training.py) both start from
`plan_run`, so a run and a library's train unit read the same data in the same batches, for
the same length, and train the same parameters with the same optimizer and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.model import Model
from dlc.runtime.optim.optimizer import Optimizer
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.optim.schedules import make_schedule
from dlc.runtime.training.config import TrainConfig, batch_statistics, run_length, trained_names
from dlc.runtime.training.inputs import prepare_data


# ---- batches ------------------------------------------------------------------------------------------
def batch_bounds(n: int, size: int, merge_single: bool = False, ranks: int = 1) -> list:
    """(start, stop) of each batch over n examples. With `merge_single`, a last batch of one
    example joins the batch before it: batch statistics of one example are undefined. Shared
    by `ranks` processes, a last batch that cannot give each rank one example (two with
    `merge_single`) joins it too."""
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < ranks * (2 if merge_single else 1):
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def epoch_bounds(n: int, size: int, meta: dict, merge_single: bool, ranks: int = 1) -> list:
    """The batches of an epoch over n training examples (batch_bounds), but for
    text(windows = "random") (meta "windows"), whose every step draws its batch of windows
    at random: there an epoch is the steps that read as many characters as the text holds."""
    sampled = meta.get("windows")
    if sampled:
        return [(b * size, (b + 1) * size) for b in range(max(1, n // sampled // size))]
    return batch_bounds(n, size, merge_single, ranks)


def windows_drawn(n: int, size: int, seed: int, step: int) -> np.ndarray:
    """The rows (window starts) of step `step`'s batch of random windows: a function of the seed
    and the step alone, so a resumed run draws what the uninterrupted one would have."""
    return np.random.default_rng([seed, step, 0x57]).integers(0, n, size)


# ---- the plan -----------------------------------------------------------------------------------------
@dataclass
class RunPlan:
    train: dict  # the training data, by the model's input names
    val: dict | None
    test: dict | None
    meta: dict  # the data's facts (prepare_data): a text's vocabulary, class names, windows
    examples: int  # of the training data
    statistics: list  # the model's batch statistics (batchnorm), which need two examples a batch
    bounds: list  # (start, stop) of each batch of an epoch
    epochs: int
    max_steps: int | None  # a run counted in steps (max_steps); None: in epochs
    trainable: list  # the trained parameters' names
    optimizer: Optimizer  # its groups set
    schedule: Callable  # the learning rate at a step

    @property
    def last_step(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * len(self.bounds)


def plan_run(cfg: TrainConfig, base: Path, model: Model, ranks: int = 1) -> RunPlan:
    """The plan of a run of `model` (built for training) under `cfg`, its data's paths relative to
    `base`, the batches shared by `ranks` processes. Each setting that cannot hold is refused at
    its line."""
    train, val, test, meta = prepare_data(cfg, base, model)
    n = len(next(iter(train.values())))
    statistics = batch_statistics(model)
    if statistics and n == 1:
        raise DlcError(
            f"the training data has one example, but model {model.name} keeps batch statistics "
            f"({', '.join(statistics)}), which need two or more examples per batch",
            cfg.span("data"),
        )
    bounds = epoch_bounds(n, cfg.batch, meta, bool(statistics), ranks)
    epochs, max_steps = run_length(cfg, len(bounds))
    trainable, groups = trained_names(model, cfg)
    optimizer = make_optimizer(cfg.optimizer)
    optimizer.set_groups(groups)
    schedule = make_schedule(cfg.schedule, optimizer.lr, len(bounds), epochs, cfg.span("schedule"), max_steps)
    return RunPlan(train, val, test, meta, n, statistics, bounds, epochs, max_steps, trainable, optimizer, schedule)
