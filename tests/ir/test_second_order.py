"""Second derivatives: the VJP of every primitive is differentiable, and Hessian-vector
products (autodiff.hvp_graph) agree with finite differences of the gradient.

Per primitive, the VJP itself is differentiated: a graph computes the VJP of the op at x
for a cotangent parameter `ct` (autodiff.backward), and the gradient of sum(VJP * R) with
respect to x and ct is compared with central differences in float64
(helpers/numeric.py: check_graph_gradient), as tests/ir/test_primitives_grad.py does for the
op. Small models' HVPs are checked on both engines (gradcheck.hvp_check), one against
torch.autograd, and `dlc gradcheck --hessian` runs on the examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.ir import ops
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.passes.autodiff import backward, hvp_graph
from dlc.runtime.cli import main
from dlc.runtime.engines import interpreter
from dlc.runtime.training import gradcheck as gc

from helpers.numeric import F64, build, check_graph_gradient, graph_with_params, ops_in, weighted_sum_loss

EXAMPLES = Path(__file__).parents[2] / "examples"


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(r, s):
    return r.standard_normal(s)


def away_from_zero(r, s, lo=0.3, hi=2.0):
    return r.choice([-1.0, 1.0], size=s) * r.uniform(lo, hi, s)


def distinct(r, s):
    """A shuffled ramp: no two values tie (max, pooling), gaps far above the differences' step."""
    return r.permutation(np.arange(int(np.prod(s)), dtype=np.float64)).reshape(s) * 0.05 - 1.0


def apart(r, s):
    """Two operands that never tie (maximum, minimum)."""
    a = r.standard_normal(s)
    return a, a + away_from_zero(r, s, 0.2, 1.0)


# ---- the VJP of every primitive, differentiated -------------------------------------------------------------
ALL = range(3)  # flat in every parameter of a case


def case(make, *samplers, shapes=((3, 4),), ops_=(), flat=()):
    """An op applied to float parameters x0, x1, ... drawn by `samplers` (one sampler may
    draw a pair), each of its own of `shapes`, the last repeated; `ops_`: the primitives
    the VJP graph must hold besides the op; `flat`: the parameters the VJP is constant in
    wherever it has a derivative (the operands of a linear op, of abs, of max pooling), so
    that derivative is zero."""
    return make, samplers, shapes, ops_, flat


def unary(name, sampler=normal, flat=()):
    return case(lambda g, x: g.add1(name, x), sampler, flat=flat)


def binary(name, sampler=lambda r, s: (r.standard_normal(s), r.standard_normal(s)), flat=()):
    return case(lambda g, x: g.add1(name, x), sampler, flat=flat)


def conv(stride, padding, dilation=(1, 1), groups=1):
    return case(
        lambda g, x: g.add1("conv2d", x, stride=stride, padding=padding, dilation=dilation, groups=groups),
        normal,
        normal,
        shapes=((2, 2, 6, 5), (4, 2 // groups, 3, 2)),
        ops_=("conv2d_input_grad", "conv2d_weight_grad"),
    )


def pool(kind, kernel, stride, padding):
    return case(
        lambda g, x: g.add1(f"{kind}pool2d", x, kernel=kernel, stride=stride, padding=padding),
        distinct,
        shapes=((2, 2, 5, 6),),
        ops_=(f"{kind}pool2d_grad",),
        flat=ALL,
    )


WINDOW = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=1)
POOL = dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1))
IDX = np.array([[0, 2, 2], [4, 0, 0]], np.int32)  # rows 1 and 3 unused, 0 and 2 repeated

