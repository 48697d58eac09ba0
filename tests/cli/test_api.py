"""The Python API a Keras user recognises (runtime/api.py, docs/api.md): dlc.load, dlc.Callback
and dlc.StopTraining at the top level; model.summary() as `dlc summary` prints it; save and
load one call each way; export to ONNX and safetensors; a repr that says what the model is;
`self.model.stop_training = True`; one example without its batch axis; type hints and
docstrings on every public method; docs/api.md names every public name."""

import contextlib
import dataclasses
import gc
import inspect
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime import api
from dlc.runtime.cli import main
from dlc.runtime.training.trainer import Result

from helpers.interrupts import InterruptedAtFree
from helpers.programs import CLASSIFIER, XOR, write

ROOT = Path(__file__).resolve().parents[2]
DIGITS_CNN = str(ROOT / "examples" / "digits_cnn.dl")
TRAIN = "train clf { batch = 8 epochs = 3 optimizer = sgd(lr = 0.1) }"


def arrays(n=48, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1)}


def trained(tmp_path) -> api.DlcModel:
    model = dlc.load(write(tmp_path, CLASSIFIER, TRAIN), backend="reference")
    model.train(data=arrays(), out=str(tmp_path / "run"), progress="none")
    return model


def test_the_top_level_names_are_the_api_s():
    from dlc.runtime.training.callbacks import Callback, StopTraining

    assert dlc.Callback is Callback and dlc.StopTraining is StopTraining and dlc.load is api.load
    assert {"load", "Callback", "StopTraining"} <= set(dir(dlc)) and set(dlc.__all__) >= {"load", "Callback"}
    with pytest.raises(AttributeError, match="no attribute 'lode'"):
        dlc.lode  # noqa: B018  (the attribute access is what is tested)


def test_summary_is_the_table_dlc_summary_prints(capsys):
    assert main(["summary", DIGITS_CNN]) == 0
    printed = capsys.readouterr().out
    text = dlc.load(DIGITS_CNN).summary()
    assert text + "\n" == printed and "Total parameters:         13,706" in text
    assert repr(text) == text  # the interpreter and a notebook show the table, not a quoted string
    assert main(["summary", DIGITS_CNN, "--eval", "--depth", "1", "--batch", "4"]) == 0
    assert dlc.load(DIGITS_CNN).summary(depth=1, batch=4, training=False) + "\n" == capsys.readouterr().out


def test_save_and_load_are_one_call_each_way(tmp_path, capsys):
    model = dlc.load(write(tmp_path, XOR), backend="reference")
    model.train(out=str(tmp_path / "run"), progress="none")
    path = model.save(tmp_path / "xor.npz")
    again = dlc.load(model.path, weights=path, backend="reference")
    assert set(again.params) == set(model.params)
    for name in model.params:
        np.testing.assert_array_equal(again.params[name], model.params[name])
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    np.testing.assert_array_equal(again.predict(x)["prob"], model.predict(x)["prob"])
    # `dlc eval` reads it as it reads a run's checkpoint, and scores the data the run trained on
    assert main(["eval", model.path, "--weights", str(path), "--backend", "reference"]) == 0
    printed = capsys.readouterr().out.split()
    scores = model.evaluate(log=lambda m: None)
    assert float(printed[printed.index("loss") + 1]) == pytest.approx(scores["loss"], abs=1e-4)
    with pytest.raises(DlcError, match=r"a \.npz file.*model\.export"):
        model.save(tmp_path / "m.onnx")
    with pytest.raises(DlcError, match="has no weights"):
        dlc.load(model.path).save(tmp_path / "none.npz")


