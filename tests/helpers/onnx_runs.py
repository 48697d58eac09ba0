"""Exported models run by onnxruntime, and imported ones back in dlc: the export with the full
checker, onnxruntime's outputs, their comparison with dlc's, and the feeds and parameters of a
model; the examples that export (all but those that draw random numbers in evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dlc.compiler.frontend.model import Model  # noqa: E402
from dlc.compiler.onnx.export import to_onnx  # noqa: E402
from dlc.compiler.onnx.importer import import_model  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from dlc.runtime.training import gradcheck as gc  # noqa: E402


# vae's `samples` output draws random codes in evaluation, which export refuses by name
# (test_an_evaluation_graph_that_draws_random_numbers_is_refused)
DRAWS_IN_EVALUATION = {"vae"}
EXAMPLES = sorted(
    p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.dl") if p.stem not in DRAWS_IN_EVALUATION
)
SIZES = [{"B": 2, "T": 3, "S": 4, "K": 3}, {"B": 3, "T": 5, "S": 2, "K": 2}]
RTOL = 1e-5


# ---- running and comparing ---------------------------------------------------------------------------------
def exported(model: Model, params: dict, quantization: dict | None = None) -> onnx.ModelProto:
    proto = to_onnx(model, params, quantization=quantization)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run_onnx(proto: onnx.ModelProto, feeds: dict, fused: bool = True) -> dict:
    """onnxruntime's outputs; `fused` False: its graph optimizations off, every node run as
    the file has it (no QDQ pattern fused into an integer kernel)."""
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outs = session.run(None, {k: feeds[k] for k in names})
    return dict(zip([o.name for o in session.get_outputs()], outs))


def assert_close(got, ref, what: str):
    """max |got - ref| <= 1e-5 max |ref| (+ a tiny floor); integers and bools equal."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: onnxruntime gives shape {got.shape}, dlc {ref.shape}"
    if not np.issubdtype(ref.dtype, np.floating):
        assert np.array_equal(got, ref), f"{what}: {int((got != ref).sum())} of {ref.size} entries differ"
        return
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(r)
    assert np.array_equal(np.isnan(g), np.isnan(r)) and np.array_equal(
        g[~finite & ~np.isnan(r)], r[~finite & ~np.isnan(r)]
    ), f"{what}: non-finite values differ"
    if finite.any():
        err, scale = np.abs(g[finite] - r[finite]).max(), np.abs(r[finite]).max()
        assert err <= RTOL * scale + 1e-30, (
            f"{what}: max |diff| {err:.3g} is {err / scale:.3g} of max |ref| {scale:.3g}"
        )


def float32_feeds(model: Model, sizes: dict, seed: int = 0) -> dict:
    """Random values for the model's non-target inputs (ids within the tables they index)."""
    feeds = gc.sample_inputs(model, sizes, seed)
    return {
        i.name: feeds[i.name].astype(np.float32) if i.type.is_float else feeds[i.name]
        for i in model.inputs
        if not i.is_target
    }


def initial_params(train_model: Model, eval_model: Model, seed: int = 0) -> dict:
    """The parameters the model's initializers give, as a checkpoint would hold them."""
    return checkpoint.conform("the initializers", gc.init_params(train_model, seed), eval_model.params)


def reimported(proto: onnx.ModelProto, folder: Path) -> DlcModel:
    """The imported program as a DlcModel with the imported weights, on the reference engine."""
    imported = import_model(proto)
    path = folder / "imported.dl"
    path.write_text(imported.text)
    model = DlcModel(str(path), backend="reference")
    model.params = checkpoint.conform(path, imported.weights, model.eval_model.params)
    return model
