"""benchmarks/train_step.py with a peer that cannot run a workload on this CPU (as PyTorch's
bf16 LSTM cannot without AVX-512): the run goes on, says which peer and why, and times dlc
without it; dlc's own failure still stops the run."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PEAK = {"lanes": 8, "gflops": {1: 100.0, 2: 200.0}, "others": {1: 0.0, 2: 0.0}}


@pytest.fixture
def train_step(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import peak
    import train_step

    monkeypatch.setattr(peak, "cached_or_measure", lambda: PEAK)
    return train_step


def refuse(self):
    raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive.\nmore")


def test_a_peer_that_cannot_run_the_workload_is_left_out_of_its_row(train_step, monkeypatch, capsys):
    monkeypatch.setattr(train_step.TorchRunner, "first", refuse)
    assert train_step.main(["--only", "mlp", "--quick", "--frameworks", "dlc,torch"]) == 0
    out = capsys.readouterr().out
    assert "torch            cannot run mlp on this CPU: could not create a primitive descriptor" in out
    row = next(line for line in out.splitlines() if line.startswith("| mlp"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) > 0  # dlc's median
    assert "torch ms" not in out  # no column of a peer that never ran


def test_dlc_failing_still_stops_the_run(train_step, monkeypatch):
    monkeypatch.setattr(train_step.DlcRunner, "first", refuse)
    with pytest.raises(RuntimeError, match="primitive descriptor"):
        train_step.main(["--only", "mlp", "--quick", "--frameworks", "dlc,torch"])
