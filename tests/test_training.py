"""Training end to end: accuracy on the bundled digits, optimizers through the loop,
resume, Ctrl-C, NaN, checkpoints, transfer learning and bad input."""
import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime.training import checkpoint
from dlc.runtime.cli import main
from dlc.runtime.engines.reference import ReferenceEngine

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_digits_mlp_reaches_95_percent(tmp_path):
    result = dlc.load(str(EXAMPLES / "digits_mlp.dl")).train(out=str(tmp_path), log=lambda m: None)
    assert result.test["accuracy"] >= 0.95
    assert {"best.npz", "last.npz", "history.csv", "history.json"} <= {p.name for p in tmp_path.iterdir()}
    assert result.history[-1]["val_accuracy"] > result.history[0]["val_accuracy"]


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_from_the_command_line(tmp_path, capsys):
    assert main(["train", str(EXAMPLES / "digits_cnn.dl"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    test_line = next(line for line in out.splitlines() if line.startswith("test:"))
    accuracy = float(test_line.split("accuracy")[1].split()[0])
    assert accuracy >= 0.97, out


QUADRATIC = """
model quadratic {
    input x: f32[B, 2]
    param w: f32[2] = ones
    loss sum(w * w * [1.0, 3.0]) / 2 + 0 * mean(x)
}
train quadratic { data = xor() batch = 4 epochs = 3 shuffle = false }
"""


def _adam_by_hand(w, c, lr=0.1):
    m = v = np.zeros_like(w)
    for t in (1, 2, 3):
        g = w * c
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w


def _adagrad_by_hand(w, c, lr=0.1):
    total = np.zeros_like(w)
    for _ in range(3):
        g = w * c
        total = total + g * g
        w = w - lr * g / (np.sqrt(total) + 1e-10)
    return w


@pytest.mark.parametrize("optimizer, by_hand", [
    ("sgd(lr = 0.1)", lambda w, c: w * (1 - 0.1 * c) ** 3),
    ("adam(lr = 0.1)", lambda w, c: _adam_by_hand(w, c)),
    ("adagrad(lr = 0.1)", lambda w, c: _adagrad_by_hand(w, c)),
])
def test_optimizer_steps_through_the_trainer(tmp_path, optimizer, by_hand):
    path = tmp_path / "q.dl"
    path.write_text(QUADRATIC)
    from dlc.runtime.training.config import parse_setting
    spec = parse_setting(optimizer, "optimizer")
    result = dlc.load(str(path)).train(out=str(tmp_path / "run"), log=lambda m: None,
                                       optimizer=spec.name, lr=spec.kwargs["lr"])
    w = result.params["w"]
    np.testing.assert_allclose(w, by_hand(np.ones(2), np.array([1.0, 3.0])), rtol=1e-5)


def _interrupt_at(monkeypatch, step_to_interrupt):
    """Make the engines deliver a real SIGINT during one step."""
    from dlc.runtime.engines.native import NativeEngine
    calls = {"n": 0}
    for cls in (ReferenceEngine, NativeEngine):
        def train_step(self, *args, original=cls.train_step, **kw):
            out = original(self, *args, **kw)
            calls["n"] += 1
            if calls["n"] == step_to_interrupt:
                signal.raise_signal(signal.SIGINT)
            return out
        monkeypatch.setattr(cls, "train_step", train_step)


def test_resume_after_ctrl_c_gives_the_same_parameters(tmp_path, monkeypatch):
    path = str(EXAMPLES / "digits_mlp.dl")
    settings = dict(log=lambda m: None, epochs=3)
    straight = dlc.load(path).train(out=str(tmp_path / "a"), **settings)

    _interrupt_at(monkeypatch, 60)
    stopped = dlc.load(path).train(out=str(tmp_path / "b"), **settings)
    assert stopped.stopped == "interrupted"
    meta = checkpoint.load(tmp_path / "b" / "last.npz")[2]
    assert meta["step"] == 60 and meta["epoch"] == 1          # 41 batches per epoch: stopped inside epoch 2
    monkeypatch.undo()

    resumed = dlc.load(path).train(out=str(tmp_path / "b"), resume=True, **settings)
    assert resumed.stopped == "done"
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "digits_mlp.dl"), "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "last.npz").read_bytes()
    code = main(["train", str(EXAMPLES / "digits_mlp.dl"), "--epochs", "2", "--out", str(out),
                 "--optimizer", "sgd", "--lr", "1e30"])
    err = capsys.readouterr().err
    assert code == 1 and "the loss became" in err and "at step" in err and "Traceback" not in err
    assert (out / "last.npz").read_bytes() == before


def test_transfer_learning_with_frozen_convolutions(tmp_path, capsys):
    from dlc.runtime.data import registry as data
    digits = data.load(data.Call("digits") if hasattr(data, "Call") else _digits_call(), Path("."))
    x, y = digits.columns["x"], digits.columns["y"]
    low, high = y < 5, y >= 5
    np.savez(tmp_path / "low.npz", x=x[low], y=y[low])
    np.savez(tmp_path / "high.npz", x=x[high], y=(y[high] - 5))
    src = (EXAMPLES / "digits_cnn.dl").read_text().split("train digits_cnn")[0]
    (tmp_path / "a.dl").write_text(src + 'train digits_cnn { data = "low.npz" validation = split(0.1) '
                                         'epochs = 8 batch = 32 optimizer = adam(lr = 2e-3) }')
    (tmp_path / "b.dl").write_text(src + 'train digits_cnn { data = "high.npz" test = split(0.3) epochs = 8 '
                                         'batch = 32 optimizer = adam(lr = 2e-3) init_from = "a/best.npz" '
                                         'freeze = [c1, c3] }')
    assert main(["train", str(tmp_path / "a.dl"), "--out", str(tmp_path / "a")]) == 0
    assert main(["train", str(tmp_path / "b.dl"), "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "matched" in err
    accuracy = float(next(l for l in out.splitlines() if l.startswith("test:")).split("accuracy")[1].split()[0])
    assert accuracy >= 0.90
    first, second = checkpoint.load(tmp_path / "a" / "best.npz")[0], checkpoint.load(tmp_path / "b" / "best.npz")[0]
    np.testing.assert_array_equal(first["c1.W"], second["c1.W"])       # frozen: unchanged
    assert not np.array_equal(first["f5.W"], second["f5.W"])           # trained
    assert main(["summary", str(tmp_path / "b.dl")]) == 0
    summary = capsys.readouterr().out
    assert "c1.W" in summary and "Trainable parameters:" in summary
    trainable = int(summary.split("Trainable parameters:")[1].split()[0].replace(",", ""))
    assert trainable == 8906          # f5 (128*64 + 64) + logits (64*10 + 10): the convolutions are frozen


def _digits_call():
    from dlc.runtime.training.settings import Call
    return Call("digits")


@pytest.mark.parametrize("argv, phrase", [
    (["--data", "nothere.npz"], "nothere.npz"),
    (["--data", "xor()"], "does not fit"),
    (["--optimizer", "adamx"], "unknown optimizer 'adamx'"),
    (["--lr", "-0.1"], "must not be negative"),
    (["--epochs", "-1"], "epochs must be"),
    (["--resume", "corrupt.npz"], "not a readable checkpoint"),
    (["--init-from", "corrupt.npz"], "not a readable checkpoint"),
    (["--freeze", "nothing*"], "no parameter matches"),
])
def test_bad_input_is_refused_and_overwrites_nothing(tmp_path, capsys, argv, phrase):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "digits_mlp.dl"), "--out", str(out)]
                + [a if a != "corrupt.npz" else str(tmp_path / a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and phrase in err and "Traceback" not in err, err
    assert not out.exists()


def test_mismatched_checkpoint_names_the_mismatches(tmp_path, capsys):
    assert main(["train", str(EXAMPLES / "xor_mlp.dl"), "--epochs", "1", "--out", str(tmp_path / "x")]) == 0
    code = main(["eval", str(EXAMPLES / "digits_mlp.dl"), "--weights", str(tmp_path / "x" / "best.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "does not match the model" in err and "missing h.0.W" in err and "unexpected h.W" in err


def test_eval_and_predict_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "digits_mlp.dl"), "--epochs", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(EXAMPLES / "digits_mlp.dl"), "--weights", str(out / "best.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["predict", str(EXAMPLES / "digits_mlp.dl"), "--weights", str(out / "best.npz"),
                 "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "p.npz")]) == 0
    probs = np.load(tmp_path / "p.npz")["probs"]
    assert probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    with pytest.raises(DlcError):
        dlc.load(str(EXAMPLES / "digits_mlp.dl")).predict(x)      # no weights yet


def test_generate_from_a_small_character_model(tmp_path, capsys):
    text = ("the cat sat on the mat. " * 80)
    (tmp_path / "t.txt").write_text(text)
    (tmp_path / "c.dl").write_text("""
model c {
    input x: i32[B, T]
    target y: i32[B, T]
    hs = gru(embedding(x, 16, 8), 32)
    logits = dense(hs, 16)
    loss sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}
train c { data = text("t.txt", seq = 24) batch = 8 epochs = 6 optimizer = adam(lr = 1e-2) }
""")
    assert main(["train", str(tmp_path / "c.dl"), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "c.dl"), "--weights", str(tmp_path / "run" / "best.npz"),
                 "--prompt", "the cat ", "--length", "16"]) == 0
    generated = capsys.readouterr().out.rstrip("\n")
    assert generated.startswith("the cat ") and len(generated) == len("the cat ") + 16
    assert set(generated) <= set(text)


def _history(out: Path) -> tuple:
    rows = json.loads((out / "history.json").read_text())
    with open(out / "history.csv") as f:
        return rows, list(csv.DictReader(f))


def test_history_is_written_every_epoch_and_survives_ctrl_c(tmp_path, monkeypatch):
    """41 batches an epoch: a Ctrl-C in the third epoch leaves the two finished epochs in
    history.json and history.csv, as the run writes them after every epoch."""
    path = str(EXAMPLES / "digits_mlp.dl")
    _interrupt_at(monkeypatch, 100)
    stopped = dlc.load(path).train(out=str(tmp_path / "run"), log=lambda m: None, epochs=5)
    assert stopped.stopped == "interrupted"
    rows, csv_rows = _history(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and [int(r["epoch"]) for r in csv_rows] == [1, 2]
    assert float(csv_rows[1]["loss"]) == pytest.approx(rows[1]["loss"])


def test_history_survives_a_nan_stop(tmp_path, capsys):
    out = tmp_path / "run"
    src = (EXAMPLES / "digits_mlp.dl").read_text().replace("optimizer  = adam(lr = 1e-3)",
                                                          "optimizer  = sgd(lr = 1e-3)\n    schedule = step(1, 1e33)")
    (tmp_path / "m.dl").write_text(src)
    code = main(["train", str(tmp_path / "m.dl"), "--epochs", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "the loss became" in err
    rows, csv_rows = _history(out)
    assert len(rows) >= 1 and len(csv_rows) == len(rows) and rows[-1]["epoch"] < 4
