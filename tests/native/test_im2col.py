"""im2col's columns by planes (kernels/im2col, docs/native.md "Convolutions"): which
convolutions take it, the forward pass and both gradients against torch over kernel sizes,
strides, padding, dilation and images of one pixel to 8 x 8, and the bits of the map over
the same windows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
F = torch.nn.functional

from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.runtime.engines.native import NO_KEY, Executable  # noqa: E402
from dlc.runtime.engines.reference import predict_graph  # noqa: E402
from helpers.native_cases import step_graph  # noqa: E402
from helpers.torch_parity import step_matches_torch  # noqa: E402

# (channels, filters, kernel, stride, padding, dilation, H, W): at most 16 output pixels an
# example (more are read from the image by the GEMM), more than 256 taps an output (fewer
# are a direct convolution)
CASES = {
    "4x4": (32, 16, 3, 1, 1, 1, 4, 4),
    "2x2": (48, 8, 3, 1, 1, 1, 2, 2),
    "8x8-stride2": (32, 16, 3, 2, 1, 1, 8, 8),
    "5x5-taps-of-a-5x3-image": (16, 8, 5, 1, 2, 1, 5, 3),
    "dilated": (32, 8, 3, 1, 2, 2, 4, 4),
    "no-padding": (40, 8, 3, 1, 0, 1, 5, 6),
    "one-pixel": (64, 8, 3, 1, 1, 1, 1, 1),
    "stride-h2-w1": (32, 8, 3, (2, 1), 1, 1, 7, 3),
}


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _source(c, o, k, stride, padding, dilation, h, w) -> str:
    """The convolution of CASES after a 1 x 1 one, through which the input's gradient is read."""
    return (
        f"model m {{\n    input x: f32[B, {c}, {h}, {w}]\n    p = conv2d(x, {c}, 1, bias = false)\n"
        f"    output y = conv2d(p, {o}, {k}, stride = {stride}, padding = {padding}, dilation = {dilation})\n}}\n"
    )


def _params(case: str, rng) -> dict:
    c, o, k = CASES[case][:3]
    params = {
        "p.W": rng.standard_normal((c, c, 1, 1)),
        "y.W": rng.standard_normal((o, c, k, k)),
        "y.b": rng.standard_normal(o),
    }
    return {name: v.astype(np.float32) for name, v in params.items()}


def _by_planes(exe) -> bool:
    return any("by planes" in line for k in exe.program.kernels for line in k.text())


@pytest.mark.parametrize("case", list(CASES))
def test_columns_by_planes_match_torch_forward_and_backward(case):
    c, o, k, stride, padding, dilation, h, w = CASES[case]
    exe = Executable(step_graph(load_text(_source(*CASES[case]), "m.dl").build(training=True)))
    assert _by_planes(exe), case
    rng = np.random.default_rng(len(case))
    params = _params(case, rng)
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    step_matches_torch(
        exe,
        params,
        x,
        lambda x, T: F.conv2d(
            F.conv2d(x, T["p.W"]), T["y.W"], T["y.b"], _pair(stride), _pair(padding), _pair(dilation)
        ),
        rng,
        case,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_columns_by_planes_give_the_bits_of_the_map(case, monkeypatch):
    """Both copy the same windows: the prediction's outputs are the same bits."""
    from dlc.compiler.native.choose import conv

    c, _, _, _, _, _, h, w = CASES[case]
    model = load_text(_source(*CASES[case]), "m.dl").build(None, training=False)
    rng = np.random.default_rng(len(case))
    params = _params(case, rng)
    feeds = {"x": rng.standard_normal((3, c, h, w)).astype(np.float32), "rng": NO_KEY}
    outputs = {}
    for floats in (conv.PLANE_FLOATS, 0):
        monkeypatch.setattr(conv, "PLANE_FLOATS", floats)
        exe = Executable(predict_graph(model))
        assert _by_planes(exe) == (floats > 0)
        arrays, sizes = exe.run(feeds, exe.given(params))
        outputs[floats] = exe.output("output:y", arrays, sizes).tobytes()
    assert len(set(outputs.values())) == 1, case


@pytest.mark.parametrize(
    "image, layout, planes",
    [
        ("f32[B, 32, 8, 8]", "stride = 2", True),  # a plane of 64 floats
        ("f32[B, 32, 9, 9]", "stride = 3", False),  # of 81: a map
        ("f32[B, 32, 4, 4]", "stride = 1", True),
    ],
)
def test_which_columns_are_by_planes(image, layout, planes):
    """Planes of at most PLANE_FLOATS floats, H x W contiguous; else the map over the windows."""
    source = f"model m {{\n    input x: {image}\n    output y = conv2d(x, 16, 3, {layout}, padding = 1)\n}}\n"
    exe = Executable(predict_graph(load_text(source, "m.dl").build(None, training=False)))
    assert _by_planes(exe) == planes
