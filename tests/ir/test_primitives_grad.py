"""Float64 finite-difference checks of the VJP rule of every differentiable primitive.

Each test builds a tiny graph around one primitive (directly with Graph.add1, or from
.dl source for scan), differentiates sum(out * R) for a fixed random R with
train_step, and compares every entry of every gradient with central differences.
Inputs are kept away from kinks (abs at 0, max/min ties, pooling ties, mod jumps).
A few tests also check forward values against plain numpy.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.ir.graph import TensorType
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.training import gradcheck as gc
from dlc.runtime.engines import interpreter

from helpers.numeric import (
    F64,
    build,
    check_graph_gradient,
    forward,
    gradients,
    graph_with_params,
    numeric_grad,
    ops_in,
    rel_error,
    weighted_sum_loss,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def away_from_zero(r, shape, lo=0.3, hi=2.0):
    return r.choice([-1.0, 1.0], size=shape) * r.uniform(lo, hi, size=shape)


# ---- unary elementwise -------------------------------------------------------------------------------
UNARY = {
    "neg": lambda r, s: r.standard_normal(s),
    "exp": lambda r, s: r.standard_normal(s),
    "log": lambda r, s: r.uniform(0.5, 2.5, s),
    "log1p": lambda r, s: r.uniform(-0.6, 2.0, s),
    "tanh": lambda r, s: r.standard_normal(s),
    "logistic": lambda r, s: 2 * r.standard_normal(s),
    "sqrt": lambda r, s: r.uniform(0.4, 3.0, s),
    "abs": away_from_zero,
    "sin": lambda r, s: 2 * r.standard_normal(s),
    "cos": lambda r, s: 2 * r.standard_normal(s),
    "erf": lambda r, s: r.standard_normal(s),
    "expm1": lambda r, s: r.standard_normal(s),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradient(name):
    x = UNARY[name](rng(1), (3, 4))
    g, t = graph_with_params({"x": x})
    out = g.add1(name, [t["x"]])
    assert name in ops_in(g)
    check_graph_gradient(g, out, {"x": x})


def test_sign_gradient_is_zero():
    x = away_from_zero(rng(2), (3, 4))
    g, t = graph_with_params({"x": x})
    # sign(x) * x == abs(x): only the second factor carries a gradient
    out = g.add1("mul", [g.add1("sign", [t["x"]]), t["x"]])
    check_graph_gradient(g, out, {"x": x})


def test_stop_gradient_blocks_the_gradient():
    x = rng(3).standard_normal((2, 3))
    g, t = graph_with_params({"x": x})
    out = g.add1("mul", [g.add1("stop_gradient", [t["x"]]), t["x"]])  # d/dx (c * x) with c = x held fixed
    g.outputs["y"] = out
    g.outputs["loss"] = weighted_sum_loss(out)
    res = interpreter.run(train_step(g), {}, {"x": x}, float_dtype=F64)
    R = np.random.default_rng(123).standard_normal(x.shape)
    np.testing.assert_allclose(res["grad:x"], R * x, rtol=1e-12)
    np.testing.assert_allclose(interpreter.run(g, {}, {"x": x}, float_dtype=F64)["y"], x * x, rtol=1e-12)


# ---- binary elementwise ---------------------------------------------------------------------------------
def _pair_apart(r, s):
    a = r.standard_normal(s)
    return a, a + away_from_zero(r, s, 0.2, 1.0)


BINARY = {
    "add": lambda r, s: (r.standard_normal(s), r.standard_normal(s)),
    "sub": lambda r, s: (r.standard_normal(s), r.standard_normal(s)),
    "mul": lambda r, s: (r.standard_normal(s), r.standard_normal(s)),
    "div": lambda r, s: (r.standard_normal(s), away_from_zero(r, s, 0.5, 2.0)),
    "pow": lambda r, s: (r.uniform(0.5, 2.0, s), r.uniform(-1.5, 2.5, s)),
    "maximum": _pair_apart,
    "minimum": _pair_apart,
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradient(name):
    a, b = BINARY[name](rng(4), (3, 4))
    g, t = graph_with_params({"a": a, "b": b})
    out = g.add1(name, [t["a"], t["b"]])
    check_graph_gradient(g, out, {"a": a, "b": b})


def test_fma_gradient():
    r = rng(8)
    a, b, c = (r.standard_normal((3, 4)) for _ in range(3))
    g, t = graph_with_params({"a": a, "b": b, "c": c})
    out = g.add1("fma", [t["a"], t["b"], t["c"]])
    np.testing.assert_allclose(
        interpreter.run(_with_output(g, out), {}, {"a": a, "b": b, "c": c}, float_dtype=F64)["out"],
        a * b + c,
        rtol=1e-12,
    )
    check_graph_gradient(g, out, {"a": a, "b": b, "c": c})


def test_mod_gradient():
    """x mod y = x - y * floor(x / y): d/dx = 1, d/dy = -floor(x / y) (as torch.remainder)."""
    r = rng(5)
    y = r.uniform(1.5, 2.5, (2, 3))
    k = np.array([[-2, -1, 1], [2, 1, -1]], np.float64)
    x = y * (k + r.uniform(0.2, 0.8, (2, 3)))  # x / y stays away from an integer
    g, t = graph_with_params({"x": x, "y": y})
    out = g.add1("mod", [t["x"], t["y"]])
    np.testing.assert_allclose(
        interpreter.run(_with_output(g, out), {}, {"x": x, "y": y}, float_dtype=F64)["out"], np.mod(x, y), rtol=1e-12
    )
    check_graph_gradient(g, out, {"x": x, "y": y})


def _with_output(g, out, name="out"):
    g.outputs[name] = out
    return g


def test_binary_broadcast_through_ops():
    """a [3, 1] * b [4] through ops.mul: the broadcast VJPs sum the gradient back."""
    r = rng(6)
    a, b = r.standard_normal((3, 1)), r.standard_normal((4,))
    g, t = graph_with_params({"a": a, "b": b})
    out = ops.mul(t["a"], t["b"])
    assert out.shape == (3, 4) and "broadcast" in ops_in(g)
    check_graph_gradient(g, out, {"a": a, "b": b})


def test_select_gradient():
    r = rng(7)
    a, b = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    cond = r.random((3, 4)) < 0.5
    cond[0, 0], cond[0, 1] = True, False
    g, t = graph_with_params({"a": a, "b": b})
    c = ops.constant(g, cond, "bool")
    out = g.add1("select", [c, t["a"], t["b"]])
    grads = check_graph_gradient(g, out, {"a": a, "b": b})
    assert np.all(grads["grad:a"][~cond] == 0) and np.all(grads["grad:b"][cond] == 0)


# ---- cast ---------------------------------------------------------------------------------------------------
def test_cast_float_gradient():
    x = rng(8).standard_normal((2, 3))
    g, t = graph_with_params({"x": x})
    y = g.add1("cast", [t["x"]], dtype="f64")
    y = g.add1("mul", [y, g.add1("exp", [y])])
    out = g.add1("cast", [y], dtype="f32")
    assert len(g.nodes_with("cast")) == 2
    check_graph_gradient(g, out, {"x": x})


def test_cast_through_integer_has_zero_gradient():
    x = rng(9).uniform(0.2, 0.8, (2, 3)) + np.arange(6).reshape(2, 3)  # away from integers
    g, t = graph_with_params({"x": x})
    i = g.add1("cast", [t["x"]], dtype="i32")
    back = g.add1("cast", [i], dtype="f32")
    out = g.add1("add", [back, t["x"]])  # gradient 1 from x, 0 through the integer
    grads = check_graph_gradient(g, out, {"x": x})
    R = np.random.default_rng(123).standard_normal(x.shape)
    np.testing.assert_allclose(grads["grad:x"], R, rtol=1e-12)


# ---- shape ops --------------------------------------------------------------------------------------------------
SHAPE_CASES = {
    "broadcast-lead-and-size1": ((3, 1), lambda g, x: g.add1("broadcast", [x], shape=(2, 3, 4))),
    "broadcast-scalar": ((), lambda g, x: g.add1("broadcast", [x], shape=(2, 3))),
    "broadcast-middle": ((2, 1, 3), lambda g, x: g.add1("broadcast", [x], shape=(2, 4, 3))),
    "reshape": ((2, 6), lambda g, x: g.add1("reshape", [x], shape=(3, 2, 2))),
    "transpose-201": ((2, 3, 4), lambda g, x: g.add1("transpose", [x], perm=(2, 0, 1))),
    "transpose-10": ((3, 5), lambda g, x: g.add1("transpose", [x], perm=(1, 0))),
    "slice-steps": ((7, 6), lambda g, x: g.add1("slice", [x], starts=(1, 0), stops=(7, 5), steps=(2, 3))),
    "slice-steps-uneven": ((8, 5), lambda g, x: g.add1("slice", [x], starts=(0, 1), stops=(7, 5), steps=(3, 2))),
    "slice-3d": ((3, 4, 5), lambda g, x: g.add1("slice", [x], starts=(1, 0, 2), stops=(3, 4, 4), steps=(1, 2, 1))),
    "pad": ((3, 2), lambda g, x: g.add1("pad", [x], lo=(1, 0), hi=(2, 1), interior=(0, 0))),
    "pad-interior": ((3, 2), lambda g, x: g.add1("pad", [x], lo=(1, 0), hi=(2, 1), interior=(1, 2))),
    "reduce_sum-02": ((2, 3, 4), lambda g, x: g.add1("reduce_sum", [x], axes=(0, 2))),
    "reduce_sum-all": ((2, 3), lambda g, x: g.add1("reduce_sum", [x], axes=(0, 1))),
    "reduce_max-1": ((3, 4), lambda g, x: g.add1("reduce_max", [x], axes=(1,))),
    "reduce_max-02": ((2, 3, 4), lambda g, x: g.add1("reduce_max", [x], axes=(0, 2))),
    "reduce_max-all": ((3, 4), lambda g, x: g.add1("reduce_max", [x], axes=(0, 1))),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_shape_op_gradient(case):
    shape, make = SHAPE_CASES[case]
    x = rng(10).permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.1 + 0.05
    x = x + rng(11).uniform(0, 0.01, shape)  # distinct values: no reduce_max ties
    g, t = graph_with_params({"x": x})
    out = make(g, t["x"])
    assert case.split("-")[0] in ops_in(g)
    check_graph_gradient(g, out, {"x": x})


def test_pad_is_slices_gradient():
    """The VJP of a stepped slice is an interior pad, and the VJP of that pad is the slice again:
    differentiate pad(slice(x)) end to end."""
    x = rng(12).standard_normal((7, 5))
    g, t = graph_with_params({"x": x})
    s = g.add1("slice", [t["x"]], starts=(1, 0), stops=(7, 5), steps=(2, 2))
    out = g.add1("pad", [g.add1("tanh", [s])], lo=(0, 1), hi=(1, 0), interior=(1, 1))
    check_graph_gradient(g, out, {"x": x})


@pytest.mark.parametrize("axis", [0, 1])
def test_concat_gradient(axis):
    r = rng(13)
    shapes = [(2, 1), (2, 3), (2, 2)] if axis == 1 else [(1, 3), (3, 3), (2, 3)]
    arrays = {f"x{i}": r.standard_normal(s) for i, s in enumerate(shapes)}
    g, t = graph_with_params(arrays)
    out = g.add1("concat", [t[k] for k in arrays], axis=axis)
    check_graph_gradient(g, out, arrays)


def test_gather_gradient_repeated_indices():
    table = rng(14).standard_normal((5, 3))
    idx = np.array([[0, 2, 2], [4, 0, 0]], np.int32)  # row 1 and 3 unused, 0 and 2 repeated
    g, t = graph_with_params({"table": table})
    out = g.add1("gather", [t["table"], ops.constant(g, idx, "i32")])
    assert out.shape == (2, 3, 3)
    grads = check_graph_gradient(g, out, {"table": table})
    assert np.all(grads["grad:table"][[1, 3]] == 0)


def test_gather_gradient_from_input_indices():
    table = rng(15).standard_normal((4, 2))
    g, t = graph_with_params({"table": table})
    idx = g.add1("input", type=TensorType("i32", (5,)), name="idx")
    out = g.add1("gather", [t["table"], idx])
    check_graph_gradient(g, out, {"table": table}, feeds={"idx": np.array([3, 1, 3, 3, 0], np.int32)})


def test_scatter_add_gradient_repeated_indices():
    upd = rng(16).standard_normal((4, 3))
    idx = np.array([1, 3, 1, 0], np.int32)
    g, t = graph_with_params({"upd": upd})
    out = g.add1("scatter_add", [ops.constant(g, idx, "i32"), t["upd"]], shape=(5, 3))
    check_graph_gradient(g, out, {"upd": upd})


# ---- matmul -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [False, True], ids=["2d", "batched"])
@pytest.mark.parametrize(
    "ta,tb", [(False, False), (True, False), (False, True), (True, True)], ids=["nn", "tn", "nt", "tt"]
)
def test_matmul_gradient(ta, tb, batched):
    m, k, n = 3, 4, 2
    lead = (2,) if batched else ()
    a_shape = lead + ((k, m) if ta else (m, k))
    b_shape = lead + ((n, k) if tb else (k, n))
    r = rng(17)
    a, b = r.standard_normal(a_shape), r.standard_normal(b_shape)
    g, t = graph_with_params({"a": a, "b": b})
    out = g.add1("matmul", [t["a"], t["b"]], ta=ta, tb=tb)
    assert out.shape == lead + (m, n)
    g.outputs["y"] = out
    y = interpreter.run(g, {}, {"a": a, "b": b}, float_dtype=F64)["y"]
    am = np.swapaxes(a, -1, -2) if ta else a
    bm = np.swapaxes(b, -1, -2) if tb else b
    np.testing.assert_allclose(y, am @ bm, rtol=1e-12)
    del g.outputs["y"]
    check_graph_gradient(g, out, {"a": a, "b": b})


def test_matmul_rank3_by_rank2_via_ops():
    """ops.matmul folds [B, T, k] @ [k, n] into one 2-D product."""
    r = rng(18)
    a, b = r.standard_normal((2, 3, 4)), r.standard_normal((4, 5))
    g, t = graph_with_params({"a": a, "b": b})
    out = ops.matmul(t["a"], t["b"])
    assert out.shape == (2, 3, 5)
    check_graph_gradient(g, out, {"a": a, "b": b})


# ---- windows ------------------------------------------------------------------------------------------------------------
# (stride, padding, dilation, groups)
CONV_CASES = [
    ((1, 1), (0, 0), (1, 1), 1),
    ((1, 1), (1, 1), (1, 1), 1),
    ((2, 2), (0, 0), (1, 1), 1),
    ((2, 2), (1, 1), (1, 1), 1),
    ((2, 1), (1, 0), (1, 1), 1),
    ((1, 2), (2, 1), (2, 1), 1),
    ((1, 1), (1, 1), (1, 1), 2),
    ((2, 1), (1, 2), (1, 2), 4),
]


def naive_conv2d(x, w, stride, padding, dilation=(1, 1), groups=1):
    """Each output position by its window's taps, one group of channels at a time."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, H, W = xp.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    ho, wo = (H - (kh - 1) * dh - 1) // sh + 1, (W - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for g in range(groups):
        for i in range(ho):
            for j in range(wo):
                patch = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    i * sh : i * sh + (kh - 1) * dh + 1 : dh,
                    j * sw : j * sw + (kw - 1) * dw + 1 : dw,
                ]
                out[:, g * og : (g + 1) * og, i, j] = np.einsum("nckl,ockl->no", patch, w[g * og : (g + 1) * og])
    return out


