"""The direct convolution of an image's few channels into many filters, by channels
(ConvKernel.by_channels, docs/native.md): which convolutions take it, the forward pass and
both gradients against torch over kernel sizes, strides, padding, rows that end
mid-tile and rows of whole lines, at the host's vector width and at AArch64's and
AVX-512's, a prediction's filters copied once, and the same bits on any thread count and
target."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
F = torch.nn.functional

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.native import PACK_WEIGHTS  # noqa: E402
from dlc.runtime.engines.native import NO_KEY, Executable  # noqa: E402
from dlc.runtime.engines.reference import predict_graph  # noqa: E402
from helpers.native_cases import assert_weight_copy_follows_weights, step_graph  # noqa: E402
from helpers.same_bits import assert_bit_identical  # noqa: E402
from helpers.torch_parity import step_matches_torch  # noqa: E402

# (channels, filters, kernel, stride, padding, H, W)
CASES = {
    "7x7-stride2": (3, 48, 7, 2, 3, 30, 37),
    "3x3-stride2": (3, 32, 3, 2, 1, 19, 23),
    "5x5-one-channel": (1, 16, 5, 1, 2, 12, 14),
    "3x3-no-padding": (4, 48, 3, 1, 0, 9, 30),
    "rows-shorter-than-a-tile": (3, 16, 3, 1, 1, 6, 4),
    "2x2-stride2": (2, 32, 2, 2, 0, 8, 17),
    "stride-h2-w1": (3, 16, 3, (2, 1), 1, 11, 13),
    "wide-padding": (2, 16, 3, 1, 3, 5, 7),
    "rows-of-lines-stride2": (3, 32, 3, 2, 1, 7, 64),  # rows of 32 outputs: tiles of 16 at 16 lanes
    "rows-of-lines": (3, 16, 5, 1, 2, 4, 16),
}


def _source(c, o, k, stride, padding, h, w) -> str:
    """The convolution of CASES after a 1 x 1 one, through which the input's gradient is read."""
    return (
        f"model stem {{\n    input x: f32[B, {c}, {h}, {w}]\n    p = conv2d(x, {c}, 1, bias = false)\n"
        f"    output y = conv2d(p, {o}, {k}, stride = {stride}, padding = {padding}, act = relu)\n}}\n"
    )


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def matches_torch(case: str):
    """The forward pass and both gradients of CASES[case] against torch in float64."""
    c, o, k, stride, padding, h, w = CASES[case]
    model = load_text(_source(*CASES[case]), "stem.dl").build(training=True)
    exe = Executable(step_graph(model))
    assert any("by channels" in line for k in exe.program.kernels for line in k.text()), case
    rng = np.random.default_rng(len(case))
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)),
        "y.W": rng.standard_normal((o, c, k, k)),
        "y.b": rng.standard_normal(o),
    }
    params = {name: v.astype(np.float32) for name, v in params.items()}
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    step_matches_torch(
        exe,
        params,
        x,
        lambda x, T: F.relu(F.conv2d(F.conv2d(x, T["p.W"]), T["y.W"], T["y.b"], _pair(stride), _pair(padding))),
        rng,
        case,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_a_stem_by_channels_matches_torch_forward_and_backward(case):
    matches_torch(case)


@pytest.mark.parametrize("config", ["NEON", "AVX512"])
@pytest.mark.parametrize("case", ["7x7-stride2", "3x3-stride2", "rows-shorter-than-a-tile", "rows-of-lines-stride2"])
def test_a_stem_by_channels_at_other_vector_widths_matches_torch(case, config, monkeypatch, tmp_path):
    """NEON's 4 lanes (four vectors a pixel) and AVX-512's 16 (one), compiled here (LLVM
    splits a vector wider than the host's)."""
    from dlc.compiler.native.codegen import image_rows
    from dlc.compiler.native.codegen.gemm import blocking

    monkeypatch.setattr(image_rows, "vector_width", lambda: getattr(blocking, config).vw)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # not the host width's code, cached by program
    matches_torch(case)


@pytest.mark.parametrize(
    "source, precision, kind",
    [
        ("conv2d(x, 32, 3, stride = 2, padding = 1)", "f32", "by channels"),  # MobileNetV2's stem
        ("conv2d(x, 48, 5, padding = 2)", "f32", "by channels"),
        ("conv2d(x, 64, 7, stride = 2, padding = 3)", "f32", "gemm"),  # ResNet's: a GEMM of windows
        ("conv2d(x, 64, 7, stride = 2, padding = 3)", "bf16", "gemm"),  # bf16: a GEMM of im2col's columns
        ("conv2d(x, 24, 3, padding = 1)", "f32", "by pixels"),  # filters not in whole tiles of 16
        ("conv2d(h, 32, 3, padding = 1)", "f32", "by pixels"),  # 8 channels: not an image's few
        ("conv2d(x, 48, 3, padding = 1, groups = 3)", "f32", "by pixels"),
    ],
)
def test_which_convolutions_are_by_channels(source, precision, kind):
    """By channels: a direct convolution of an image's few channels into whole tiles of
    filters; with 64 or more, the GEMM of the image's windows where it applies, and in bf16
    the GEMM of im2col's columns."""
    model = load_text(
        f"model m {{\n    input x: f32[B, 3, 32, 32]\n    h = conv2d(x, 8, 1)\n    output y = {source}\n}}\n", "m.dl"
    ).build(training=True)
    exe = Executable(step_graph(model), precision=precision)
    node = [n for n in exe.graph.order() if exe.graph.op(n) == "conv2d"][-1]  # y's
    forward = next(k.text()[0] for k in exe.program.kernels if node in k.nodes and k.family in ("conv", "gemm"))
    found = "by channels" if "by channels" in forward else "gemm" if forward.startswith("gemm") else "by pixels"
    assert found == kind, forward


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
def test_a_predictions_filters_by_channels_are_copied_once_and_follow_its_weights(mode):
    """Copied in their tiles' order into a buffer kept between calls, under a weight flag:
    the bits of the program that copies them at every call, and after a weight changed in
    place, those of the new weight."""
    c, o, k, stride, padding, h, w = CASES["3x3-stride2"]
    model = load_text(_source(*CASES["3x3-stride2"]), "stem.dl").build(training=False)
    rng = np.random.default_rng(2)
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)),
        "y.W": rng.standard_normal((o, c, k, k)),
        "y.b": rng.standard_normal(o),
    }
    params = {name: v.astype(np.float32) for name, v in params.items()}
    x = {"x": rng.standard_normal((2, c, h, w)).astype(np.float32)}
    assert_weight_copy_follows_weights(model, mode, "filters by channels", x, params, "y.W")


