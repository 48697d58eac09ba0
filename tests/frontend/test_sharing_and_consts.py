"""Weight sharing with `name = "..."` over whole calls of multi-layer defs, and consts used
as dims in input and argument types (language.md sections 2, 3 and 5.4)."""

import numpy as np
import pytest

from dlc.compiler.ir.dims import Dim
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.settings import Call
from dlc.runtime.training.gradcheck import gradcheck, init_params, sample_inputs

from helpers.numeric import build, forward, gradients, param_names, trainable_count
from helpers.engine_parity import assert_same_training

# a two-layer encoder, 10 -> 30 -> 10: 330 + 310 = 640 parameters
ENCODERS = {
    "expression": ("def enc(x) = x |> dense(30, relu) |> dense(10)", ["e.0.W", "e.0.b", "e.1.W", "e.1.b"]),
    "block": ("def enc(x) {\n    h = dense(x, 30, relu)\n    return dense(h, 10)\n}", ["e.h.W", "e.h.b", "e.W", "e.b"]),
}
ONE_ENCODER = 640


def two_calls(enc: str, second_input: str = "x") -> str:
    return f"""
{enc}
model m {{
    input x: f32[B, 10]
    a = enc(x, name = "e")
    b = enc({second_input}, name = "e")
    loss mean(a * a) + mean(b)
    output a
    output b
}}"""


@pytest.mark.parametrize("form", ENCODERS)
def test_two_calls_with_one_name_share_every_layer(form):
    enc, names = ENCODERS[form]
    m = build(two_calls(enc))
    assert param_names(m) == names
    assert trainable_count(m) == ONE_ENCODER
    x = np.random.default_rng(0).standard_normal((3, 10))
    out = forward(m, {"x": x}, init_params(m))
    assert np.abs(out["output:a"]).max() > 0
    np.testing.assert_array_equal(out["output:a"], out["output:b"])


@pytest.mark.parametrize("form", ENCODERS)
def test_gradients_of_a_shared_call_add_up_over_its_uses(form):
    """enc(enc(x)) with one name: the gradient checks against finite differences, and it
    is the sum of the gradients of the same model with two untied encoders."""
    enc, names = ENCODERS[form]
    tied = build(two_calls(enc, second_input="a"))
    untied = build(
        two_calls(enc, second_input="a")
        .replace('name = "e")', 'name = "e1")', 1)
        .replace('name = "e")', 'name = "e2")', 1)
    )
    assert trainable_count(untied) == 2 * trainable_count(tied)
    params = init_params(tied)
    feeds = sample_inputs(tied, {"B": 3})
    checks = gradcheck(tied, feeds, params)
    assert len(checks) == 4 and all(c.ok for c in checks), checks
    grads = gradients(tied, feeds, params)

    def copy(name, k):  # e.h.W -> e1.h.W
        return name.replace("e.", f"e{k}.", 1)

    untied_grads = gradients(untied, feeds, {copy(n, k): v for n, v in params.items() for k in (1, 2)})
    for name in names:
        total = untied_grads[f"grad:{copy(name, 1)}"] + untied_grads[f"grad:{copy(name, 2)}"]
        np.testing.assert_allclose(grads[f"grad:{name}"], total, rtol=1e-10, atol=1e-12)


def test_a_shared_call_trains_the_same_on_both_engines():
    enc, names = ENCODERS["block"]
    program = load_text(two_calls(enc, second_input="a"), "t.dl")
    _, trained, _ = assert_same_training(program, Call("sgd", [], {"lr": 0.1}), {"B": 4})
    assert sorted(trained) == sorted(names)


def test_a_shared_name_with_other_shapes_is_a_located_error():
    src = two_calls(ENCODERS["block"][0], second_input="y").replace(
        "input x: f32[B, 10]", "input x: f32[B, 10]\n    input y: f32[B, 12]"
    )
    with pytest.raises(DlcError) as err:
        load_text(src, "t.dl").build()
    text = err.value.render()
    # at the layer in the def, as other errors inside a def are, with both calls in notes
    assert err.value.span.line == 3 and "shared parameter 'W' is f32[10, 30] in one call and f32[12, 30]" in text
    assert "t.dl:9:9: note: the first call named 'e'" in text and "t.dl:10:9: note: in the call of enc" in text


def test_a_later_call_may_not_add_parameters_to_a_shared_name():
    src = """
model m {
    input x: f32[B, 4]
    a = dense(x, 4, bias = false, name = "s")
    b = dense(a, 4, name = "s")
    output b
}"""
    with pytest.raises(DlcError) as err:
        load_text(src, "t.dl").build()
    text = err.value.render()
    assert err.value.span.line == 5 and "the first call named 's' has no parameter 'b'" in text
    assert "t.dl:4:9: note: the first call named 's'" in text


def test_a_shared_state_buffer_keeps_the_last_update():
    m = build("""
model m {
    input x: f32[B, 4]
    a = batchnorm(x, name = "bn")
    b = batchnorm(2 * x, name = "bn")
    loss mean(a) + mean(b)
}""")
    assert param_names(m) == ["bn.gamma", "bn.beta", "bn.running_mean", "bn.running_var"]
    x = np.random.default_rng(0).standard_normal((5, 4))
    out = forward(m, {"x": x}, init_params(m))
    np.testing.assert_allclose(out["update:bn.running_mean"], 0.1 * (2 * x).mean(0), rtol=1e-12)


FEATURES = """
const FEATURES = 20
model m {
    input x: f32[B, FEATURES]
    h = dense(x, 8)
    output y = dense(h, FEATURES)
}"""


@pytest.mark.parametrize("training", [True, False])
def test_a_const_in_an_input_type_is_its_value(training):
    m = load_text(FEATURES, "t.dl").build(training=training)
    assert m.inputs[0].type.shape == (Dim.sym("B"), 20)
    assert {p.name: p.type.shape for p in m.params} == {"h.W": (20, 8), "h.b": (8,), "y.W": (8, 20), "y.b": (20,)}


def test_a_const_in_an_argument_type_is_checked():
    src = """
const F = 20
def f(x: f32[N, F]) = x * 2
model m {
    input x: f32[B, INPUT]
    output y = f(x)
}"""
    assert load_text(src.replace("INPUT", "20"), "t.dl").build().graph.outputs["output:y"].shape == (Dim.sym("B"), 20)
    with pytest.raises(DlcError) as err:
        load_text(src.replace("INPUT", "7"), "t.dl").build()
    assert err.value.span.line == 6 and "must be f32[N, F], got f32[B, 7] (7 vs 20)" in err.value.render()
