"""The native thread team follows the cores other processes leave free (runtime/engines/cores.py)."""
import subprocess
import sys
import time

import pytest

from dlc.runtime.engines import cores


class FakeMachine:
    """A clock, the machine's busy CPU seconds and this process's own, moved by hand."""

    def __init__(self, monkeypatch):
        self.wall = self.busy = self.own = 0.0
        monkeypatch.setattr(cores, "machine_busy_s", lambda: self.busy)
        monkeypatch.setattr(cores.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(cores.time, "process_time", lambda: self.own)

    def run(self, seconds: float, own_cores: float, other_cores: float):
        self.wall += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


@pytest.mark.parametrize("n_cores, others, team", [(2, 0.0, 2), (2, 0.3, 2), (2, 1.0, 1), (2, 2.0, 1),
                                                   (8, 3.0, 5), (8, 0.4, 8)])
def test_the_team_leaves_the_cores_others_use(monkeypatch, n_cores, others, team):
    machine = FakeMachine(monkeypatch)
    free = cores.FreeCores()
    free.cores = free.team = n_cores
    assert free.now() == n_cores               # first call: nothing measured yet
    machine.run(cores.ADAPT_EVERY_S, own_cores=n_cores, other_cores=others)
    assert free.now() == team
    machine.run(cores.ADAPT_EVERY_S, own_cores=team, other_cores=0.0)     # the others went quiet
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


def test_a_thread_count_given_wins(monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", "3")
    assert cores.threads() == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_real_busy_neighbour_takes_a_core():
    """With a process spinning beside it on a machine of n cores, the team is at most n - 1
    (other processes of the machine may take more, never fewer)."""
    n = cores.FreeCores().cores
    if n < 2:
        pytest.skip("one core: the team is always 1")
    free = cores.FreeCores()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        free.now()
        time.sleep(cores.ADAPT_EVERY_S * 2)
        assert free.now() <= n - 1
    finally:
        hog.kill()
        hog.wait()


def test_a_window_across_a_pause_starts_again_with_every_core(monkeypatch):
    """Others busy while dlc was not running (a compiler between two trainings) do not
    shrink the team for the steps after the pause."""
    machine = FakeMachine(monkeypatch)
    free = cores.FreeCores()
    free.cores = free.team = 2
    free.now()
    machine.run(cores.STALE_S * 5, own_cores=0.0, other_cores=1.0)      # a pause, the neighbour busy
    assert free.now() == 2
    machine.run(cores.ADAPT_EVERY_S, own_cores=2, other_cores=0.0)
    assert free.now() == 2
    machine.run(cores.ADAPT_EVERY_S, own_cores=1, other_cores=1.0)      # now busy while dlc runs
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
