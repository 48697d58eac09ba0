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

# what each imported program calls by name: the layers and activations its exporters spell
LAYERS = {
    "resnet18": ["conv2d(", "relu(", "max_pool(", "dense("],
    "squeezenet1_1": ["conv2d(", "relu", "max_pool("],
    "mobilenet_v2": ["conv2d(", "dense("],
    "efficientnet_b0": ["conv2d(", "sigmoid(", "dense("],
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
        np.testing.assert_allclose(got, result.want, rtol=1e-5, atol=1e-5, err_msg=f"{name} ({exporter}), {engine}")
    declared = [line for line in result.text.splitlines() if line.strip().startswith("input ")]
    assert declared and all("[batch" in line for line in declared), declared      # the batch stays symbolic
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
