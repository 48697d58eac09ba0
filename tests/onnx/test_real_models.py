"""Real models in: torchvision's classifiers, torch.nn's LSTM, GRU and TransformerEncoder,
Hugging Face's BERT and GPT-2, with random weights (tools/real_models.py, no download),
exported by both of PyTorch's exporters with a dynamic batch, imported by dlc and run on
both engines at another batch than the export's, within 1e-5 of onnxruntime (the table of
docs/onnx.md). The imports read as layers: activations and norms by name."""

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from dlc.tools.real_models import EXPORTER_FAILS, EXPORTERS, MODELS, compare, export, missing  # noqa: E402


def missing_onnxscript() -> list:
    from importlib.util import find_spec

    return [] if find_spec("onnxscript") else ["onnxscript"]


# slow: the dynamo exporter alone takes 15-20 s on these, and the native compile of
# shufflenet's 141 lines about 45 s
SLOW = {"mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x0_5"}

# the deep convolutional networks (calibrated batch norms, tools/real_models._calibrate) end
# in float32 rounding above 1e-5: PyTorch's own output differs from onnxruntime's by 1.4e-5
# (mobilenet_v2) and 1.5e-5 (shufflenet_v2_x0_5) there
TOLERANCE = {"mobilenet_v2": 3e-5, "efficientnet_b0": 3e-5, "shufflenet_v2_x0_5": 3e-5}

# what each imported program calls by name: the layers and activations its exporters spell
LAYERS = {
    "resnet18": ["conv2d(", "relu(", "max_pool(", "dense("],
    "squeezenet1_1": ["conv2d(", "relu", "max_pool("],
    "mobilenet_v2": ["conv2d(", "relu6(", "dense("],
    "efficientnet_b0": ["conv2d(", "silu(", "sigmoid", "dense("],
    "shufflenet_v2_x0_5": ["conv2d(", "dense("],
    "lstm": ["lstm("],
    "gru": ["gru("],
    "transformer": ["layernorm(", "softmax(", "dense(", "relu"],
    "bert": ["layernorm(", "softmax(", "dense(", "gelu_exact("],
    "gpt2": ["layernorm(", "softmax(", "dense(", "gelu("],
}


def cases():
    for name in MODELS:
        for exporter in EXPORTERS:
            marks = [pytest.mark.slow] if name in SLOW else []
            if (name, exporter) in EXPORTER_FAILS:
                marks.append(pytest.mark.skip(reason=EXPORTER_FAILS[name, exporter]))
            yield pytest.param(name, exporter, marks=marks, id=f"{name}-{exporter}")


@pytest.mark.parametrize("name, exporter", cases())
def test_a_real_model_imports_and_matches_onnxruntime_on_both_engines(tmp_path, name, exporter):
    needs = missing(name) + (missing_onnxscript() if exporter == "dynamo" else [])
    if needs:
        pytest.skip(f"needs {', '.join(needs)}")
    path = tmp_path / f"{name}_{exporter}.onnx"
    export(name, path, exporter)
    result = compare(path, name)
    for engine, got in result.outputs.items():
        tolerance = TOLERANCE.get(name, 1e-5)
        np.testing.assert_allclose(
            got, result.want, rtol=tolerance, atol=tolerance, err_msg=f"{name} ({exporter}), {engine}"
        )
    declared = [line for line in result.text.splitlines() if line.strip().startswith("input ")]
    assert declared and all("[batch" in line for line in declared), declared  # the batch stays symbolic
    absent = [call for call in LAYERS[name] if call not in result.text]
    assert not absent, f"{name} ({exporter}) imported without {absent}"


def test_the_exported_models_are_not_trivial(tmp_path):
    """The batch norms' statistics are calibrated (tools/real_models._calibrate): a deep
    network's outputs are of order 1, so an error of 1e-5 is a real comparison."""
    if missing("mobilenet_v2"):
        pytest.skip(f"needs {', '.join(missing('mobilenet_v2'))}")
    import onnxruntime
    from dlc.tools.real_models import example

    path = tmp_path / "mobilenet_v2.onnx"
    export("mobilenet_v2", path, "torchscript")
    out = onnxruntime.InferenceSession(str(path)).run(None, example("mobilenet_v2", 3))[0]
    assert out.shape == (3, 1000) and 0.05 < np.std(out) < 10


