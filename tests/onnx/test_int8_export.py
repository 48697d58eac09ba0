"""int8 export in QDQ form (compiler/onnx/qdq.py, `dlc export --int8`): onnxruntime runs the
file and gives the reference int8 engine's outputs to within one quantum per element,
where an output's quantum is the scale dlc's activation formula gives the range of its values
over the examples compared (docs/quantization.md, "Export"); the file holds the weights in
int8 only; what cannot be exported is refused with a located message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import dlc  # noqa: E402
from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.ir import int8  # noqa: E402
from dlc.compiler.onnx import qdq  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from helpers.cli import failure, usage_error  # noqa: E402
from helpers.int8 import every_product_integer  # noqa: E402
from helpers.onnx_runs import exported, float32_feeds, initial_params, run_onnx  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PROGRAM = """
model m {
    input x: f32[B, 4, 9, 9]
    input s: f32[B, 6, 12]
    a = conv2d(x, 6, 3, padding = 1, stride = 2, act = relu)
    g = conv2d(a, 6, 3, padding = "same", groups = 3)
    d = conv2d(g, 6, 3, groups = 6)
    c = conv1d(s, 8, 3, padding = "same", act = relu)
    h = dense(flatten(c), 16, tanh)
    output y = dense(flatten(d), 5)
    output w = dense(h, 4)
    output z = dense(x, 3)
}
"""


def quantized_model(path: Path, feeds: dict) -> dlc.DlcModel:
    """The model at `path` with its initial parameters, quantized on the first half of `feeds`."""
    model = dlc.load(str(path), backend="reference")
    model.params = initial_params(model.train_model, model.eval_model)
    half = {k: v[: len(v) // 2] for k, v in feeds.items()}
    return model.quantize(calibrate=2, data=half, batch=len(next(iter(half.values()))) // 2)


def quantum(values: np.ndarray) -> np.float32:
    """One quantum of an output: s_x of the range of its values (int8.activation_params)."""
    return int8.activation_params(values.min(), values.max())[0]


def check_within_one_quantum(model: dlc.DlcModel, feeds: dict) -> onnx.ModelProto:
    proto = exported(model.eval_model, model.params, model.quantization)
    # onnxruntime's fused integer kernels saturate on an x86-64 host without VNNI: there the
    # nodes run unfused, the products in float32 from the dequantized operands
    got, ref = run_onnx(proto, feeds, fused=not qdq.fused_int8_saturates()), model.predict(feeds, int8=True)
    assert got.keys() == ref.keys()
    for name in ref:
        err, q = np.abs(got[name] - ref[name]).max(), quantum(ref[name])
        assert err <= q, f"{name}: onnxruntime differs from dlc's int8 by {err:.3g}, {err / q:.3g} quanta"
    return proto


def test_digits_cnn_runs_in_onnxruntime_within_one_quantum_and_holds_int8_weights():
    feeds = {"x": np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)}
    model = quantized_model(EXAMPLES / "digits_cnn.dl", feeds)
    proto = check_within_one_quantum(model, feeds)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert not set(model.quantization) & set(inits), "a float32 copy of integer weights"
    for name, q in model.quantization.items():
        assert np.array_equal(inits[f"int8:{name}:weight"], q.weight)
        assert inits[f"int8:{name}:input_zero_point"].dtype == np.uint8
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 6  # c1 (one channel) in float32
    assert "c1.W" in inits and "c1.W" not in model.quantization
    conv_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "int8:c3.W:weight"]
    assert [(a.name, a.i) for a in conv_weights[0].attribute] == [("axis", 0)]


def test_dense_grouped_depthwise_and_conv1d_products_within_one_quantum(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text(PROGRAM)
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.normal(size=(16, 4, 9, 9)).astype(np.float32),
        "s": rng.normal(size=(16, 6, 12)).astype(np.float32),
    }
    with every_product_integer():  # its short sums too
        model = quantized_model(path, feeds)
        assert len(model.quantization) == 8
        proto = check_within_one_quantum(model, feeds)
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert any(n.op_type == "Reshape" and n.input[0] in dequantized for n in proto.graph.node)  # conv1d's weights


def test_transformer_classifier_within_one_quantum():
    model = dlc.load(str(EXAMPLES / "transformer_classifier.dl"), backend="reference")
    feeds = float32_feeds(model.eval_model, {"B": 8, "T": 64})
    model = quantized_model(EXAMPLES / "transformer_classifier.dl", feeds)
    assert len(model.quantization) == 13
    check_within_one_quantum(model, feeds)


def test_weights_another_node_reads_keep_their_float32_copy_for_it(tmp_path):
    path = tmp_path / "m.dl"
    path.write_text("""
