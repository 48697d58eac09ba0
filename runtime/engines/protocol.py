"""What an engine is: the members the trainer, the Python API, the command line and the
benchmarks use of one, whichever runs the steps.

    ReferenceEngine   runtime/engines/reference.py     the graphs in the numpy interpreter
    NativeEngine      runtime/engines/native.py        each step one call of compiled code
    DataParallel      runtime/engines/distributed.py   one of those on each MPI rank, gradients averaged

runtime/engines/backends.py (`make_engine`) picks the first two. The arrays an engine is
given are the caller's: `params` (by name), `opt_state` (by trained parameter, then by the
optimizer's state slot) and a batch (by input name, the first axis the examples) hold
float32 values, and a step updates the first two in place. The native engine also has
members of its own (`train_exe`, `train_memory`, the flat arrays `grads`, `offsets` and
`state`), which benchmarks and tests read of a native engine only. The two engines of one
process also have `hvp` (Hessian-vector products of a batch's loss), which Newton's method
calls (runtime/optim/second_order.py); a data-parallel run refuses that optimizer.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from dlc.runtime.engines.distributed import World
from dlc.runtime.optim.optimizer import Optimizer


@runtime_checkable
class Engine(Protocol):
    name: str
    """"reference" or "native" (a data-parallel engine: its engine's)."""
    trainable: list
    """The names of the parameters a step trains, in the order of the flat gradient array."""
    optimizer: Optimizer | None
    """The optimizer a step applies; None for an engine that only evaluates and predicts."""
    world: World | None
    """The ranks of a data-parallel run (each scores its share of a data set: the trainer's
    mean_metrics); None in one process."""
    replicas: Callable[[np.ndarray], np.ndarray] | None
    """replica_mean's reduction over the ranks (runtime/engines/distributed.py `ReplicaMean`),
    set by a data-parallel run; None in one process, where replica_mean is the identity."""

    def train_step(self, params: dict, opt_state: dict, batch: dict, lr: float, step: int, key: np.ndarray) -> dict:
        """One optimizer step on `batch`, in place: the parameters, the optimizer state and the
        batch statistics the step updates. `step` counts from 1 (Adam's bias correction); `key`
        is the random key (seed, step) of dropout. Returns the loss and the metrics as Python
        floats (the reference engine adds the gradient's norm, "grad_norm")."""
        ...

    def gradients(self, params: dict, opt_state: dict, batch: dict, key: np.ndarray) -> tuple[dict, np.ndarray]:
        """A step's first half: (the loss and metrics, the gradient of the trained parameters in
        one flat float32 array, in `trainable` order), the batch statistics updated in place.
        The caller may change the array in place before `apply_update`."""
        ...

    def apply_update(self, params: dict, opt_state: dict, grads: np.ndarray, lr: float, step: int):
        """A step's second half: the optimizer's update of the trained parameters and their
        state, in place, from the flat gradients `gradients` gave."""
        ...

    def evaluate(self, params: dict, batch: dict) -> dict:
        """The loss and metrics of `batch` in evaluation mode (no dropout, batch statistics
        read, not updated), as Python floats."""
        ...

    def predict(self, params: dict, batch: dict) -> dict:
        """The model's outputs on `batch` (inputs only; no targets), by output name."""
        ...
