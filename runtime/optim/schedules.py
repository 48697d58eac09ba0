"""Learning-rate schedules (`schedule = cosine(warmup = 1)`): each one function of the steps
after the warmup, registered with `@schedule`, written as a formula (runtime/optim/formula.py)
that the engines evaluate in Python and a `dlc build --train` library prints as C; and
`Schedule`, a schedule with its warmup, in epochs or in steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.compiler.frontend.settings import Call, as_call, integer
from dlc.runtime.optim.formula import (
    INT,
    Formula,
    cos,
    floor,
    loop,
    maximum,
    minimum,
    python_function,
    select,
    variable,
)
from dlc.runtime.optim.options import option

# the variables of a schedule's formula: the step (from 0), the steps of an epoch and of the run
STEP0, PER_EPOCH, TOTAL = variable("step", INT), variable("per_epoch"), variable("total")
SCHEDULES: dict = {}  # name -> its options (defaults)
_RATES: dict = {}  # name -> (its rate after the warmup, whether it decays: takes decay_steps)


@dataclass
class After:
    """What a schedule's rate after the warmup is a formula of: the base rate `lr`, the
    steps `after` the warmup, the warmup's steps `warm`, `end` (decay_steps, else the run's
    total) and `span(epochs)`, the steps of that many epochs (decay_steps when given)."""

    lr: float
    after: Formula
    warm: object
    end: object
    decay_steps: int | None

    def span(self, epochs):
        return self.decay_steps if self.decay_steps is not None else epochs * PER_EPOCH


def schedule(name: str, decays: bool = True, **options):
    """Registers a schedule: `rate(o, t)`, its learning rate after the warmup from its options
    `o` and `t` (After); the steps of a setting without decay_steps count in epochs. One that
    does not `decays` refuses decay_steps."""

    def register(rate):
        SCHEDULES[name], _RATES[name] = options, (rate, decays)
        return rate

    return register


@schedule("linear_warmup", decays=False)  # (decorators apply from the bottom: constant is the first)
@schedule("constant", decays=False)
def _base_rate(o, t):
    """The base rate: linear_warmup is constant after its warmup."""
    return t.lr


@schedule("step", every=10, gamma=0.1)
def _step_decay(o, t):
    """gamma times smaller every `every` epochs."""
    return t.lr * o["gamma"] ** floor(t.after / t.span(o["every"]))


@schedule("exponential", gamma=0.95)
def _exponential(o, t):
    """gamma times smaller every epoch."""
    return t.lr * o["gamma"] ** floor(t.after / t.span(1))


@schedule("cosine", min_lr=0.0)
def _cosine(o, t):
    """Half a cosine from lr down to min_lr at `end`, then min_lr."""
    progress = minimum(t.after / maximum(t.end - t.warm, 1e-9), 1.0)
    return o["min_lr"] + 0.5 * (t.lr - o["min_lr"]) * (1 + cos(math.pi * progress))


@schedule("warm_restarts", period=10, mult=1, min_lr=0.0)
def _warm_restarts(o, t):
    """A cosine from lr to min_lr over `period` epochs, restarted, each period `mult` times the last."""
    into, period = loop(
        lambda into, period: into >= period,
        lambda into, period: (into - period, period * o["mult"]),
        t.after,
        t.span(o["period"]),
    )
    return o["min_lr"] + 0.5 * (t.lr - o["min_lr"]) * (1 + cos(math.pi * into / period))


class Schedule:
    """The learning rate at every step: a base schedule, after an optional linear warmup from
    0 over `warmup` epochs or `warmup_steps` steps (capped at the base rate, however short).
    The base schedules count in epochs of `steps_per_epoch` steps, or in steps with
    `decay_steps`: the steps of one decay of `step` and `exponential`, the first period of
    `warm_restarts`, the step at which `cosine` reaches min_lr. A run of `total` steps
    (max_steps, else epochs x steps per epoch) is what `cosine` decays over by default.
    The rate is one formula (`formula`) of the step, the steps per epoch and the total, which
    a `dlc build --train` library computes in C with the numbers it is given."""

    def __init__(self, call: Call, base_lr: float, steps_per_epoch: int, epochs: int, total: int | None = None):
        options = SCHEDULES.get(call.name)
        if options is None:
            raise DlcError(
                f"unknown schedule '{call.name}'{did_you_mean(call.name, SCHEDULES)} (known: {', '.join(SCHEDULES)})",
                call.span,
            )
        args = call.bind(options | WARMUP)
        self.name = call.name
        self.opts = {k: option(args, k, d) for k, d in options.items()}
        self.per_epoch = max(1, steps_per_epoch)
        if args["warmup_steps"] is not None and args["warmup"]:
            raise DlcError(f"{call.name}: give warmup (epochs) or warmup_steps, not both", args.span("warmup_steps"))
        # the warmup's steps, a formula of the steps per epoch when counted in epochs
        warm = (
            args.check("warmup_steps", integer, low=0)
            if args["warmup_steps"] is not None
            else option(args, "warmup", 0) * PER_EPOCH
        )
        decay_steps = None
        if args["decay_steps"] is not None:
            if not _RATES[call.name][1]:
                decaying = [n for n, (_, decays) in _RATES.items() if decays]
                raise DlcError(
                    f"{call.name} does not decay: decay_steps is for {', '.join(decaying[:-1])} and {decaying[-1]}",
                    args.span("decay_steps"),
                )
            decay_steps = args.check("decay_steps", integer, low=1)
        self.base = base_lr
        self.total = total if total is not None else epochs * self.per_epoch
        # the numbers end() reports: the warmup in steps of this run, and decay_steps
        self.warm = (
            args["warmup_steps"] if args["warmup_steps"] is not None else option(args, "warmup", 0) * self.per_epoch
        )
        self.decay_steps = decay_steps
        t = After(base_lr, STEP0 - warm, warm, TOTAL if decay_steps is None else decay_steps, decay_steps)
        self.formula = select(
            STEP0 < warm, base_lr * minimum(1.0, (STEP0 + 1) / warm), _RATES[self.name][0](self.opts, t)
        )
        self._rate = python_function({"lr": self.formula}, [STEP0, PER_EPOCH, TOTAL])

    def end(self) -> tuple[int, float] | None:
        """(the step from which the rate no longer changes, that final rate) of a schedule that
        decays to an end: cosine, at decay_steps or the run's end. None for those that decay
        for ever (step, exponential), cycle (warm_restarts) or do not decay."""
        if self.name != "cosine":
            return None
        end = self.decay_steps if self.decay_steps is not None else self.total
        return max(end, self.warm), self.opts["min_lr"]

    def __call__(self, step: int) -> float:
        """Learning rate for global step `step` (0-based)."""
        return self._rate(step, self.per_epoch, self.total)["lr"]


WARMUP = {"warmup": 0, "warmup_steps": None, "decay_steps": None}  # options of every schedule


def make_schedule(
    spec, base_lr: float, steps_per_epoch: int, epochs: int, span: Span | None = None, total: int | None = None
) -> Schedule:
    """The schedule a `schedule` setting names (none: constant); `span`, where the setting
    is written, locates the errors of a value that does not carry its own (a string, 0).
    `total`: the run's steps when it is counted in steps (max_steps)."""
    call = as_call("constant" if spec is None else spec, "schedule", "cosine(warmup = 1)", span)
    return Schedule(call, base_lr, steps_per_epoch, epochs, total)