def test_a_classifier_exports_at_another_image_side(tmp_path):
    """`image` sets a classifier's images' side (benchmarks/int8.py times 64 and 224), its
    batch norms calibrated at that side; a model of no images refuses it."""
    if missing("resnet18"):
        pytest.skip(f"needs {', '.join(missing('resnet18'))}")
    import onnx
    import onnxruntime
    from dlc.tools.real_models import example

    path = tmp_path / "resnet18.onnx"
    export("resnet18", path, "torchscript", image=40)
    (x,) = onnx.load(path).graph.input
    assert [d.dim_value for d in x.type.tensor_type.shape.dim[1:]] == [3, 40, 40]
    feeds = example("resnet18", 3, image=40)
    assert feeds["x"].shape == (3, 3, 40, 40)
    out = onnxruntime.InferenceSession(str(path)).run(None, feeds)[0]
    assert out.shape == (3, 1000) and 0.05 < np.std(out) < 10
    with pytest.raises(ValueError, match="lstm takes no images"):
        example("lstm", 2, image=40)


@pytest.mark.parametrize("opset", [16, 17])
def test_activations_and_norms_import_as_library_calls(tmp_path, opset):
    """What PyTorch's TorchScript exporter writes for the common activations and norms
    (LayerNorm as ReduceMean, Sub, Pow, ... before opset 17; GELU as Erf and as Tanh
    formulas; SiLU as x * Sigmoid; ReLU6 as Clip) reads as the library's calls, and the
    predictions are onnxruntime's."""
    import warnings

    import onnxruntime
    import torch
    from torch import nn

    from dlc.compiler.onnx.importer import import_model, read_model
    from dlc.runtime.api import DlcModel

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.batch = nn.LayerNorm(8, eps=1e-6), nn.BatchNorm1d(8)
            self.fc1, self.fc2, self.fc3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.norm(x)
            h = nn.functional.gelu(self.fc1(h)) + nn.functional.gelu(self.fc2(h), approximate="tanh")
            h = self.batch(nn.functional.silu(h)) + nn.functional.relu6(self.fc3(x))
            return torch.softmax(h, -1), torch.log_softmax(torch.sigmoid(h) + torch.tanh(h), -1)

    torch.manual_seed(0)
    model = Layers()
    nn.init.uniform_(model.batch.running_var, 0.5, 2.0)
    nn.init.normal_(model.batch.running_mean)
    model.eval()
    path = tmp_path / f"layers{opset}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, 8),),
            str(path),
            input_names=["x"],
            output_names=["p", "q"],
            opset_version=opset,
            dynamic_axes={"x": {0: "batch"}},
            dynamo=False,
        )
    result = import_model(read_model(path), source=path.name)
    for call in (
        "layernorm(",
        "gelu_exact(",
        "gelu(",
        "silu(",
        "relu6(",
        "batchnorm(",
        "softmax(",
        "log_softmax(",
        "sigmoid(",
        "tanh(",
    ):
        assert call in result.text, f"{call} not in\n{result.text}"
    assert "erf(" not in result.text and "ReduceMean" not in result.text
    program = tmp_path / "layers.dl"
    program.write_text(result.text)
    np.savez(tmp_path / "layers.npz", **result.weights)
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    want = onnxruntime.InferenceSession(str(path)).run(None, {"x": x})
    for engine in ("reference", "native"):
        got = DlcModel(str(program), backend=engine).load_weights(tmp_path / "layers.npz").predict({"x": x})
        for name, w in zip(["p", "q"], want):
            np.testing.assert_allclose(got[result.outputs[name]], w, rtol=1e-5, atol=1e-6, err_msg=engine)
