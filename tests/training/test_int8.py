"""int8 from every door that has it (docs/quantization.md): `dlc quantize`, `dlc eval --int8`,
`dlc predict --int8`, `dlc summary --int8`, model.quantize(); the digits CNN's accuracy and
SQNR in int8 against float32; the quantized checkpoint and the hostile ones it refuses."""

from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.runtime.cli import main
from dlc.runtime.interop import checkpoint
from tests.helpers.cli import failure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIGITS = str(EXAMPLES / "digits_cnn.dl")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The digits CNN trained 12 epochs, and its quantization on 8 calibration batches."""
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", DIGITS, "--out", str(out), "--epochs", "12", "-q"]) == 0
    assert (
        main(["quantize", DIGITS, "--weights", str(out / "best.npz"), "--calibrate", "8", "-o", str(out / "q.npz")])
        == 0
    )
    return out


def _accuracy(argv, capsys) -> float:
    assert main(argv) == 0
    return float(capsys.readouterr().out.split("accuracy")[1].split()[0])


def test_digits_cnn_int8_accuracy_is_within_half_a_point_of_float32(trained, capsys):
    f32 = _accuracy(["eval", DIGITS, "--weights", str(trained / "q.npz")], capsys)
    i8 = _accuracy(["eval", DIGITS, "--weights", str(trained / "q.npz"), "--int8"], capsys)
    assert f32 > 0.9 and abs(i8 - f32) <= 0.005, (f32, i8)


def test_int8_outputs_against_float32_sqnr_and_agreement(trained, capsys):
    """SQNR of the int8 probabilities against float32's on the whole digits set, and top-1 agreement."""
    outs = {}
    for int8 in (False, True):
        path = trained / f"p{int8}.npz"
        assert (
            main(
                ["predict", DIGITS, "--weights", str(trained / "q.npz"), "--data", "digits()", "--output", str(path)]
                + ["--int8"] * int8
            )
            == 0
        )
        outs[int8] = np.load(path)["probs"].astype(np.float64)
    noise = outs[True] - outs[False]
    sqnr = 10 * np.log10((outs[False] ** 2).sum() / (noise**2).sum())
    agreement = (outs[True].argmax(1) == outs[False].argmax(1)).mean()
    print(f"digits CNN int8 vs float32: SQNR {sqnr:.1f} dB, top-1 agreement {agreement:.4f}")
    assert sqnr > 25 and agreement > 0.99, (sqnr, agreement)


def test_calibration_is_deterministic_and_the_observers_differ(trained, tmp_path):
    for name, extra in (("a", []), ("b", []), ("p", ["--observer", "percentile", "--percentile", "99"])):
        assert (
            main(
                [
                    "quantize",
                    DIGITS,
                    "--weights",
                    str(trained / "best.npz"),
                    "--calibrate",
                    "8",
                    "-o",
                    str(tmp_path / f"{name}.npz"),
                ]
                + extra
            )
            == 0
        )
    a, b, p = (checkpoint.read(tmp_path / f"{n}.npz")[0] for n in "abp")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert p["int8:c3.W:input_scale"] < a["int8:c3.W:input_scale"]  # the 99th percentile clips the top
    assert np.array_equal(p["int8:c3.W:weight"], a["int8:c3.W:weight"])  # weights do not depend on the observer
    assert checkpoint.read(tmp_path / "p.npz")[1]["quantization"]["observer"] == "percentile"


def test_python_quantize_matches_the_command_and_saves_a_quantized_checkpoint(trained, tmp_path):
    model = dlc.load(DIGITS, weights=trained / "best.npz")
    assert model.quantize(calibrate=8) is model
    model.save(tmp_path / "q.npz")
    mine, theirs = checkpoint.read(tmp_path / "q.npz")[0], checkpoint.read(trained / "q.npz")[0]
    assert all(np.array_equal(mine[k], theirs[k]) for k in theirs if k.startswith("int8:"))
    x = {"x": np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)}
    reread = dlc.load(DIGITS, weights=tmp_path / "q.npz")
    assert np.array_equal(reread.predict(x, int8=True)["probs"], model.predict(x, int8=True)["probs"])
    assert np.array_equal(
        reread.predict(x)["probs"], dlc.load(DIGITS, weights=trained / "best.npz").predict(x)["probs"]
    )


