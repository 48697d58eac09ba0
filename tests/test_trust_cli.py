"""Trust II, the command line, data and checkpoints: inputs that used to end in "internal error"
(exit 3) are usage errors (exit 2) or clear errors (exit 1); data is never coerced with a loss;
damaged checkpoint metadata is refused; Ctrl-C at any moment exits 130; and the flags mean what
they say (--resume, --optimizer, --freeze, the test metrics, --epochs 0, stale temporary files)."""
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load
from dlc.runtime.training import checkpoint
from dlc.runtime.data import files, registry as D
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.training.settings import Call
from dlc.runtime.training.gradcheck import init_params
from dlc.runtime.training.config import make_config
from dlc.runtime.training.trainer import Trainer
from test_trust_training import CLASSIFIER  # a three-class model, shared

EXAMPLES = Path(__file__).parent.parent / "examples"

XOR = """
model xor {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    h = dense(x, 4, tanh)
    p = dense(h, 1, sigmoid)
    loss   binary_cross_entropy(p, y)
    metric accuracy = binary_accuracy(p, y)
    output prob = p
}
"""


CHARS = """
model chars {
    input  x: i32[B, T]
    target y: i32[B, T]
    logits = dense(embedding(x, 3, 4), 3)
    loss   sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}
"""


def write(tmp_path, text, train="train xor { data = xor() batch = 4 epochs = 2 optimizer = sgd(lr = 0.5) }",
          name="m.dl"):
    path = tmp_path / name
    path.write_text(text + train + "\n")
    return str(path)


def usage_error(argv, capsys) -> str:
    """The message of an argparse usage error (exit 2) for argv."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: dlc" in err, err
    return err.splitlines()[-1]


def failure(argv, capsys) -> str:
    """The message of a clear error (exit 1) for argv."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model file and the last checkpoint of one epoch of training on the reference engine."""
    tmp = tmp_path_factory.mktemp("trained")
    path = write(tmp, XOR)
    assert main(["train", path, "--epochs", "1", "--out", str(tmp / "run"), "--backend", "reference"]) == 0
    return path, tmp / "run" / "last.npz"


# ---- item 1: train's seed, DLC_NUM_THREADS, --out ------------------------------------------------
def test_a_seed_beyond_the_32_bit_random_key_is_refused(tmp_path, capsys):
    path = write(tmp_path, XOR)
    err = failure(["train", path, "--seed", str(2 ** 40), "--out", str(tmp_path / "run")], capsys)
    assert "seed must be an integer from 0 to 2147483647" in err
    block = write(tmp_path, XOR, f"train xor {{ data = xor() seed = {2 ** 40} }}", "b.dl")
    err = failure(["check", block], capsys)
    assert "b.dl:" in err and "seed must be" in err


