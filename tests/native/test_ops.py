"""The native backend against the numpy reference interpreter, op by op and layer by layer.

Every primitive a model can produce and every layer, activation and loss of the standard
library is compiled once (symbolic dims stay symbolic: one compile serves every shape)
and run on several shapes, including the odd sizes 1, 7, 13 and 129 and one shape drawn
at random per case. The forward values and the gradients of the compiled code must agree
with runtime/engines/interpreter.py in float32 to a relative 1e-4 (with an absolute floor scaled
by the largest magnitude of the array, for entries that are rounding noise around zero).

Two harnesses, over the cases of tests/helpers/native_cases.py (the ONNX tests export them too):

- primitive cases build a graph directly (like tests/ir/test_primitives_grad.py): inputs with
  symbolic shapes, the op, and its backward graph seeded with an input cotangent `ct_*`
  (`autodiff.backward`), so the compiled VJP is checked for every shape;
- model cases are `.dl` source: the model's `output`s are weighted by fixed random
  cotangent inputs `r_*` and added to the loss, and the train-step graph (`grad:<param>`
  for every trainable parameter, metrics, state updates and the outputs) is compared.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.passes.autodiff import backward
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.graph import Graph, Pattern, Tensor, TensorType
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.codegen import parallel
from dlc.compiler.native.lower import NotLowerable
from dlc.runtime.training import gradcheck as gc
from dlc.runtime.engines.native import Executable
from helpers.numeric import ops_in
from helpers.native_cases import (
    ACTIVATIONS,
    LAYERS,
    MODEL_INPUTS,
    NATIVE_PRIMS,
    PRIMS,
    SCAN_PARAMS,
    SCANS,
    SLOW_LAYERS,
    compare,
    model_feeds,
    primitive_feeds,
    run_native,
    run_reference,
    step_graph,
    with_random_size,
)


def primitive_graph(name: str) -> Graph:
    case = NATIVE_PRIMS[name]
    g = Graph(name)
    t = {n: g.add1("input", type=TensorType(dtype, shape), name=n) for n, (dtype, shape, _) in case.inputs.items()}
    built = case.build(g, t)
    outs = {"y": built} if isinstance(built, Tensor) else dict(built)
    g.outputs = dict(outs)
    if case.grad:
        seeds = []
        for k, o in outs.items():
            if o.type.is_float:
                seeds.append((o, g.add1("input", type=o.type, name=f"ct_{k}")))
        wrt = [t[n] for n, (dtype, _, _) in case.inputs.items() if dtype == "f32"]
        grads = backward(g, seeds, wrt)
        for x, gr in zip(wrt, grads):
            if gr is not None:
                g.outputs[f"d{g.attrs(x.node)['name']}"] = gr
        assert any(k.startswith("d") for k in g.outputs), f"{name}: no gradient reaches the inputs"
    return g


@pytest.mark.parametrize("name", list(NATIVE_PRIMS))
def test_primitive_forward_and_backward(name):
    graph = primitive_graph(name)
    case = NATIVE_PRIMS[name]
    want = set(case.ops or (name.split("-")[0],))
    assert want <= ops_in(graph), f"{name}: the graph lacks {want - ops_in(graph)}"
    compare(graph, primitive_feeds(name, graph), label=name)


TEAMS = [name for name in NATIVE_PRIMS if name.startswith(("conv2d", "maxpool2d", "avgpool2d")) or "-team-" in name]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(f"team-{n}")) for n in TEAMS])
def test_team_kernels_on_one_and_two_threads(name, threads, monkeypatch, tmp_path_factory):
    """The convolution, pooling and reduction kernels split the batch (or its parts, or
    a kept axis) over a team: here every one of them, however small (compiled afresh, into
    a cache of the case's own, which the other thread count reads: on one xdist worker)."""
    monkeypatch.setenv("DLC_NUM_THREADS", str(threads))
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / f"team-{name}"))
    monkeypatch.setattr(parallel, "PARALLEL_BELOW", 1)
    graph = primitive_graph(name)
    compare(graph, primitive_feeds(name, graph), label=f"{name} on {threads} threads")


