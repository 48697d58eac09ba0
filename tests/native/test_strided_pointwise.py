"""A prediction's strided 1 x 1 convolution of many filters into few pixels an example (ResNet's
projections at small images; compiler/native/choose/conv.py `_strided_pointwise`): its
pixels gathered channels first, the columns of one GEMM over the batch. Which
convolutions take it, its outputs against torch over strides, odd sizes and batches, and
the same bits on any thread count and target."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.choose import conv
from dlc.runtime.engines.native import NO_KEY, Executable
from helpers.native_cases import run_native, step_graph

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
F = torch.nn.functional


# (channels, filters, stride, H, W, batch)
CASES = {
    "resnet-64px-layer3": (128, 256, 2, 8, 8, 1),
    "resnet-64px-layer4": (256, 512, 2, 4, 4, 2),
    "odd-sizes": (24, 64, 2, 5, 7, 3),
    "stride-3x2": (16, 72, (3, 2), 7, 9, 2),
}


def _source(c, o, stride, h, w) -> str:
    stride = f"({stride[0]}, {stride[1]})" if isinstance(stride, tuple) else stride
    return (
        f"model m {{\n    input x: f32[B, {c}, {h}, {w}]\n"
        f"    output y = conv2d(relu(x), {o}, 1, stride = {stride}, bias = false)\n}}\n"
    )


def _chosen(model, bf16: bool = False) -> str:
    graph = model.graph
    node = next(n for n in graph.order() if graph.op(n) == "conv2d")
    return conv.chosen(conv.Conv.node(graph, node, bf16)).name


def _run(case: str):
    c, o, stride, h, w, batch = CASES[case]
    model = load_text(_source(c, o, stride, h, w), "m.dl").build(None, training=False)
    rng = np.random.default_rng(len(case))
    weights = (rng.standard_normal((o, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    exe = Executable(model.graph)
    return model, exe, x, weights, run_native(exe, {"x": x, "rng": NO_KEY}, {"y.W": weights})["output:y"]


@pytest.mark.parametrize("case", list(CASES))
def test_a_strided_pointwise_convolution_is_a_gemm_of_its_pixels_and_matches_torch(case):
    c, o, stride, h, w, batch = CASES[case]
    model, exe, x, weights, got = _run(case)
    assert _chosen(model) == "pointwise of the strided pixels"
    assert not any(line.startswith("direct conv") for k in exe.program.kernels for line in k.text())
    assert any(line.startswith("gemm") for k in exe.program.kernels for line in k.text())
    s = stride if isinstance(stride, tuple) else (stride, stride)
    want = F.conv2d(torch.relu(torch.from_numpy(x).double()), torch.from_numpy(weights).double(), stride=s).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_bf16_prediction_rounds_its_operands_as_the_reference_emulates():
    """In a bf16 program the GEMM multiplies bfloat16 operands (compiler/native/bf16.py reads
    the entry's kernel): the native prediction is the reference engine's emulation, and not
    float32's."""
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.engines.reference import ReferenceEngine

    c, o, stride, h, w, batch = CASES["resnet-64px-layer3"]
    model = load_text(_source(c, o, stride, h, w), "m.dl").build(None, training=False)
    assert _chosen(model, bf16=True) == "pointwise of the strided pixels"
    rng = np.random.default_rng(3)
    params = {"y.W": (rng.standard_normal((o, c, 1, 1)) / np.sqrt(c)).astype(np.float32)}
    feeds = {"x": rng.standard_normal((2, c, h, w)).astype(np.float32)}
    native = NativeEngine(model, model, precision="bf16").predict(params, feeds)["y"]
    emulated = ReferenceEngine(model, model, precision="bf16").predict(params, feeds)["y"]
    float32 = ReferenceEngine(model, model).predict(params, feeds)["y"]
    norm = np.linalg.norm
    assert norm(native - emulated) <= 1e-5 * norm(emulated)
    assert norm(float32 - emulated) >= 1e-3 * norm(emulated)


@pytest.mark.parametrize(
    "layer, side, training, chosen",
    [
        ("conv2d(x, 128, 1, stride = 2)", 8, False, "pointwise of the strided pixels"),
        ("conv2d(x, 128, 1, stride = 2)", 8, True, "direct"),  # a train step's: its weight gradient reads im2col's
        ("conv2d(x, 128, 1, stride = 2)", 10, False, "windows over the batch"),  # 25 pixels: the image's windows
        ("conv2d(x, 32, 1, stride = 2)", 8, False, "direct"),  # few filters: the GEMM's tiles not filled
        ("conv2d(x, 128, 1, stride = 2, padding = 1)", 6, False, "direct"),  # its padding's pixels are no columns
        ("conv2d(x, 128, 1)", 4, False, "pointwise over the batch"),
    ],
)
def test_which_convolutions_are_gemms_of_their_strided_pixels(layer, side, training, chosen):
    model = load_text(
        f"model m {{\n    input x: f32[B, 64, {side}, {side}]\n    output y = {layer}\n    loss mean(y)\n}}\n",
        "m.dl",
    ).build(None, training=training)
    graph = step_graph(model) if training else model.graph
    node = next(n for n in graph.order() if graph.op(n) == "conv2d")
    assert conv.chosen(conv.Conv.node(graph, node, False)).name == chosen


RUN = """
import sys
import numpy as np
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines.native import NO_KEY, Executable
model = load_text(sys.argv[2], "m.dl").build(None, training=False)
exe = Executable(model.graph)
rng = np.random.default_rng(0)
w = rng.standard_normal((128, 64, 1, 1)).astype(np.float32)
x = rng.standard_normal((2, 64, 8, 8)).astype(np.float32)
import os
runs = {}
for threads in (1, 2, 3):
    os.environ["DLC_NUM_THREADS"] = str(threads)
    arrays, _ = exe.run({"x": x, "rng": NO_KEY}, {exe.program.params["y.W"]: w})
    runs[str(threads)] = np.array(arrays[exe.program.outputs["output:y"]], copy=True)
np.savez(sys.argv[1], **runs)
"""


def test_the_same_bits_on_any_thread_count_and_target(tmp_path):
    runs = {}
    for target in ("host", "avx512", "avx2"):
        out = tmp_path / f"{target}.npz"
        env = dict(
            os.environ, DLC_CACHE_DIR=str(tmp_path / target), **({} if target == "host" else {"DLC_TARGET": target})
        )
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(out), _source(64, 128, 2, 8, 8)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.update({(target, threads): y for threads, y in np.load(out).items()})
    (first, reference), *others = runs.items()
    assert np.isfinite(reference).all() and np.abs(reference).max() > 0
    for config, y in others:
        assert np.array_equal(y, reference), f"{config} differs from {first}"