@pytest.mark.parametrize("value", ["abc", "0", "-1", ""])
def test_dlc_num_threads_must_be_a_thread_count(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("DLC_NUM_THREADS", value)
    err = usage_error(["train", write(tmp_path, XOR), "--out", str(tmp_path / "run")], capsys)
    assert f"DLC_NUM_THREADS: needs a whole number of threads, at least 1; got '{value}'" in err
    assert not (tmp_path / "run").exists()


def test_dlc_num_threads_is_not_read_when_threads_is_given(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", "abc")
    assert main(["train", write(tmp_path, XOR), "--out", str(tmp_path / "run"), "--threads", "1",
                 "--backend", "reference"]) == 0
    assert os.environ["DLC_NUM_THREADS"] == "1"


def test_out_naming_an_existing_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    err = failure(["train", write(tmp_path, XOR), "--out", str(tmp_path / "taken"), "--backend", "reference"],
                  capsys)
    assert f"cannot keep checkpoints in {tmp_path / 'taken'}: it is a file" in err
    assert (tmp_path / "taken").read_text() == "mine"


# ---- items 2-4 and 6: numbers of the commands' flags ------------------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["eval", "--weights", "w.npz", "--batch", "0"], "--batch"),
    (["eval", "--weights", "w.npz", "--batch", "-1"], "--batch"),
    (["predict", "--weights", "w.npz", "--input", "in.npz", "--batch", "0"], "--batch"),
    (["gradcheck", "--size", "-2"], "--size"),
    (["gradcheck", "--size", "0"], "--size"),
    (["gradcheck", "--entries", "0"], "--entries"),
    (["gradcheck", "--seed", "-1"], "--seed"),
    (["gradcheck", "--seed", str(2 ** 40)], "--seed"),
    (["gradcheck", "--tolerance", "nan"], "--tolerance"),
    (["gradcheck", "--tolerance", "0"], "--tolerance"),
    (["gradcheck", "--tolerance", "inf"], "--tolerance"),
    (["bench", "--steps", "0"], "--steps"),
    (["bench", "--batch", "0"], "--batch"),
    (["bench", "--top", "-1"], "--top"),
    (["generate", "--weights", "w.npz", "--temperature", "nan"], "--temperature"),
    (["generate", "--weights", "w.npz", "--temperature", "-1"], "--temperature"),
    (["generate", "--weights", "w.npz", "--length", "-1"], "--length"),
    (["generate", "--weights", "w.npz", "--seed", "-1"], "--seed"),
])
def test_numeric_flags_out_of_range_are_usage_errors(tmp_path, capsys, argv, flag):
    line = usage_error([argv[0], write(tmp_path, XOR)] + argv[1:], capsys)
    assert f"argument {flag}" in line and f"got '{argv[-1]}'" in line


def test_generate_refuses_a_nan_temperature_in_the_api(tmp_path):
    model = DlcModel(write(tmp_path, CHARS, ""), backend="reference")
    model.params = {}
    with pytest.raises(DlcError, match="temperature"):
        model.generate("a", 3, temperature=float("nan"))


# ---- item 5: data files that are not data ---------------------------------------------------------
def test_an_npz_of_strings_is_refused(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array([["1", "2"]] * 4), y=np.zeros((4, 1), np.float32))
    with pytest.raises(DlcError, match=r"column 'x' holds strings \(<U1\), not numbers"):
        D.load("s.npz", tmp_path)


def test_a_zip_member_that_is_not_an_array_is_refused(tmp_path):
    array = io.BytesIO()
    np.save(array, np.zeros((4, 2), np.float32))
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("x.npy", array.getvalue())
        z.writestr("notes.txt", "hello")
    with pytest.raises(DlcError, match=r"'notes.txt' of .*z.npz is not an .npy array"):
        D.load("z.npz", tmp_path)


def test_an_idx_header_with_255_dims_is_refused(tmp_path):
    (tmp_path / "big-idx3-ubyte").write_bytes(bytes([0, 0, 8, 255]) + b"\0" * 4 * 255)
    with pytest.raises(DlcError, match="255 dimensions"):
        D.load("big-idx3-ubyte", tmp_path)


def test_idx_labels_beyond_32_bit_integers_do_not_wrap(tmp_path):
    (tmp_path / "img-idx3-ubyte").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">II", 4, 2) + bytes(8))
    (tmp_path / "lab-idx1-ubyte").write_bytes(bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 4)
                                              + struct.pack(">4d", *[2.0 ** 32 + 3] * 4))
    y = files.idx(tmp_path, "img-idx3-ubyte", "lab-idx1-ubyte").columns["y"]
    assert y.dtype == np.float32 and y[0] == np.float32(2.0 ** 32 + 3)


# ---- item 7: predict's text input -----------------------------------------------------------------
@pytest.fixture
def char_weights(tmp_path):
    path = write(tmp_path, CHARS, "")
    model = DlcModel(path, backend="reference")
    weights = tmp_path / "w.npz"
    checkpoint.save(weights, init_params(model.train_model), {}, {"meta": {"vocab": "abc"}})
    return path, str(weights)


