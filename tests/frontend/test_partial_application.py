"""Partial application (language.md, section 3): a call with keyword arguments only, not
the function's first argument, is that function with those arguments fixed."""

from __future__ import annotations

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.training.gradcheck import init_params

from helpers.numeric import build, forward, param_names

X = np.random.default_rng(0).standard_normal((5, 16))


def outputs(body: str, defs: str = "") -> dict:
    """The outputs of a model on input x: f32[B, 16], from its initial parameters."""
    model = build(f"{defs}\nmodel m {{\n    input x: f32[B, 16]\n    {body}\n}}\n")
    return forward(model, {"x": X}, init_params(model, seed=3))


def error(source: str) -> DlcError:
    with pytest.raises(DlcError) as e:
        load_text(source, "m.dl").build()
    return e.value


def test_an_activation_with_a_keyword_is_a_function_of_x():
    out = outputs(
        "act = leaky_relu(alpha = 0.2)\n output a = act(x)\n output b = leaky_relu(x, 0.2)\n"
        " output c = x |> leaky_relu(alpha = 0.2)"
    )
    assert (out["output:a"] < 0).any()
    np.testing.assert_array_equal(out["output:a"], out["output:b"])
    np.testing.assert_array_equal(out["output:c"], out["output:b"])


def test_a_partial_activation_passed_to_dense_is_the_activation_written_out():
    partial = outputs("output y = dense(x, 8, leaky_relu(alpha = 0.2))")
    written = outputs("output y = dense(x, 8, lrelu)", "def lrelu(x) = leaky_relu(x, 0.2)")
    np.testing.assert_array_equal(partial["output:y"], written["output:y"])
    assert (partial["output:y"] < 0).any()


def test_a_partial_layer_makes_its_parameters_where_it_is_called():
    model = build("""
def twice(x, layer: fn) = layer(layer(x))
model m {
    input x: f32[B, 16]
    layer = dense(units = 8, act = relu)
    h = layer(x)
    k = layer(h)
    t = twice(k, dense(units = 8))
    output t
}""")
    assert param_names(model) == ["h.W", "h.b", "k.W", "k.b", "t.0.W", "t.0.b", "t.1.W", "t.1.b"]
    assert [tuple(p.type.shape) for p in model.params][:4] == [(16, 8), (8,), (8, 8), (8,)]


def test_a_partial_layer_with_a_name_shares_its_weights_in_one_scope():
    model = build("""
model m {
    input x: f32[B, 8]
    layer = dense(units = 8, name = "shared")
    a = layer(x)
    b = layer(a)
    output b
}""")
    assert param_names(model) == ["shared.W", "shared.b"]


def test_a_partial_initializer():
    model = build(
        "model m {\n    input x: f32[B, 16]\n    param W: f32[400, 400] = normal(std = 0.02)\n"
        "    output y = x @ W[0:16]\n}"
    )
    std = init_params(model, seed=1)["W"].std()
    assert 0.019 < std < 0.021


def test_a_keyword_at_the_call_replaces_a_fixed_one_and_partials_add_up():
    out = outputs(
        "p = leaky_relu(alpha = 0.2)\n output a = p(x, alpha = 0.5)\n output b = leaky_relu(x, 0.5)\n"
        " q = dense(units = 4)\n r = q(act = relu)\n output c = r(x)"
    )
    np.testing.assert_array_equal(out["output:a"], out["output:b"])
    assert out["output:c"].shape == (5, 4) and out["output:c"].min() >= 0


def test_builtins_with_a_named_first_argument():
    out = outputs("output a = x |> mean(axis = 1)\n f = sum(axis = 0, keepdims = true)\n output b = f(x)")
    np.testing.assert_allclose(out["output:a"], X.mean(1))
    np.testing.assert_allclose(out["output:b"], X.sum(0, keepdims=True))


def test_a_partial_recurrent_cell():
    model = build("""
model m {
    input x: f32[B, T, 4]
    output y = stacked(x, gru(reset_after = false), 6, 2)
}""")
    assert model.graph.outputs["output:y"].shape[-1] == 6


def test_a_def_whose_first_argument_has_a_default_is_called():
    out = outputs("output y = x + f(k = 3)", "def f(n = 2, k = 1) = n * k")
    np.testing.assert_array_equal(out["output:y"], X + 6)


def test_a_misspelled_keyword_is_an_error_where_the_partial_is_made():
    e = error(
        "model m {\n    input x: f32[B, 16]\n    act = leaky_relu(alhpa = 0.2)\n    output y = dense(x, 4, act)\n}"
    )
    assert (e.span.line, e.span.col) == (3, 30)
    assert "leaky_relu has no argument named 'alhpa'; did you mean 'alpha'?" in e.message


def test_a_misspelled_keyword_of_a_builtin_is_an_error_where_the_partial_is_made():
    e = error("model m {\n    input x: f32[B, 16]\n    f = mean(axs = 1)\n    output y = f(x)\n}")
    assert (e.span.line, e.span.col) == (3, 9) and "unexpected keyword argument 'axs'" in e.message


def test_an_argument_still_missing_is_an_error_at_the_call_with_a_note_at_the_partial():
    e = error("model m {\n    input x: f32[B, 16]\n    layer = dense(act = relu)\n    output y = layer(x)\n}")
    assert (e.span.line, e.span.col) == (4, 16) and e.message == "dense: missing argument 'units'"
    assert ("dense is partially applied here", 3) in [(note, span.line) for note, span in e.notes]


def test_positional_arguments_where_a_function_is_meant_are_told_the_keyword_form():
    e = error("model m {\n    input x: f32[B, 16]\n    output y = residual(x, dense(16, relu))\n}")
    assert (e.span.line, e.span.col) == (3, 34)
    assert e.message.endswith("give the others by name: dense(units = 16, act = relu)"), e.message


def test_a_call_without_arguments_is_still_a_call():
    e = error("model m {\n    input x: f32[B, 16]\n    f = relu()\n    output y = f(x)\n}")
    assert e.message == "relu: missing argument 'x'"


def test_a_partial_is_described_with_its_keywords():
    e = error("model m {\n    input x: f32[B, 16]\n    act = leaky_relu(alpha = 0.2)\n    output y = x + act\n}")
    assert "the function leaky_relu(alpha = ...)" in e.message