model m {
    input x: f32[B, 24]
    param W: f32[24, 5] = glorot_uniform
    output y = x @ W
    output n = sum(W * W)
}
""")
    feeds = {"x": np.random.default_rng(3).normal(size=(16, 24)).astype(np.float32)}
    model = quantized_model(path, feeds)
    proto = check_within_one_quantum(model, feeds)
    assert {"W", "int8:W:weight"} <= {i.name for i in proto.graph.initializer}


@pytest.fixture(scope="module")
def quantized_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    feeds = {"x": np.random.default_rng(0).uniform(0, 1, (32, 1, 8, 8)).astype(np.float32)}
    model = quantized_model(EXAMPLES / "digits_cnn.dl", feeds)
    model.save(folder / "q.npz")
    return folder, model, feeds


def test_the_command_and_the_api_write_the_same_file(quantized_checkpoint):
    folder, model, feeds = quantized_checkpoint
    argv = ["export", str(EXAMPLES / "digits_cnn.dl"), "--weights", str(folder / "q.npz"), "--int8"]
    assert main(argv + ["-o", str(folder / "cli.onnx")]) == 0
    model.export(folder / "api.onnx", int8=True)
    a, b = (onnx.load(str(folder / f"{n}.onnx")) for n in ("cli", "api"))
    assert a.graph == b.graph
    reread = dlc.load(str(EXAMPLES / "digits_cnn.dl"), weights=folder / "q.npz", backend="reference")
    reread.export(folder / "reread.onnx", int8=True)
    assert onnx.load(str(folder / "reread.onnx")).graph == a.graph


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["-o", "m.onnx"], "--int8 needs --weights Q.npz"),
        (["--weights", "q.npz", "-o", "m.safetensors"], "--int8 exports a quantized model as .onnx"),
    ],
)
def test_int8_usage_errors(quantized_checkpoint, extra, phrase, capsys, monkeypatch):
    monkeypatch.chdir(quantized_checkpoint[0])
    assert phrase in usage_error(["export", str(EXAMPLES / "digits_cnn.dl"), "--int8"] + extra, capsys)


def test_a_checkpoint_without_quantization_is_refused(quantized_checkpoint, capsys, tmp_path):
    _, model, _ = quantized_checkpoint
    plain = dlc.load(str(EXAMPLES / "digits_cnn.dl"), backend="reference")
    plain.params = model.params
    plain.save(tmp_path / "f32.npz")
    err = failure(
        [
            "export",
            str(EXAMPLES / "digits_cnn.dl"),
            "--int8",
            "--weights",
            str(tmp_path / "f32.npz"),
            "-o",
            str(tmp_path / "m.onnx"),
        ],
        capsys,
    )
    assert "f32.npz holds no int8 quantization: make one with `dlc quantize`" in err
    assert not (tmp_path / "m.onnx").exists()


def test_the_api_refuses_int8_without_a_quantization(tmp_path):
    model = dlc.load(str(EXAMPLES / "digits_cnn.dl"), backend="reference")
    model.params = initial_params(model.train_model, model.eval_model)
    with pytest.raises(DlcError, match="has no int8 quantization"):
        model.export(tmp_path / "m.onnx", int8=True)
    with pytest.raises(DlcError, match="as .onnx, not as safetensors"):
        model.export(tmp_path / "m.safetensors", int8=True)