@pytest.mark.parametrize("content, phrase", [(None, "not found"), (b"ab\xff\xfe", "not UTF-8")])
def test_predict_text_input_missing_or_not_utf8(tmp_path, capsys, char_weights, content, phrase):
    path, weights = char_weights
    text = tmp_path / "in.txt"
    if content is not None:
        text.write_bytes(content)
    err = failure(["predict", path, "--weights", weights, "--input", str(text), "--backend", "reference",
                   "--output", str(tmp_path / "p.npz")], capsys)
    assert phrase in err and "in.txt" in err
    text.write_text("abca")
    assert main(["predict", path, "--weights", weights, "--input", str(text), "--backend", "reference",
                 "--output", str(tmp_path / "p.npz")]) == 0
    assert np.load(tmp_path / "p.npz")["next"].shape == (1, 3)


# ---- item 8: damaged checkpoint metadata -----------------------------------------------------------
def _with_meta(source: Path, target: Path, edit):
    arrays = dict(np.load(source))
    meta = json.loads(arrays["meta"].tobytes())
    raw = edit(meta)
    arrays["meta"] = np.frombuffer(raw if isinstance(raw, bytes) else json.dumps(raw).encode(), np.uint8)
    np.savez(target, **arrays)


DAMAGE = {
    "not json": lambda m: b"{epoch: 1",
    "not an object": lambda m: [1, 2, 3],
    "epoch a string": lambda m: m | {"epoch": "1"},
    "negative step": lambda m: m | {"step": -4},
    "fractional batch": lambda m: m | {"batch": 0.5},
    "history not a list": lambda m: m | {"history": {"epoch": 1}},
    "history rows not objects": lambda m: m | {"history": [1]},
    "early_stop a string": lambda m: m | {"early_stop": "patience"},
    "early_stop best a string": lambda m: m | {"early_stop": {"best": "low", "bad": 0}},
    "partial a list": lambda m: m | {"partial": [1, 2]},
    "partial totals not numbers": lambda m: m | {"batch": 1, "partial": {"totals": {"loss": "x"}, "seen": 4}},
    "model a number": lambda m: m | {"model": 3},
    "data settings damaged": lambda m: m | {"data": {"data": {"call": 3}}},
    "vocabulary a number": lambda m: m | {"meta": {"vocab": 7}},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_from_damaged_metadata_is_one_clear_error(tmp_path, capsys, trained, damage):
    path, last = trained
    bad = tmp_path / "bad.npz"
    _with_meta(last, bad, DAMAGE[damage])
    err = failure(["train", path, "--resume", str(bad), "--out", str(tmp_path / "run"), "--backend", "reference"],
                  capsys)
    assert f"{bad} is not a readable checkpoint: its metadata is damaged" in err
    err = failure(["eval", path, "--weights", str(bad), "--backend", "reference"], capsys)
    assert f"{bad} is not a readable checkpoint: its metadata is damaged" in err


def test_resume_refuses_a_position_beyond_the_epoch(tmp_path, capsys, trained):
    path, last = trained
    bad = tmp_path / "far.npz"
    _with_meta(last, bad, lambda m: m | {"epoch": 0, "batch": 5})
    err = failure(["train", path, "--resume", str(bad), "--out", str(tmp_path / "run"), "--backend", "reference"],
                  capsys)
    assert "after batch 5" in err and "1 batch" in err


def test_resume_with_another_optimizer_starts_its_state_afresh(tmp_path, capsys):
    path, run = write(tmp_path, XOR), str(tmp_path / "run")
    assert main(["train", path, "--epochs", "1", "--optimizer", "adam", "--out", run, "--backend", "reference"]) == 0
    assert main(["train", path, "--epochs", "2", "--optimizer", "sgd(lr = 0.1, momentum = 0.9)", "--resume",
                 "--out", run, "--backend", "reference"]) == 0
    assert "was trained with adam; sgd starts afresh" in capsys.readouterr().err
    arrays = dict(np.load(tmp_path / "run" / "last.npz"))
    assert set(k for k in arrays if k.startswith("opt:h.W")) == {"opt:h.W:momentum"}
    arrays["opt:h.W:momentum"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    err = failure(["train", path, "--epochs", "3", "--optimizer", "sgd(lr = 0.1, momentum = 0.9)", "--resume",
                   str(tmp_path / "bad.npz"), "--out", run, "--backend", "reference"], capsys)
    assert "the optimizer state h.W:momentum is float32[3], but h.W is [2, 4]" in err


# ---- item 9: a bare relative file name is a path ----------------------------------------------------
def test_a_bare_file_name_is_a_data_path(tmp_path, capsys):
    path = write(tmp_path, XOR)
    np.savez(tmp_path / "train.npz", x=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32),
             y=np.array([[0], [1], [1], [0]], np.float32))
    for name in ("train.npz", "./train.npz"):
        assert main(["train", path, "--data", name, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    err = failure(["train", path, "--data", "nothere.npz", "--out", str(tmp_path / "run")], capsys)
    assert f"data file not found: {tmp_path / 'nothere.npz'}" in err
    assert main(["eval", path, "--weights", str(tmp_path / "run" / "last.npz"), "--data", "train.npz",
                 "--backend", "reference"]) == 0
    assert 'evaluating "train.npz"' in capsys.readouterr().err
    # an error inside a call is still the call's, not a missing file
    err = failure(["train", path, "--data", "digits(scale = x.y)"], capsys)
    assert err.startswith("--data:1:16: error: a train setting must be")


# ---- item 10: Ctrl-C at any moment --------------------------------------------------------------------
def test_the_entry_point_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-c", "import sys, dlc.runtime.cli; "
                        "print(sorted(m for m in ('numpy', 'dlc.compiler', 'lark') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_ctrl_c_during_start_up_exits_130(delay):
    """Interrupts while importing the compiler, parsing and building the graph (compiling resnet
    takes ~40 s), counted from before the entry point's import (a few milliseconds: the test
    above), as the `dlc` script does it."""
    code = "import sys; print('go', file=sys.stderr, flush=True); from dlc.runtime.cli import main; sys.exit(main())"
    p = subprocess.Popen([sys.executable, "-c", code, "compile", "--emit", "asm", str(EXAMPLES / "resnet.dl")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline() == "go\n"
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.strip() == "interrupted", err


# ---- item 11: coercions that lose information ----------------------------------------------------------
@pytest.mark.parametrize("x, phrase", [
    (np.zeros((4, 2), np.complex64) + 1j, "complex"),
    (np.array([["1", "2"]] * 4), "strings"),
])
def test_data_that_is_not_real_numbers_is_refused(tmp_path, capsys, x, phrase):
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros((4, 1), np.float32))
    path = write(tmp_path, XOR)
    err = failure(["train", path, "--data", "d.npz", "--out", str(tmp_path / "run"), "--backend", "reference"],
                  capsys)
    assert phrase in err and "d.npz" in err
    model = DlcModel(path, backend="reference")
    model.params = {k: v.astype(np.float32) for k, v in init_params(model.train_model).items()}
    with pytest.raises(DlcError, match=phrase):
        model.predict({"x": x})


@pytest.mark.parametrize("y", [np.full(4, 2 ** 32 + 3, np.int64), np.full(4, 2 ** 63, np.uint64)])
def test_integer_labels_beyond_int32_are_refused(tmp_path, capsys, y):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=y)
    path = write(tmp_path, CLASSIFIER, "train clf { data = xor() }")
    err = failure(["train", path, "--data", "d.npz", "--out", str(tmp_path / "run"), "--backend", "reference"],
                  capsys)
    assert f"y has values from {y[0]} to {y[0]}" in err


def test_an_empty_validation_split_is_refused(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor() validation = split(0.1) epochs = 1 }")
    err = failure(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"], capsys)
    assert "validation = split(0.1) holds out no example of the 4" in err


# ---- item 12: flags that mean what they say -------------------------------------------------------------
@pytest.mark.parametrize("argv", [["train", "--resume", "{f}"], ["train", "{f}", "--resume", "{f}"]])
def test_resume_refuses_the_model_file_as_its_checkpoint(tmp_path, capsys, argv):
    path = write(tmp_path, XOR)
    line = usage_error([a.format(f=path) for a in argv], capsys)
    assert "argument --resume: takes a checkpoint, not the model file" in line
    assert f"dlc train {path} --resume" in line


ADAM = "train xor { data = xor() batch = 4 epochs = 1 optimizer = adam(lr = 1e-3, beta2 = 0.99) }"


@pytest.mark.parametrize("flags, expected", [
    ({"optimizer": "sgd"}, Call("sgd", [], {"lr": 1e-2})),
    ({"optimizer": "sgd", "lr": 0.3}, Call("sgd", [], {"lr": 0.3})),
    ({"optimizer": "sgd(lr = 0.1, momentum = 0.9)"}, Call("sgd", [], {"lr": 0.1, "momentum": 0.9})),
    ({"lr": 0.3}, Call("adam", [], {"lr": 0.3, "beta2": 0.99})),
])
def test_optimizer_flag_replaces_the_blocks_optimizer(tmp_path, flags, expected):
    program = load(write(tmp_path, XOR, ADAM))
    got = make_config(program, "xor", flags).optimizer
    assert (got.name, got.args, got.kwargs) == (expected.name, expected.args, expected.kwargs)


def test_optimizer_flag_trains_from_the_command_line(tmp_path, capsys):
    path = write(tmp_path, XOR, ADAM)
    assert main(["train", path, "--optimizer", "sgd", "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    assert json.loads(np.load(tmp_path / "run" / "last.npz")["meta"].tobytes())["optimizer"] == "sgd"


def test_summary_freeze_replaces_the_blocks_freeze_as_train_does(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor() freeze = [h] }")
    program = load(path)
    model = program.build(None, training=True)
    sizes = {p.name: int(np.prod(p.type.shape)) for p in model.params}
    for flags in ([], ["p"]):
        assert main(["summary", path] + [a for f in flags for a in ("--freeze", f)]) == 0
        out = capsys.readouterr().out
        shown = int(out.split("Trainable parameters:")[1].split()[0].replace(",", ""))
        trained = Trainer(program, None, {"freeze": flags or None}, tmp_path / "run").trainable()
        assert shown == sum(sizes[n] for n in trained)
    assert shown == sizes["h.W"] + sizes["h.b"]       # --freeze p: h trains, p does not


def test_test_metrics_are_printed_once(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor(repeat = 4) test = split(0.25) epochs = 1 }")
    assert main(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert sum(line.startswith("test:") for line in lines) == 1
    assert any(line.startswith("test: loss") for line in captured.out.splitlines())


def test_zero_epochs_names_no_checkpoint_it_did_not_write(tmp_path, capsys):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    run.mkdir()
    old = {k: v + 1 for k, v in init_params(load(path).build(None, training=True)).items()}
    checkpoint.save(run / "best.npz", old, {}, {})       # a previous run's
    result = Trainer(load(path), None, {"epochs": 0}, run, log=lambda m: None, backend="reference").run()
    assert not np.array_equal(result.params["h.W"], old["h.W"].astype(np.float32))
    assert main(["train", path, "--epochs", "0", "--out", str(run), "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints:" not in out and "no checkpoint written" in out


def test_stale_temporary_checkpoints_are_removed(tmp_path):
    path = write(tmp_path, XOR)
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last-k2j3h4_x.npz", run / ".best-00000000.npz"]
    kept = [run / ".last-notmine.npz", run / "last-k2j3h4_x.npz", run / ".other-k2j3h4_x.npz"]
    for f in stale + kept:
        f.write_bytes(b"half a checkpoint")
        os.utime(f, (time.time() - 60, time.time() - 60))
    newer = run / ".last-abcdefgh.npz"          # another run's, being written after this one started
    newer.write_bytes(b"half a checkpoint")
    os.utime(newer, (time.time() + 60, time.time() + 60))
    Trainer(load(path), None, {"epochs": 1}, run, log=lambda m: None, backend="reference").run()
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept + [newer])
