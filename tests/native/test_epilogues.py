"""Epilogues (fusion.epilogues; kernels/gemm, kernels/conv): the map that alone reads a GEMM's
or a direct convolution's result — a convolution's or dense layer's bias, batchnorm's
affine, a residual add, the activation, in training the activation's mask too — runs in
that kernel's store. It is taken where it should be, in place where the result lies as
the map writes it, and every value it computes has the bits of the same map run as a pass
of its own, on any number of threads, in training and in prediction."""

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native import lower as lowering
from dlc.compiler.native.choose import conv
from dlc.compiler.native.kernels.conv import ConvKernel
from dlc.compiler.native.kernels.gemm import GemmKernel
from dlc.compiler.passes.autodiff import train_step
from dlc.runtime.engines.native import Executable
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.training.gradcheck import init_params
from tests.helpers.native_cases import compare, run_native

# an im2col convolution with its bias and relu; a residual add of x and of a second
# branch (one map reading two GEMMs' results, whose backward pass sums two input gradients);
# a pointwise convolution of few pixels (one GEMM over the batch, relu6) and one of many (a
# GEMM per example, batched); batchnorm; a dense layer with its bias and relu
SOURCE = """
model epilogues {
    input  x: f32[B, 32, 6, 6]
    target y: i32[B]
    a = conv2d(x, 32, 3, padding = 1) |> relu
    b = conv2d(a, 32, 3, padding = 1) + conv2d(a, 32, 1) + x |> relu
    c = conv2d(b, 96, 1) |> relu6
    d = conv2d(c, 32, 1) |> batchnorm |> relu
    e = conv2d(d, 40, 3, stride = 2, padding = 1, bias = false) |> relu
    h = dense(flatten(e), 12, relu)
    logits = dense(h, 5)
    output logits
    loss   sparse_cross_entropy(logits, y)
}
"""


@pytest.fixture(autouse=True)
def gemms_of_windows(monkeypatch):
    """This file's 3 x 3 convolutions are GEMMs of their windows in prediction too, not
    Winograd's (whose output transform takes the map after it: tests/native/test_winograd.py)."""
    monkeypatch.setattr(conv, "WINOGRAD_CHANNELS", 1 << 30)


def model(training: bool):
    return load_text(SOURCE, "epilogues.dl").build(training=training)


def graphs():
    return {"train": train_step(model(True).graph), "predict": predict_graph(model(False))}


def unfused(monkeypatch):
    """Lowering without the epilogues: each map a pass of its own after its GEMM."""
    monkeypatch.setattr(lowering, "epilogues", lambda program: None)


def run(graph, batch: int) -> dict:
    exe = Executable(graph)
    params = {k: np.asarray(v, np.float32) for k, v in init_params(model(True), 0).items()}
    rng = np.random.default_rng(batch)
    feeds = {
        "x": rng.standard_normal((batch, 32, 6, 6)).astype(np.float32),
        "y": rng.integers(0, 5, batch).astype(np.int32),
    }
    return run_native(exe, {k: v for k, v in feeds.items() if k in exe.program.inputs}, params)


@pytest.mark.parametrize("kind", ["train", "predict"])
def test_the_maps_after_gemms_run_in_their_store(kind, monkeypatch):
    fused = Executable(graphs()[kind]).program
    texts = [k.text() for k in fused.kernels if isinstance(k, GemmKernel) and k.epilogue is not None]
    # the forward products of the five convolutions and two dense layers, each with its map
    # (in training, the backward products whose result the relu's mask reads too)
    assert len(texts) >= 6, [k.text()[0] for k in fused.kernels if isinstance(k, GemmKernel)]
    assert all("then in its store:" in t[0] and t[1].lstrip().startswith(("map", "fused map")) for t in texts), texts
    unfused(monkeypatch)
    apart = Executable(graphs()[kind]).program
    assert len(apart.kernels) == len(fused.kernels) + len(texts)
    assert not any(isinstance(k, GemmKernel) and k.epilogue is not None for k in apart.kernels)


