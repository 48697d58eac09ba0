"""Shared helpers for the numeric test suites (gradients, torch parity, parameter counts).

Everything here runs in float64: the interpreter is asked for `float_dtype="f64"` and
the finite differences are central differences with a small step.
"""

from __future__ import annotations

import numpy as np
import pytest

from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.ir.dims import numel
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.graph import Graph, TensorType
from dlc.runtime.engines import interpreter

F64 = "f64"


# ---- building and running .dl models ------------------------------------------------------------
def build(source: str, training: bool = True, filename: str = "test.dl"):
    """Parse and build the (last) model of `source`; a DlcError fails the test with its rendering."""
    try:
        return load_text(source, filename).build(training=training)
    except DlcError as e:
        pytest.fail("dlc rejected the test model:\n" + e.render(), pytrace=False)


def engine_gradients(source: str, backend: str, params: dict, feeds: dict) -> tuple:
    """The engine `backend` built for `source` (`native` must compile it, never fall back)
    and one batch's scalars and flat float32 gradients (SGD, split: the gradients alone)."""
    from dlc.runtime.engines.backends import make_engine
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.compiler.frontend.settings import Call

    train, evaluation = build(source, training=True), build(source, training=False)
    optimizer = make_optimizer(Call("sgd", [], {"lr": 0.1}))
    engine = make_engine(backend, train, evaluation, optimizer, [p.name for p in train.params], split=True)
    assert engine.name == backend
    params = {k: v.astype(np.float32) for k, v in params.items()}
    scalars, flat = engine.gradients(params, optimizer.init(params), feeds, np.array([0, 1], np.int32))
    return engine, scalars, flat


def param_names(model) -> list:
    return [p.name for p in model.params]


def trainable_count(model) -> int:
    return int(sum(numel(p.type.shape) for p in model.params if p.trainable))


def state_count(model) -> int:
    return int(sum(numel(p.type.shape) for p in model.params if not p.trainable))


def forward(model, feeds: dict, params: dict) -> dict:
    return interpreter.run(model.graph, _with_rng(feeds), params, float_dtype=F64)


def gradients(model, feeds: dict, params: dict) -> dict:
    """Run the train-step graph: loss, updates and grad:<param> for every trainable param."""
    return interpreter.run(train_step(model.graph), _with_rng(feeds), params, float_dtype=F64)


def _with_rng(feeds: dict) -> dict:
    feeds = dict(feeds)
    feeds.setdefault("rng", np.array([0, 1], np.int32))
    return feeds


def check_params_given(model, params: dict):
    """Every parameter and state of the model is in `params` with its declared shape
    (so a renamed parameter fails loudly instead of silently using another value)."""
    declared = {p.name: tuple(p.type.shape) for p in model.params}
    missing = sorted(set(declared) - set(params))
    extra = sorted(set(params) - set(declared))
    assert not missing and not extra, f"params differ: missing {missing}, unknown {extra}; model has {declared}"
    for name, shape in declared.items():
        assert tuple(np.shape(params[name])) == shape, f"{name}: model wants {shape}, got {np.shape(params[name])}"


# ---- comparisons ------------------------------------------------------------------------------------
def rel_error(actual, expected) -> float:
    """max |actual - expected| / max(|actual|, |expected|) (0 when both are 0)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    scale = max(np.abs(a).max(initial=0.0), np.abs(e).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(a - e).max() / scale)


def assert_close(actual, expected, rtol: float = 1e-5, what: str = "", atol: float = 1e-10):
    """Relative agreement, scaled by the largest magnitude of the two arrays. Arrays that
    are both zero up to rounding (|difference| < atol, e.g. the gradient of a key bias,
    which softmax cancels) also agree: their relative error is only rounding noise."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values {a}"
    err = rel_error(a, e)
    if np.abs(a - e).max(initial=0.0) < atol:
        return
    assert err < rtol, (
        f"{what}: relative error {err:.3g} >= {rtol:g}\n"
        f"actual:\n{np.array2string(a, precision=8)}\nexpected:\n{np.array2string(e, precision=8)}"
    )


# ---- graph-level gradient checks ------------------------------------------------------------------------
def graph_with_params(arrays: dict) -> tuple:
    """A new graph with one trainable f32 param per array (run in float64)."""
    g = Graph("test")
    ts = {
        name: g.add1("param", type=TensorType("f32", tuple(np.shape(a))), name=name, trainable=True)
        for name, a in arrays.items()
    }
    return g, ts


def weighted_sum_loss(out, seed: int = 123):
    """sum(out * R) for a fixed random R: every output element gets a distinct weight."""
    g = out.graph
    R = np.random.default_rng(seed).standard_normal(out.shape)
    weighted = ops.mul(out, ops.constant(g, R, "f32"))
    return ops.reduce("reduce_sum", weighted, tuple(range(out.rank))) if out.rank else weighted


def numeric_grad(loss_fn, arrays: dict, eps: float = 1e-6) -> dict:
    """Central differences of loss_fn(arrays) w.r.t. every entry of every array."""
    work = {k: np.array(v, np.float64) for k, v in arrays.items()}
    grads = {}
    for name, value in work.items():
        flat = value.reshape(-1)
        g = np.zeros(flat.size)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            up = loss_fn(work)
            flat[i] = orig - eps
            down = loss_fn(work)
            flat[i] = orig
            g[i] = (up - down) / (2 * eps)
        grads[name] = g.reshape(value.shape)
    return grads


def check_graph_gradient(
    g: Graph, out, arrays: dict, feeds: dict | None = None, tol: float = 1e-6, nonzero: bool = True
) -> dict:
    """Differentiate sum(out * R) with train_step and compare every entry of every param's
    gradient with central differences. Returns the analytic gradients."""
    feeds = dict(feeds or {})
    g.outputs["loss"] = weighted_sum_loss(out)
    step = train_step(g)
    analytic = interpreter.run(step, feeds, arrays, float_dtype=F64)

    def loss_fn(work):
        return float(interpreter.run(g, feeds, work, float_dtype=F64)["loss"])

    numeric = numeric_grad(loss_fn, arrays)
    for name in arrays:
        a = analytic[f"grad:{name}"]
        n = numeric[name]
        assert a.shape == n.shape, f"grad:{name} has shape {a.shape}, the param {n.shape}"
        err = rel_error(a, n)
        assert err < tol, (
            f"grad:{name}: relative error {err:.3g} vs central differences\n"
            f"analytic:\n{np.array2string(a, precision=6)}\nnumeric:\n{np.array2string(n, precision=6)}"
        )
        if nonzero:
            assert np.abs(n).max() > 1e-6, f"grad:{name} is zero: the test does not exercise it"
    return analytic


def ops_in(g: Graph) -> set:
    """Every op in the graph and in its nested scan bodies."""
    found = set()
    for n in g.nx.nodes:
        found.add(g.op(n))
        for v in g.attrs(n).values():
            if isinstance(v, Graph):
                found |= ops_in(v)
    return found