CASES = {
    **{name: unary(name) for name in ("exp", "expm1", "tanh", "logistic", "sin", "cos", "erf")},
    "neg": unary("neg", flat=ALL),
    "replica_mean": unary("replica_mean", flat=ALL),
    "log": unary("log", lambda r, s: r.uniform(0.5, 2.5, s)),
    "log1p": unary("log1p", lambda r, s: r.uniform(-0.6, 2.0, s)),
    "sqrt": unary("sqrt", lambda r, s: r.uniform(0.4, 3.0, s)),
    "abs": unary("abs", away_from_zero, flat=ALL),
    "add": binary("add", flat=ALL),
    "sub": binary("sub", flat=ALL),
    "mul": binary("mul"),
    "div": binary("div", lambda r, s: (r.standard_normal(s), away_from_zero(r, s, 0.5, 2.0))),
    # x mod e^y, x / e^y kept away from integers: mod's own VJP is flat, e^y's is not
    "mod": case(
        lambda g, x: g.add1("mod", [x[0], g.add1("exp", [x[1]])]),
        lambda r, s: (1.7 * (r.uniform(0.2, 0.8, s) + r.integers(0, 3, s)), np.full(s, np.log(1.7))),
        flat=(0,),
    ),
    "pow": binary("pow", lambda r, s: (r.uniform(0.5, 2.0, s), r.uniform(-1.5, 2.5, s))),
    "maximum": binary("maximum", apart, flat=ALL),
    "minimum": binary("minimum", apart, flat=ALL),
    "fma": case(lambda g, x: g.add1("fma", x), normal, normal, normal, flat=(2,)),
    "select": case(
        lambda g, x: g.add1("select", [ops.compare("gt", x[0], 0.0), x[1], g.add1("tanh", [x[0]])]),
        normal,
        normal,
        flat=(1,),
    ),
    "cast": case(lambda g, x: g.add1("cast", [g.add1("exp", [g.add1("cast", x, dtype="f64")])], dtype="f32"), normal),
    "broadcast": case(lambda g, x: g.add1("broadcast", [g.add1("tanh", x)], shape=(2, 3, 4)), normal, shapes=((3, 1),)),
    "reshape": case(lambda g, x: g.add1("reshape", [g.add1("sin", x)], shape=(2, 6)), normal),
    "transpose": case(lambda g, x: g.add1("transpose", [g.add1("sin", x)], perm=(1, 0)), normal),
    "slice": case(lambda g, x: g.add1("slice", [g.add1("sin", x)], starts=(1, 0), stops=(3, 4), steps=(1, 3)), normal),
    "pad": case(lambda g, x: g.add1("pad", [g.add1("sin", x)], lo=(1, 0), hi=(2, 1), interior=(1, 2)), normal),
    "concat": case(
        lambda g, x: g.add1("concat", [g.add1("sin", [x[0]]), x[0], g.add1("exp", [x[1]])], axis=1), normal, normal
    ),
    "gather": case(
        lambda g, x: g.add1("gather", [g.add1("sin", x), ops.constant(g, IDX, "i32")]),
        normal,
        shapes=((5, 3),),
        ops_=("scatter_add",),
    ),
    "scatter_add": case(
        lambda g, x: g.add1("scatter_add", [ops.constant(g, IDX, "i32"), g.add1("sin", x)], shape=(5, 3)),
        normal,
        shapes=((2, 3, 3),),
        ops_=("gather",),
    ),
    "reduce_sum": case(lambda g, x: g.add1("reduce_sum", [g.add1("sin", x)], axes=(1,)), normal),
    "reduce_max": case(lambda g, x: g.add1("reduce_max", [g.add1("mul", [x[0], x[0]])], axes=(0,)), distinct),
    "matmul": case(lambda g, x: g.add1("matmul", x, ta=False, tb=False), normal, normal, shapes=((3, 4), (4, 2))),
    "matmul-tn": case(
        lambda g, x: g.add1("matmul", x, ta=True, tb=True), normal, normal, shapes=((2, 4, 3), (2, 5, 4))
    ),
    "conv2d-s11-p00": conv((1, 1), (0, 0)),
    "conv2d-s22-p11": conv((2, 2), (1, 1)),
    "conv2d-s21-p10": conv(**WINDOW),
    "conv2d-dilated-grouped": conv((1, 1), (1, 1), (2, 1), 2),
    "conv2d_input_grad": case(
        lambda g, x: g.add1("conv2d_input_grad", x, input_hw=(6, 5), **WINDOW),
        normal,
        normal,
        shapes=((2, 3, 3, 4), (3, 2, 3, 2)),
        ops_=("conv2d", "conv2d_weight_grad"),
    ),
    "conv2d_weight_grad": case(
        lambda g, x: g.add1("conv2d_weight_grad", x, kernel=(3, 2), **WINDOW),
        normal,
        normal,
        shapes=((2, 2, 6, 5), (2, 3, 3, 4)),
        ops_=("conv2d", "conv2d_input_grad"),
    ),
    "maxpool2d-k22-s22-p00": pool("max", (2, 2), (2, 2), (0, 0)),
    "maxpool2d-k32-s21-p11": pool("max", **POOL),
    "avgpool2d-k22-s22-p00": pool("avg", (2, 2), (2, 2), (0, 0)),
    "avgpool2d-k32-s21-p11": pool("avg", **POOL),
    "maxpool2d_grad": case(
        lambda g, x: g.add1("maxpool2d_grad", x, **POOL),
        distinct,
        normal,
        shapes=((2, 2, 5, 6), (2, 2, 3, 7)),
        ops_=("maxpool2d_gather",),
        flat=ALL,
    ),
    "maxpool2d_gather": case(
        lambda g, x: g.add1("maxpool2d_gather", x, **POOL),
        distinct,
        normal,
        shapes=((2, 2, 5, 6),),
        ops_=("maxpool2d_grad",),
        flat=ALL,
    ),
    "avgpool2d_grad": case(
        lambda g, x: g.add1("avgpool2d_grad", x, input_hw=(5, 6), **POOL),
        normal,
        shapes=((2, 2, 3, 7),),
        ops_=("avgpool2d",),
        flat=ALL,
    ),
}

