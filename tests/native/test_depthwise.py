"""Depthwise convolutions (conv2d with groups = C) on the native engine against torch:
the forward pass, the input gradient (read through the pointwise convolution before it)
and the weight gradient, over strides, padding, dilation, a channel multiplier > 1 and
rows wider than a vector, at the host's vector width and at AArch64's (4 lanes); which
kernels they compile to; the same bits on any thread count and target."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
F = torch.nn.functional

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.runtime.engines.native import NO_KEY, Executable  # noqa: E402
from dlc.runtime.engines.reference import predict_graph  # noqa: E402
from helpers.native_cases import step_graph  # noqa: E402
from helpers.same_bits import assert_bit_identical  # noqa: E402
from helpers.torch_parity import step_matches_torch  # noqa: E402

# (channels, multiplier, kernel, stride, padding, dilation, H, W)
CASES = {
    "3x3": (8, 1, 3, 1, 1, 1, 9, 9),
    "3x3-stride2": (6, 1, 3, 2, 1, 1, 11, 10),
    "5x5-wide": (4, 1, 5, 1, 2, 1, 7, 37),
    "3x3-no-padding": (5, 1, 3, 1, 0, 1, 6, 20),
    "3x3-multiplier2": (3, 2, 3, 1, 1, 1, 8, 8),
    "3x3-dilated": (4, 1, 3, 1, 2, 2, 9, 9),
    "rect-stride-h2": (4, 1, (3, 1), (2, 1), (1, 0), 1, 9, 17),
    "5x5-stride2-wide": (3, 1, 5, 2, 2, 1, 8, 41),
    "7x7-wide": (3, 1, 7, 1, 3, 1, 9, 23),
    "3x3-stride-w2": (4, 2, 3, (1, 2), 1, 1, 7, 12),
    "3x3-few-pixels": (8, 1, 3, 1, 1, 1, 4, 4),
    "3x3-multiplier2-2x2": (5, 2, 3, 1, 1, 1, 2, 2),
    "3x3-tiles-of-channels-4x4": (16, 1, 3, 1, 1, 1, 4, 4),
    "3x3-stride2-tiles-of-channels": (32, 1, 3, 2, 1, 1, 8, 8),
    "3x3-stride2-no-padding-wide": (4, 1, 3, 2, 0, 1, 10, 67),
    "4x4-stride2": (3, 1, 4, 2, 1, 1, 9, 35),
    "3x3-stride2-padding2": (2, 1, 3, 2, 2, 1, 5, 6),
    # one column, whose windows at stride 2 read only padding: every gradient through it is 0
    "3x1-stride2-padding-only": (7, 1, (3, 1), 2, (2, 1), 1, 18, 1),
}


def _source(c, mult, k, stride, padding, dilation, h, w) -> str:
    return (
        f"model dw {{\n    input x: f32[B, {c}, {h}, {w}]\n    p = conv2d(x, {c}, 1, bias = false)\n"
        f"    output y = conv2d(p, {c * mult}, {k}, stride = {stride}, padding = {padding}, "
        f"dilation = {dilation}, groups = {c})\n}}\n"
    )


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("case", list(CASES))
def test_native_depthwise_matches_torch_forward_and_backward(case):
    matches_torch(case)


@pytest.mark.parametrize(
    "case",
    [
        "5x5-wide",
        "7x7-wide",
        "5x5-stride2-wide",
        "3x3-stride-w2",
        "3x3-stride2-tiles-of-channels",
        "3x3-stride2-no-padding-wide",
        "4x4-stride2",
    ],
)
def test_the_direct_kernels_at_aarch64s_vector_width_match_torch(case, monkeypatch, tmp_path):
    """NEON's 4 lanes, compiled here: a tap column shifted a vector or more along its
    row's stream (kernel columns past 4)."""
    from dlc.compiler.native.codegen.gemm.blocking import NEON
    from dlc.compiler.native.codegen import image_rows

    monkeypatch.setattr(image_rows, "vector_width", lambda: NEON.vw)
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # not the host width's code, cached by program
    matches_torch(case)


def matches_torch(case: str):
    """The forward pass and both gradients of CASES[case] against torch in float64."""
    c, mult, k, stride, padding, dilation, h, w = CASES[case]
    model = load_text(_source(*CASES[case]), "dw.dl").build(training=True)
    exe = Executable(step_graph(model))
    rng = np.random.default_rng(len(case))
    kh, kw = _pair(k)
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)),
        "y.W": rng.standard_normal((c * mult, 1, kh, kw)),
        "y.b": rng.standard_normal(c * mult),
    }
    params = {name: v.astype(np.float32) for name, v in params.items()}
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    step_matches_torch(
        exe,
        params,
        x,
        lambda x, T: F.conv2d(
            F.conv2d(x, T["p.W"]), T["y.W"], T["y.b"], _pair(stride), _pair(padding), _pair(dilation), groups=c
        ),
        rng,
        case,
    )


def test_stride_one_depthwise_is_a_direct_convolution_forward_and_backward():
    """A stride-1 depthwise convolution, its input gradient and its weight gradient are
    direct `conv` kernels, never a kernel per channel nor im2col columns."""
    model = load_text(_source(*CASES["3x3"]), "dw.dl").build(training=True)
    texts = [line for k in Executable(step_graph(model)).program.kernels for line in k.text()]
    assert sum("direct conv" in t and "in 8 groups" in t for t in texts) == 3, texts
    assert not any(t.startswith("gemm") and "groups" in t for t in texts)


