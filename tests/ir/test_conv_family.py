"""The convolution family: dilation and groups of conv1d / conv2d (depthwise is groups = C),
conv1d_transpose and conv2d_transpose, maxpool1d, avgpool1d, global_max_pool, upsample2d
and embedding's padding_idx. Each against torch.nn in float64 (forward and every
gradient, through the harness of tests/helpers/torch_parity.py), its parameter count against
torch's, compiled natively (against the reference engine, gradients included) and exported to
ONNX and imported back; and a depthwise-separable torch model exported by torch.onnx
imports with one grouped convolution per Conv."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")
nn = torch.nn
F = torch.nn.functional

from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.onnx.importer import import_model  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from dlc.runtime.engines.native import Executable  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from dlc.runtime.training import gradcheck as gc  # noqa: E402
from helpers.numeric import build, trainable_count  # noqa: E402
from helpers.native_cases import compare, model_feeds, run_reference, step_graph  # noqa: E402
from helpers.onnx_runs import assert_close, exported, float32_feeds, initial_params, reimported, run_onnx  # noqa: E402
from helpers.torch_parity import DT, call, parity  # noqa: E402


# ---- torch parity: (input shape, dlc body, torch module, torch call's extra) ------------------------------------
LAYERS = {
    "conv2d-dilated": ((2, 4, 9, 8), "y = conv2d(x, 6, 3, dilation = 2)", lambda: nn.Conv2d(4, 6, 3, dilation=2)),
    "conv2d-dilated-same": (
        (2, 4, 9, 8),
        "y = conv2d(x, 6, (3, 2), padding = \"same\", dilation = (2, 3))",
        lambda: nn.Conv2d(4, 6, (3, 2), padding="same", dilation=(2, 3)),
    ),
    "conv2d-groups": (
        (2, 4, 7, 6),
        "y = conv2d(x, 6, 3, stride = 2, padding = 1, groups = 2)",
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
    ),
    "conv2d-depthwise": (
        (2, 4, 7, 6),
        "y = conv2d(x, 4, 3, padding = 1, groups = 4, act = relu)",
        lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU()),
    ),
    "conv2d-depthwise-x2-dilated": (
        (2, 3, 9, 8),
        "y = conv2d(x, 6, 3, padding = 2, dilation = 2, groups = 3)",
        lambda: nn.Conv2d(3, 6, 3, padding=2, dilation=2, groups=3),
    ),
    "conv1d-dilated-groups": (
        (2, 4, 11),
        "y = conv1d(x, 6, 3, padding = \"same\", dilation = 2, groups = 2)",
        lambda: nn.Conv1d(4, 6, 3, padding="same", dilation=2, groups=2),
    ),
    "conv2d_transpose": (
        (2, 4, 5, 4),
        "y = conv2d_transpose(x, 3, 3, stride = 2, padding = 1, output_padding = 1)",
        lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
    ),
    "conv2d_transpose-rect": (
        (2, 4, 5, 4),
        "y = conv2d_transpose(x, 3, (2, 3), stride = (2, 1), bias = false)",
        lambda: nn.ConvTranspose2d(4, 3, (2, 3), stride=(2, 1), bias=False),
    ),
    "conv2d_transpose-groups-dilated": (
        (2, 4, 4, 5),
        "y = conv2d_transpose(x, 6, 3, stride = 2, padding = 1, dilation = 2, groups = 2)",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
    ),
    "conv1d_transpose": (
        (2, 4, 6),
        "y = conv1d_transpose(x, 3, 4, stride = 2, padding = 1, output_padding = 1)",
        lambda: nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1, output_padding=1),
    ),
}


@pytest.mark.parametrize("case", list(LAYERS))
def test_layer_matches_torch(case):
    shape, body, make = LAYERS[case]

    def fn(T, f):
        module = make().to(DT)
        conv = module[0] if isinstance(module, nn.Sequential) else module
        mapping = {("0." if conv is not module else "") + "weight": T["y.W"]}
        if conv.bias is not None:
            mapping[("0." if conv is not module else "") + "bias"] = T["y.b"]
        return {"y": call(module, mapping, T["x"])}

    parity({"x": shape}, body, fn)


FUNCTIONS = {
    "maxpool1d(x)": ((2, 3, 9), lambda x: nn.MaxPool1d(2)(x)),
    "maxpool1d(x, 3, 2, 1)": ((2, 3, 9), lambda x: nn.MaxPool1d(3, 2, 1)(x)),
    "avgpool1d(x)": ((2, 3, 9), lambda x: nn.AvgPool1d(2)(x)),
    "avgpool1d(x, 3, 2, 1)": ((2, 3, 9), lambda x: nn.AvgPool1d(3, 2, 1)(x)),
    "global_max_pool(x)": ((2, 3, 5, 4), lambda x: nn.AdaptiveMaxPool2d(1)(x).flatten(1)),
    "upsample2d(x)": ((2, 3, 4, 5), lambda x: nn.Upsample(scale_factor=2)(x)),
    "upsample2d(x, (2, 3))": ((2, 3, 4, 5), lambda x: nn.Upsample(scale_factor=(2, 3))(x)),
    "upsample2d(x, 2, mode = \"bilinear\")": ((2, 3, 4, 5), lambda x: nn.Upsample(scale_factor=2, mode="bilinear")(x)),
    "upsample2d(x, (3, 2), mode = \"bilinear\")": (
        (2, 3, 4, 5),
        lambda x: nn.Upsample(scale_factor=(3, 2), mode="bilinear")(x),
    ),
}


@pytest.mark.parametrize("expr", list(FUNCTIONS))
def test_function_matches_torch(expr):
    shape, fn = FUNCTIONS[expr]
    parity({"x": shape}, f"y = {expr}", lambda T, f: {"y": fn(T["x"])}, scale=1.0)


@pytest.mark.parametrize("padding_idx", [0, -1])
def test_embedding_padding_idx(padding_idx):
    """The padding row: in the forward pass as torch's, no gradient, zeros at initialization."""
    ids = np.array([[1, 4, 3, 0], [4, 0, 1, 1]], np.int32)

    def fn(T, f):
        m = nn.Embedding(5, 3, padding_idx=padding_idx, dtype=DT)
        return {"y": call(m, {"weight": T["y.W"]}, f["ids"])}

    body = f"input ids: i32[2, 4]\ny = embedding(ids, 5, 3, padding_idx = {padding_idx})"
    _, _, step = parity({}, body, fn, feeds={"ids": ids})
    row = padding_idx % 5
    assert np.all(step["grad:y.W"][row] == 0) and np.abs(step["grad:y.W"][1]).max() > 0
    src = (
        f"model m {{\n    input ids: i32[B, 4]\n    output y = embedding(ids, 5, 3, padding_idx = {padding_idx})\n}}\n"
    )
    table = initial_params(build(src), build(src, training=False))["y.W"]
    assert np.all(table[row] == 0) and np.all(np.delete(table, row, axis=0) != 0)


