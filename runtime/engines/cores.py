"""How many threads the native code runs on: DLC_NUM_THREADS when set (the CLI's --threads
sets it), else the cores that other processes leave free.

A thread team is only as fast as its slowest member: when another process keeps one of
two cores busy, the worker on that core runs only in the scheduler's slices, and every
parallel region waits for it (the LSTM's step took 13× PyTorch's under one busy core).
So every ADAPT_EVERY_S the machine's busy time is read from /proc/stat, this process's own
CPU time taken out, and the team shrinks to the cores the others leave; it grows back
when they go quiet. A window that spans a pause in dlc's calls (what others did then says
little about now) starts again with every core; a window longer than STALE_S in which this
process kept computing is one long call (mobilenet_v2's prediction under load), not a
pause, and adapts. The reading costs ~20 µs; off Linux the team is every core.
"""
from __future__ import annotations

import os
import time

from dlc.compiler.errors import DlcError

ADAPT_EVERY_S = 0.25
STALE_S = 1.0           # a window longer than this spans a pause in the native calls...
PAUSED_CORES = 0.1      # ... when this process used less than this many cores over it


def threads() -> int:
    """$DLC_NUM_THREADS, else every core that other processes leave free (at least one)."""
    text = os.environ.get("DLC_NUM_THREADS", "").strip()
    if not text:
        return _free_cores.now()
    if not text.isdigit() or int(text) < 1:
        raise DlcError(f"DLC_NUM_THREADS needs a whole number of threads, at least 1; got '{text}'")
    return int(text)


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)          # idle + iowait
    busy = sum(fields[:8]) - idle                                      # without guest time (counted in user)
    return busy / os.sysconf("SC_CLK_TCK")


class FreeCores:
    """The cores other processes left free over the last window, rounded to the nearest
    whole core (one busy at 60 % of its time counts as taken)."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.team = self.cores
        self._mark = None

    def now(self) -> int:
        if self.cores == 1:
            return 1
        wall = time.monotonic()
        paused = self._mark is not None and wall - self._mark[0] > STALE_S and \
            time.process_time() - self._mark[2] < PAUSED_CORES * (wall - self._mark[0])
        if self._mark is None or paused:
            # first call, or the first after a pause: what others did then (a compiler
            # running between two trainings) says little about now; start with every core
            self._mark, self.team = (wall, machine_busy_s(), time.process_time()), self.cores
        elif wall - self._mark[0] >= ADAPT_EVERY_S:
            start, busy, own = self._mark
            self._mark = (wall, machine_busy_s(), time.process_time())
            if busy is not None and self._mark[1] is not None:
                others = max(0.0, (self._mark[1] - busy) - (self._mark[2] - own)) / (wall - start)
                self.team = max(1, min(self.cores, round(self.cores - others)))
        return self.team


_free_cores = FreeCores()
