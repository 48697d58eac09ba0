"""How many threads the native code runs on: DLC_NUM_THREADS when set (the CLI's --threads
sets it), else the cores that other processes leave free.

A thread team is only as fast as its slowest member: when another process keeps one of
two cores busy, the worker on that core runs only in the scheduler's slices, and every
parallel region waits for it (the LSTM's step took 13× PyTorch's under one busy core).
So every ADAPT_EVERY_S the machine's busy time is read from /proc/stat (without the
hypervisor's steal time, which no choice of team gives back), this process's own CPU time
taken out, and the team shrinks to the cores the others leave, but only when the
competition is measured: this process's threads waited on a run queue for a core
(/proc/self/task/*/schedstat) for at least CONTENDED of the time they ran. Busy time
alone is not enough: a neighbour that spins politely, or steal, made a quiet machine run
dlc on one thread at half speed. The team grows back when the others go quiet. A window
that spans a pause in dlc's calls (what others did then says little about now) starts
again with every core; a window longer than STALE_S in which this process kept computing
is one long call (mobilenet_v2's prediction under load), not a pause, and adapts. The
readings cost ~30 µs; off Linux the team is every core.
"""

from __future__ import annotations

import os
import time

from dlc.compiler.errors import DlcError
from dlc.compiler.native import MOST_THREADS

ADAPT_EVERY_S = 0.25
STALE_S = 1.0  # a window longer than this spans a pause in the native calls...
PAUSED_CORES = 0.1  # ... when this process used less than this many cores over it
CONTENDED = 0.1  # waiting for a core this share of the time it ran: others compete


def threads() -> int:
    """$DLC_NUM_THREADS, else every core that other processes leave free (at least one)."""
    text = os.environ.get("DLC_NUM_THREADS", "").strip()
    if not text:
        return _free_cores.now()
    if not text.isdigit() or not 1 <= int(text) <= MOST_THREADS:
        raise DlcError(f"DLC_NUM_THREADS needs a whole number of threads, from 1 to {MOST_THREADS}; got '{text}'")
    return int(text)


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user, nice, system, irq, softirq: not idle, iowait, steal, nor guest time (counted in user)
    busy = sum(fields[:3]) + sum(fields[5:7])
    return busy / os.sysconf("SC_CLK_TCK")


def own_wait_s() -> float | None:
    """CPU seconds this process's live threads have spent waiting on a run queue for a core
    (the second field of each thread's schedstat); None where the kernel does not say."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


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
        if self._mark is not None and wall - self._mark[0] < ADAPT_EVERY_S:
            return self.team
        # this process's CPU time only once a window: the system call sums every thread's,
        # and waits for the core of each running one (a spinning worker's): 6 µs at best,
        # hundreds on a busy host, where a prediction of one image takes a millisecond
        own = time.process_time()
        paused = (
            self._mark is not None
            and wall - self._mark[0] > STALE_S
            and own - self._mark[2] < PAUSED_CORES * (wall - self._mark[0])
        )
        if self._mark is None or paused:
            # first call, or the first after a pause: what others did then (a compiler
            # running between two trainings) says little about now; start with every core
            self._mark, self.team = (wall, machine_busy_s(), own, own_wait_s()), self.cores
        else:  # a window has passed: the files are read once a window, not at every call
            now = (wall, machine_busy_s(), own, own_wait_s())
            (start, busy, own0, wait0), self._mark = self._mark, now
            if busy is not None and now[1] is not None:
                ran = own - own0
                others = max(0.0, (now[1] - busy) - ran) / (wall - start)
                team = max(1, min(self.cores, round(self.cores - others)))
                # fewer threads only when ours had to wait for a core (unknown: trust the load)
                contended = wait0 is None or now[3] is None or now[3] - wait0 >= CONTENDED * ran
                self.team = team if team >= self.team or contended else self.team
        return self.team


_free_cores = FreeCores()
