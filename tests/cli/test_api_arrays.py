"""Arrays in memory through the Python API (runtime/api.py, runtime/training/inputs.py):
train, evaluate and predict take dicts of numpy arrays or of anything with __array__ (torch
tensors), bound and checked as a file's data is, with errors that name the array and never
show its values; result.history by column; predict takes a source such as digits()."""

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.gradcheck import init_params

from helpers.programs import CLASSIFIER, write

TRAIN = "train clf { batch = 8 epochs = 2 optimizer = sgd(lr = 0.1) }"
CLF = CLASSIFIER.replace(
    "metric accuracy = accuracy(logits, y)", "metric accuracy = accuracy(logits, y)\n    output probs = softmax(logits)"
)


def arrays(n=60, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)}


def model(tmp_path, train=TRAIN) -> DlcModel:
    return DlcModel(write(tmp_path, CLF, train), backend="reference")


def fit(m, tmp_path, out="run", **kw):
    return m.train(out=str(tmp_path / out), progress="none", **kw)


# ---- train, evaluate, predict -------------------------------------------------------------------------------
def test_arrays_train_as_the_same_arrays_in_a_file_do(tmp_path):
    data = arrays()
    np.savez(tmp_path / "d.npz", **data)
    from_file = fit(model(tmp_path), tmp_path, "file", data="d.npz", validation=0.2)
    m = model(tmp_path)
    from_arrays = fit(m, tmp_path, "arrays", data=data, validation=0.2)
    assert from_arrays.history["loss"] == from_file.history["loss"]
    assert from_arrays.history["val_accuracy"] == from_file.history["val_accuracy"]
    for name, value in from_file.params.items():
        np.testing.assert_array_equal(from_arrays.params[name], value)

    scores = m.evaluate(arrays(20, seed=1), log=lambda msg: None)
    assert set(scores) == {"loss", "accuracy"} and 0 <= scores["accuracy"] <= 1
    probs = m.predict({"x": arrays(5, seed=2)["x"]})["probs"]
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_validation_and_test_take_arrays_too(tmp_path):
    result = fit(model(tmp_path), tmp_path, data=arrays(), validation=arrays(16, seed=1), test=arrays(12, seed=2))
    assert len(result.history["val_loss"]) == 2 and set(result.test) == {"loss", "accuracy"}