def test_export_writes_onnx_and_safetensors_that_read_back(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = dlc.load(write(tmp_path, XOR), backend="reference")
    model.train(out=str(tmp_path / "run"), progress="none")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    onnx_path = model.export(tmp_path / "m.onnx")
    (probs,) = ort.InferenceSession(str(onnx_path)).run(None, {"x": x})
    np.testing.assert_allclose(probs, model.predict(x)["prob"], atol=1e-6)
    for layout in ("dlc", "torch"):
        path = model.export(tmp_path / f"{layout}.safetensors", layout=layout)
        np.testing.assert_array_equal(
            dlc.load(model.path, weights=path, backend="reference").predict(x)["prob"], model.predict(x)["prob"]
        )
    with pytest.raises(DlcError, match="name it .onnx or .safetensors"):
        model.export(tmp_path / "m.pt")


def test_the_repr_names_the_model_its_inputs_outputs_and_parameter_count(tmp_path):
    model = dlc.load(DIGITS_CNN)
    text = repr(model)
    assert text.startswith("<dlc model digits_cnn from ") and text.endswith(">")
    assert "inputs x: f32[B, 1, 8, 8] -> outputs probs: f32[B, 10]" in text
    assert "13,706 parameters, no weights yet" in text
    assert "y:" not in text  # a target is not an input of the trained model's use
    assert "trained or loaded weights" in repr(trained(tmp_path))


@pytest.mark.parametrize("hook", ["on_batch_end", "on_epoch_end"])
def test_setting_model_stop_training_stops_the_run_as_stop_training_does(tmp_path, hook):
    class Stopper(dlc.Callback):
        def __init__(self):
            self.calls = 0

        def on_batch_end(self, step, logs):
            self.calls += hook == "on_batch_end"
            if hook == "on_batch_end" and step == 2:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs):
            self.calls += hook == "on_epoch_end"
            if hook == "on_epoch_end" and epoch == 0:
                self.model.stop_training = True

    model = dlc.load(write(tmp_path, CLASSIFIER, TRAIN), backend="reference")
    stopper = Stopper()
    lines = []
    result = model.train(
        data=arrays(), out=str(tmp_path / "run"), callbacks=[stopper], log=lines.append, progress="epochs"
    )
    assert stopper.model is model and result.stopped == "stopped"
    assert stopper.calls == 2 if hook == "on_batch_end" else 1
    assert len(result.history) == (0 if hook == "on_batch_end" else 1)
    assert any("model.stop_training was set" in line for line in lines), lines
    # a new run starts with the flag cleared, as Keras' fit does
    again = model.train(data=arrays(), out=str(tmp_path / "run2"), log=lines.append, progress="none")
    assert again.stopped == "done" and len(again.history) == 3


def test_one_example_without_its_batch_axis_is_told_to_add_one(tmp_path):
    model = dlc.load(DIGITS_CNN)
    model.params = {p.name: np.zeros(p.type.shape, np.float32) for p in model.eval_model.params}
    with pytest.raises(DlcError, match=re.escape("add a batch axis: x[None]")):
        model.predict(np.zeros((1, 8, 8), np.float32))
    assert model.predict(np.zeros((1, 8, 8), np.float32)[None])["probs"].shape == (1, 10)
    with pytest.raises(DlcError) as e:  # not one example: the layout message, no batch hint
        model.predict(np.zeros((3, 8, 8), np.float32))
    assert "x[None]" not in str(e.value)


@pytest.mark.parametrize("batch", [0, -3, True, "8"])
def test_a_batch_that_is_not_a_whole_number_of_at_least_1_is_refused_by_name(tmp_path, batch):
    model = trained(tmp_path)
    x = arrays(4)["x"]
    for use, what in (
        (lambda: model.predict(x, batch=batch), "predict"),
        (lambda: model.evaluate(data=arrays(4), batch=batch), "evaluate"),
        (lambda: model.quantize(data={"x": x}, batch=batch), "quantize"),
    ):
        with pytest.raises(DlcError, match=rf"^{what}: 'batch' must be (at least 1|an integer), got "):
            use()


def test_data_without_examples_is_refused_by_predict_and_evaluate(tmp_path):
    model = trained(tmp_path)
    empty = {k: v[:0] for k, v in arrays(4).items()}
    with pytest.raises(DlcError, match="^predict: the data has no examples$"):
        model.predict(empty["x"])
    with pytest.raises(DlcError, match="^evaluate: the data has no examples$"):
        model.evaluate(data=empty)


def test_weights_given_in_python_that_are_not_the_models_are_refused_by_name(tmp_path):
    model = trained(tmp_path)
    data = arrays(4)
    name = next(n for n, a in model.params.items() if a.ndim == 2)
    good = dict(model.params)
    cases = (
        ({**good, name: good[name][:-1]}, rf"^model.params does not match the model: {re.escape(name)} is \["),
        (
            {k: v for k, v in good.items() if k != name},
            rf"^model.params does not match the model: missing {re.escape(name)} ",
        ),
        ({**good, "extra.W": np.zeros(3)}, r"^model.params does not match the model: unexpected extra.W$"),
        (
            {**good, name: np.full(good[name].shape, "a")},
            rf"^model.params: {re.escape(name)} is an array of <U1, not of numbers$",
        ),
    )
    for params, message in cases:
        model.params = params
        with pytest.raises(DlcError, match=message):
            model.evaluate(data=data, log=print)
    with pytest.raises(DlcError, match="^model.params takes a dict of arrays by parameter name, or None; not str$"):
        model.params = "weights"
    model.params = good
    assert set(model.evaluate(data=data, log=print)) == {"loss", "accuracy"}