@pytest.mark.parametrize("case", list(CASES))
def test_by_channels_gives_the_bits_of_the_pixels_kernel(case, monkeypatch):
    """Both kernels sum each output's taps in the same order, a column in the padding an
    FMA of 0: a prediction by channels is the pixels' kernel's, bit for bit."""
    from dlc.compiler.native.choose import conv

    c, o, k, stride, padding, h, w = CASES[case]
    model = load_text(_source(*CASES[case]), "stem.dl").build(None, training=False)
    rng = np.random.default_rng(len(case))
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)),
        "y.W": rng.standard_normal((o, c, k, k)),
        "y.b": rng.standard_normal(o),
    }
    params = {name: v.astype(np.float32) for name, v in params.items()}
    feeds = {"x": rng.standard_normal((3, c, h, w)).astype(np.float32), "rng": NO_KEY}
    outputs = {}
    for channels in (conv.IMAGE_CHANNELS, 0):
        monkeypatch.setattr(conv, "IMAGE_CHANNELS", channels)
        exe = Executable(predict_graph(model))
        assert any("by channels" in k.text()[0] for k in exe.program.kernels) == (channels > 0)
        arrays, sizes = exe.run(feeds, exe.given(params))
        outputs[channels] = exe.output("output:y", arrays, sizes).tobytes()
    assert len(set(outputs.values())) == 1, case


def test_a_stem_by_channels_has_the_same_bits_on_any_thread_count_and_target(tmp_path):
    (tmp_path / "stem.dl").write_text(
        "model stem {\n    input x: f32[B, 3, 20, 22]\n    input y: f32[B, 16, 10, 11]\n"
        "    h = conv2d(x, 32, 5, stride = 2, padding = 2, act = relu)\n"
        "    loss mean((conv2d(h, 16, 1) - y)^2)\n}\n"
    )
    assert_bit_identical([str(tmp_path / "stem")], tmp_path)