def test_history_by_column_as_keras_history(tmp_path):
    result = fit(model(tmp_path), tmp_path, data=arrays(), validation=0.25)
    history = result.history
    assert history["loss"] == [row["loss"] for row in history] and len(history) == 2
    assert history[0]["epoch"] == 1 and history[-1]["epoch"] == 2  # still a list of rows
    columns = history.as_dict()
    assert list(columns) == ["epoch", "lr", "time", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert columns["val_accuracy"] == history["val_accuracy"]
    with pytest.raises(KeyError, match="no column 'val_acuracy'; did you mean 'val_accuracy'"):
        history["val_acuracy"]


def test_torch_tensors_are_arrays(tmp_path):
    torch = pytest.importorskip("torch")
    data = arrays()
    as_numpy = fit(model(tmp_path), tmp_path, "numpy", data=data)
    m = model(tmp_path)
    as_torch = fit(m, tmp_path, "torch", data={k: torch.from_numpy(v) for k, v in data.items()})
    assert as_torch.history["loss"] == as_numpy.history["loss"]
    x = torch.from_numpy(data["x"][:4])
    np.testing.assert_array_equal(m.predict(x)["probs"], m.predict(data["x"][:4])["probs"])
    with pytest.raises(DlcError, match=r"array 'x' \(Tensor\) cannot be read as a numpy array: .*requires grad"):
        fit(m, tmp_path, data={"x": torch.from_numpy(data["x"]).requires_grad_(), "y": data["y"]})


# ---- the checks, naming the array, never showing it -------------------------------------------------------------
def no_values(message: str):
    """The message shows no array: no numpy repr, short."""
    assert "array([" not in message and "[[" not in message and len(message) < 300, message


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: {**d, "x": np.where(np.arange(60)[:, None] == 7, np.nan, d["x"])},
            r"data: array 'x' holds a value that is not a finite float32 number at index \[7, 0\] \(nan\)",
        ),
        (
            lambda d: {**d, "x": d["x"].astype(np.float64) * 1e39},  # beyond float32
            r"data: array 'x' holds a value that is not a finite float32 number",
        ),
        (lambda d: {**d, "y": d["y"] + 2}, r"y has values from 2 to 4, but the model takes 0 to 2 there"),
        (lambda d: {**d, "y": d["y"] + 0.5}, r"y is i32\[B\] but the data has fractional values"),
        (
            lambda d: {**d, "x": d["x"][:, :1]},
            r"the data for x has examples of shape \[1\], which does not fit input x",
        ),
        (lambda d: {**d, "x": d["x"].astype(str)}, r"data: array 'x' holds strings \(<U\d+\), not numbers"),
        (lambda d: {"x": d["x"], "labels": d["y"]}, r"model clf has no input named 'labels'"),
        (lambda d: {"x": d["x"]}, r"the data has no array for y of model clf"),
        (lambda d: {**d, "y": d["y"][:50]}, r"data columns have different numbers of examples: 'x' has 60, 'y' has 50"),
        (lambda d: {**d, "x": [[1.0], [2.0, 3.0]]}, r"data: array 'x' \(list\) cannot be read as a numpy array"),
        (
            lambda d: d["x"],
            r"data must be a data source such as digits\(\), a file path, or a dict of arrays by input "
            r"and target name, got a value of type ndarray",
        ),
    ],
)
def test_arrays_are_checked_as_file_data_is(tmp_path, change, message):
    m = model(tmp_path)
    with pytest.raises(DlcError, match=message) as e:
        fit(m, tmp_path, data=change(arrays()))
    no_values(str(e.value))
    assert not (tmp_path / "run").exists()  # refused before the run


def test_validation_arrays_are_checked_too(tmp_path):
    bad = arrays(16, seed=1)
    bad["x"][3, 1] = np.inf
    with pytest.raises(
        DlcError,
        match=r"validation: array 'x' holds a value that is not a finite float32 number "
        r"at index \[3, 1\] \(inf\)",
    ):
        fit(model(tmp_path), tmp_path, data=arrays(), validation=bad)


def test_evaluate_and_predict_check_arrays_as_train_does(tmp_path):
    m = model(tmp_path)
    m.params = init_params(m.train_model, 0)
    bad = arrays(10)
    bad["x"][2, 0] = np.nan
    for call in (
        lambda: m.evaluate(bad, log=lambda msg: None),
        lambda: m.predict({"x": bad["x"]}),
        lambda: m.predict(bad["x"]),
    ):
        with pytest.raises(DlcError, match=r"data: array 'x' holds a value that is not a finite float32 number") as e:
            call()
        no_values(str(e.value))
    with pytest.raises(DlcError, match=r"y has values from 0 to 7"):
        m.evaluate({**arrays(10), "y": np.arange(10) % 8}, log=lambda msg: None)


# ---- after training on arrays -----------------------------------------------------------------------------------
def test_weights_trained_on_arrays_ask_for_the_data_to_score(tmp_path, capsys):
    m = model(tmp_path)
    fit(m, tmp_path, data=arrays(), validation=0.25)
    with pytest.raises(
        DlcError,
        match=r"was trained on arrays given to train\(\), which its weights do not keep: "
        r"give the data to score",
    ):
        m.evaluate(log=lambda msg: None)
    meta = checkpoint.load(tmp_path / "run" / "last.npz")[2]
    assert meta["data"] == {
        "data": None,
        "validation": {"call": "split", "args": [0.25], "kwargs": {}},
        "test": None,
        "seed": 0,
    }
    np.savez(tmp_path / "test.npz", **arrays(12, seed=3))
    weights = str(tmp_path / "run" / "last.npz")
    assert main(["eval", str(tmp_path / "m.dl"), "--weights", weights, "--backend", "reference"]) == 1
    assert "give the data to score" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                str(tmp_path / "m.dl"),
                "--weights",
                weights,
                "--backend",
                "reference",
                "--data",
                str(tmp_path / "test.npz"),
            ]
        )
        == 0
    )