def test_conv_transpose_refuses_an_output_padding_beyond_the_stride():
    src = "model m {\n    input x: f32[B, 3, 5, 5]\n    output y = conv2d_transpose(x, 2, 3, stride = 2, output_padding = 2)\n}\n"
    with pytest.raises(DlcError, match=r"output_padding \(2, 2\) must be smaller than the stride \(2, 2\)"):
        load_text(src, "m.dl").build(training=False)


def test_padding_idx_must_be_a_row():
    src = "model m {\n    input ids: i32[B, 4]\n    output y = embedding(ids, 5, 3, padding_idx = 5)\n}\n"
    with pytest.raises(DlcError, match=r"padding_idx must be a row of the table \(-5 to 4\), got 5"):
        load_text(src, "m.dl").build(training=False)


def test_groups_must_divide_the_channels():
    src = "model m {\n    input x: f32[B, 6, 5, 5]\n    output y = conv2d(x, 4, 3, groups = 3)\n}\n"
    with pytest.raises(DlcError, match=r"the filters \(4\) must be a multiple of groups \(3\)"):
        load_text(src, "m.dl").build(training=False)


# ---- parameter counts: (input declaration, dlc call, torch module) ------------------------------------------------
COUNTS = {
    "conv2d-depthwise": ("f32[B, 32, 8, 8]", "conv2d(x, 32, 3, groups = 32)", lambda: nn.Conv2d(32, 32, 3, groups=32)),
    "conv2d-groups-dilated": (
        "f32[B, 16, 8, 8]",
        "conv2d(x, 24, 3, dilation = 2, groups = 4)",
        lambda: nn.Conv2d(16, 24, 3, dilation=2, groups=4),
    ),
    "conv1d-groups": (
        "f32[B, 8, 20]",
        "conv1d(x, 12, 5, groups = 2, bias = false)",
        lambda: nn.Conv1d(8, 12, 5, groups=2, bias=False),
    ),
    "conv2d_transpose": (
        "f32[B, 16, 4, 4]",
        "conv2d_transpose(x, 8, 4, stride = 2)",
        lambda: nn.ConvTranspose2d(16, 8, 4, stride=2),
    ),
    "conv2d_transpose-groups": (
        "f32[B, 16, 4, 4]",
        "conv2d_transpose(x, 8, 3, groups = 4)",
        lambda: nn.ConvTranspose2d(16, 8, 3, groups=4),
    ),
    "conv1d_transpose": (
        "f32[B, 6, 10]",
        "conv1d_transpose(x, 4, 3, stride = 2)",
        lambda: nn.ConvTranspose1d(6, 4, 3, stride=2),
    ),
    "embedding-padding_idx": (
        "i32[B, T]",
        "embedding(x, 100, 16, padding_idx = 0)",
        lambda: nn.Embedding(100, 16, padding_idx=0),
    ),
}


