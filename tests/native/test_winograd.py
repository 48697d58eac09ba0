"""Winograd's F(2 x 2, 3 x 3) convolution (kernels/winograd): which convolutions take it
(3 x 3, stride 1, many channels, enough tiles, float32), its results against torch in
float64 — a convolution and a transposed one, over paddings, tiles that overhang the
image, rows of more tiles than a vector has lanes and of fewer, and a train step's input gradient —
at the host's vector width and at AArch64's (4 lanes); a prediction's filters transformed
once; the same bits on any thread count and target."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
F = torch.nn.functional

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.native import PACK_WEIGHTS  # noqa: E402
from dlc.compiler.native.kernels.winograd import WinogradInputKernel, WinogradOutputKernel  # noqa: E402
from dlc.runtime.engines.native import Executable  # noqa: E402
from dlc.runtime.engines.reference import predict_graph  # noqa: E402
from helpers.native_cases import assert_weight_copy_follows_weights, run_native, step_graph  # noqa: E402
from helpers.same_bits import assert_bit_identical  # noqa: E402
from helpers.torch_parity import step_matches_torch  # noqa: E402

# (channels in, out, H, W, padding)
CASES = {
    "stage": (32, 32, 16, 16, 1),
    "overhanging": (33, 40, 7, 9, 1),
    "no-padding": (32, 36, 10, 13, 0),
    "padding-2": (40, 32, 10, 11, 2),  # transposed: 8 x 9 outputs, 20 tiles
    "wide": (32, 34, 5, 75, 1),
    "small": (32, 32, 8, 8, 1),  # rows of 4 tiles: an example's tiles in order, across its rows
    "narrow": (32, 32, 15, 3, 1),  # rows of 2 tiles, half of AArch64's 4 lanes, the last overhanging
}


def _source(layer: str, c, o, h, w, padding) -> str:
    """A convolution (or a transposed one) with its bias and a relu: the map after it runs
    in the output transform's store."""
    return (
        f"model wg {{\n    input x: f32[B, {c}, {h}, {w}]\n"
        f"    output y = {layer}(x, {o}, 3, padding = {padding}, act = relu)\n}}\n"
    )


def _torch(layer: str, x, weight, bias, padding):
    f = F.conv2d if layer == "conv2d" else F.conv_transpose2d
    return F.relu(
        f(
            torch.tensor(x, dtype=torch.float64),
            torch.tensor(weight, dtype=torch.float64),
            torch.tensor(bias, dtype=torch.float64),
            padding=padding,
        )
    ).numpy()


def matches_torch(layer: str, case: str, batch: int = 3, tolerance: float = 1e-5):
    """The prediction of CASES[case] against torch in float64: the largest error relative
    to the largest value."""
    c, o, h, w, padding = CASES[case]
    exe = Executable(predict_graph(load_text(_source(layer, *CASES[case]), "wg.dl").build(training=False)))
    assert sum(isinstance(k, WinogradOutputKernel) and k.epilogue is not None for k in exe.program.kernels) == 1
    rng = np.random.default_rng(len(case))
    weight = rng.standard_normal((o, c, 3, 3) if layer == "conv2d" else (c, o, 3, 3)) / (3 * c**0.5)
    params = {"y.W": weight.astype(np.float32), "y.b": rng.standard_normal(o).astype(np.float32)}
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    got = run_native(exe, {"x": x}, params)["output:y"]
    want = _torch(layer, x, params["y.W"], params["y.b"], padding)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert got.shape == want.shape and err < tolerance, f"{layer} {case}: relative error {err:.2e}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layer", ["conv2d", "conv2d_transpose"])
def test_winograd_matches_torch(layer, case):
    matches_torch(layer, case)


@pytest.mark.parametrize("case", ["overhanging", "wide", "narrow"])
def test_winograd_at_aarch64s_vector_width_matches_torch(case, monkeypatch, tmp_path):
    """NEON's 4 lanes, compiled here: a tile's 4 columns from 2 interleaved streams, each
    row of 2 x 2 outputs woven from 2 vectors."""
    from dlc.compiler.native.codegen.gemm.blocking import NEON
    from dlc.compiler.native.codegen import image_rows

    monkeypatch.setattr(image_rows, "vector_width", lambda: NEON.vw)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # not the host width's code, cached by program
    matches_torch("conv2d", case)


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
def test_a_predictions_filters_transformed_once_are_those_of_its_weights(mode):
    """Transformed into a buffer kept between calls, under a flag that a change of the
    weights clears: the bits of the program that transforms them at every call, and after
    a weight changed in place, those of the new weight."""
    model = load_text(_source("conv2d", *CASES["overhanging"]), "wg.dl").build(training=False)
    rng = np.random.default_rng(1)
    params = {
        "y.W": rng.standard_normal((40, 33, 3, 3)).astype(np.float32),
        "y.b": rng.standard_normal(40).astype(np.float32),
    }
    x = {"x": rng.standard_normal((2, 33, 7, 9)).astype(np.float32)}
    assert_weight_copy_follows_weights(model, mode, "winograd filters", x, params, "y.W")