def test_summary_int8_lists_the_integer_products(capsys):
    assert main(["summary", DIGITS, "--int8"]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 products in int8" in out and "logits.W" in out and "its sums of 9 terms are too short" in out


def test_int8_needs_a_quantization(trained, capsys):
    assert "has no int8 quantization" in failure(
        ["eval", DIGITS, "--weights", str(trained / "best.npz"), "--int8"], capsys
    )


def test_native_int8_is_the_same_on_any_thread_count_and_agrees_with_the_reference(
    trained, tmp_path, capsys, monkeypatch
):
    """`--backend native` (the whole program compiled, its products int8 kernels): the digits
    CNN's probabilities over the whole set the same bits on 1, 2 and 3 threads, and the
    reference int8 engine's to float32's last bits (the products are exact in both; the
    softmax's exp is the native polynomial), every top-1 the same; `dlc eval`'s line the same."""

    def predict(name, backend):
        path = tmp_path / f"{name}.npz"
        assert (
            main(
                [
                    "predict",
                    DIGITS,
                    "--weights",
                    str(trained / "q.npz"),
                    "--data",
                    "digits()",
                    "--int8",
                    "--backend",
                    backend,
                    "--output",
                    str(path),
                ]
            )
            == 0
        )
        return np.load(path)["probs"]

    want = predict("reference", "reference")
    monkeypatch.setenv("DLC_NUM_THREADS", "1")
    one = predict("native1", "native")
    assert np.allclose(one, want, rtol=1e-5, atol=1e-7) and np.array_equal(one.argmax(1), want.argmax(1))
    for threads in ("2", "3"):
        monkeypatch.setenv("DLC_NUM_THREADS", threads)
        got = predict(f"native{threads}", "native")
        assert np.array_equal(got.view(np.int32), one.view(np.int32)), threads
    capsys.readouterr()
    evals = [
        main(["eval", DIGITS, "--weights", str(trained / "q.npz"), "--int8", "--backend", b]) == 0
        and capsys.readouterr().out.splitlines()[-1]
        for b in ("reference", "native")
    ]
    assert evals[0] == evals[1] and "accuracy" in evals[0]


def _hostile(trained, tmp_path, key, value):
    arrays, meta = checkpoint.read(trained / "q.npz")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param:")}
    more = {k: v for k, v in arrays.items() if k.startswith("int8:")}
    if value is None:
        del more[key]
    else:
        more[key] = value
    path = tmp_path / "hostile.npz"
    checkpoint.save(path, params, {}, {k: v for k, v in meta.items() if k not in ("format", "dlc_version")}, more)
    return path


@pytest.mark.parametrize(
    "key, value, said",
    [
        (
            "int8:c3.W:weight_scale",
            lambda s: np.where(np.arange(len(s)) == 3, 0, s).astype(np.float32),
            "int8:c3.W:weight_scale[3] is 0.0",
        ),
        ("int8:c3.W:weight_scale", lambda s: np.full_like(s, np.nan), "int8:c3.W:weight_scale[0] is nan"),
        ("int8:c3.W:input_scale", lambda s: np.float32(-0.5), "int8:c3.W:input_scale is -0.5"),
        ("int8:c3.W:input_scale", lambda s: np.float32(1e30), "a scale is a number from 2^-60 to 2^40"),
        ("int8:c3.W:input_scale", lambda s: np.float32(1e-40), "a scale is a number from 2^-60 to 2^40"),
        ("int8:f5.W:weight_scale", lambda s: s[:5], "int8:f5.W:weight_scale is float32[5], not float32[64]"),
        ("int8:f5.W:weight", lambda w: w.astype(np.float32), "int8:f5.W:weight is float32[128, 64], not int8[128, 64]"),
        ("int8:f5.W:weight", lambda w: np.full_like(w, -128), "int8:f5.W:weight[0, 0] is -128"),
        ("int8:c3.W:input_zero_point", lambda z: np.int32(3), "int8:c3.W:input_zero_point is int32[], not uint8[]"),
        ("int8:logits.W:input_scale", None, "lacks int8:logits.W:input_scale"),
        ("int8:nope.W:weight", lambda w: np.zeros(3, np.int8), "quantizes nope.W, which is not the weights"),
        (
            "int8:c1.W:weight",
            lambda w: np.zeros((16, 1, 3, 3), np.int8),
            "quantizes c1.W, whose conv2d stays float32: its sums of 9 terms are too short",
        ),
    ],
)
def test_hostile_quantized_checkpoints_are_refused_naming_the_array(trained, tmp_path, capsys, key, value, said):
    arrays, _ = checkpoint.read(trained / "q.npz")
    original = arrays.get(key, arrays.get("int8:c3.W:weight"))
    path = _hostile(trained, tmp_path, key, value if value is None else value(original))
    err = failure(["eval", DIGITS, "--weights", str(path), "--int8"], capsys)
    assert said in err and str(path) in err, err
    if "nope" not in said:
        assert "digits_cnn.dl:" in err  # at the line of the product
    assert main(["eval", DIGITS, "--weights", str(path)]) == 0  # float32 reads its parameters alone


def test_a_quantization_of_another_source_is_refused(trained, tmp_path, capsys):
    changed = tmp_path / "digits_cnn.dl"
    changed.write_text(
        Path(DIGITS)
        .read_text()
        .replace("f5 = dense(dropout(flatten(s4), 0.25), 64, relu)", "f5 = dense(dropout(flatten(s4), 0.25), 64, tanh)")
    )
    err = failure(["eval", str(changed), "--weights", str(trained / "q.npz"), "--int8"], capsys)
    assert "quantized from another version" in err


SMALL = """
model m {
    input  x: f32[B, 1, 8, 8]
    target y: i32[B]
    logits = dense(flatten(maxpool2d(conv2d(x, 4, 3, padding = "same", act = relu), 2)), 10)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}
train m { data = digits() batch = 32 epochs = 1 quantize = int8(calibrate = 3, observer = percentile) }
"""


def test_the_train_block_quantizes_the_run_into_int8_npz(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(SMALL)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "-q"]) == 0
    assert "int8.npz" in capsys.readouterr().out
    arrays, meta = checkpoint.read(tmp_path / "run" / "int8.npz")
    assert meta["quantization"]["observer"] == "percentile" and meta["quantization"]["calibrate"] == 3
    assert {k for k in arrays if k.startswith("int8:")} == {
        f"int8:logits.1.W:{part}"  # the conv of one channel: float32
        for part in ("weight", "weight_scale", "input_scale", "input_zero_point")
    }
    assert main(["eval", str(path), "--weights", str(tmp_path / "run" / "int8.npz"), "--int8"]) == 0
    path.write_text(SMALL.replace("observer = percentile", "observer = median"))
    assert "'observer' must be one of minmax, percentile" in failure(["check", str(path)], capsys)