# ---- predict on a source ---------------------------------------------------------------------------------------
DIGITS = """
model d {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = dense(x, 10)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}
"""


def test_predict_takes_a_source_as_evaluate_does(tmp_path):
    m = DlcModel(write(tmp_path, DIGITS, "train d { data = digits(image = false) }"), backend="reference")
    m.params = init_params(m.train_model, 0)
    assert m.predict("digits(image = false)")["probs"].shape == (1797, 10)
    assert m.predict("digits()")["probs"].shape == (1797, 10)  # [1, 8, 8] images fill the 64 values
    weights = tmp_path / "w.npz"  # dlc predict --data takes a source too
    checkpoint.save(weights, m.params, {}, {})
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m.dl"),
                "--weights",
                str(weights),
                "--data",
                "digits()",
                "--backend",
                "reference",
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "p.npz")["probs"].shape == (1797, 10)
    with pytest.raises(DlcError, match="unknown data source 'digitz'; did you mean 'digits'"):
        m.predict("digitz()")
    with pytest.raises(DlcError, match=r"cannot tell the format of data file 'in\.bin'"):
        m.predict("in.bin")


def initialized(tmp_path, name: str, body: str) -> DlcModel:
    """Model `name` of token ids (input ids: i32[B, 4]) and `body`, at its initial parameters, on
    the reference engine."""
    path = tmp_path / f"{name}.dl"
    path.write_text(f"model {name} {{\n    input ids: i32[B, 4]\n    {body}\n}}\n")
    m = DlcModel(str(path), backend="reference")
    m.params = init_params(m.train_model, 0)
    return m


def test_predict_finds_an_index_inputs_bounds_once_and_checks_every_call(tmp_path, monkeypatch):
    """The bounds of token ids (the embedding's rows) come from the graph once per model, not
    at every call (a prediction of one example is µs), and every call is still checked."""
    from dlc.runtime.training import inputs

    m = initialized(tmp_path, "tokens", "h = embedding(ids, 10, 3)\n    output scores = sum(h, axis = 2)")
    walks = []
    monkeypatch.setattr(inputs, "index_bound", lambda *a: walks.append(a) or 10)
    ids = np.arange(4, dtype=np.int32)[None, :]
    for _ in range(3):
        assert m.predict(ids)["scores"].shape == (1, 4)
    assert len(walks) == 1
    with pytest.raises(DlcError, match=r"ids has values from 8 to 11, but the model takes 0 to 9 there"):
        m.predict(ids + 8)


def test_an_argmax_downstream_of_token_ids_bounds_them_by_no_one_hot_of_its(tmp_path):
    """A one_hot of the logits' argmax is of positions among the logits, not of the token ids
    the logits came from: the ids are bounded by their embedding's rows alone (not by the 2
    classes of the one-hot)."""
    m = initialized(
        tmp_path,
        "hard",
        "logits = sum(embedding(ids, 10, 2), axis = 1)\n    output picked = one_hot(argmax(logits, axis = 1), 2)",
    )
    assert m.predict(np.array([[9, 0, 5, 7]], np.int32))["picked"].shape == (1, 2)
    with pytest.raises(DlcError, match=r"ids has values from 0 to 10, but the model takes 0 to 9 there"):
        m.predict(np.array([[10, 0, 5, 7]], np.int32))