RULE = """
model rule {
    input x: f32[B, 32, 12, 12]
    a = conv2d(x, 32, 3, padding = 1)                   # Winograd's
    b = conv2d(a, 16, 3, padding = 1)                   # too few filters
    c = conv2d(a, 32, 3, stride = 2, padding = 1)       # strided
    d = conv2d(c, 32, 3, padding = 1, dilation = 2)     # dilated
    e = conv2d(maxpool2d(c, 2), 32, 3, padding = 1)     # 3 x 3 pixels: 4 tiles of 16 products for 81
    f = conv2d(c, 32, 3, padding = 1)                   # 6 x 6 pixels: 9 tiles, too few columns an example
    output b
    output d
    output e
    output f
}
"""


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_only_3x3_stride_1_convolutions_of_many_channels_and_tiles_are_winograds(precision):
    model = load_text(RULE, "rule.dl").build(training=False)
    program = Executable(predict_graph(model), precision=precision).program
    inputs = [k for k in program.kernels if isinstance(k, WinogradInputKernel)]
    if precision == "bf16":  # a bf16 program rounds a convolution's own operands: a GEMM of its windows
        assert not inputs
        return
    assert [k.x_shape[1:] for k in inputs] == [(32, 12, 12)], [line for k in program.kernels for line in k.text()]


def test_winograd_training_matches_torch():
    """A train step: the convolution (after a pointwise one, whose input gradient reads
    Winograd's) and its input gradient both Winograd's, every gradient torch's in float64."""
    c, o, h, w, padding = CASES["overhanging"]
    model = load_text(
        f"model wg {{\n    input x: f32[B, {c}, {h}, {w}]\n    p = conv2d(x, {c}, 1, bias = false)\n"
        f"    output y = conv2d(p, {o}, 3, padding = {padding})\n}}\n",
        "wg.dl",
    ).build(training=True)
    exe = Executable(step_graph(model))
    assert sum(isinstance(k, WinogradOutputKernel) for k in exe.program.kernels) == 2  # forward, input gradient
    rng = np.random.default_rng(5)
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)) / c**0.5,
        "y.W": rng.standard_normal((o, c, 3, 3)) / 3,
        "y.b": rng.standard_normal(o),
    }
    params = {name: v.astype(np.float32) for name, v in params.items()}
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    step_matches_torch(
        exe,
        params,
        x,
        lambda x, T: F.conv2d(F.conv2d(x, T["p.W"]), T["y.W"], T["y.b"], padding=padding),
        rng,
        "overhanging",
    )


def test_winograd_training_has_the_same_bits_on_any_thread_count_and_target(tmp_path):
    (tmp_path / "wg.dl").write_text(
        "model wg {\n    input x: f32[B, 32, 10, 14]\n    input y: f32[B, 32, 10, 14]\n"
        "    h = conv2d(x, 32, 3, padding = 1, act = relu)\n"
        "    loss mean((conv2d(h, 32, 3, padding = 1) - y)^2)\n}\n"
    )
    assert_bit_identical([str(tmp_path / "wg")], tmp_path)


SAME_BITS = """
import sys, numpy as np
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines.native import Executable
from dlc.runtime.engines.reference import predict_graph
from tests.helpers.native_cases import run_native
source, out = sys.argv[1], sys.argv[2]
exe = Executable(predict_graph(load_text(source, "wg.dl").build(training=False)))
rng = np.random.default_rng(0)
params = {"y.W": rng.standard_normal((34, 32, 3, 3)).astype(np.float32), "y.b": rng.standard_normal(34).astype(np.float32)}
np.save(out, run_native(exe, {"x": rng.standard_normal((5, 32, 5, 75)).astype(np.float32)}, params)["output:y"])
"""


def test_winograd_has_the_same_bits_on_any_thread_count_and_target(tmp_path):
    """Each configuration in its own process (the target is chosen once per process)."""
    source = _source("conv2d", *CASES["wide"])
    results = []
    for target, threads in [("host", 1), ("host", 2), ("host", 3), ("avx2", 2)]:
        out = tmp_path / f"{target}-{threads}.npy"
        env = {**os.environ, "DLC_TARGET": target, "DLC_NUM_THREADS": str(threads)}
        done = subprocess.run(
            [sys.executable, "-c", SAME_BITS, source, str(out)],
            env=env,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(np.load(out))
    assert all(np.array_equal(results[0], r) for r in results[1:])