def _max_pool_gradient_in_window_order(x, g, kernel, stride, padding):
    """dx of max pooling in float32: each window's gradient added to its first maximum (or
    its first NaN, as numpy's argmax) in the windows' order, a window of -inf adding
    nothing — what the native kernels compute, bit for bit."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    dx = np.zeros_like(x)
    for n, c, ho, wo in np.ndindex(*g.shape):
        best, where = -np.inf, None
        for i, j in np.ndindex(kh, kw):
            h, w = ho * sh + i - ph, wo * sw + j - pw
            if (
                0 <= h < x.shape[2]
                and 0 <= w < x.shape[3]
                and not np.isnan(best)
                and (x[n, c, h, w] > best or np.isnan(x[n, c, h, w]))
            ):
                best, where = x[n, c, h, w], (n, c, h, w)
        if where is not None:
            dx[where] += g[n, c, ho, wo]
    return dx


@pytest.mark.parametrize(
    "name",
    [
        "maxpool2d-k33-s22-wide-rows",
        "maxpool2d-k33-s11-wide-rows",
        "maxpool2d-k33-s23",
        "maxpool2d-k33-s22-p11",
        "maxpool2d-k32-s12-p10",
        "maxpool2d-k33-s22-nan",
    ],
)
def test_max_pool_gradients_of_overlapping_windows_add_in_the_windows_order(name):
    """Where windows overlap, an element's gradients are summed in the windows' order
    whichever loop computes them (row chunks of vectors at stride 1 or 2 along W, one
    window at a time otherwise): the same bits on every vector width."""
    graph = primitive_graph(name)
    exe = Executable(graph)
    attrs = graph.attrs(next(iter(graph.nodes_with("maxpool2d"))))
    for _, feeds in primitive_feeds(name, graph):
        got = run_native(exe, feeds, {})["dx"]
        want = _max_pool_gradient_in_window_order(
            feeds["x"], feeds["ct_y"], attrs["kernel"], attrs["stride"], attrs["padding"]
        )
        assert got.tobytes() == want.tobytes(), f"{name}: {np.nanmax(np.abs(got - want))}"


# ---- random draws and what the native backend does not compile ----------------------------------------
def test_random_orthogonal_is_refused_with_a_located_error():
    """Orthogonal draws (initializers, which run in the reference interpreter) are not
    compiled: NotLowerable is a located DlcError."""
    src = "model m {\n input x: f32[B, 4]\n output y = x @ random_orthogonal(4, 4)\n}"
    model = load_text(src, "m.dl").build(training=False)
    with pytest.raises(NotLowerable, match="random orthogonal") as err:
        Executable(model.graph)
    assert err.value.span is not None and err.value.span.line == 3


def test_random_normal_is_compiled_and_draws_the_reference_numbers():
    """Box-Muller on the counter-based generator: the same numbers on both engines, in a
    model body and inside a scan (a fresh draw at every step)."""
    src = """model m {
        input x: f32[B, T, 3]
        output noisy = x + 0.5 * random_normal(B, T, 3)
        output walk = scan t in T carry h = zeros[B, 3] {
            h = h + x[:, t] * random_normal(B, 3)
            yield h
        }
    }"""
    model = load_text(src, "m.dl").build(training=True)
    x = np.ones((5, 7, 3), np.float32)
    for seed in (0, 3):
        feeds = {"x": x, "rng": np.array([seed, 2], np.int32)}
        ref, nat = run_reference(model.graph, feeds, {}), run_native(Executable(model.graph), feeds, {})
        for name in ref:
            np.testing.assert_allclose(nat[name], ref[name], rtol=1e-6, atol=1e-6)
    z = ref["output:noisy"] - x
    assert abs(z.mean()) < 0.2 and 0.3 < z.std() < 0.7  # normal, scaled by 0.5


# ---- model cases: the standard library ------------------------------------------------------------------------------

SIZES_BT = [{"B": 1, "T": 7}, {"B": 7, "T": 13}, {"B": 13, "T": 1}]
RANGES_BT = {"B": (2, 16), "T": (2, 16)}


SCALE = "param s: f32[129] = ones\n "
LOSSES = {
    "mse": "loss mse(v * s, t)",
    "mae": "loss mae(v * s, t)",
    "huber": "loss huber(v * s, t * 3, 0.5)",
    "binary_cross_entropy": "loss binary_cross_entropy(sigmoid(2 * v * s), sigmoid(t))",
    "binary_cross_entropy_with_logits": "loss binary_cross_entropy_with_logits(3 * v * s, sigmoid(t))",
    "categorical_cross_entropy": "loss categorical_cross_entropy(v * s, softmax(t))",
    "sparse_cross_entropy": "loss sparse_cross_entropy(v * s, labels)",
    "perceptron_loss": "loss perceptron_loss(v * s, sign(t))",
    "hinge": "loss hinge(v * s, sign(t))",
    "l1": "loss mean(v * s) + 1e-2 * l1(params)",
    "l2": "loss mean(v * s) + 1e-2 * l2(params)",
    "accuracy": "h = v * s\n loss mean(h * h)\n metric acc = accuracy(h, labels)",
    "binary_accuracy": "h = sigmoid(v * s)\n loss mean(h)\n metric acc = binary_accuracy(h, sigmoid(t))",
}


MODEL_CASES = {
    **{f"layer-{k}": v for k, v in LAYERS.items()},
    **{f"act-{a}": f"{SCALE}output y = {a}(2 * v * s)" for a in ACTIVATIONS},
    **{f"loss-{k}": SCALE + v for k, v in LOSSES.items()},
    **{f"scan-{k}": SCAN_PARAMS + v for k, v in SCANS.items()},
}
SLOW_CASES = {f"layer-{k}": v for k, v in SLOW_LAYERS.items()}


def model_source(body: str) -> str:
    return f"model m {{{MODEL_INPUTS}\n    {body}\n}}"


def check_model(name: str, body: str, training: bool = True):
    model = load_text(model_source(body), f"{name}.dl").build(training=training)
    params = gc.init_params(model, seed=1)
    graph = step_graph(model) if training else model.graph
    if not training:
        graph.outputs = {k: v for k, v in graph.outputs.items() if k.startswith("output:")}
    if training:
        assert any(k.startswith("grad:") for k in graph.outputs), f"{name}: no trainable parameters"
    sizes = with_random_size(name, SIZES_BT, RANGES_BT)
    return compare(graph, model_feeds(name, model, graph, sizes), params, label=name)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_stdlib_forward_and_gradients(name):
    ref = check_model(name, MODEL_CASES[name])
    grads = [v for k, v in ref.items() if k.startswith("grad:")]
    assert any(np.abs(g).max() > 0 for g in grads) or name in ("act-step", "act-sign_step"), (
        f"{name}: every gradient is zero, the case does not exercise the backward pass"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_CASES))
def test_stdlib_more_variants(name):
    check_model(name, SLOW_CASES[name])


@pytest.mark.parametrize(
    "body",
    [
        "output y = dropout(v, 0.3)",
        "output y = batchnorm(img)",
        "output y = stacked(x, gru, 3, 2, rate = 0.2)",
        "output y = transformer_encoder_block(dense(x, 4), 2, 8, rate = 0.1, pre_norm = false)",
        # autodiff refuses integer carries, so this one runs forward only
        SCAN_PARAMS
        + """
    h, k = scan t in T carry h = zeros[B, 13], k = int(zeros[B, 13]) {
        k = k + int(x[:, t] > 0)
        h = tanh(h @ U + x[:, t] @ W) + float(k)
    }
    output h
    output k""",
    ],
    ids=["dropout", "batchnorm", "stacked", "encoder_block_post", "scan_integer_carry"],
)
def test_stdlib_evaluation_mode_forward(body, request):
    """The evaluation graphs differ (running statistics, no dropout): forward only."""
    check_model(request.node.callspec.id, body, training=False)


# ---- coverage: every primitive and every stdlib function is exercised above -------------------------------------
STDLIB = Path(__file__).parents[2] / "compiler" / "stdlib"
NOT_LAYERS = {"initializers.dl"}  # run by the reference interpreter (initial values)
HELPERS = {"conv_padding"}  # static: computes a padding pair, no tensors


def test_every_primitive_is_covered():
    covered = set()
    for name in PRIMS:
        covered |= ops_in(primitive_graph(name))
    for name in ["scan-nested", "layer-conv2d_same", "layer-embedding"]:
        model = load_text(model_source(MODEL_CASES[name]), "c.dl").build(training=True)
        covered |= ops_in(step_graph(model))
    missing = set(PRIMITIVES) - covered - {"param", "arg"}
    assert not missing, f"primitives without a native test: {sorted(missing)}"


def stdlib_calls() -> dict:
    """Each stdlib function (but the initializers) -> the stdlib functions its text names."""
    bodies = {}
    for path in STDLIB.glob("*.dl"):
        if path.name not in NOT_LAYERS:
            for chunk in re.split(r"^(?=def )", path.read_text(), flags=re.M):
                m = re.match(r"def (\w+)", chunk)
                if m:
                    bodies[m.group(1)] = chunk
    return {f: {g for g in bodies if g != f and re.search(rf"\b{g}\b", text)} for f, text in bodies.items()}


def test_every_stdlib_function_is_covered():
    """Every function is called by a case, directly or from another function a case calls
    (the encoder and decoder blocks, multi-head attention: through the transformer cases)."""
    calls = stdlib_calls()
    sources = " ".join(MODEL_CASES.values())
    reached = {f for f in calls if re.search(rf"\b{f}\b", sources)}
    todo = list(reached)
    while todo:
        for g in calls[todo.pop()]:
            if g not in reached:
                reached.add(g)
                todo.append(g)
    missing = set(calls) - reached - HELPERS
    assert not missing, f"stdlib functions without a native test: {sorted(missing)}"
    assert {
        "transformer_encoder_block",
        "transformer_decoder_block",
        "multi_head_attention",
        "self_attention",
        "softmax",
        "layernorm",
    } <= reached


TESTED_DTYPES = ("f32", "f64", "i32", "bool")
REDUCTIONS = ("reduce_sum", "reduce_max", "argmax")


def operand_dtype(graph: Graph, n: int) -> str:
    """The dtype a node works on: its last operand's (a select's branches, a comparison's
    operands, a cast's source)."""
    return graph.inputs(n)[-1].dtype


def test_every_primitive_is_covered_on_every_dtype_its_type_rule_accepts():
    """Each (elementwise primitive or reduction, dtype) the records accept has a case:
    the scalar rules and the reductions' combining code depend on the dtype."""
    covered = set()
    for name in PRIMS:
        graph = primitive_graph(name)
        covered |= {(graph.op(n), operand_dtype(graph, n)) for n in graph.nx.nodes if graph.inputs(n)}
    wanted = {
        (p.name, d)
        for p in PRIMITIVES.values()
        if p.pattern is Pattern.ELEMENTWISE or p.name in REDUCTIONS
        for d in p.dtypes
        if d in TESTED_DTYPES and (p.name, d) != ("reduce_sum", "bool")
    }
    # reduce_sum never sees a bool: `sum` and `mean` count trues in i32 (compiler/frontend/builtins.py)
    missing = wanted - covered
    assert not missing, f"(primitive, dtype) without a native test: {sorted(missing)}"
