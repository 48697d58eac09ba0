"""Hoisting the weight-gradient accumulations out of backward scans (compiler/passes/hoist.py)."""

from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.passes.autodiff import copy_graph, train_step
from dlc.compiler.frontend.loader import load, load_text
from dlc.compiler.passes.hoist import hoist_accumulators
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.engines.interpreter import run

EXAMPLES = Path(__file__).parents[2] / "examples"
RECURRENT = [
    "simple_rnn",
    "char_lstm",
    "gru_forecast",
    "bilstm_tagger",
    "stacked_gru",
    "seq2seq",
    "seq2seq_bahdanau",
    "seq2seq_luong",
]


def scans(graph):
    return [graph.attrs(n) for n in graph.nodes_with("scan")]


def same_outputs(model, before, after, sizes):
    feeds = sample_inputs(model, sizes, seed=3)
    feeds["rng"] = np.array([0, 1], np.int32)
    params = init_params(model)
    want, got = run(before, feeds, params, "f64"), run(after, feeds, params, "f64")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", RECURRENT)
def test_hoisting_keeps_every_gradient(name):
    model = load(str(EXAMPLES / f"{name}.dl")).build(training=True)
    step = train_step(model.graph)
    hoisted = hoist_accumulators(copy_graph(step)[0])
    # every backward scan loses carries: its weight gradients are summed after the loop
    assert sum(a["n_carry"] for a in scans(hoisted)) < sum(a["n_carry"] for a in scans(step))
    for a in scans(hoisted):  # a value the loop stacks for several sums is stacked once
        stacked = [
            (t.key(), axis)
            for (name, t), axis in zip(list(a["body"].outputs.items())[a["n_carry"] :], a["ys_axes"])
            if name.startswith("hoisted")
        ]
        assert len(stacked) == len(set(stacked))
    same_outputs(model, step, hoisted, {"B": 3, "T": 5, "S": 4})


def test_lstm_weight_gradient_is_one_contraction_over_steps_and_batch():
    model = load_text(
        """
model m {
    input x: f32[B, 6, 4]
    target y: f32[B, 3]
    hs = lstm(x, 3)
    loss mse(hs[:, -1], y)
}""",
        "m.dl",
    ).build(training=True)
    step = hoist_accumulators(train_step(model.graph))
    backward = [a for a in scans(step) if a["reverse"]]
    assert len(backward) == 1
    carried = [a.type.shape for a in backward[0]["body"].args[: backward[0]["n_carry"]]]
    assert all(shape[0] != 3 or shape[-1] != 12 for shape in carried), carried  # no Wh [3, 12] carry
    wh = step.outputs["grad:hs.Wh"]
    assert step.op(wh.node) == "matmul" or any(step.op(x.node) == "matmul" for x in step.inputs(wh.node))
    same_outputs(model, train_step(model.graph), step, {"B": 2})


def test_only_plain_accumulations_are_hoisted():
    # `a` sums h^T h like a weight gradient, but the step also reads it: it stays a carry;
    # `b` is a plain sum and leaves the loop
    model = load_text(
        """
model m {
    input x: f32[B, 5, 3]
    param W: f32[3, 3] = glorot_uniform
    h, a, b = scan t in 5 carry h = zeros[B, 3], a = zeros[3, 3], b = zeros[3, 3] {
        h = tanh(x[:, t] @ W + h @ a)
        a = a + transpose(h) @ h * 0.1
        b = b + transpose(h) @ h
    }
    loss mean(h * h) + mean(a) + mean(b * b)
}""",
        "m.dl",
    ).build(training=True)
    forward = model.graph
    hoisted = hoist_accumulators(copy_graph(forward)[0])
    assert [a["n_carry"] for a in scans(hoisted)] == [a["n_carry"] - 1 for a in scans(forward)]
    same_outputs(model, forward, hoisted, {"B": 2})
    step = train_step(model.graph)
    same_outputs(model, step, hoist_accumulators(copy_graph(step)[0]), {"B": 2})