# the primitives whose VJP gives a float operand no cotangent (their derivative is zero
# wherever it exists), so that there is nothing to differentiate twice
NO_COTANGENT = {
    "sign",
    "stop_gradient",
    "argmax",
    "lt",
    "le",
    "gt",
    "ge",
    "eq",
    "ne",
    "logical_and",
    "logical_or",
    "logical_not",
}


def draw(samplers, shapes, seed) -> dict:
    r, values = rng(seed), []
    for i, sampler in enumerate(samplers):
        drawn = sampler(r, shapes[min(i, len(shapes) - 1)])
        values.extend(drawn if isinstance(drawn, tuple) else [drawn])
    return {f"x{i}": v for i, v in enumerate(values)}


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_is_differentiable(name):
    make, samplers, shapes, extra, flat = CASES[name]
    arrays = draw(samplers, shapes, seed=len(name))
    g, t = graph_with_params(arrays)
    xs = [t[k] for k in arrays]
    out = make(g, xs)
    op = name.split("-")[0]
    assert op in ops_in(g)
    ct = rng(1).standard_normal(out.shape)
    ct_param = g.add1("param", type=out.type, name="ct", trainable=True)
    vjps = [v for v in backward(g, [(out, ct_param)], xs) if v is not None]
    assert vjps, f"{name}: the VJP gives no cotangent"
    assert set(extra) <= ops_in(g), f"{name}: the VJP graph lacks {set(extra) - ops_in(g)}"
    total = weighted_sum_loss(vjps[0], seed=10)
    for i, v in enumerate(vjps[1:]):
        total = total + weighted_sum_loss(v, seed=11 + i)
    grads = check_graph_gradient(g, total, arrays | {"ct": ct}, nonzero=False)
    assert np.abs(grads["grad:ct"]).max() > 1e-6, f"{name}: the VJP does not depend on the cotangent"
    for i, k in enumerate(arrays):  # the second derivative proper: of the VJP with respect to x
        if i in flat:
            assert not np.any(grads[f"grad:{k}"]), f"{name}: the VJP of a flat op depends on {k}"
        else:
            assert np.abs(grads[f"grad:{k}"]).max() > 1e-6, f"{name}: grad:{k} is zero: the case does not exercise it"


# the primitives whose VJP is a primitive without one: their second derivative is refused by name
NO_SECOND_DERIVATIVE = {"attention"}  # attention_grad: docs/native.md, "Attention"


def test_every_differentiable_primitive_has_a_case():
    covered = {name.split("-")[0] for name in CASES}
    differentiable = {name for name, p in PRIMITIVES.items() if p.vjp is not None}
    assert differentiable - covered - NO_COTANGENT - NO_SECOND_DERIVATIVE == {"scan"}  # scan: the models below
    assert NO_COTANGENT <= differentiable


