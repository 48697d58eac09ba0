"""How data binds to a model's inputs (runtime/training/inputs.py): an example is reshaped
only between a flat vector and a shape of the same size; named data (a dict, an .npz saved
with keywords) binds by name, an unknown name refused with a did-you-mean; unnamed columns
(np.savez's arr_0, arr_1) bind in order, which stderr is told once."""

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.gradcheck import init_params

from helpers.programs import ENC_DEC  # a small encoder-decoder, shared

# The 8x8 digits are [1, 8, 8] examples (NCHW); this model declares them channels-last.
CHANNELS_LAST = """
model cl {
    input  x: f32[B, 8, 8, 1]
    target y: i32[B]
    c = conv2d(x, 2, 1)
    logits = dense(flatten(c), 10)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}
train cl {
    data   = digits()
    epochs = 1
}
"""

FLAT = """
model flat {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = dense(x, 10)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}
train flat {
    data   = digits()
    epochs = 1
}
"""


SMALL_NPZ = """
model small {
    input  x: f32[B, 2]
    target y: i32[B]
    logits = dense(x, 2)
    loss   sparse_cross_entropy(logits, y)
}
train small {
    data       = npz("unnamed.npz")
    validation = split(0.25)
    test       = split(0.25)
    epochs     = 1
    batch      = 8
}
"""


def random_model(tmp_path, text: str) -> DlcModel:
    path = tmp_path / "m.dl"
    path.write_text(text)
    model = DlcModel(str(path), backend="reference")
    model.params = init_params(model.train_model, 0)
    return model


def assert_channels_last_refused(message: str):
    assert "the data for x has examples of shape [1, 8, 8]" in message, message
    assert "f32[B, 8, 8, 1]" in message and "[8, 8, 1]" in message, message
    assert "NCHW" in message and "conv2d reads [C, H, W] per example" in message, message
    assert "x: f32[B, 1, 8, 8]" in message, message  # the declaration that fits the data


# ---- shapes ----------------------------------------------------------------------------------------------
def test_channels_last_digits_are_refused_in_training(tmp_path, capsys):
    path = tmp_path / "cl.dl"
    path.write_text(CHANNELS_LAST)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--backend", "reference"]) == 1
    assert_channels_last_refused(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_channels_last_digits_are_refused_in_evaluate_and_predict(tmp_path, capsys):
    model = random_model(tmp_path, CHANNELS_LAST)
    with pytest.raises(DlcError) as e:
        model.evaluate("digits()", log=lambda m: None)
    assert_channels_last_refused(str(e.value))
    images = np.zeros((3, 1, 8, 8), np.float32)
    with pytest.raises(DlcError) as e:
        model.predict({"x": images})
    assert_channels_last_refused(str(e.value))

    # dlc predict goes through the same binding
    weights, data = tmp_path / "w.npz", tmp_path / "in.npz"
    checkpoint.save(weights, model.params, {}, {})
    np.savez(data, x=images)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m.dl"),
                "--weights",
                str(weights),
                "--input",
                str(data),
                "--backend",
                "reference",
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 1
    )
    assert_channels_last_refused(capsys.readouterr().err)
    assert not (tmp_path / "p.npz").exists()


def test_a_flat_vector_and_a_shape_of_its_size_bind_either_way(tmp_path):
    flat = random_model(tmp_path, FLAT)  # digits() gives [1, 8, 8] examples
    assert set(flat.evaluate("digits()", log=lambda m: None)) == {"loss"}
    images = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    by_image = flat.predict({"x": images})["probs"]
    np.testing.assert_allclose(flat.predict({"x": images.reshape(4, 64)})["probs"], by_image)

    shaped = random_model(tmp_path, CHANNELS_LAST)  # 64 values fill [8, 8, 1]
    assert shaped.predict(images.reshape(4, 64))["probs"].shape == (4, 10)


def test_a_shape_of_another_size_is_refused(tmp_path):
    flat = random_model(tmp_path, FLAT)
    with pytest.raises(DlcError, match=r"shape \[63\], which does not fit input x: f32\[B, 64\]"):
        flat.predict({"x": np.zeros((2, 63), np.float32)})


# A tagger whose padded tags are -1: the loss ignores them, so the data may hold them.
IGNORED_TAGS = """
model tagger {
    input  words: i32[B, T]
    target tags: i32[B, T]
    logits = dense(embedding(words, 5, 3), 4)
    loss   sparse_cross_entropy(logits, tags%s)
}
"""


def test_labels_may_hold_the_ignore_index_of_the_loss_and_nothing_else(tmp_path):
    words = np.array([[1, 2, 0], [3, 0, 0]], np.int32)
    tags = np.array([[0, 3, -1], [2, -1, -1]], np.int32)
    ignoring = random_model(tmp_path, IGNORED_TAGS % ", ignore = -1")
    loss = ignoring.evaluate({"words": words, "tags": tags})["loss"]
    assert np.isfinite(loss) and loss > 0
    plain = random_model(tmp_path, IGNORED_TAGS % "")
    with pytest.raises(DlcError, match="tags has values from -1 to 3, but the model takes 0 to 3 there"):
        plain.evaluate({"words": words, "tags": tags})
    with pytest.raises(DlcError, match="tags has values from -2 to 3"):  # -2 is no ignore index
        ignoring.evaluate({"words": words, "tags": np.where(tags < 0, -2, tags)})


