"""The native thread team follows the cores other processes leave free (runtime/engines/cores.py)."""

import subprocess
import sys
import time

import numpy as np
import pytest

from dlc.runtime.engines import cores


class FakeMachine:
    """A clock, the machine's busy CPU seconds, this process's own and the time its threads
    waited for a core, moved by hand. `polite`: the others give their cores up at once (a
    yielding spinner), so dlc's threads never wait."""

    def __init__(self, monkeypatch, n_cores: int = 2, polite: bool = False):
        self.wall = self.busy = self.own = self.waited = 0.0
        self.n_cores, self.polite = n_cores, polite
        monkeypatch.setattr(cores, "machine_busy_s", lambda: self.busy)
        monkeypatch.setattr(cores, "own_wait_s", lambda: self.waited)
        monkeypatch.setattr(cores.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(cores.time, "process_time", lambda: self.own)

    def run(self, seconds: float, own_cores: float, other_cores: float):
        self.wall += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds
        # dlc's team (every core) and the others want more cores than there are: each thread
        # waits its share of the difference
        demand = self.n_cores + other_cores
        if demand > self.n_cores and not self.polite:
            self.waited += self.n_cores * seconds * other_cores / demand


@pytest.mark.parametrize(
    "n_cores, others, team", [(2, 0.0, 2), (2, 0.3, 2), (2, 1.0, 1), (2, 2.0, 1), (8, 3.0, 5), (8, 0.4, 8)]
)
def test_the_team_leaves_the_cores_others_use(monkeypatch, n_cores, others, team):
    machine = FakeMachine(monkeypatch, n_cores)
    free = cores.FreeCores()
    free.cores = free.team = n_cores
    assert free.now() == n_cores  # first call: nothing measured yet
    machine.run(cores.ADAPT_EVERY_S, own_cores=n_cores, other_cores=others)
    assert free.now() == team
    machine.run(cores.ADAPT_EVERY_S, own_cores=team, other_cores=0.0)  # the others went quiet
    assert free.now() == n_cores


def test_the_team_changes_only_once_a_window_has_passed(monkeypatch):
    machine = FakeMachine(monkeypatch)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    machine.run(cores.ADAPT_EVERY_S / 2, own_cores=2, other_cores=1.0)
    assert free.now() == 2
    machine.run(cores.ADAPT_EVERY_S / 2, own_cores=2, other_cores=1.0)
    assert free.now() == 1


def test_a_call_within_a_window_reads_only_the_clock(monkeypatch):
    """This process's CPU time (a system call that waits for each running thread's core) is
    read once a window, not at every call."""
    machine = FakeMachine(monkeypatch)
    reads = []
    monkeypatch.setattr(cores.time, "process_time", lambda: reads.append(machine.wall) or machine.own)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    for _ in range(10):
        machine.run(cores.ADAPT_EVERY_S / 20, own_cores=2, other_cores=0.0)
        assert free.now() == 2
    assert len(reads) == 1
    machine.run(cores.ADAPT_EVERY_S, own_cores=2, other_cores=1.0)
    assert free.now() == 1 and len(reads) == 2


def test_a_thread_count_given_wins(monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", "3")
    assert cores.threads() == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_real_busy_neighbour_takes_a_core():
    """With a process spinning beside it on a machine of n cores while this one computes on
    every core, the team drops to at most n - 1 (other processes may take more, never fewer)."""
    n = cores.FreeCores().cores
    if n < 2:
        pytest.skip("one core: the team is always 1")
    free = cores.FreeCores()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        free.now()
        # three windows: one in which the hog's scheduler gave this process every core is not the verdict
        seen = compute(cores.ADAPT_EVERY_S * 3, free)
        assert min(team for _, team in seen) <= n - 1, seen[:: max(1, len(seen) // 20)]
    finally:
        hog.kill()
        hog.wait()


def compute(seconds: float, free) -> list:
    """Work on every core (numpy's BLAS threads) for `seconds`, asking for the team between
    products, as the native engine does between calls: [(time, team)]."""
    a = np.ones((384, 384), np.float32)
    end, seen = time.monotonic() + seconds, []
    while time.monotonic() < end:
        a = (a @ a) * (1 / 384)
        seen.append((time.monotonic(), free.now()))
    return seen


def others_now(seconds: float = 0.5) -> float:
    """Cores the other processes of the machine use, over `seconds`."""
    busy, own, wall = cores.machine_busy_s(), time.process_time(), time.monotonic()
    time.sleep(seconds)
    return max(0.0, cores.machine_busy_s() - busy - (time.process_time() - own)) / (time.monotonic() - wall)


@pytest.mark.alone  # it needs a quiet machine
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat and schedstat")
def test_a_neighbour_spinning_for_a_second_leaves_the_full_team_within_a_second():
    """A quiet machine, a neighbouring process whose threads spin for one second: once it
    has stopped, the team is every core again within a second, and stays so."""
    free = cores.FreeCores()
    if free.cores < 2:
        pytest.skip("one core: the team is always 1")
    if (load := others_now()) > 0.3:
        pytest.skip(f"the machine is not quiet: other processes use {load:.1f} cores")
    spin = (
        "import threading, time\nend = time.monotonic() + 1.0\n"
        "def go():\n    while time.monotonic() < end: pass\n"
        f"ts = [threading.Thread(target=go) for _ in range({free.cores})]\n[t.start() for t in ts]\n[t.join() for t in ts]"
    )
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        compute(0.5, free)
        neighbour.wait(timeout=30)
        stopped = time.monotonic()
        seen = compute(1.5, free)
    finally:
        neighbour.kill()
        neighbour.wait()
    late = [(t - stopped, team) for t, team in seen if t - stopped > 1.0]
    assert late and all(team == free.cores for _, team in late), late


def test_a_neighbour_that_looks_busy_but_never_delays_dlc_keeps_the_team(monkeypatch):
    """Busy time alone (a politely spinning neighbour, a hypervisor's steal) does not shrink
    the team: only dlc's threads waiting for a core do."""
    machine = FakeMachine(monkeypatch, polite=True)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    machine.run(cores.ADAPT_EVERY_S, own_cores=2, other_cores=1.0)
    assert free.now() == 2


def test_a_window_across_a_pause_starts_again_with_every_core(monkeypatch):
    """Others busy while dlc was not running (a compiler between two trainings) do not
    shrink the team for the steps after the pause."""
    machine = FakeMachine(monkeypatch)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    machine.run(cores.STALE_S * 5, own_cores=0.0, other_cores=1.0)  # a pause, the neighbour busy
    assert free.now() == 2
    machine.run(cores.ADAPT_EVERY_S, own_cores=2, other_cores=0.0)
    assert free.now() == 2
    machine.run(cores.ADAPT_EVERY_S, own_cores=1, other_cores=1.0)  # now busy while dlc runs
    assert free.now() == 1


def test_a_call_longer_than_a_window_adapts(monkeypatch):
    """A native call that lasts longer than STALE_S (a large model's prediction) while
    others keep a core busy is no pause: the next call runs on the core left."""
    machine = FakeMachine(monkeypatch)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    machine.run(cores.STALE_S * 3, own_cores=0.5, other_cores=1.5)
    assert free.now() == 1