def test_a_residual_add_and_batchnorm_inference_are_in_the_store():
    lines = "\n".join(line for k in Executable(graphs()["predict"]).program.kernels for line in k.text())
    assert "then in its store:" in lines
    # the residual's x (b0, the input) is read in the store of the second convolution's GEMM
    stores = [
        k
        for k in Executable(graphs()["predict"]).program.kernels
        if isinstance(k, GemmKernel) and k.epilogue is not None
    ]
    inputs = Executable(graphs()["predict"]).program.inputs
    assert any(inputs["x"] in k.accesses()[0] for k in stores[1:2]), [k.text() for k in stores]


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["train", "predict"])
def test_the_store_computes_the_bits_of_the_maps_apart(kind, batch, threads, monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", threads)
    fused = run(graphs()[kind], batch)
    with monkeypatch.context() as m:
        unfused(m)
        apart = run(graphs()[kind], batch)
    assert fused.keys() == apart.keys()
    differ = [k for k in fused if not np.array_equal(fused[k], apart[k])]
    assert not differ, differ


def test_the_fused_step_is_the_reference_engines():
    train = model(True)
    params = {k: np.asarray(v, np.float32) for k, v in init_params(train, 0).items()}
    rng = np.random.default_rng(7)
    feed_sets = [
        (
            {"B": b},
            {"x": rng.standard_normal((b, 32, 6, 6)).astype(np.float32), "y": rng.integers(0, 5, b).astype(np.int32)},
        )
        for b in (1, 4)
    ]
    compare(graphs()["train"], feed_sets, params, "epilogues")


def test_a_map_over_a_vector_keeps_its_own_pass():
    """logistic_newton's products of a matrix and a vector: maps of rank 1 after GEMMs."""
    from dlc.compiler.frontend.loader import load
    from tests.helpers.same_bits import EXAMPLES

    model = load(str(EXAMPLES / "logistic_newton.dl")).build(training=True)
    program = Executable(train_step(model.graph)).program
    assert all(k.epilogue is None or len(k.epilogue.shape) >= 2 for k in program.kernels if isinstance(k, GemmKernel))


# MobileNetV2's expansion and projection: pointwise convolutions of many pixels, each a
# GEMM per example whose C lies as the map after it writes (relu6; a residual sum)
INVERTED = """
model inverted {
    input  x: f32[B, 16, 12, 12]
    e = conv2d(x, 48, 1) |> relu6
    p = conv2d(e, 16, 1) + x
    output p
}
"""


def test_a_map_writing_where_c_lies_holds_c_in_its_output(monkeypatch):
    """C is stored in the map's output buffer, which the map then overwrites in place: no
    buffer of its own (size 0), and the bits of the map run apart from the product."""
    graph = predict_graph(load_text(INVERTED, "inverted.dl").build(training=False))
    exe = Executable(graph)
    program = exe.program
    stores = [k for k in program.kernels if isinstance(k, GemmKernel) and k.epilogue is not None]
    assert len(stores) == 2 and all(k.c[0] == k.epilogue.out for k in stores), [k.text() for k in stores]
    assert all(k.c[0] in k.epilogue.accesses()[0] for k in stores)  # the map reads C there
    assert sum(b.size == 0 for b in program.buffers) == 2
    params = {
        k: np.asarray(v, np.float32)
        for k, v in init_params(load_text(INVERTED, "inverted.dl").build(training=True), 0).items()
    }
    x = np.random.default_rng(3).standard_normal((3, 16, 12, 12)).astype(np.float32)
    fused = run_native(exe, {"x": x}, params)
    unfused(monkeypatch)
    apart = run_native(Executable(graph), {"x": x}, params)
    assert fused.keys() == apart.keys() and all(np.array_equal(fused[k], apart[k]) for k in fused)
    compare(graph, [({"B": 3}, {"x": x})], params, "inverted")


# direct convolutions (few taps), each with its bias and activation: a stem of 3 channels
# and a depthwise one at stride 2; then a pointwise one (a GEMM)
DIRECT = """
model direct {
    input  x: f32[B, 3, 19, 17]
    target y: i32[B]
    a = conv2d(x, 16, 3, padding = 1) |> relu6
    b = conv2d(a, 16, 3, stride = 2, padding = 1, groups = 16) |> relu
    c = conv2d(b, 8, 1) + 1.5 |> tanh
    logits = dense(flatten(c), 4)
    output logits
    loss   sparse_cross_entropy(logits, y)
}
"""


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("kind", ["train", "predict"])
def test_a_direct_convolution_runs_the_map_after_it_in_its_store(kind, threads, monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", threads)
    built = load_text(DIRECT, "direct.dl").build(training=True)
    graph = (
        train_step(built.graph)
        if kind == "train"
        else predict_graph(load_text(DIRECT, "direct.dl").build(training=False))
    )
    exe = Executable(graph)
    convs = [k for k in exe.program.kernels if isinstance(k, ConvKernel) and k.g is None]
    stored = [k for k in convs if k.epilogue is not None]
    if kind == "predict":  # the stem and the depthwise one, their outputs in place
        assert len(stored) == 2 and all(k.out == k.epilogue.out for k in stored), [k.text() for k in convs]
    params = {k: np.asarray(v, np.float32) for k, v in init_params(built, 0).items()}
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((3, 3, 19, 17)).astype(np.float32), "y": rng.integers(0, 4, 3).astype(np.int32)}
    feeds = {k: v for k, v in feeds.items() if k in exe.program.inputs}
    fused = run_native(exe, feeds, params)
    with monkeypatch.context() as m:
        unfused(m)
        apart = run_native(Executable(graph), feeds, params)
    assert fused.keys() == apart.keys() and all(np.array_equal(fused[k], apart[k]) for k in fused)
    compare(graph, [({"B": 3}, feeds)], params, "direct")
