"""int8 arithmetic (compiler/ir/int8.py) against a float64 reference of the same quantization
written here from docs/quantization.md, and which products are integer (compiler/passes/int8.py)."""

import functools

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.summary import int8_table
from dlc.compiler.ir import int8
from dlc.compiler.passes.int8 import FEWEST_CHANNELS, FEWEST_TERMS, products
from dlc.runtime.engines.int8 import Int8Engine, calibrate
from dlc.runtime.engines.interpreter import run
from helpers.int8 import every_product_integer


def test_weight_scales_and_weights_are_the_float64_rule_rounded_once():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    w[2] = 0  # an empty channel takes the least scale, and zeros
    scales = int8.weight_scales(w, 0)
    for o in range(5):
        largest = max(abs(float(v)) for v in w[o].ravel())
        want = max(np.float32(largest / 127.0), np.float32(2.0**-60))
        assert scales[o] == want and scales.dtype == np.float32
        q = int8.quantize_weights(w, scales, 0)[o]
        ref = [max(-127, min(127, round(float(v) / float(scales[o])))) for v in w[o].ravel()]
        assert q.ravel().tolist() == ref  # Python's round is ties to even, as rint
    assert (
        int8.quantize_weights(w, scales, 0).min() >= -127 and np.abs(int8.quantize_weights(w, scales, 0)).max() == 127
    )


def test_weights_quantize_per_output_column_of_a_matmul():
    w = np.array([[1.0, -100.0], [0.5, 25.0]], np.float32)  # [in, out]: channels along axis 1
    scales = int8.weight_scales(w, 1)
    assert scales.tolist() == [np.float32(1 / 127), np.float32(100 / 127)]
    assert int8.quantize_weights(w, scales, 1).tolist() == [[127, -127], [64, 32]]  # 63.5 -> 64, 31.75 -> 32


@pytest.mark.parametrize("lo, hi", [(-1.5, 3.0), (0.0, 6.0), (0.2, 0.9), (-4.0, -1.0), (0.0, 0.0), (-1e-30, 1e-30)])
def test_activation_scale_and_zero_point_hold_the_range_and_zero(lo, hi):
    scale, zero = int8.activation_params(lo, hi)
    lo64, hi64 = min(lo, 0.0), max(hi, 0.0)
    want = max(np.float32((hi64 - lo64) / 255.0), np.float32(2.0**-60))
    assert scale == want and scale.dtype == np.float32 and zero.dtype == np.uint8
    assert int(zero) == min(255, max(0, round(-lo64 / float(scale))))
    assert int8.quantize(np.float32(0.0), scale, zero) == zero  # 0.0 is exactly the zero point


def test_quantizing_rounds_ties_to_even_saturates_and_takes_nan_as_zero():
    scale, zero = np.float32(0.5), np.uint8(10)
    x = np.array([0.25, 0.75, -0.25, 1e30, -1e30, np.inf, -np.inf, np.nan, 200.0], np.float32)
    # x / 0.5 = 0.5 -> 0, 1.5 -> 2, -0.5 -> -0; then + 10; beyond the range saturates
    assert int8.quantize(x, scale, zero).tolist() == [10, 12, 10, 255, 0, 255, 0, 10, 255]


PROGRAM = """
model m {
    input x: f32[B, 4, 7, 7]
    a = conv2d(x, 6, 3, padding = 1, stride = 2, act = relu)
    g = conv2d(a, 6, 3, padding = "same", groups = 3)
    d = conv2d(g, 6, 3, groups = 6)
    output y = dense(flatten(d), 5)
}
"""


