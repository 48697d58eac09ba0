"""Work budget (runtime/engines/budget.py): a call whose estimated time, from its FLOP count, is
beyond DLC_WORK_BUDGET seconds is refused at the line that makes most of it, before it runs;
`none` and --no-budget let it run."""

import re
from pathlib import Path

import numpy as np
import pytest

from dlc.runtime.cli import main
from dlc.runtime.engines import budget
from dlc.compiler.frontend.loader import load, load_text

# 10^6 additions in a fused reduction: nothing to store, so only the work budget can see it
SUMMED = """
model summed {
    input x: f32[B, 2]
    c = full((1000, 1000), 1.0)
    output y = x + sum(c)
}
"""


@pytest.fixture
def summed(tmp_path):
    (tmp_path / "m.dl").write_text(SUMMED)
    np.savez(tmp_path / "w.npz")
    np.savez(tmp_path / "in.npz", x=np.zeros((3, 2), np.float32))
    return tmp_path


def predict(path, *flags):
    return [
        "predict",
        str(path / "m.dl"),
        "--weights",
        str(path / "w.npz"),
        "--data",
        str(path / "in.npz"),
        "--output",
        str(path / "out.npz"),
        *flags,
    ]


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_a_call_beyond_the_budget_is_refused_at_its_line(summed, capsys, monkeypatch, backend):
    monkeypatch.setenv("DLC_WORK_BUDGET", "1e-6")
    assert main(predict(summed, "--backend", backend)) == 1
    err = capsys.readouterr().err
    assert re.search(r"m\.dl:5:\d+: error: a forward pass would take about [\d.e+-]+ (s|min) ", err), err
    assert "reduce_sum of f32[1000, 1000]" in err and "the work budget is 1e-06 s a call" in err
    assert "--no-budget" in err and not (summed / "out.npz").exists()


@pytest.mark.parametrize("allow", [["--no-budget"], []])
def test_no_budget_and_none_run_it(summed, capsys, monkeypatch, allow):
    monkeypatch.setenv("DLC_WORK_BUDGET", "1e-6" if allow else "none")
    assert main(predict(summed, "--backend", "native", *allow)) == 0, capsys.readouterr().err
    assert np.array_equal(np.load(summed / "out.npz")["y"], np.full((3, 2), 1e6, np.float32))


@pytest.mark.parametrize("text", ["soon", "-3", "0"])
def test_the_budget_must_be_seconds_or_none(monkeypatch, text):
    monkeypatch.setenv("DLC_WORK_BUDGET", text)
    with pytest.raises(Exception, match="DLC_WORK_BUDGET must be a number of seconds or 'none'"):
        budget.work_limit()


def test_contractions_and_elementwise_work_are_counted_at_their_rates_and_scans_by_their_length():
    model = load_text("""
model m {
    input x: f32[B, T, 64]
    param W: f32[64, 64]
    h = scan t in T carry c = zeros[B, 64] {
        c = tanh(x[:, t] @ W + c)
        yield c
    }
    output y = sum(h)
}""").build("m")
    sizes = {"B": 8, "T": 100}
    parts = budget.work_seconds(model.graph, sizes, threads=1)
    total = sum(s for s, _ in parts)
    matmul = 2 * 8 * 64 * 64 * 100 / budget.CONTRACTION_RATE
    assert matmul < total < matmul + 10 * 8 * 64 * 100 / budget.ELEMENT_RATE
    assert sum(s for s, _ in budget.work_seconds(model.graph, sizes, threads=2)) == pytest.approx(total / 2)


def test_the_default_budget_lets_every_example_model_run_a_step_at_its_batch():
    """The default is far from a real model's step: the transformer and LeNet at batch 256."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name in ("transformer_classifier", "lenet5", "char_lstm"):
        model = load(str(examples / f"{name}.dl")).build(None)
        est = sum(s for s, _ in budget.work_seconds(model.graph, {"B": 256, "T": 256}, threads=1))
        assert est < budget.WORK_BUDGET_S / 10, (name, est)