def test_a_comment_or_blank_line_keeps_a_quantization_and_a_layers_size_does_not(tmp_path):
    """The quantized checkpoint is stamped with the graph its scales were calibrated in, not the
    text: a file with comments, blank lines and other spacing added predicts in int8 with it,
    the same bits, and so does one with a binding renamed, given the checkpoint `dlc checkpoint
    rename` renamed; one whose dense layer is narrower is refused as another version of the model."""
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.errors import DlcError
    from dlc.runtime.interop import quantized
    from dlc.runtime.training.trainer import initial_parameters

    checkpoint.save(tmp_path / "w.npz", initial_parameters(load(DIGITS).build(None, training=False), 7), {}, {})
    model = dlc.load(DIGITS, weights=tmp_path / "w.npz").quantize(calibrate=2)
    model.save(tmp_path / "q.npz")
    text = Path(DIGITS).read_text()
    edited = tmp_path / "edited" / "digits_cnn.dl"
    edited.parent.mkdir()
    edited.write_text(
        "# a comment line added above\n\n"
        + text.replace("    s2 = maxpool2d(c1, 2)", "\n    # the first pooling\n    s2   =   maxpool2d( c1 , 2 )")
    )
    x = {"x": np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)}
    again = dlc.load(str(edited), weights=tmp_path / "q.npz")
    assert again.predict(x, int8=True)["probs"].tobytes() == model.predict(x, int8=True)["probs"].tobytes()
    renamed = tmp_path / "renamed" / "digits_cnn.dl"  # a binding renamed, and its checkpoint with it
    renamed.parent.mkdir()
    renamed.write_text(text.replace("c1 = conv2d", "first = conv2d").replace("maxpool2d(c1, 2)", "maxpool2d(first, 2)"))
    checkpoint.rename(tmp_path / "q.npz", {"c1": "first"}, tmp_path / "renamed.npz")
    again = dlc.load(str(renamed), weights=tmp_path / "renamed.npz")
    assert again.predict(x, int8=True)["probs"].tobytes() == model.predict(x, int8=True)["probs"].tobytes()
    narrower = tmp_path / "narrower.dl"
    narrower.write_text(text.replace("flatten(s4), 0.25), 64, relu)", "flatten(s4), 0.25), 48, relu)"))
    with pytest.raises(DlcError, match="quantized from another version of model digits_cnn"):
        quantized.load(tmp_path / "q.npz", load(narrower).build(None, training=False), narrower.read_text())
