"""Training (runtime/training/trainer.py) end to end: accuracy on the bundled digits, optimizers
through the loop, resume after Ctrl-C at any batch, a non-finite loss stopped, history, transfer
learning and bad input; the train block's settings checked where they are written and bound by
position, the split a checkpoint was trained on scored again by `dlc eval`, batch statistics never
computed on one example; and the reference interpreter alone training XOR."""

import csv
import json
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.runtime.interop import checkpoint
from dlc.runtime.cli import main
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.api import DlcModel
from dlc.runtime.training import trainer as trainer_module
from dlc.runtime.training.trainer import Trainer
from dlc.runtime.training.run_plan import batch_bounds
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.optim.options import clip_limit
from dlc.runtime.optim.schedules import make_schedule
from dlc.runtime.engines import interpreter
from dlc.compiler.frontend.loader import load
from dlc.compiler.passes.autodiff import train_step

from helpers.programs import CLASSIFIER

EXAMPLES = Path(__file__).parents[2] / "examples"


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
        w = w - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def _adagrad_by_hand(w, c, lr=0.1):
    total = np.zeros_like(w)
    for _ in range(3):
        g = w * c
        total = total + g * g
        w = w - lr * g / (np.sqrt(total) + 1e-10)
    return w


@pytest.mark.parametrize(
    "optimizer, by_hand",
    [
        ("sgd(lr = 0.1)", lambda w, c: w * (1 - 0.1 * c) ** 3),
        ("adam(lr = 0.1)", lambda w, c: _adam_by_hand(w, c)),
        ("adagrad(lr = 0.1)", lambda w, c: _adagrad_by_hand(w, c)),
    ],
)
def test_optimizer_steps_through_the_trainer(tmp_path, optimizer, by_hand):
    path = tmp_path / "q.dl"
    path.write_text(QUADRATIC)
    from dlc.runtime.training.config import parse_setting

    spec = parse_setting(optimizer, "optimizer")
    result = dlc.load(str(path)).train(
        out=str(tmp_path / "run"), log=lambda m: None, optimizer=spec.name, lr=spec.kwargs["lr"]
    )
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
    assert meta["step"] == 60 and meta["epoch"] == 1  # 41 batches per epoch: stopped inside epoch 2
    monkeypatch.undo()

    resumed = dlc.load(path).train(out=str(tmp_path / "b"), resume=True, **settings)
    assert resumed.stopped == "done"
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "digits_mlp.dl"), "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "last.npz").read_bytes()
    code = main(
        [
            "train",
            str(EXAMPLES / "digits_mlp.dl"),
            "--epochs",
            "2",
            "--out",
            str(out),
            "--resume",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "the loss became" in err and "at step" in err and "Traceback" not in err
    assert (out / "last.npz").read_bytes() == before


DIVERGING = """model m {{
    input x: f32[B, 8]
    target y: f32[B, 1]
    p = {p}
    loss binary_cross_entropy(p, y)
}}
train m {{ data = "d.npz" batch = 16 epochs = 3 optimizer = sgd(lr = 0.1) }}
"""
OVERFLOW = "warning: the run has diverged: parameters "


def _diverging(tmp_path, capsys, p: str, backend: str, lr: str) -> tuple[int, str]:
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32) * 3
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, :1] > 0).astype(np.float32))
    (tmp_path / "m.dl").write_text(DIVERGING.format(p=p))
    code = main(["train", str(tmp_path / "m.dl"), "--lr", lr, "--backend", backend, "--out", str(tmp_path / backend)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("lr", ["1e30", "0.1"])
@pytest.mark.parametrize("backend", ["reference", "native"])
def test_a_diverged_run_warns_once_its_parameters_overflow_a_float32_product(tmp_path, capsys, backend, lr):
    """dense -> sigmoid at lr 1e30: weights near 1e30, beyond 1.8e19 = sqrt(float32's largest), with a
    finite loss on either engine (the same: no product of two weights is taken)."""
    code, err = _diverging(tmp_path, capsys, "dense(x, 1, sigmoid)", backend, lr)
    assert code == 0 and err.count(OVERFLOW) == (lr == "1e30"), err
    if lr == "1e30":
        assert f"{tmp_path / 'm.dl'}:7:" in err and "p.W (" in err and "beyond 1.8e+19" in err


def test_where_products_of_weights_overflow_the_engines_part_as_the_warning_says(tmp_path, capsys):
    """A hidden layer multiplies weights by weights: the reference engine's float32 sums of
    ±inf products are NaN and it stops at step 2; the native engine's fused multiply-adds give
    ±inf, a finite loss through sigmoid and the loss's eps, and it warns."""
    p = "dense(dense(x, 8, relu), 1, sigmoid)"
    code, err = _diverging(tmp_path, capsys, p, "reference", "1e30")
    assert code == 1 and "the loss became nan at step 2" in err
    code, err = _diverging(tmp_path, capsys, p, "native", "1e30")
    assert code == 0 and err.count(OVERFLOW) == 1 and "NaN on the reference engine and ±inf on the native" in err


def test_transfer_learning_with_frozen_convolutions(tmp_path, capsys):
    from dlc.runtime.data import registry as data

    digits = data.load(data.Call("digits") if hasattr(data, "Call") else _digits_call(), Path("."))
    x, y = digits.columns["x"], digits.columns["y"]
    low, high = y < 5, y >= 5
    np.savez(tmp_path / "low.npz", x=x[low], y=y[low])
    np.savez(tmp_path / "high.npz", x=x[high], y=(y[high] - 5))
    src = (EXAMPLES / "digits_cnn.dl").read_text().split("train digits_cnn")[0]
    (tmp_path / "a.dl").write_text(
        src + 'train digits_cnn { data = "low.npz" validation = split(0.1) '
        'epochs = 8 batch = 32 optimizer = adam(lr = 2e-3) }'
    )
    (tmp_path / "b.dl").write_text(
        src + 'train digits_cnn { data = "high.npz" test = split(0.3) epochs = 8 '
        'batch = 32 optimizer = adam(lr = 2e-3) init_from = "a/best.npz" '
        'freeze = [c1, c3] }'
    )
    assert main(["train", str(tmp_path / "a.dl"), "--out", str(tmp_path / "a")]) == 0
    assert main(["train", str(tmp_path / "b.dl"), "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "matched" in err
    accuracy = float(next(l for l in out.splitlines() if l.startswith("test:")).split("accuracy")[1].split()[0])
    assert accuracy >= 0.90
    first, second = checkpoint.load(tmp_path / "a" / "best.npz")[0], checkpoint.load(tmp_path / "b" / "best.npz")[0]
    np.testing.assert_array_equal(first["c1.W"], second["c1.W"])  # frozen: unchanged
    assert not np.array_equal(first["f5.W"], second["f5.W"])  # trained
    assert main(["summary", str(tmp_path / "b.dl")]) == 0
    summary = capsys.readouterr().out
    assert "c1.W" in summary and "Trainable parameters:" in summary
    trainable = int(summary.split("Trainable parameters:")[1].split()[0].replace(",", ""))
    assert trainable == 8906  # f5 (128*64 + 64) + logits (64*10 + 10): the convolutions are frozen


def _digits_call():
    from dlc.compiler.frontend.settings import Call

    return Call("digits")


@pytest.mark.parametrize(
    "argv, phrase, status",
    [
        (["--data", "nothere.npz"], "--data:1:1: error: npz: data file not found", 2),  # at the flag: usage
        (["--data", "xor()"], "does not fit", 1),
        (["--optimizer", "adamx"], "--optimizer:1:1: error: unknown optimizer 'adamx'", 2),
        (["--lr", "-0.1"], "--lr:1:1: error: adam: 'lr' must not be negative", 2),
        (["--epochs", "-1"], "--epochs: error: needs a whole number, at least 0", 2),
        (["--resume", "corrupt.npz"], "not a readable checkpoint", 1),
        (["--init-from", "corrupt.npz"], "not a readable checkpoint", 1),
        (["--freeze", "nothing*"], "--freeze:1:1: error: freeze: no parameter matches", 2),
    ],
)
def test_bad_input_is_refused_and_overwrites_nothing(tmp_path, capsys, argv, phrase, status):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    out = tmp_path / "run"
    try:
        code = main(
            ["train", str(EXAMPLES / "digits_mlp.dl"), "--out", str(out)]
            + [a if a != "corrupt.npz" else str(tmp_path / a) for a in argv]
        )
    except SystemExit as e:  # the argument parser's usage error
        code = e.code
    err = capsys.readouterr().err
    assert code == status and phrase in err and "Traceback" not in err, err
    assert not out.exists()


def test_eval_and_predict_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "digits_mlp.dl"), "--epochs", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(EXAMPLES / "digits_mlp.dl"), "--weights", str(out / "best.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert (
        main(
            [
                "predict",
                str(EXAMPLES / "digits_mlp.dl"),
                "--weights",
                str(out / "best.npz"),
                "--input",
                str(tmp_path / "in.npz"),
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )
    probs = np.load(tmp_path / "p.npz")["probs"]
    assert probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    with pytest.raises(DlcError):
        dlc.load(str(EXAMPLES / "digits_mlp.dl")).predict(x)  # no weights yet


def test_generate_from_a_small_character_model(tmp_path, capsys):
    text = "the cat sat on the mat. " * 80
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
    assert (
        main(
            [
                "generate",
                str(tmp_path / "c.dl"),
                "--weights",
                str(tmp_path / "run" / "best.npz"),
                "--prompt",
                "the cat ",
                "--length",
                "16",
            ]
        )
        == 0
    )
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


def test_history_files_wait_for_a_later_epoch_when_rewriting_them_would_cost_more_than_a_share_of_the_run(
    tmp_path, monkeypatch
):
    """After an epoch the files are rewritten unless that took more than HISTORY_SHARE of the
    time since the last write (they grow with the run: quadratic otherwise); when the run
    stops they are always written, with the plot. A clock of the test's: each write costs
    `cost` seconds."""
    trainer = Trainer(load(str(EXAMPLES / "xor_mlp.dl")), None, {}, tmp_path)
    clock, cost, writes = [0.0], [0.01], []

    def save_history(out, history, log, plot):
        writes.append((len(history), plot))
        clock[0] += cost[0]

    monkeypatch.setattr(trainer_module, "save_history", save_history)
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    history = []
    for epoch in range(1, 13):
        if epoch == 5:
            cost[0] = 0.05  # the files have grown: 1 s between writes at a 5 % share
        clock[0] += 0.3
        history.append({"epoch": epoch})
        trainer.write_history(history, final=False)
    trainer.write_history(history)
    assert trainer_module.HISTORY_SHARE == 0.05
    assert writes == [(1, False), (2, False), (3, False), (4, False), (5, False), (9, False), (12, True)]


@pytest.mark.parametrize("epochs", [1, 2])
def test_the_history_is_plotted_from_two_rows(tmp_path, epochs, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("DLC_PLOT", "1")
    dlc.load(str(EXAMPLES / "xor_mlp.dl")).train(out=str(tmp_path), log=lambda m: None, epochs=epochs)
    assert (tmp_path / "history.json").exists()
    assert (tmp_path / "history.png").exists() == (epochs == 2)


def test_dlc_plot_0_draws_no_history(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("DLC_PLOT", "0")
    dlc.load(str(EXAMPLES / "xor_mlp.dl")).train(out=str(tmp_path), log=lambda m: None, epochs=2)
    assert (tmp_path / "history.csv").exists() and not (tmp_path / "history.png").exists()


def test_history_survives_a_nan_stop(tmp_path, capsys):
    out = tmp_path / "run"
    src = (
        (EXAMPLES / "digits_mlp.dl")
        .read_text()
        .replace("optimizer  = adam(lr = 1e-3)", "optimizer  = sgd(lr = 1e-3)\n    schedule = step(1, 1e33)")
    )
    (tmp_path / "m.dl").write_text(src)
    code = main(["train", str(tmp_path / "m.dl"), "--epochs", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "the loss became" in err
    rows, csv_rows = _history(out)
    assert len(rows) >= 1 and len(csv_rows) == len(rows) and rows[-1]["epoch"] < 4


# ---- small models, trained on both engines -----------------------------------------------------------
ENGINES = ["reference", "native"]

REGRESSION = """
model reg {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    h = dense(x, 8, tanh)
    loss mean((dense(h, 1) - y)^2)
}
"""


BATCHNORM = """
model bn {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    h = relu(batchnorm(dense(x, 8)))
    loss mean((dense(h, 1) - y)^2)
}
"""


def write(tmp_path, model: str, train: str, name="m.dl"):
    path = tmp_path / name
    path.write_text(model + train + "\n")
    return path


def quiet(msg):
    pass


def collect():
    lines = []
    return lines, lines.append


def train(path, backend="reference", out=None, **overrides):
    return DlcModel(str(path), backend=backend).train(out=str(out or path.parent / "run"), log=quiet, **overrides)


# ---- every setting checked in one place, at the place it was written ------------------------------------
BAD_SETTINGS = [
    ("clip = global_norm(-1)", "-1", "'max' must not be negative"),
    ("clip = -0.5", "clip", "must not be negative"),  # a bare value: the setting
    ("clip = value(max = 0)", "0", "'max' must be positive"),
    ("clip = norm(1.0)", "norm(1.0)", "unknown clipping 'norm'"),
    ("optimizer = adam(lr = 1e-3, beta1 = 1.0)", "1.0", "'beta1' must be less than 1"),
    ("optimizer = adam(lr = 1e-3, beta2 = -0.1)", "-0.1", "'beta2' must be at least 0"),
    ("optimizer = adam(lr = 1e-3, eps = 0)", "0", "'eps' must be positive"),
    ("optimizer = adam(lr = 1e400)", "1e400", "the number is too large for a float"),
    ("optimizer = sgd(lr = 0.1, momentum = -0.9)", "-0.9", "'momentum' must be at least 0"),
    ("optimizer = sgd(lr = 0.1, nesterov = true)", "true", "nesterov = true needs a momentum"),
    ("optimizer = adamw(lr = 0.1, weight_decay = -1)", "-1", "'weight_decay' must be at least 0"),
    ("optimizer = rmsprop(lr = 0.1, alpha = 1.5)", "1.5", "'alpha' must be less than 1"),
    ("schedule = step(every = 0)", "0", "'every' must be positive"),
    ("schedule = exponential(gamma = -0.5)", "-0.5", "'gamma' must not be negative"),
    ("schedule = cosine(min_lr = -1)", "-1", "'min_lr' must be at least 0"),
    ("schedule = warm_restarts(4, 0.5)", "0.5", "'mult' must be at least 1"),
    ("schedule = cosine(warmup = -1)", "-1", "'warmup' must be at least 0"),
    ("early_stop = patience(0)", "0", "'n' must be at least 1"),
    ("early_stop = patience(3, mode = up)", "up", "'mode' must be one of min, max"),
    ("early_stop = patience(3, restore_best = 1)", "1", "'restore_best' must be true or false"),
    ("early_stop = patience(3, monitor = accuracy)", "accuracy", "monitors 'accuracy', which is not among loss"),
    ("augment = images(shift = -1)", "-1", "'shift' must be at least 0"),
    ("augment = images(noise = -0.1)", "-0.1", "'noise' must be at least 0"),
    ("test = split(1.5)", "1.5", "'fraction' must be less than 1"),
    ("validation = 0", "validation", "'fraction' must be positive"),
    ("shuffle = 2", "shuffle", "shuffle must be true or false"),
    ("sync_batchnorm = 1", "sync_batchnorm", "sync_batchnorm must be true or false"),
    ("l2 = -1", "l2", "l2 must be a number >= 0"),
]


def located(path, setting: str, at: str) -> str:
    """`file:line:col` of `at` in the value of `setting` in the file at `path`."""
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip() == setting)
    return f"{path.name}:{row + 1}:{lines[row].index(at) + 1}: error:"


@pytest.mark.parametrize("setting, at, phrase", BAD_SETTINGS)
def test_dlc_check_refuses_a_bad_setting_where_it_is_written(tmp_path, capsys, setting, at, phrase):
    path = write(tmp_path, REGRESSION, f"train reg {{\n    data = xor()\n    {setting}\n}}")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err, err
    assert located(path, setting, at) in err, err


@pytest.mark.parametrize("backend", ENGINES)
def test_a_negative_clip_limit_is_refused_before_any_step_on_both_engines(tmp_path, backend):
    path = write(tmp_path, REGRESSION, "train reg { data = xor() batch = 4 epochs = 3 optimizer = sgd(lr = 0.1) }")
    with pytest.raises(DlcError) as e:
        train(path, backend, clip="global_norm(-1)")
    assert "'max' must not be negative" in e.value.message
    assert not (tmp_path / "run").exists()


def test_a_bad_setting_given_as_a_flag_is_refused(tmp_path, capsys):
    path = write(tmp_path, REGRESSION, "train reg { data = xor() batch = 4 epochs = 3 }")
    assert main(["train", str(path), "--backend", "reference", "--clip", "-1", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("--clip:1:1: error: global_norm: 'max' must not be negative")
    assert not (tmp_path / "o").exists()


# ---- positional arguments bind in parameter order, extra ones are refused -----------------------------
def test_positional_arguments_bind_in_parameter_order(tmp_path):
    path = write(
        tmp_path,
        CLASSIFIER,
        "train clf { data = spirals(n = 60) validation = split(0.2) "
        "early_stop = patience(2, val_accuracy) augment = images(2, true, 0.5) "
        "clip = value(0.25) schedule = step(3, 0.5) optimizer = sgd(0.05, 0.9) }",
    )
    trainer = Trainer(load(str(path)), None, {}, tmp_path / "run", quiet, "reference")
    assert trainer.augment_options == {"shift": 2, "flip": True, "noise": 0.5}
    stop = trainer.early_stop()
    assert (stop.patience, stop.monitor, stop.mode) == (2, "val_accuracy", "max")
    assert trainer.cfg.clip.name == "value" and clip_limit(trainer.cfg.clip) == 0.25
    assert make_optimizer(trainer.cfg.optimizer).hyper == {
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    assert make_schedule(trainer.cfg.schedule, 1.0, 1, 10)(3) == 0.5


def test_augment_images_with_a_positional_shift_moves_the_images(tmp_path):
    path = write(
        tmp_path,
        """
model img {
    input x: f32[B, 1, 6, 6]
    target y: i32[B]
    logits = dense(flatten(x), 2)
    loss sparse_cross_entropy(logits, y)
}
""",
        'train img { data = "d.npz" augment = images(2) }',
    )
    x = np.arange(4 * 36, dtype=np.float32).reshape(4, 1, 6, 6)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, np.int32))
    trainer = Trainer(load(str(path)), None, {}, tmp_path / "run", quiet, "reference")
    moved = trainer.augment({"x": x, "y": np.zeros(4, np.int32)}, 0, 0)["x"]
    assert not np.array_equal(moved, x)


def test_early_stop_mode_explicit_wins_over_the_name(tmp_path):
    path = write(
        tmp_path,
        CLASSIFIER,
        "train clf { data = spirals(n = 60) validation = split(0.2) "
        "early_stop = patience(2, val_accuracy, mode = min) }",
    )
    trainer = Trainer(load(str(path)), None, {}, tmp_path / "run", quiet, "reference")
    stop = trainer.early_stop()
    assert stop.mode == "min"
    assert stop.update({"val_accuracy": 0.5})[0] and stop.update({"val_accuracy": 0.4})[0]
    assert not stop.update({"val_accuracy": 0.6})[0]


@pytest.mark.parametrize(
    "setting, phrase",
    [
        ("early_stop = patience(5, val_loss, min, true, 1)", "patience takes at most 4 arguments"),
        ("augment = images(1, false, 0.0, 2)", "images takes at most 3 arguments"),
        ("test = split(0.2, false, 0.3)", "split takes at most 2 arguments"),
        ("test = split(0.2, fraction = 0.3)", "'fraction' is given twice"),
        ("clip = global_norm(1.0, 2.0)", "global_norm takes at most 1 argument"),
        ("schedule = cosine(0.0, 1, none, 2, 5)", "cosine takes at most 4 arguments"),
        ("optimizer = sgd(0.1, 0.9, false, 0.0, 1)", "sgd takes at most 4 arguments"),
        ("early_stop = patience(3, monitr = val_loss)", "patience has no option 'monitr'"),
    ],
)
def test_extra_or_unknown_arguments_are_refused_where_they_are_written(tmp_path, capsys, setting, phrase):
    path = write(tmp_path, REGRESSION, f"train reg {{\n    data = xor()\n    {setting}\n}}")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    row = path.read_text().splitlines().index("    " + setting) + 1
    assert phrase in err and f"m.dl:{row}:" in err, err


@pytest.mark.parametrize(
    "setting, bad, phrase",
    [
        ("data = spirals(n = 0)", "0", "spirals: 'n' must be at least 1"),
        ("data = spirals(60, m = 3)", "3", "spirals has no option 'm'"),
        ("data = spirals(60, n = 30)", "30", "spirals: 'n' is given twice"),
        ("data = blobs(labels = odd)", "odd", "blobs: 'labels' must be one of index, sign"),
        ('data = csv("missing.csv")', '"missing.csv"', "csv: data file not found"),
        ("data = xor(repeat = 1.5)", "1.5", "xor: 'repeat' must be an integer"),
        ("optimizer = adam(lr = -1)", "-1", "adam: 'lr' must not be negative"),
        ("schedule = cosine(min_lr = true)", "true", "cosine: 'min_lr' must be a number"),
        ("augment = images(flip = 2)", "2", "images: 'flip' must be true or false"),
        ("early_stop = patience(0)", "0", "patience: 'n' must be at least 1"),
        ("test = split(1.5)", "1.5", "split: 'fraction' must be less than 1"),
    ],
)
def test_a_bad_argument_of_any_spec_is_reported_at_the_argument(tmp_path, capsys, setting, bad, phrase):
    """Data sources, optimizers, schedules, augmentation, early stopping and splits bind their
    arguments with one binder (Call.bind) and check them where they are written."""
    setting_line = f"    {setting}"
    extra = "" if setting.startswith("data") else "    data = xor()\n"
    path = write(tmp_path, REGRESSION, f"train reg {{\n{extra}{setting_line}\n}}")
    assert main(["train", str(path), "--backend", "reference", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    row = path.read_text().splitlines().index(setting_line) + 1
    col = setting_line.rindex(bad) + 1
    assert phrase in err and f"m.dl:{row}:{col}:" in err, err


# ---- dlc eval scores the split the checkpoint was trained with ----------------------------------------
def _metrics(line: str) -> dict:
    words = line.split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


def test_eval_reuses_the_data_seed_and_split_given_at_training(tmp_path, capsys):
    path = write(
        tmp_path,
        CLASSIFIER,
        "train clf { data = spirals(n = 300) test = split(0.2) batch = 32 epochs = 3 optimizer = adam(lr = 1e-2) }",
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(path),
                "--backend",
                "reference",
                "--seed",
                "3",
                "--test",
                "split(0.5)",
                "--data",
                "spirals(n = 200)",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    trained = _metrics(next(l for l in capsys.readouterr().out.splitlines() if l.startswith("test:"))[5:])
    assert main(["eval", str(path), "--backend", "reference", "--weights", str(out / "last.npz")]) == 0
    stdout, err = capsys.readouterr()
    assert len(stdout.splitlines()) == 1  # the metrics line only
    assert _metrics(stdout) == pytest.approx(trained, abs=1e-4)
    assert "test split (50% of spirals(n = 200), seed 3)" in err, err
    assert "trained on" not in err
    assert (
        main(
            [
                "eval",
                str(path),
                "--backend",
                "reference",
                "--weights",
                str(out / "last.npz"),
                "--data",
                "spirals(n = 200)",
            ]
        )
        == 0
    )
    assert "note: this is the data the weights were trained on" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                str(path),
                "--backend",
                "reference",
                "--weights",
                str(out / "last.npz"),
                "--data",
                "spirals(n = 200, seed = 1)",
            ]
        )
        == 0
    )
    assert "note:" not in capsys.readouterr().err


def test_evaluate_from_python_reuses_the_saved_split(tmp_path):
    path = write(
        tmp_path,
        CLASSIFIER,
        "train clf { data = spirals(n = 300) test = split(0.2) batch = 32 epochs = 2 optimizer = adam(lr = 1e-2) }",
    )
    result = train(path, seed=5, test="split(0.4)")
    logs, log = collect()
    values = DlcModel(str(path), backend="reference").load_weights(tmp_path / "run" / "last.npz").evaluate(log=log)
    assert values == pytest.approx(result.test, abs=1e-6)
    assert any("test split (40% of spirals(n = 300), seed 5)" in m for m in logs), logs


def test_eval_without_a_test_split_scores_validation_else_says_it_scores_training_data(tmp_path, capsys):
    path = write(tmp_path, CLASSIFIER, "train clf { data = spirals(n = 100) batch = 32 epochs = 1 }")
    out = tmp_path / "run"
    assert main(["train", str(path), "--backend", "reference", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(path), "--backend", "reference", "--weights", str(out / "last.npz")]) == 0
    err = capsys.readouterr().err
    assert "training data" in err and "note:" in err, err

    assert (
        main(
            [
                "train",
                str(path),
                "--backend",
                "reference",
                "--out",
                str(out),
                "--validation",
                "split(0.3)",
                "--seed",
                "2",
                "--overwrite",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(path), "--backend", "reference", "--weights", str(out / "last.npz")]) == 0
    err = capsys.readouterr().err
    assert "validation split (30% of spirals(n = 100), seed 2)" in err and "note:" not in err, err


def test_plain_weight_files_keep_the_train_blocks_settings(tmp_path, capsys):
    path = write(
        tmp_path, CLASSIFIER, "train clf { data = spirals(n = 300) test = split(0.2) seed = 1 batch = 32 epochs = 1 }"
    )
    result = train(path)
    np.savez(tmp_path / "w.npz", **result.params)  # no meta: the block's settings
    assert main(["eval", str(path), "--backend", "reference", "--weights", str(tmp_path / "w.npz")]) == 0
    stdout, err = capsys.readouterr()
    assert "test split (20% of spirals(n = 300), seed 1)" in err
    assert _metrics(stdout) == pytest.approx(result.test, abs=1e-4)


# ---- batch statistics never come from one example ---------------------------------------------------
def test_batch_bounds_merge_a_last_batch_of_one():
    assert batch_bounds(10, 4, merge_single=False) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4, merge_single=False) == [(0, 4), (4, 8), (8, 9)]
    assert batch_bounds(9, 4, merge_single=True) == [(0, 4), (4, 9)]
    assert batch_bounds(8, 4, merge_single=True) == [(0, 4), (4, 8)]


@pytest.mark.parametrize("backend", ENGINES)
def test_batchnorm_running_statistics_stay_finite_with_a_last_batch_of_one(tmp_path, backend):
    path = write(
        tmp_path, BATCHNORM, "train bn { data = xor(repeat = 4) batch = 5 epochs = 3 optimizer = sgd(lr = 0.05) }"
    )  # 16 examples = 3 * 5 + 1
    result = train(path, backend)
    for name in ("running_mean", "running_var"):
        value = next(v for k, v in result.params.items() if k.endswith(name))
        assert np.all(np.isfinite(value)), (name, value)
    assert all(np.isfinite(row["loss"]) for row in result.history)


@pytest.mark.parametrize("where", ["block", "flag"])
def test_a_batch_of_one_is_refused_for_a_model_with_batch_statistics(tmp_path, capsys, where):
    block = "batch = 1" if where == "block" else "batch = 4"
    path = write(tmp_path, BATCHNORM, f"train bn {{ data = xor() {block} }}")
    argv = ["train", str(path), "--backend", "reference", "--out", str(tmp_path / "o")]
    code = main(argv + (["--batch", "1"] if where == "flag" else []))
    err = capsys.readouterr().err
    assert code == (1 if where == "block" else 2) and "batch statistics" in err and "batch = 1" in err, err
    if where == "block":
        assert main(["check", str(path)]) == 1 and "m.dl:" in capsys.readouterr().err


def test_batchnorm_with_a_single_training_example_is_refused(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((1, 2), np.float32), y=np.ones((1, 1), np.float32))
    path = write(tmp_path, BATCHNORM, 'train bn { data = "one.npz" batch = 4 }')
    with pytest.raises(DlcError) as e:
        train(path)
    assert "one example" in e.value.message


# ---- a checkpoint written after any batch resumes -----------------------------------------------------
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("batch, step", [(4, 2), (2, 3)])  # the last batch of epoch 2; inside epoch 2
def test_resume_after_ctrl_c_at_any_batch(tmp_path, monkeypatch, backend, batch, step):
    path = write(
        tmp_path, REGRESSION, f"train reg {{ data = xor() batch = {batch} epochs = 4 optimizer = adam(lr = 0.05) }}"
    )
    straight = train(path, backend, out=tmp_path / "a")
    _interrupt_at(monkeypatch, step)
    stopped = train(path, backend, out=tmp_path / "b")
    assert stopped.stopped == "interrupted"
    monkeypatch.undo()
    resumed = DlcModel(str(path), backend=backend).train(out=str(tmp_path / "b"), resume=True, log=quiet)
    assert resumed.stopped == "done"
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert strip(resumed.history) == strip(straight.history)


# ---- a non-finite loss stops training ------------------------------------------------------------------
NAN_MODELS = {
    "mse": (REGRESSION, "train reg { data = xor() batch = 4 epochs = 3 optimizer = sgd(lr = 1e30) }"),
    "relu_softmax": (
        CLASSIFIER.replace("tanh", "relu"),
        "train clf { data = spirals(n = 64) batch = 16 epochs = 3 optimizer = sgd(lr = 1e30) }",
    ),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow on the way to NaN
@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("model", NAN_MODELS)
def test_a_non_finite_loss_stops_training_on_both_engines(tmp_path, backend, model):
    path = write(tmp_path, *NAN_MODELS[model])
    with pytest.raises(DlcError) as e:
        train(path, backend)
    assert "the loss became" in e.value.message and "at step" in e.value.message


# ---- the reference interpreter alone trains XOR with plain SGD ------------------------------------------
EXAMPLE = Path(__file__).parents[2] / "examples" / "xor_mlp.dl"


def test_xor_mlp_reaches_full_accuracy_with_sgd():
    model = load(str(EXAMPLE)).build(training=True)
    step = train_step(model.graph)
    params = interpreter.run(model.init, {"rng": np.array([0, 0], np.int32)}, {})
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    feeds = {"x": x, "y": y, "rng": np.array([0, 0], np.int32)}
    first = None
    for _ in range(2000):
        out = interpreter.run(step, feeds, params)
        first = first if first is not None else float(out["loss"])
        for p in model.params:
            params[p.name] = params[p.name] - 0.5 * out[f"grad:{p.name}"]
    out = interpreter.run(step, feeds, params)
    assert float(out["metric:accuracy"]) == 1.0
    assert float(out["loss"]) < 0.1 * first
    probs = interpreter.run(load(str(EXAMPLE)).build(training=False).graph, feeds, params)["output:prob"]
    assert np.array_equal(probs > 0.5, y > 0.5)