def test_an_unknown_backend_is_refused_at_load_and_top_classes_takes_rows_and_a_k_of_at_least_1(tmp_path):
    with pytest.raises(DlcError, match=r"^unknown backend 'gpu' \(auto, native, reference\)$"):
        dlc.load(write(tmp_path, CLASSIFIER, TRAIN), backend="gpu")
    model = trained(tmp_path)
    assert model.top_classes(np.array([[0.1, 0.7, 0.2]]), k=2) == [[("class 1", 0.7), ("class 2", 0.2)]]
    with pytest.raises(DlcError, match=r"^top_classes: 'k' must be at least 1, got 0$"):
        model.top_classes(np.array([[0.1, 0.7, 0.2]]), k=0)
    with pytest.raises(
        DlcError, match=r"^top_classes takes a classifier's scores \[N, classes\], not an array of shape \[3\]$"
    ):
        model.top_classes(np.array([0.1, 0.7, 0.2]))


def public_methods() -> list:
    return [
        (name, member)
        for name, member in vars(api.DlcModel).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    ]


def test_every_public_method_has_type_hints_and_a_docstring():
    missing = []
    for name, member in [*public_methods(), ("load", api.load)]:
        function = member.fget if isinstance(member, property) else member
        signature = inspect.signature(function)
        unhinted = [
            p
            for p in signature.parameters
            if p != "self"
            and signature.parameters[p].annotation is inspect.Parameter.empty
            and signature.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD
        ]
        if not inspect.getdoc(function) or signature.return_annotation is inspect.Signature.empty or unhinted:
            missing.append(f"{name} {unhinted}")
    assert not missing, missing


def test_docs_api_md_names_every_public_name():
    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:dlc\.|model\.|result\.|repr\()?([A-Za-z_]+)\b", page))
    expected = {name for name, _ in public_methods()} | set(dlc.__all__)
    expected |= {"stop_training", "params", "name", "program", "train_model", "eval_model", "path", "meta"}
    expected |= {f.name for f in dataclasses.fields(Result)} | {
        "on_" + h for h in ("train_begin", "epoch_begin", "batch_end", "epoch_end", "train_end")
    }
    assert not expected - named, f"docs/api.md does not name: {sorted(expected - named)}"


def test_a_notebook_shows_the_summary_as_a_table(tmp_path):
    pytest.importorskip("IPython")
    from IPython.lib.pretty import pretty

    text = dlc.load(DIGITS_CNN).summary()
    assert pretty(text) == text
    with contextlib.redirect_stdout(io.StringIO()) as out:
        print(text)
    assert out.getvalue().splitlines()[0] == "Model: digits_cnn"


def test_an_interrupt_inside_llvmlite_in_the_python_api_waits_until_llvmlite_has_returned(monkeypatch):
    """The JIT puts Python's own SIGINT handler off while llvmlite's binding code runs (a
    notebook's interrupt as a model compiles): the string llvmlite frees as Ctrl-C lands is
    freed once, and KeyboardInterrupt comes once llvmlite has returned."""
    import llvmlite.binding as llvm

    from dlc.compiler.native.codegen import interrupts

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a Python session
    try:
        interrupts.guard()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        library = InterruptedAtFree(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            llvm.get_host_cpu_name()
            time.sleep(5)  # the interrupt, sent again, arrives
    finally:
        signal.signal(signal.SIGINT, previous)
    gc.collect()  # the string's __del__, had the interrupt cut its close in half
    assert library.freed_once()


@pytest.mark.parametrize("own", [False, True])
def test_the_jit_guards_pythons_own_handler_and_leaves_a_programs_own(own, tmp_path):
    path = write(tmp_path, "model m { input x: f32[B, 2]  output y = dense(x, 3) }", train="")
    program = f"""
import signal
import numpy as np
import dlc
# Python's own handler, as in a terminal (a process started in the background ignores SIGINT), or the program's
signal.signal(signal.SIGINT, (lambda *_: None) if {own} else signal.default_int_handler)
m = dlc.load({path!r})
m.params = {{p.name: np.zeros(p.type.shape, np.float32) for p in m.eval_model.params}}
m.predict(np.ones((1, 2), np.float32))
handler = signal.getsignal(signal.SIGINT)
print(handler is signal.default_int_handler, getattr(handler, "puts_off_llvmlite", False))
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", str(not own)]