def test_the_second_derivative_of_attention_is_refused_by_name():
    model = build(
        """
model m {
    input  x: f32[B, 4, 6]
    target y: f32[B, 4, 6]
    loss mse(self_attention(x, 2, rate = 0.0), y)
}""",
        filename="att.dl",
    )
    with pytest.raises(DlcError) as e:
        hvp_graph(model.graph)
    assert "the second derivative of attention" in e.value.message and "attention_grad" in e.value.message


# ---- Hessian-vector products of small models, on both engines ------------------------------------------------
MODELS = {
    "dense-tanh": """
model m {
    input  x: f32[B, 3]
    target y: f32[B, 2]
    h = dense(x, 4, tanh)
    loss mse(dense(h, 2), y)
}""",
    "conv-pool": """
model m {
    input  x: f32[B, 2, 6, 6]
    target y: i32[B]
    h = x |> conv2d(3, 3, padding = 1, act = tanh) |> maxpool2d(2) |> conv2d(2, 2) |> avgpool2d(2, 1)
    loss sparse_cross_entropy(dense(flatten(h), 3), y)
}""",
    "rnn-scan": """
model m {
    input  x: f32[B, T, 3]
    target y: f32[B, 2]
    param  W: f32[3, 4] = normal
    param  U: f32[4, 4] = normal
    param  V: f32[4, 2] = normal
    hs = scan t in T carry h = zeros[B, 4] {
        h = tanh(x[:, t] @ W + h @ U)
        yield h
    }
    loss mse(mean(hs, 1) @ V, y) + mean(hs * hs)
}""",
    "nested-scan": """
model m {
    param xs: f32[2, 3, 2, 3] = normal
    param W: f32[3, 3] = normal
    param h0: f32[2, 3] = normal
    hs = scan t in 3 carry h = h0 {
        xt = xs[:, t]
        inner = scan s in 2 carry a = h {
            a = tanh(a @ W + xt[:, s])
            yield a
        }
        h = h + mean(inner, 1)
        yield h
    }
    loss sum(hs * hs)
}""",
}


MODELS["checkpointed_lstm"] = """
model m {
    input x: f32[B, T, 2]
    hs = lstm(x, 3)
    loss sum(hs * hs)
}
train m {
    remat = 2       # T = 3: a padded segment; the checkpointed scan's VJP differentiated again
}"""


def model_case(name: str):
    model = build(MODELS[name])
    sizes = gc.default_sizes(model, 3)
    return model, gc.sample_inputs(model, sizes, seed=1), gc.init_params(model, seed=1)


@pytest.mark.parametrize("name", list(MODELS))
def test_hvp_of_small_models_on_both_engines(name):
    model, feeds, params = model_case(name)
    results = gc.hvp_check(model, feeds, params, seed=2)
    trainable = {p.name for p in model.params if p.trainable}
    assert {(r.name, r.engine) for r in results} == {(p, e) for p in trainable for e in gc.HVP_ENGINES}
    for r in results:
        assert r.ok and r.rel < (1e-6 if r.engine == "reference" else 1e-4), r
    # H v is not trivially zero: every parameter's part is
    graph = hvp_graph(model.graph)
    v = {f"v:{p}": rng(3).standard_normal(params[p].shape) for p in trainable}
    out = interpreter.run(graph, feeds | v, params, float_dtype=F64)
    for p in trainable:
        assert np.abs(out[f"hvp:{p}"]).max() > 1e-6, f"hvp:{p} is zero"
    if name.endswith("scan"):  # the gradient's reverse scan, differentiated into another
        assert sum(graph.op(n) == "scan" for n in graph.nx.nodes) >= 3


def test_hvp_check_catches_a_wrong_second_derivative(monkeypatch):
    """tanh's VJP reading its output through stop_gradient: the gradient stays right, its
    derivative loses the curvature of tanh, and both engines fail."""
    monkeypatch.setattr(PRIMITIVES["tanh"], "vjp", tanh_vjp_without_curvature)
    model, feeds, params = model_case("dense-tanh")
    assert all(r.ok for r in gc.gradcheck(model, feeds, params))
    failed = {(r.name, r.engine) for r in gc.hvp_check(model, feeds, params, seed=2) if not r.ok}
    assert ("h.W", "reference") in failed and ("h.W", "native") in failed


