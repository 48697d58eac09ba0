"""Frameworks timed in rounds, the one way every speed benchmark here compares them.

A run is rounds of A B C D, A B C D, …: a few steps of each framework per round, the order
rotated one place each round (B C D A, then C D A B, …) so that no framework always follows
the same one. A ratio of two frameworks is taken within each round (the median step of one
over the median step of the other) and reported as the median over the rounds, with its
p25–p75 and the `others` of each round (the cores other processes used while it ran,
machine.py). Timing each framework in one block instead lets a change of the machine's load
in the middle of the run land on one framework only, and the ratio then reports the load,
not the frameworks; in rounds it lands on every framework of the rounds it lasts, whose
ratios stay right, and moves the median only when it lasts most of the run.
tests/project/test_benchmark_rounds.py holds both with a fake clock.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, field

from machine import OtherLoad

WIDE = 0.15  # a ratio whose p25 or p75 lies further than this from its median: the run says so
ROUNDS = 5  # the rounds of a run unless its script is told otherwise


def time_o3_code():
    """From now on, this process's modules are compiled at O3 before their first call, not as
    quick code first (docs/native.md, "Quick code first"), unless DLC_QUICK_CODE says
    otherwise: a speed benchmark times the code a long run runs. (train_step.py waits for the
    O3 code after each first step instead, whose time is a run's.)"""
    os.environ.setdefault("DLC_QUICK_CODE", "0")


def timed(step, clock=time.perf_counter):
    """A framework's slot from one step, a callable of no arguments: slot(n) runs n steps and
    gives their seconds and what each returned (a loss, an output)."""

    def slot(n: int):
        seconds, outputs = [], []
        for _ in range(n):
            t0 = clock()
            outputs.append(step())
            seconds.append(clock() - t0)
        return seconds, outputs

    return slot


@dataclass
class Ratio:
    """One framework's time over another's: the median over rounds of the per-round ratio."""

    median: float
    p25: float
    p75: float
    rounds: int

    @property
    def wide(self) -> bool:
        return self.p25 < self.median * (1 - WIDE) or self.p75 > self.median * (1 + WIDE)

    def __str__(self) -> str:
        if self.median != self.median:
            return "-"
        return f"{self.median:.2f} ({self.p25:.2f}-{self.p75:.2f})" + " wide" * self.wide


def quartiles(values: list) -> tuple:
    """(p25, median, p75) of values; nan for none."""
    if not values:
        return (float("nan"),) * 3
    if len(values) == 1:
        return (values[0],) * 3
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


@dataclass
class Rounds:
    """What a run in rounds measured: each framework's step seconds per round, every output
    of its steps in order (warm-up included), and the `others` of each round."""

    names: list
    seconds: dict = field(default_factory=dict)  # name -> [round][step] seconds
    outputs: dict = field(default_factory=dict)  # name -> every step's output, in order
    others: list = field(default_factory=list)  # cores other processes used, per round

    def per_round(self, name: str) -> list:
        """The median step of `name` in each round, seconds."""
        return [statistics.median(r) for r in self.seconds.get(name, []) if r]

    def median_s(self, name: str) -> float:
        """The median over rounds of `name`'s per-round median step (nan when not timed)."""
        return quartiles(self.per_round(name))[1]

    def steps(self, name: str) -> list:
        """Every timed step's seconds of `name`, round after round."""
        return [s for r in self.seconds.get(name, []) for s in r]

    def ratio(self, a: str, b: str) -> Ratio:
        """a's time over b's, round by round (below 1: a is faster)."""
        per = [x / y for x, y in zip(self.per_round(a), self.per_round(b)) if y > 0]
        p25, median, p75 = quartiles(per)
        return Ratio(median, p25, p75, len(per))

    def others_text(self) -> str:
        """The `others` of each round, for a table's cell."""
        return others_cell(self.others)

    @property
    def most_others(self) -> float:
        return max((o for o in self.others if o == o), default=float("nan"))


def interleave(
    slots: dict,
    rounds: int,
    steps: int | None = None,
    warmup: int = 0,
    pause_s: float = 0.0,
    seconds_each: float = 0.0,
    load=OtherLoad,
    sleep=time.sleep,
) -> Rounds:
    """Time the frameworks `slots` (name -> slot, as `timed` makes: slot(n) runs n steps and
    gives (their seconds, their outputs); a slot that times itself, a process, may give its
    own count) in `rounds` rounds of `steps` steps each, the order rotated every round, after
    `warmup` untimed steps of each. Without `steps`, a round takes about `seconds_each` of
    each slot's steps: as many steps of each (the same count, at least one) as the warm-up's
    fastest steps say fit (a first step may wait for sleeping threads to wake, 10 ms on some
    virtual machines: counted as a step's time, it made a round of 0.2 ms calls a dozen
    steps instead of hundreds). Each slot needs enough of them that the first ones after the others'
    (in caches the others left cold) are not its median. `pause_s` before every
    slot lets the previous framework's spinning worker threads go to sleep. The garbage
    collector is paused while timing. `load` measures the others of a round (a context
    manager whose `cores` is read after it)."""
    if rounds < 1 or steps is not None and steps < 1 or steps is None and warmup < 1:
        raise ValueError("interleave needs a round or more of a step or more (without steps, a warm-up step)")
    names = list(slots)
    res = Rounds(names, {n: [] for n in names}, {n: [] for n in names})
    warm_s = 0.0
    for n in names:
        if warmup:
            took, outputs = slots[n](warmup)
            res.outputs[n] += outputs
            warm_s += min(took)
    if steps is None:
        steps = max(1, int(seconds_each * len(names) / warm_s)) if warm_s > 0 else 1
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            with load() as other:
                for n in order:
                    if pause_s:
                        sleep(pause_s)
                    seconds, outputs = slots[n](steps)
                    res.seconds[n].append(list(seconds))
                    res.outputs[n] += outputs
            res.others.append(other.cores)
    finally:
        gc.enable()
    return res


def calls(fns: dict, rounds: int = ROUNDS, seconds_each: float = 0.1, warmup: int = 3, pause_s: float = 0.0) -> Rounds:
    """Functions of no arguments (a prediction, a product) called in rounds of about
    `seconds_each` of each."""
    return interleave(
        {k: timed(fn) for k, fn in fns.items()}, rounds, warmup=warmup, seconds_each=seconds_each, pause_s=pause_s
    )


def timed_row(
    fns: dict, row: dict, label: str, rounds: int = ROUNDS, seconds_each: float = 0.1, reference: str = "dlc"
) -> dict:
    """`row` (a table's row, JSON) with each function's median ms per call, timed in rounds
    (`calls`), the ratio of `reference` over each other as "dlc/x" (Ratio's fields) and the
    others of each round; a note printed when a ratio spreads wide."""
    return reported(calls(fns, rounds, seconds_each), row, label, [(reference, k) for k in fns if k != reference])


def reported(measured: Rounds, row: dict, label: str, pairs) -> dict:
    """`row` (a table's row, JSON) with each framework's median ms per step, the ratio of each
    pair (a, b) of `pairs` as "a/b" (Ratio's fields) and the others of each round; a note
    printed when a ratio spreads wide."""
    ratios = {f"{a}/{b}": measured.ratio(a, b) for a, b in pairs}
    row.update({k: measured.median_s(k) * 1e3 for k in measured.names})
    row.update({k: vars(r) for k, r in ratios.items()})
    row["others"] = measured.others
    if note := wide_note(label, ratios):
        print(note, flush=True)
    return row


def ratio_cell(fields: dict) -> str:
    """A ratio of timed_row's row as a table shows it."""
    return str(Ratio(**fields))


def others_cell(others: list) -> str:
    """The others of each round of timed_row's row as a table shows them."""
    return " ".join("-" if o != o else f"{o:.2f}" for o in others) or "-"


def wide_note(label: str, ratios: dict) -> str:
    """A line saying which ratios of a run spread wider than ±WIDE ('' when none did)."""
    wide = [f"{k} {r}" for k, r in ratios.items() if r.wide]
    return (
        (
            f"  note: {label}: spread wider than ±{WIDE:.0%} over rounds ({'; '.join(wide)}): "
            "the rounds disagree: compare with care"
        )
        if wide
        else ""
    )