@pytest.mark.parametrize("case", list(COUNTS))
def test_parameter_count_matches_torch(case):
    decl, expr, make = COUNTS[case]
    model = build(f"model m {{\n    input x: {decl}\n    output y = {expr}\n}}\n", training=False)
    module = make()
    assert trainable_count(model) == sum(p.numel() for p in module.parameters())
    assert {p.name: tuple(p.type.shape) for p in model.params} == {
        f"y.{'W' if k == 'weight' else 'b'}": tuple(v.shape) for k, v in module.named_parameters()
    }


# ---- native compilation and ONNX, on one model holding every new form ----------------------------------------------
FAMILY = """
model family {
    input x: f32[B, 4, 8, 8]
    input s: f32[B, 4, 10]
    input ids: i32[B, 5]
    a = conv2d(x, 6, 3, padding = "same", dilation = 2, groups = 2, act = relu)
    dw = conv2d(a, 6, 3, stride = 2, padding = 1, groups = 6)
    t = conv2d_transpose(dw, 3, 3, stride = 2, padding = 1, output_padding = 1, act = tanh)
    u = upsample2d(dw, 2) + upsample2d(dw, 2, mode = "bilinear")
    c1 = conv1d(s, 4, 3, padding = "same", dilation = 2, groups = 4)
    t1 = conv1d_transpose(maxpool1d(c1, 3, 2, 1), 2, 4, stride = 2, padding = 1, groups = 2)
    e = embedding(ids, 10, 3, padding_idx = 0)
    output image = t + mean(u, 1, keepdims = true)
    output sequence = t1 + avgpool1d(s, 1)[:, :2]
    output pooled = global_max_pool(t) + mean(e, 1)
}
"""
SIZES = [{"B": 2}, {"B": 3}]


def _family(training: bool):
    return load_text(FAMILY, "family.dl").build(training=training)


def test_the_family_compiles_natively_and_matches_the_reference():
    """The train step (every gradient) of the native code against the reference engine;
    Executable lowers every primitive, with no reference fallback."""
    model = _family(True)
    graph = step_graph(model)
    ref = compare(graph, model_feeds("family", model, graph, SIZES), gc.init_params(model, seed=1), label="family")
    assert all(np.abs(v).max() > 0 for k, v in ref.items() if k.startswith("grad:"))


def test_a_depthwise_convolution_is_a_few_kernels_whatever_its_channels():
    """groups = C compiles to one kernel forward (a map over the taps) and a few for its
    gradients, as many for 64 channels as for 4: never a kernel per channel."""

    def kernels(c: int) -> list:
        src = (
            f"model m {{\n    input x: f32[B, {c}, 9, 9]\n    h = conv2d(x, {c}, 1)\n"
            f"    y = conv2d(h, {c}, 3, padding = 1, groups = {c}, bias = false)\n    loss sum(y * y)\n}}\n"
        )
        return Executable(step_graph(load_text(src, "m.dl").build(training=True))).program.kernels

    few, many = kernels(4), kernels(64)
    assert len(many) == len(few) <= 12, [k.text() for k in many]


