"""The narrow pass (compiler/passes/narrow.py): a value read only through a slice is computed
only in that slice, in training (before differentiation) and in prediction; the values are
the whole computation's."""

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.settings import Call
from dlc.compiler.ir.dims import concrete
from dlc.compiler.passes import autodiff
from dlc.compiler.passes.optimize import PIPELINE, optimize
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.gradcheck import init_params, sample_inputs

from helpers.engine_parity import five_steps
from helpers.native_cases import run_reference

SIZES = {"B": 3, "T": 6}

# two encoder layers with a padding mask, a classifier of the first token's state (BERT's)
FIRST_TOKEN = """
model first_token {{
    input  x: f32[B, T, 16]
    target y: i32[B]
    mask = reshape(select(x[:, :, 0] > 1.5, -1e9, 0.0), B, 1, 1, T)
    h = transformer_encoder_block(x, 2, 32, rate = {rate}, mask = mask, pre_norm = false)
    h = transformer_encoder_block(h, 2, 32, rate = {rate}, mask = mask, pre_norm = false, name = "last")
    logits = dense(h[:, 0], 3)
    loss   sparse_cross_entropy(logits, y)
    {extra}
    output logits = logits
}}
"""


def _program(rate=0.1, extra=""):
    return load_text(FIRST_TOKEN.format(rate=rate, extra=extra), "first_token.dl")


def _flops(graph) -> float:
    return float(concrete(graph.flops(), SIZES))


def _train_graph(program, narrowing: bool, monkeypatch):
    with monkeypatch.context() as m:
        if not narrowing:
            m.setattr(autodiff, "narrow", lambda g: g)
        return optimize(autodiff.train_step(program.build(training=True).graph), _passes(narrowing))


def _passes(narrowing: bool) -> tuple:
    return PIPELINE if narrowing else tuple(p for p in PIPELINE if p != "narrow")


def _rows_of_products(graph) -> set:
    """The rows of every product of the last layer's feed-forward weights."""
    rows = set()
    for n in graph.nodes_with("matmul"):
        for t in graph.inputs(n):
            if graph.op(t.node) == "param" and graph.attrs(t.node)["name"].startswith("last.ffn"):
                a = graph.inputs(n)[0]
                rows.add(concrete(a.shape[-2], SIZES))
    return rows


def test_the_last_layer_of_a_first_token_classifier_is_computed_for_that_token(monkeypatch):
    program = _program()
    whole, narrow = _train_graph(program, False, monkeypatch), _train_graph(program, True, monkeypatch)
    # its feed-forward products (forward and backward) have a row per sequence, not per token
    assert _rows_of_products(whole) >= {SIZES["B"] * SIZES["T"]}
    assert SIZES["B"] * SIZES["T"] not in _rows_of_products(narrow)
    assert _flops(narrow) < 0.8 * _flops(whole)


@pytest.mark.parametrize("engine", [ReferenceEngine, NativeEngine])
@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_narrow_training_gives_the_whole_computations_values(rate, engine, monkeypatch):
    """Five steps of SGD agree to rounding: a gradient's sums skip the terms that were zeros,
    and numpy's BLAS may sum a product of fewer rows in another order. dlc's kernels sum each
    element in one order whatever the rows: its first loss is the same bits."""
    program = _program(rate)
    sgd = Call("sgd", [], {"lr": 0.1})
    narrow_params, narrow_losses, _, _ = five_steps(program, engine, sgd, SIZES)
    monkeypatch.setattr(autodiff, "narrow", lambda g: g)
    whole_params, whole_losses, _, _ = five_steps(program, engine, sgd, SIZES)
    if engine is NativeEngine:
        assert narrow_losses[0] == whole_losses[0]
    np.testing.assert_allclose(narrow_losses, whole_losses, rtol=1e-6)
    for name, value in whole_params.items():
        np.testing.assert_allclose(narrow_params[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_value_read_whole_elsewhere_stays_whole(monkeypatch):
    program = _program(extra="metric spread = mean(h)")
    whole, narrow = _train_graph(program, False, monkeypatch), _train_graph(program, True, monkeypatch)
    assert SIZES["B"] * SIZES["T"] in _rows_of_products(narrow)
    assert _flops(narrow) == _flops(whole)


def test_a_prediction_of_the_first_token_is_narrow_and_the_same():
    """In a forward pass the attention is the fused primitive: its queries are narrowed too."""
    graph = _program().build(training=False).graph
    narrow, whole = optimize(graph), optimize(graph, _passes(False))
    assert narrow.nodes_with("attention") and _flops(narrow) < 0.8 * _flops(whole)
    params = init_params(_program().build(training=True))
    feeds = sample_inputs(_program().build(training=True), SIZES, seed=1)
    got, want = run_reference(narrow, feeds, params), run_reference(whole, feeds, params)
    _close_at_scale(got["output:logits"], want["output:logits"], 1e-6)


# slices of every kind a program writes: an index, a range, a stride, over two axes
SLICED = """
model sliced {{
    input  x: f32[B, 6, 16]
    target y: f32[B, {n}]
    h = transformer_encoder_block(x, 2, 24, rate = 0.0, pre_norm = {pre})
    h = dense(layernorm(h), 12, gelu)
    p = reshape(h{index}, B, {n})
    loss mse(p, y)
    output p = p
}}
"""


@pytest.mark.parametrize("pre_norm", ["true", "false"])
@pytest.mark.parametrize(
    "index,n", [("[:, 5]", 12), ("[:, 1:6:2]", 36), ("[:, 3, 2:9:3]", 3), ("[:, 1:3, 5]", 2), ("[:, 4:, :4]", 8)]
)
def test_every_kind_of_slice_gives_the_whole_computations_values(index, n, pre_norm, monkeypatch):
    """The forward pass and the gradients on the reference engine, narrowed and whole."""
    program = load_text(SLICED.format(index=index, n=n, pre=pre_norm), "sliced.dl")
    train = program.build(training=True)
    params, feeds = init_params(train), sample_inputs(train, {"B": 3}, seed=2)
    forward = program.build(training=False).graph
    got, want = (
        run_reference(optimize(forward), feeds, params),
        run_reference(optimize(forward, _passes(False)), feeds, params),
    )
    _close_at_scale(got["output:p"], want["output:p"], 1e-5)
    narrow, whole = _train_graph(program, True, monkeypatch), _train_graph(program, False, monkeypatch)
    assert _flops(narrow) < _flops(whole)
    got, want = run_reference(narrow, feeds, params), run_reference(whole, feeds, params)
    for name in (k for k in want if k.startswith("grad:")):
        # compared against 1e-3 at least: the attention's key bias has no gradient but rounding noise
        _close_at_scale(got[name], want[name], 1e-4, floor=1e-3, what=name)


def _close_at_scale(got, want, rel: float, floor: float = 0.0, what: str = ""):
    """Every element within rel of the largest of `want` (at least `floor`): the reference
    engine's products of a slice and of the whole go through numpy's BLAS, whose kernels sum
    in an order of their own for each shape, so an element near zero by cancellation differs
    by the rounding of its terms, not of itself."""
    scale = max(float(np.abs(want).max()), floor)
    assert float(np.abs(got - want).max()) <= rel * scale, what
