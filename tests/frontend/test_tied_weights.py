"""Addressable and tied weights (language.md, section 5.5): a binding made by a layer call
names that call's parameters (`emb.W`), and `h @ transpose(emb.W)` is an output projection
tied to an embedding table; the table's gradient is the sum of both uses."""

from __future__ import annotations

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.passes.autodiff import train_step
from dlc.runtime.engines.native import Executable
from dlc.runtime.training.gradcheck import gradcheck, init_params, sample_inputs

from helpers.numeric import build, forward, gradients, param_names, trainable_count

V, D = 11, 6

LM = f"""
model lm {{
    input ids: i32[B, T]
    target y: i32[B, T]
    emb = embedding(ids, {V}, {D})
    h = dense(emb, {D}, tanh)
    param out_b: f32[{V}]
    logits = h @ transpose(TABLE) + out_b
    loss sparse_cross_entropy(logits, y)
}}
"""
TIED = LM.replace("TABLE", "emb.W")
UNTIED = LM.replace("TABLE", "P").replace("    h = ", f"    param P: f32[{V}, {D}]\n    h = ")
SIZES = {"B": 3, "T": 4}


def test_a_binding_names_the_parameters_of_its_call():
    model = build("""
def block(x) {
    h = dense(x, 8, relu)
    return dense(h, 4)
}
model m {
    input x: f32[B, 8]
    h = dense(x, 8)
    b = block(h)
    s = dense(x, 8, name = "shared")
    output w = h.W
    output inner = b.h.W
    output outer = b.b
    output shared = s.W
}""")
    params = init_params(model, seed=2)
    out = forward(model, {"x": np.zeros((2, 8))}, params)
    for output, param in (("w", "h.W"), ("inner", "b.h.W"), ("outer", "b.b"), ("shared", "shared.W")):
        np.testing.assert_array_equal(out[f"output:{output}"], params[param])
    assert np.abs(params["h.W"]).max() > 0


def test_the_tied_model_has_the_parameters_of_torchs_tied_model():
    model = build(TIED)
    assert param_names(model) == ["emb.W", "h.W", "h.b", "out_b"]
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")

    class TiedLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(V, D)
            self.hidden = torch.nn.Linear(D, D)
            self.out = torch.nn.Linear(D, V)
            self.out.weight = self.emb.weight

    assert trainable_count(model) == sum(p.numel() for p in TiedLM().parameters()) == V * D + D * D + D + V
    assert trainable_count(build(UNTIED)) == trainable_count(model) + V * D


def test_the_tables_gradient_is_the_sum_of_both_uses_on_both_engines():
    tied, untied = build(TIED), build(UNTIED)
    params = init_params(tied, seed=1)
    feeds = sample_inputs(tied, SIZES, seed=1)
    assert all(c.ok for c in gradcheck(tied, feeds, params))
    grads = gradients(tied, feeds, params)
    apart = gradients(untied, feeds, {**params, "P": params["emb.W"]})
    total = apart["grad:emb.W"] + apart["grad:P"]
    assert np.abs(apart["grad:P"]).max() > 0 and np.abs(apart["grad:emb.W"]).max() > 0
    np.testing.assert_allclose(grads["grad:emb.W"], total, rtol=1e-10, atol=1e-12)

    exe = Executable(train_step(tied.graph))
    fixed = {bid: params[name].astype(np.float32) for name, bid in exe.program.params.items()}
    native_feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
    arrays, _ = exe.run({**native_feeds, "rng": np.array([0, 1], np.int32)}, fixed)
    native = arrays[exe.program.outputs["grad:emb.W"]][: V * D].reshape(V, D)
    np.testing.assert_allclose(native, total, rtol=1e-4, atol=1e-6)


def error(body: str) -> DlcError:
    with pytest.raises(DlcError) as e:
        load_text(f"model m {{\n    input x: f32[B, 8]\n    {body}\n}}\n", "m.dl").build()
    return e.value


def test_a_parameter_the_layer_does_not_have_is_a_located_error_listing_its_own():
    e = error("h = dense(x, 4)\n    output y = h.V")
    assert (e.span.line, e.span.col) == (4, 16)
    assert e.message == "the layer h has no parameter 'V' (it has: h.W, h.b)"


def test_a_binding_made_by_two_layers_does_not_guess():
    e = error("h = dense(dense(x, 4), 4)\n    output y = h.W")
    assert "'h' is made by 2 calls with parameters" in e.message


def test_a_binding_without_parameters_and_a_rebinding_name_no_layer():
    assert (
        "has no attribute 'W'; a layer's parameters are named through the binding"
        in error("h = relu(x)\n    output y = h.W").message
    )
    assert "has no attribute 'W'" in error("h = dense(x, 4)\n    h = h * 2\n    output y = h.W").message