@pytest.mark.parametrize("case", ["3x3-stride2", "4x4-stride2"])
def test_a_stride_two_depthwise_input_gradient_is_upsampled_by_a_direct_kernel(case):
    """A stride-2 depthwise convolution's input gradient is one direct kernel that writes
    each output once from its taps (`depthwise upsampling`), not an accumulation into a
    zeroed buffer."""
    model = load_text(_source(*CASES[case]), "dw.dl").build(training=True)
    texts = [line for k in Executable(step_graph(model)).program.kernels for line in k.text()]
    assert sum("direct conv" in t and "upsampled by 2" in t for t in texts) == 1, texts
    assert not any(t.startswith("accumulate") for t in texts), texts


def test_a_depthwise_weight_gradient_of_rows_of_few_pixels_is_a_reduction():
    """Rows of 4 outputs would fill 4 of a vector's 16 lanes in the direct kernel: the
    weight gradient sums over [N, Ho, Wo] in a reduction instead, each thread its channels
    (the same order on any team); the forward pass and the input gradient stay direct."""
    model = load_text(_source(*CASES["3x3-few-pixels"]), "dw.dl").build(training=True)
    texts = [line for k in Executable(step_graph(model)).program.kernels for line in k.text()]
    assert sum("direct conv" in t and "in 8 groups" in t for t in texts) == 2, texts
    assert sum(t.startswith("reduce sum over axes [5, 6, 7] of [8, 1, 1, 3, 3, B, 4, 4]") for t in texts) == 1, texts


def test_depthwise_training_has_the_same_bits_on_any_thread_count_and_target(tmp_path):
    """The biases' gradients too: reductions of [N, C, H, W] to [C] over 12 x 20 and 6 x 10
    images; and a depthwise convolution by channels (16 channels of 3 x 5 outputs)."""
    (tmp_path / "dw.dl").write_text(
        "model dw {\n    input x: f32[B, 6, 12, 20]\n    input y: f32[B, 16, 3, 5]\n"
        "    h = conv2d(x, 6, 3, padding = 1, groups = 6, act = relu)\n"
        "    s = conv2d(h, 6, 3, stride = 2, padding = 1, groups = 6)\n"
        "    t = conv2d(conv2d(s, 16, 1), 16, 3, stride = 2, padding = 1, groups = 16, act = relu)\n"
        "    loss mean((t - y)^2)\n}\n"
    )
    assert_bit_identical([str(tmp_path / "dw")], tmp_path)


# (channels, kernel, stride, padding, H, W): whole tiles of 16 channels, planes of at most 16 outputs
SMALL_PLANES = [
    (16, 3, 1, 1, 4, 4),
    (32, 3, 2, 1, 8, 8),
    (48, 3, 1, 1, 2, 2),
    (16, 5, 2, 2, 7, 7),
    (32, 3, 1, 0, 6, 6),
    (16, 3, 2, 1, 4, 4),
    (16, 3, 1, 1, 3, 5),
]


@pytest.mark.parametrize("shape", SMALL_PLANES, ids=lambda s: "c{}-k{}-s{}-p{}-{}x{}".format(*s))
def test_a_depthwise_convolution_of_small_planes_is_by_channels_with_the_pixels_kernels_bits(shape, monkeypatch):
    """Channels in whole tiles and planes of at most 16 outputs: the kernel by channels (a
    copy of the filters in tiles, the epilogue in its store), and its outputs are the bits
    of the pixels' kernel, at the host's vector width and at AArch64's."""
    from dlc.compiler.native.codegen import image_rows
    from dlc.compiler.native.codegen.gemm.blocking import NEON
    from dlc.compiler.native.choose import conv

    c, k, stride, padding, h, w = shape
    model = load_text(
        f"model dw {{\n    input x: f32[B, {c}, {h}, {w}]\n"
        f"    output y = conv2d(x, {c}, {k}, stride = {stride}, padding = {padding}, groups = {c}, "
        f"act = relu6)\n}}\n",
        "dw.dl",
    ).build(training=False)
    rng = np.random.default_rng(c + h)
    params = {
        "y.W": rng.standard_normal((c, 1, k, k)).astype(np.float32),
        "y.b": rng.standard_normal(c).astype(np.float32),
    }
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)

    def run(small_plane: int, width=None):
        monkeypatch.setattr(conv, "SMALL_PLANE", small_plane)
        if width is not None:
            monkeypatch.setattr(image_rows, "vector_width", lambda: width.vw)
        exe = Executable(predict_graph(model))
        texts = [line for kernel in exe.program.kernels for line in kernel.text()]
        arrays, sizes = exe.run({"x": x, "rng": NO_KEY}, exe.given(params))
        return texts, exe.output("output:y", arrays, sizes).copy()

    texts, by_channels = run(16)
    assert sum("direct conv" in t and "by channels, then in its store:" in t for t in texts) == 1, texts
    assert any(t.startswith("filters by channels") for t in texts), texts
    pixels_texts, by_pixels = run(0)
    assert not any("by channels" in t for t in pixels_texts), pixels_texts
    assert by_channels.tobytes() == by_pixels.tobytes()
    _, neon = run(16, NEON)
    assert neon.tobytes() == by_pixels.tobytes()