def _reference_product(p, q, x, attrs):
    """The product in float64 from the documented formulas alone: loops over the sums."""
    s, z = float(q.input_scale), int(q.input_zero_point)
    xq = np.clip(np.rint(np.where(np.isnan(x), 0, x) / np.float32(s)) + z, 0, 255).astype(np.float64) - z
    w = q.weight.astype(np.float64).reshape(p.weight_shape)
    m = (np.float64(s) * q.weight_scale.astype(np.float64)).astype(np.float32)
    if p.op == "matmul":
        acc = xq @ w
        return (acc.astype(np.float32) * m).astype(np.float32)
    (sh, sw), (ph, pw), groups = attrs["stride"], attrs["padding"], attrs["groups"]
    xp = np.pad(xq, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # padding is 0.0: q - z = 0
    n, c, hh, ww = xp.shape
    o, cg, kh, kw = w.shape
    ho, wo = (hh - kh) // sh + 1, (ww - kw) // sw + 1
    acc = np.zeros((n, o, ho, wo))
    for oc in range(o):
        gi = oc // (o // groups)
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, gi * cg : (gi + 1) * cg, i * sh : i * sh + kh, j * sw : j * sw + kw]
                acc[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return (acc.astype(np.float32) * m.reshape(-1, 1, 1)).astype(np.float32)


def test_integer_products_equal_a_float64_reference_bit_for_bit():
    """conv2d strided and padded, grouped, depthwise, and a dense: each product's int8 value,
    fed the float32 input it reads, against the loops above (its short products too)."""
    with every_product_integer():
        _products_equal_the_reference()


def _products_equal_the_reference():
    model = load_text(PROGRAM, "m.dl").build("m", training=False)
    rng = np.random.default_rng(1)
    params = {p.name: rng.normal(size=p.type.shape).astype(np.float32) for p in model.params}
    x = rng.normal(size=(3, 4, 7, 7)).astype(np.float32)
    quantization = calibrate(model.graph, params, [{"x": x}])
    engine = Int8Engine(model, model, quantization)
    chosen = {p.node: p for p in products(model.graph) if p.integer}
    assert len(chosen) == 4
    seen = {}

    class Watch(engine.evaluator.func):
        def computed(self, graph, n, inputs, values):
            if graph is model.graph and n in chosen:
                seen[n] = (values[inputs[0]], values[(n, 0)])

    run(model.graph, {"x": x}, params, evaluator=functools.partial(Watch, engine.plans))
    for n, p in chosen.items():
        given, got = seen[n]
        want = _reference_product(p, quantization[p.weight], given, model.graph.attrs(n))
        assert got.dtype == np.float32 and np.array_equal(got.view(np.int32), want.view(np.int32)), p.weight


SELECTION = """
model m {
    input x: f32[B, T, 32]
    input s: f32[B, 2, 70000]
    h = dense(x, 32)
    att = softmax(h @ transpose(h, (0, 2, 1))) @ h
    c = conv1d(transpose(h, (0, 2, 1)), 4, 3)
    output y = sum(att) + sum(c) + sum(dense(s, 1))
    output r = sum(rnn(x, 4))
}
"""


def test_products_say_which_are_integer_and_why_not():
    model = load_text(SELECTION, "m.dl").build("m", training=False)
    found = {(p.op, p.weight): p.reason for p in products(model.graph)}
    assert found[("conv2d", "c.W")] == ""  # conv1d's reshaped weights, output channels first
    assert found[("matmul", "h.W")] == ""
    overflow = [r for (op, w), r in found.items() if "70000 terms could overflow int32 sums" in r]
    assert len(overflow) == 1
    reasons = [p.reason for p in products(model.graph)]
    assert sum("not a parameter" in r for r in reasons) == 2  # the two products of attention
    text = int8_table(model)
    assert "inside scans (recurrences)" in text and "float32" in text


def test_sums_too_short_to_gain_stay_float32_with_their_reason():
    """A matmul of fewer than FEWEST_TERMS terms; a convolution of fewer than FEWEST_CHANNELS
    channels a tap in groups (groups of a few channels, two filters of one channel a group)
    or dilated along its kernel rows, whatever its taps; from there on, integer. A depthwise
    convolution (one channel and one filter a group) has a kernel of its own, as has one of a
    single group of few channels (a first layer's), read by kernel rows, which is integer
    where its K is a matmul's."""
    model = load_text(
        f"""
model m {{
    input x: f32[B, 3, 8, 8]
    input v: f32[B, {FEWEST_TERMS}]
    a = conv2d(x, {2 * FEWEST_CHANNELS}, 7, padding = 3)
    b = conv2d(a, {2 * FEWEST_CHANNELS}, 3, groups = {2 * FEWEST_CHANNELS})
    c = conv2d(a, {2 * FEWEST_CHANNELS}, 1, groups = 2)
    d = conv2d(c, 8, 1)
    e = conv2d(a, {4 * FEWEST_CHANNELS}, 3, groups = {2 * FEWEST_CHANNELS})
    f = conv2d(a, {2 * FEWEST_CHANNELS}, 3, groups = 8)
    g = conv2d(x, 8, 3, dilation = 2)
    h = conv2d(x[:, :2], 8, 3)
    output y = sum(b) + sum(d) + sum(e) + sum(f) + sum(g) + sum(h) + sum(dense(v, 4)) + sum(dense(v[:, 1:], 4))
}}""",
        "m.dl",
    ).build("m", training=False)
    found = {p.weight: p.reason for p in products(model.graph)}
    assert found["e.W"] == (
        f"its taps hold 1 channel (C / groups): too few to gain from int8 (at least {FEWEST_CHANNELS}) "
        f"in {2 * FEWEST_CHANNELS} groups"
    )
    assert found["f.W"].startswith("its taps hold 4 channels (C / groups)")
    assert found["g.W"].startswith("its taps hold 3 channels (C / groups)")
    assert found["g.W"].endswith("with its kernel rows dilated")
    assert found["h.W"] == f"its sums of 18 terms are too short to gain from int8 (at least {FEWEST_TERMS})"
    assert found["a.W"] == found["b.W"] == found["c.W"] == found["d.W"] == ""
    dense = sorted(r for w, r in found.items() if w.startswith("y."))
    assert dense == [
        "",
        f"its sums of {FEWEST_TERMS - 1} terms are too short to gain from int8 (at least {FEWEST_TERMS})",
    ]
    assert "too short to gain" in int8_table(model)


def test_shared_weights_stay_float32_with_their_reason():
    model = load_text(
        """
model m {
    input x: f32[B, 32]
    param W: f32[32, 32] = glorot_uniform
    output y = (x @ W) @ W
}
""",
        "m.dl",
    ).build("m", training=False)
    assert [p.reason for p in products(model.graph)] == ["its weights W are shared by 2 products"] * 2