def tanh_vjp_without_curvature(n, g):
    y = n.graph.add1("stop_gradient", [n.outputs[0]])
    return [g[0] * (1.0 - y * y)]


def test_a_primitive_without_a_vjp_is_refused_as_a_second_derivative(monkeypatch):
    monkeypatch.setattr(PRIMITIVES["avgpool2d_grad"], "vjp", None)
    model = build(MODELS["conv-pool"], filename="pool.dl")
    with pytest.raises(DlcError) as e:
        hvp_graph(model.graph)
    assert "the second derivative of avgpool2d (line 5) is not available" in e.value.message
    assert "avgpool2d_grad" in e.value.message and e.value.span.line == 5


def test_hvp_matches_torch_double_backward():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    model = build("""
model m {
    input  x: f32[B, 3]
    target y: f32[B, 2]
    param  W1: f32[3, 4] = normal
    param  b1: f32[4] = normal
    param  W2: f32[4, 2] = normal
    loss mean((tanh(x @ W1 + b1) @ W2 - y) * (tanh(x @ W1 + b1) @ W2 - y))
}""")
    r = rng(4)
    params = {p.name: r.standard_normal(p.type.shape) for p in model.params}
    feeds = {"x": r.standard_normal((5, 3)), "y": r.standard_normal((5, 2)), "rng": np.array([0, 1], np.int32)}
    v = {name: r.standard_normal(a.shape) for name, a in params.items()}
    ours = interpreter.run(hvp_graph(model.graph), feeds | {f"v:{k}": a for k, a in v.items()}, params, float_dtype=F64)
    tp = {k: torch.tensor(a, requires_grad=True) for k, a in params.items()}
    x, y = torch.tensor(feeds["x"]), torch.tensor(feeds["y"])
    loss = ((torch.tanh(x @ tp["W1"] + tp["b1"]) @ tp["W2"] - y) ** 2).mean()
    grads = torch.autograd.grad(loss, list(tp.values()), create_graph=True)
    dot = sum((gr * torch.tensor(v[k])).sum() for gr, k in zip(grads, tp))
    theirs = dict(zip(tp, torch.autograd.grad(dot, list(tp.values()))))
    for k in params:
        np.testing.assert_allclose(ours[f"hvp:{k}"], theirs[k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


# ---- dlc gradcheck --hessian ---------------------------------------------------------------------------------------
FAST_EXAMPLES = ["xor_mlp", "simple_rnn", "digits_cnn"]


def check_example(name: str, capsys):
    status = main(["gradcheck", "--hessian", str(EXAMPLES / f"{name}.dl")])
    out = capsys.readouterr()
    assert status == 0, out.out + out.err
    assert out.out.startswith(f"Hessian-vector product check of {name} ")
    assert "reference (float64)" in out.out and "native (float32)" in out.out
    assert out.out.rstrip().endswith("parameters pass on both engines")


@pytest.mark.parametrize("name", FAST_EXAMPLES)
def test_gradcheck_hessian_on_examples(name, capsys):
    check_example(name, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.dl") if p.stem not in FAST_EXAMPLES))
def test_gradcheck_hessian_on_every_example(name, capsys):
    check_example(name, capsys)


def test_gradcheck_hessian_fails_with_status_1(monkeypatch, capsys):
    monkeypatch.setattr(PRIMITIVES["tanh"], "vjp", tanh_vjp_without_curvature)
    assert main(["gradcheck", "--hessian", str(EXAMPLES / "xor_mlp.dl")]) == 1
    out = capsys.readouterr()
    assert "FAIL" in out.out and "FAILED: " in out.err


def test_gradcheck_hessian_names_the_op_the_native_engine_cannot_compile(monkeypatch, capsys, tmp_path):
    """No fallback: an op the native engine does not compile in the HVP graph is an error at its line."""
    from dlc.compiler.native import rules
    from dlc.compiler.native.program import registry

    rules.load()
    monkeypatch.delitem(registry.LOWERINGS, "maxpool2d_gather")
    src = tmp_path / "pool.dl"
    src.write_text(MODELS["conv-pool"])
    assert main(["gradcheck", "--hessian", str(src)]) == 1
    err = capsys.readouterr().err
    assert "pool.dl:5:" in err and "does not compile maxpool2d_gather" in err