def test_the_family_trains_with_the_native_backend(tmp_path):
    text = (
        FAMILY.replace("    output pooled", "    loss mean(image^2) + mean(sequence^2)\n    output pooled")
        + """
train family {
    data = npz("family.npz")
    batch = 4
    epochs = 1
}
"""
    )
    r = np.random.default_rng(0)
    np.savez(
        tmp_path / "family.npz",
        x=r.standard_normal((8, 4, 8, 8)).astype(np.float32),
        s=r.standard_normal((8, 4, 10)).astype(np.float32),
        ids=r.integers(0, 10, (8, 5)).astype(np.int32),
    )
    (tmp_path / "family.dl").write_text(text)
    assert (
        main(["train", str(tmp_path / "family.dl"), "--backend", "native", "-q", "--out", str(tmp_path / "run")]) == 0
    )
    assert (tmp_path / "run" / "last.npz").exists()  # --backend native never falls back to the reference


def test_the_family_round_trips_through_onnx(tmp_path):
    """Exported: onnxruntime gives dlc's outputs; imported back: the same, with layers."""
    train, model = _family(True), _family(False)
    params = initial_params(train, model)
    proto = exported(model, params)
    ops = {node.op_type for node in proto.graph.node}
    assert {"Conv", "ConvTranspose"} <= ops
    groups = {
        op: {a.i for node in proto.graph.node if node.op_type == op for a in node.attribute if a.name == "group"}
        for op in ("Conv", "ConvTranspose")
    }
    assert groups == {"Conv": {2, 4, 6}, "ConvTranspose": {1, 2}}
    back = reimported(proto, tmp_path)
    text = (tmp_path / "imported.dl").read_text()
    assert "conv2d_transpose(" in text and "groups = 6" in text and "dilation = 2" in text
    for k, sizes in enumerate(SIZES):
        feeds = float32_feeds(model, sizes, seed=k)
        ref = run_reference(model.graph, feeds, params)
        onnx_out = run_onnx(proto, feeds)
        got = back.predict(feeds)
        for name in ("image", "sequence", "pooled"):
            assert_close(onnx_out[name], ref[f"output:{name}"], f"onnxruntime {name}")
            assert_close(got[name], ref[f"output:{name}"], f"imported {name}")


# ---- import: what torch.onnx.export writes -------------------------------------------------------------------
class _Separable(nn.Module):
    """A depthwise-separable block (MobileNet's), a dilated grouped convolution, then a
    transposed convolution and upsampling (nearest and bilinear) back up."""

    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.up = nn.ConvTranspose2d(16, 4, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        h = F.relu6(self.pointwise(F.relu(self.depthwise(x))))
        up = self.up(torch.relu(self.grouped(h)))
        return F.interpolate(up, scale_factor=2, mode="nearest") + F.interpolate(up, scale_factor=2, mode="bilinear")


def test_a_torch_depthwise_separable_model_imports_with_one_call_per_conv(tmp_path):
    """Each Conv of group > 1 is one conv2d call (it was one convolution per channel), each
    Resize an upsample2d, the batch stays symbolic, and the import matches onnxruntime on
    both engines."""
    torch.manual_seed(0)
    module = _Separable().eval()
    x = torch.randn(2, 8, 12, 10)
    path = tmp_path / "separable.onnx"
    torch.onnx.export(
        module,
        (x,),
        str(path),
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    proto = onnx.load(str(path))
    imported = import_model(proto)
    calls = imported.text.count("conv2d(") + imported.text.count("convolution(")
    assert calls == 3 and "groups = 8" in imported.text and "groups = 4" in imported.text
    assert "conv2d_transpose(" in imported.text and imported.text.count("upsample2d(") == 2, imported.text
    (tmp_path / "separable.dl").write_text(imported.text)
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 8, 12, 10)).astype(np.float32)}
    expected = run_onnx(proto, feeds)["y"]
    for backend in ("reference", "native"):
        model = DlcModel(str(tmp_path / "separable.dl"), backend=backend)
        model.params = checkpoint.conform(tmp_path / "separable.dl", imported.weights, model.eval_model.params)
        assert_close(model.predict(feeds)["y"], expected, f"{backend} against onnxruntime")
