"""benchmarks/rounds.py, the harness every speed benchmark times its frameworks with: on a
fake clock, a machine that slows down in the middle of the run misleads a measurement in
blocks (all of one framework, then all of the next) and not one in rotated rounds; the
ratios' spread, the rotation and the others of each round are what the run reports."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def rounds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import rounds

    # a full collection before the rounds serves a real clock; in a test worker that has run
    # hundreds of tests it walks millions of objects, seconds each time, for a fake one
    monkeypatch.setattr(rounds.gc, "collect", lambda *generation: 0)
    return rounds


class FakeMachine:
    """A clock that a step advances by its framework's cost, times the machine's slowdown:
    1 until `jump_after` steps have run (of every framework together), then `factor`."""

    def __init__(self, jump_after: int, factor: float):
        self.now, self.done, self.jump_after, self.factor = 0.0, 0, jump_after, factor
        self.calls = []

    def clock(self) -> float:
        return self.now

    def step(self, name: str, cost: float):
        def run():
            self.now += cost * (self.factor if self.done >= self.jump_after else 1.0)
            self.done += 1
            self.calls.append(name)
            return self.done

        return run


class Load:
    """The others of a round, as machine.OtherLoad reports them, from a list."""

    values = []

    def __init__(self):
        self.cores = Load.values.pop(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def costs_and_slots(rounds, machine):
    costs = {"A": 1.0, "B": 2.0, "C": 4.0}  # B takes twice A's time, C four times
    return costs, {k: rounds.timed(machine.step(k, c), machine.clock) for k, c in costs.items()}


@pytest.mark.parametrize("jump_at", [0.3, 0.5, 0.7])
def test_a_slowdown_mid_run_misleads_blocks_and_not_rounds(rounds, jump_at):
    total = 3 * 40  # 40 steps of each of three frameworks
    machine = FakeMachine(jump_after=int(total * jump_at) + 5, factor=3.0)
    _, slots = costs_and_slots(rounds, machine)
    Load.values = [0.0]
    blocks = rounds.interleave(slots, rounds=1, steps=40, load=Load)  # one round: each in one block
    # in blocks the framework timed after the jump looks three times slower than it is
    assert abs(blocks.ratio("B", "A").median - 2.0) > 1.0 or abs(blocks.ratio("C", "A").median - 4.0) > 2.0

    machine = FakeMachine(jump_after=int(total * jump_at) + 5, factor=3.0)  # in the middle of a round
    _, slots = costs_and_slots(rounds, machine)
    Load.values = [0.0] * 10
    run = rounds.interleave(slots, rounds=10, steps=4, load=Load)
    assert run.ratio("B", "A").median == pytest.approx(2.0)
    assert run.ratio("C", "A").median == pytest.approx(4.0)
    assert run.ratio("C", "B").median == pytest.approx(2.0)


def test_rounds_rotate_the_order_and_keep_each_rounds_others_and_outputs(rounds):
    machine = FakeMachine(jump_after=10**9, factor=1.0)
    _, slots = costs_and_slots(rounds, machine)
    Load.values = [0.1, 1.5, 0.0]
    run = rounds.interleave(slots, rounds=3, steps=2, warmup=1, load=Load)
    timed = machine.calls[3:]  # after one warm-up step of each
    assert timed == list("AABBCC") + list("BBCCAA") + list("CCAABB")
    assert run.others == [0.1, 1.5, 0.0] and run.most_others == 1.5
    assert run.others_text() == "0.10 1.50 0.00"
    assert [len(r) for r in run.seconds["A"]] == [2, 2, 2]
    assert len(run.outputs["A"]) == 1 + 6 and run.outputs["A"] == sorted(run.outputs["A"])
    assert run.median_s("C") == pytest.approx(4.0) and len(run.steps("B")) == 6


def test_a_spread_wider_than_15_percent_is_said(rounds):
    steady = rounds.Ratio(1.0, 0.95, 1.05, 8)
    spread = rounds.Ratio(1.0, 0.8, 1.05, 8)
    assert not steady.wide and spread.wide
    assert str(spread) == "1.00 (0.80-1.05) wide" and str(steady) == "1.00 (0.95-1.05)"
    assert rounds.wide_note("mlp", {"dlc/torch": steady}) == ""
    assert "dlc/torch 1.00 (0.80-1.05) wide" in rounds.wide_note("mlp", {"dlc/torch": spread, "x": steady})


def test_a_slowdown_over_a_few_rounds_widens_the_spread_not_the_median(rounds):
    """A slowdown that hits one framework's slots alone (a neighbour that ran beside it for a
    while) moves the ratio of those rounds: the spread shows it, the median does not move."""
    machine = FakeMachine(jump_after=10**9, factor=1.0)
    costs, _ = costs_and_slots(rounds, machine)
    state = {"round": 0}

    def slot_of(name):
        def slot(n):
            slow = 2.0 if name == "A" and state["round"] in (2, 3, 4) else 1.0
            if name == "C":
                state["round"] += 1
            return [costs[name] * slow] * n, [None] * n

        return slot

    Load.values = [0.0] * 10
    run = rounds.interleave({k: slot_of(k) for k in costs}, rounds=10, steps=3, load=Load)
    r = run.ratio("B", "A")
    assert r.median == pytest.approx(2.0) and r.wide


def test_no_rounds_or_no_steps_is_refused(rounds):
    with pytest.raises(ValueError):
        rounds.interleave({"A": lambda n: ([1.0] * n, [None] * n)}, rounds=0, steps=3)


def test_without_a_step_count_a_round_fills_each_slots_seconds(rounds):
    machine = FakeMachine(jump_after=10**9, factor=1.0)
    _, slots = costs_and_slots(rounds, machine)  # a step of each: 1 + 2 + 4 = 7 s
    Load.values = [0.0] * 2
    run = rounds.interleave(slots, rounds=2, warmup=1, seconds_each=28.0, load=Load)  # 3 x 28 s: 12 steps of each
    assert [len(r) for r in run.seconds["C"]] == [12, 12]
    with pytest.raises(ValueError):
        rounds.interleave(slots, rounds=2, seconds_each=28.0)  # no warm-up to tell a step's time


def test_a_slow_first_warm_up_step_does_not_shorten_the_rounds(rounds):
    # a first step waits for its threads to wake (10 ms on some virtual machines): counted as
    # a step's time, it would make each round a step or two where 50 fit
    costs = iter([0.011, 0.0002, 0.0002])
    slot = lambda n: ([next(costs, 0.0002) for _ in range(n)], [None] * n)
    Load.values = [0.0] * 2
    run = rounds.interleave({"A": slot}, rounds=2, warmup=3, seconds_each=0.01, load=Load)
    assert [len(r) for r in run.seconds["A"]] == [50, 50]