# ---- names -----------------------------------------------------------------------------------------------
def enc_dec_arrays(n=4):
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 4, (n, 10)).astype(np.int32),
        rng.integers(0, 4, (n, 7)).astype(np.int32),
        rng.integers(0, 4, (n, 7)).astype(np.int32),
    )


def test_predict_refuses_an_unknown_input_name(tmp_path):
    model = random_model(tmp_path, ENC_DEC)
    src, dec_in, _ = enc_dec_arrays()
    assert model.predict({"dec_in": dec_in, "src": src})["probs"].shape == (4, 7, 4)  # any order of names
    with pytest.raises(DlcError, match="no input named 'source'") as e:  # once bound in order: (4, 10, 4)
        model.predict({"dec_in": dec_in, "source": src})
    assert "src, dec_in, dec_out" in str(e.value)
    with pytest.raises(DlcError, match="no input named 'srcc'; did you mean 'src'"):
        model.predict({"dec_in": dec_in, "srcc": src})
    with pytest.raises(DlcError, match="no array for src of model m"):
        model.predict({"dec_in": dec_in})


def test_evaluate_refuses_an_unknown_name_in_a_dict_or_a_named_npz(tmp_path):
    model = random_model(tmp_path, ENC_DEC)
    src, dec_in, dec_out = enc_dec_arrays()
    assert set(model.evaluate({"src": src, "dec_in": dec_in, "dec_out": dec_out}, log=lambda m: None)) == {"loss"}
    with pytest.raises(DlcError, match="no input named 'dec_outt'; did you mean 'dec_out'"):
        model.evaluate({"src": src, "dec_in": dec_in, "dec_outt": dec_out}, log=lambda m: None)
    named = tmp_path / "named.npz"
    np.savez(named, src=src, dec_in=dec_in, dec_ot=dec_out)
    with pytest.raises(DlcError, match="no input named 'dec_ot'; did you mean 'dec_out'"):
        model.evaluate(str(named), log=lambda m: None)


def test_unnamed_columns_bind_in_order_and_say_so(tmp_path, capsys):
    model = random_model(tmp_path, ENC_DEC)
    src, dec_in, dec_out = enc_dec_arrays()
    unnamed = tmp_path / "unnamed.npz"
    np.savez(unnamed, src, dec_in)  # arr_0, arr_1
    expected = model.predict({"src": src, "dec_in": dec_in})["probs"]
    capsys.readouterr()
    np.testing.assert_array_equal(model.predict(str(unnamed))["probs"], expected)
    err = capsys.readouterr().err
    assert err.count("note: the data's columns bind to the inputs in order: arr_0 -> src, arr_1 -> dec_in") == 1


def test_training_on_unnamed_columns_says_so_once(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((40, 2)).astype(np.float32)
    np.savez(tmp_path / "unnamed.npz", x, (x[:, 0] > x[:, 1]).astype(np.int32))
    path = tmp_path / "small.dl"
    path.write_text(SMALL_NPZ)
    DlcModel(str(path), backend="reference").train(out=str(tmp_path / "run"), log=lambda m: None, progress="none")
    err = capsys.readouterr().err
    assert err.count("note: the data's columns bind to the inputs in order: arr_0 -> x, arr_1 -> y") == 1, err


# ---- places ----------------------------------------------------------------------------------------------
LOCATED = """model cls {
    input  x: f32[B, 2]
    target y: i32[B]
    loss   sparse_cross_entropy(dense(x, 2), y)
}
train cls {
    data   = "d.npz"
    epochs = 1
}
"""


@pytest.mark.parametrize(
    "arrays, first, note",
    [
        (
            {"x": (4, 2)},
            "m.dl:3:5: error: the data has no array for y of model cls (it has x)",
            "m.dl:7:5: note: the data is set here",
        ),
        (
            {"x": (4, 2), "y": (4,), "a": (4,)},
            "m.dl:7:5: error: model cls has no input named 'a'",
            "m.dl:1:1: note: the model is declared here",
        ),
        ({"x": (0, 2), "y": (0,)}, "m.dl:7:5: error: the training data has no examples", None),
    ],
)
def test_data_that_does_not_fit_the_model_is_located(tmp_path, capsys, arrays, first, note):
    """At the declaration the data lacks, or at the train block's data line, with the other a note."""
    np.savez(
        tmp_path / "d.npz",
        **{name: np.zeros(shape, np.int32 if name != "x" else np.float32) for name, shape in arrays.items()},
    )
    (tmp_path / "m.dl").write_text(LOCATED)
    assert main(["train", str(tmp_path / "m.dl"), "--out", str(tmp_path / "run"), "--backend", "reference"]) == 1
    lines = capsys.readouterr().err.replace(str(tmp_path) + "/", "").splitlines()
    assert lines[0].startswith(first), lines
    assert note is None or note in lines, lines


def test_arrays_given_in_python_that_do_not_fit_point_at_the_model(tmp_path):
    model = random_model(tmp_path, FLAT)
    with pytest.raises(DlcError, match="no input named 'z'") as e:
        model.evaluate({"x": np.zeros((2, 64), np.float32), "y": np.zeros(2, np.int32), "z": np.zeros(2)})
    assert (e.value.span.line, e.value.span.text()) == (2, None)  # the model's declaration, its block
    with pytest.raises(DlcError, match="no array for y") as e:
        model.evaluate({"x": np.zeros((2, 64), np.float32)})
    assert e.value.span.text() == "target y: i32[B]"