@pytest.mark.parametrize(
    "stride,padding,dilation,groups",
    CONV_CASES,
    ids=[f"s{s[0]}{s[1]}-p{p[0]}{p[1]}-d{d[0]}{d[1]}-g{k}" for s, p, d, k in CONV_CASES],
)
def test_conv2d_gradient_and_forward(stride, padding, dilation, groups):
    r = rng(19)
    x = r.standard_normal((2, 4, 6, 5))  # H = 6 with stride 2 and k = 3 leaves a row unused
    w = r.standard_normal((4, 4 // groups, 3, 2))  # a non-square kernel
    g, t = graph_with_params({"x": x, "w": w})
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = g.add1("conv2d", [t["x"], t["w"]], **attrs)
    g.outputs["y"] = out
    y = interpreter.run(g, {}, {"x": x, "w": w}, float_dtype=F64)["y"]
    np.testing.assert_allclose(y, naive_conv2d(x, w, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12)
    del g.outputs["y"]
    check_graph_gradient(g, out, {"x": x, "w": w})


def naive_pool(x, kernel, stride, padding, kind):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


POOL_CASES = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 0)), ((2, 2), (1, 1), (0, 0))]
POOL_IDS = [f"k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}" for k, s, p in POOL_CASES]


@pytest.mark.parametrize("kernel,stride,padding", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradient_and_forward(kind, kernel, stride, padding):
    shape = (2, 2, 5, 6)
    # a shuffled ramp: every value distinct (no max ties), gaps far larger than the FD step
    x = rng(20).permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.05 - 2.0
    g, t = graph_with_params({"x": x})
    out = g.add1(f"{kind}pool2d", [t["x"]], kernel=kernel, stride=stride, padding=padding)
    g.outputs["y"] = out
    y = interpreter.run(g, {}, {"x": x}, float_dtype=F64)["y"]
    np.testing.assert_allclose(y, naive_pool(x, kernel, stride, padding, kind), rtol=1e-12)
    del g.outputs["y"]
    check_graph_gradient(g, out, {"x": x})


# ---- scan ------------------------------------------------------------------------------------------------------------------
SCAN_SRC = """
model m {{
    param xs: f32[2, 4, 3] = normal
    param W: f32[3, 3] = normal
    param U: f32[3, 3] = normal
    param h0: f32[2, 3] = normal
    param c0: f32[2, 3] = normal
    input r1: f32[{ys_shape}]
    input r2: f32[{ys_shape}]
    hs, cs = scan t in 4 ({opts}) carry h = h0, c = c0 {{
        c = 0.5 * c + tanh(xs[:, t] @ W + h)
        h = tanh(h @ U + c) * sigmoid(xs[:, t])
        yield h, c
    }}
    loss sum(hs * r1) + sum(cs * r2)
    output hs
    output cs
}}
"""

FINAL_SRC = """
model m {
    param xs: f32[2, 4, 3] = normal
    param W: f32[3, 3] = normal
    param h0: f32[2, 3] = normal
    param c0: f32[2, 3] = normal
    input r1: f32[2, 3]
    input r2: f32[2, 3]
    h, c = scan t in 4 (reverse = true) carry h = h0, c = c0 {
        c = c * sigmoid(xs[:, t]) + h
        h = tanh(c @ W) + 0.1 * h
    }
    loss sum(h * r1) + sum(c * r2 * c)
}
"""


def scan_reference(p, reverse, axis):
    h, c = p["h0"], p["c0"]
    hs, cs = [None] * 4, [None] * 4
    steps = range(3, -1, -1) if reverse else range(4)
    sig = lambda v: 1 / (1 + np.exp(-v))
    for t in steps:
        x = p["xs"][:, t]
        c = 0.5 * c + np.tanh(x @ p["W"] + h)
        h = np.tanh(h @ p["U"] + c) * sig(x)
        hs[t], cs[t] = h, c
    return np.stack(hs, axis), np.stack(cs, axis)


def _scan_params(model, seed):
    r = rng(seed)
    return {p.name: r.standard_normal(p.type.shape) * (0.6 if p.name in ("W", "U") else 1.0) for p in model.params}


def _check_model_gradient(model, feeds, params):
    results = gc.gradcheck(model, feeds, params, per_param=10_000)
    trainable = {p.name for p in model.params if p.trainable}
    assert {r.name for r in results} == trainable
    for res in results:
        assert res.rel < 1e-6 and res.ok, f"grad:{res.name}: {res}"
    grads = gradients(model, feeds, params)
    for name in trainable:
        assert np.abs(grads[f"grad:{name}"]).max() > 1e-6, f"grad:{name} is zero"


@pytest.mark.parametrize("axis", [1, 0], ids=["axis1", "axis0"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_scan_two_carries(reverse, axis):
    ys_shape = "2, 4, 3" if axis == 1 else "4, 2, 3"
    opts = f"reverse = {'true' if reverse else 'false'}" + (", axis = 0" if axis == 0 else "")
    model = build(SCAN_SRC.format(ys_shape=ys_shape, opts=opts))
    assert "scan" in ops_in(model.graph)
    params = _scan_params(model, 21)
    r = rng(22)
    shape = (2, 4, 3) if axis == 1 else (4, 2, 3)
    feeds = {"r1": r.standard_normal(shape), "r2": r.standard_normal(shape)}
    out = forward(model, feeds, params)
    hs, cs = scan_reference(params, reverse, axis)
    np.testing.assert_allclose(out["output:hs"], hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["output:cs"], cs, rtol=1e-12, atol=1e-12)
    _check_model_gradient(model, feeds, params)


def test_scan_final_carries_only_reverse():
    model = build(FINAL_SRC)
    params = _scan_params(model, 23)
    r = rng(24)
    feeds = {"r1": r.standard_normal((2, 3)), "r2": r.standard_normal((2, 3))}
    _check_model_gradient(model, feeds, params)


PARTIAL_SRC = """
model m {
    param xs: f32[2, 4, 3] = normal
    param W: f32[3, 3] = normal
    param h0: f32[2, 3] = normal
    param c0: f32[2, 3] = normal
    hs, cs = scan t in 4 carry h = h0, c = c0 {
        c = 0.5 * c + tanh(xs[:, t] @ W + h)
        h = tanh(c) * sigmoid(xs[:, t])
        yield h, c
    }
    loss sum(USED * USED)
}
"""


@pytest.mark.parametrize("used", ["hs", "cs"])
def test_scan_gradient_with_one_output_unused(used):
    """Only one of the two stacked outputs reaches the loss: the other gets no cotangent."""
    model = build(PARTIAL_SRC.replace("USED", used))
    _check_model_gradient(model, {}, _scan_params(model, 27))


NESTED_SRC = """
model m {
    param xs: f32[2, 4, 3, 3] = normal
    param W: f32[3, 3] = normal
    param h0: f32[2, 3] = normal
    hs = scan t in 4 carry h = h0 {
        xt = xs[:, t]
        inner = scan s in 3 carry a = h {
            a = tanh(a @ W + xt[:, s])
            yield a
        }
        h = h + mean(inner, 1)
        yield h
    }
    loss sum(hs * hs)
}
"""


def test_nested_scan_gradient():
    model = build(NESTED_SRC)
    _check_model_gradient(model, {}, _scan_params(model, 28))


def test_scan_gathers_integer_sequence():
    """An i32 sequence indexed with the step (no gradient), a table captured as an invariant."""
    src = """
model m {
    input ids: i32[2, 4]
    param E: f32[5, 3] = normal
    param U: f32[3, 3] = normal
    hs = scan t in 4 carry h = zeros[2, 3] {
        h = tanh(h @ U + gather(E, ids[:, t]))
        yield h
    }
    loss sum(hs * hs)
}
"""
    model = build(src)
    feeds = {"ids": np.array([[0, 2, 2, 4], [1, 0, 4, 4]], np.int32)}
    _check_model_gradient(model, feeds, _scan_params(model, 31))


def test_scan_symbolic_length():
    src = """
model m {
    input x: f32[B, T, 3]
    param W: f32[3, 3] = normal
    param h0: f32[3] = normal
    hs = scan t in T carry h = zeros[B, 3] + h0 {
        h = tanh(h @ W + x[:, t])
        yield h
    }
    loss mean(hs * hs)
}
"""
    model = build(src)
    feeds = {"x": rng(29).standard_normal((2, 5, 3))}
    _check_model_gradient(model, feeds, _scan_params(model, 30))


# ---- forward values against numpy ------------------------------------------------------------------------------------------
def _run1(make, arrays, feeds=None):
    g, t = graph_with_params(arrays)
    g.outputs["y"] = make(g, t)
    return interpreter.run(g, feeds or {}, arrays, float_dtype=F64)["y"]


def test_forward_logistic_is_stable_and_exact():
    x = np.array([-800.0, -30.0, -1.5, 0.0, 0.7, 30.0, 800.0])
    with np.errstate(over="ignore"):
        expected = 1 / (1 + np.exp(-x))
    y = _run1(lambda g, t: g.add1("logistic", [t["x"]]), {"x": x})
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-300)


def test_forward_erf_and_log1p():
    x = np.linspace(-3, 3, 13)
    y = _run1(lambda g, t: g.add1("erf", [t["x"]]), {"x": x})
    np.testing.assert_allclose(y, [math.erf(v) for v in x], rtol=1e-14)
    small = np.array([1e-12, -1e-10, 1e-5])
    y = _run1(lambda g, t: g.add1("log1p", [t["x"]]), {"x": small})
    np.testing.assert_allclose(y, np.log1p(small), rtol=1e-14)


def test_forward_pad_interior_and_stepped_slice():
    x = np.arange(6, dtype=np.float64).reshape(3, 2) + 1
    y = _run1(lambda g, t: g.add1("pad", [t["x"]], lo=(1, 0), hi=(2, 1), interior=(1, 2)), {"x": x})
    expected = np.zeros((1 + 3 + 2 + 2, 0 + 2 + 2 + 1))
    expected[1:6:2, 0:4:3] = x
    np.testing.assert_array_equal(y, expected)
    x = np.arange(42, dtype=np.float64).reshape(7, 6)
    y = _run1(lambda g, t: g.add1("slice", [t["x"]], starts=(1, 0), stops=(7, 5), steps=(2, 3)), {"x": x})
    np.testing.assert_array_equal(y, x[1:7:2, 0:5:3])


def test_forward_scatter_add_and_gather():
    upd = np.arange(12, dtype=np.float64).reshape(4, 3)
    idx = np.array([1, 3, 1, 0], np.int32)
    y = _run1(lambda g, t: g.add1("scatter_add", [ops.constant(g, idx, "i32"), t["u"]], shape=(5, 3)), {"u": upd})
    expected = np.zeros((5, 3))
    for i, row in zip(idx, upd):
        expected[i] += row
    np.testing.assert_array_equal(y, expected)
    y = _run1(lambda g, t: g.add1("gather", [t["u"], ops.constant(g, idx, "i32")]), {"u": upd})
    np.testing.assert_array_equal(y, upd[idx])


def test_forward_reductions_and_transpose():
    x = rng(25).standard_normal((2, 3, 4))
    np.testing.assert_allclose(
        _run1(lambda g, t: g.add1("reduce_sum", [t["x"]], axes=(0, 2)), {"x": x}), x.sum(axis=(0, 2)), rtol=1e-13
    )
    np.testing.assert_array_equal(
        _run1(lambda g, t: g.add1("reduce_max", [t["x"]], axes=(1,)), {"x": x}), x.max(axis=1)
    )
    np.testing.assert_array_equal(
        _run1(lambda g, t: g.add1("transpose", [t["x"]], perm=(2, 0, 1)), {"x": x}), np.transpose(x, (2, 0, 1))
    )


def test_reduce_max_tie_splits_gradient():
    """With tied maxima the gradient is shared equally (a subgradient that sums to the cotangent)."""
    x = np.array([[1.0, 3.0, 3.0, 0.0]])
    g, t = graph_with_params({"x": x})
    out = g.add1("reduce_max", [t["x"]], axes=(1,))
    g.outputs["loss"] = g.add1("reduce_sum", [out], axes=(0,))
    res = interpreter.run(train_step(g), {}, {"x": x}, float_dtype=F64)
    np.testing.assert_allclose(res["grad:x"], [[0.0, 0.5, 0.5, 0.0]])


def test_gradients_are_float64_accurate():
    """Sanity check of the harness itself: a wrong VJP must be caught (here: exp's gradient
    compared against the gradient of a different function)."""
    x = rng(26).standard_normal((2, 2))
    g, t = graph_with_params({"x": x})
    out = g.add1("exp", [t["x"]])
    grads = check_graph_gradient(g, out, {"x": x})
    R = np.random.default_rng(123).standard_normal(x.shape)
    assert rel_error(grads["grad:x"], R * np.exp(x)) < 1e-12
    assert rel_error(grads["grad:x"], R * np.exp(x) * 1.001) > 1e-4


# ---- replica_mean: K data-parallel replicas, emulated in K threads ---------------------------------------
class ThreadReplicas:
    """replica_mean among K threads that each run the graph on their slice of a batch: each
    thread's value, weighted by its share of the batch, summed over the threads (an
    allreduce, as runtime/engines/distributed.py ReplicaMean does over MPI)."""

    def __init__(self, shares: list):
        self.shares, self.values = shares, [None] * len(shares)
        self.barrier = threading.Barrier(len(shares))

    def of(self, rank: int):
        def mean(values):
            self.values[rank] = values * self.shares[rank]
            self.barrier.wait()
            total = sum(self.values)
            self.barrier.wait()  # every thread has read the values before any writes its next ones
            values[...] = total
            return values

        return mean


def run_replicas(graph, feeds: dict, params: dict, sizes: list) -> list:
    """The outputs of each of len(sizes) replicas, replica r on its rows of the feeds."""
    bounds = np.cumsum([0] + sizes)
    replicas = ThreadReplicas([s / bounds[-1] for s in sizes])
    outs = [None] * len(sizes)

    def run(r):
        part = {k: v[bounds[r] : bounds[r + 1]] for k, v in feeds.items()} | {"rng": np.array([0, 1], np.int32)}
        outs[r] = interpreter.run(graph, part, params, float_dtype=F64, replicas=replicas.of(r))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o is not None for o in outs), "a replica failed"
    return outs


SYNC_BN = """model m {
    input  x: f32[B, 3, 2, 2]
    target y: f32[B, 2]
    h = x |> conv2d(4, 1, bias = false) |> batchnorm |> tanh |> flatten
    loss mse(dense(h, 2), y)
}"""


def test_replica_mean_gradient_with_emulated_replicas():
    """batchnorm built for 2 replicas (sync_batchnorm), on slices of 5 and 3 examples: the
    replicas' losses weighted by their shares, their statistics and their weighted
    gradients are one process's on the 8 examples, and the gradient matches central
    differences of the weighted loss (replica_mean's VJP, unequal shares included)."""
    synced, alone = load_text(SYNC_BN, "m.dl").build(training=True, replicas=2), build(SYNC_BN)
    assert sum(synced.graph.op(n) == "replica_mean" for n in synced.graph.nx.nodes) == 3  # mean, variance, count
    assert "replica_mean" not in ops_in(alone.graph)
    r = rng(11)
    params = {p.name: r.standard_normal(p.type.shape) if p.trainable else np.ones(p.type.shape) for p in alone.params}
    feeds = {"x": r.standard_normal((8, 3, 2, 2)), "y": r.standard_normal((8, 2))}
    sizes = [5, 3]

    def weighted(outs, key):
        return sum(size / 8 * o[key] for size, o in zip(sizes, outs))

    outs = run_replicas(train_step(synced.graph), feeds, params, sizes)
    whole = gradients(alone, feeds, params)
    assert weighted(outs, "loss") == pytest.approx(float(whole["loss"]), rel=1e-12)
    updates = [k for k in whole if k.startswith("update:")]
    assert len(updates) == 2  # running mean and variance: the global batch's on every replica
    for key in updates:
        for o in outs:
            np.testing.assert_allclose(o[key], whole[key], rtol=1e-12, err_msg=key)
    trainable = {p.name: params[p.name] for p in alone.params if p.trainable}
    numeric = numeric_grad(
        lambda work: float(weighted(run_replicas(synced.graph, feeds, params | work, sizes), "loss")), trainable
    )
    for name in trainable:
        analytic = weighted(outs, f"grad:{name}")
        np.testing.assert_allclose(analytic, whole[f"grad:{name}"], rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(analytic, numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)
        assert np.abs(analytic).max() > 1e-4, name
