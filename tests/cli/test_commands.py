"""The command line: help, version, graph formats, emit stages, output files; flags and inputs that
once ended in "internal error" (exit 3) are usage errors (exit 2) or clear errors (exit 1): train's
seed, DLC_NUM_THREADS, the numbers of every command's flags, predict's text input, a bare data file
name; Ctrl-C at any moment exits 130; --optimizer and --freeze replace the train block's."""

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.runtime.cli import main
from dlc.compiler.frontend.settings import Call
from dlc.compiler.errors import DlcError
from dlc.runtime.api import DlcModel
from dlc.runtime.training.trainer import Trainer, make_config
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.gradcheck import init_params
from dlc.compiler.frontend.loader import load

from helpers.cli import failure, usage_error
from helpers.interrupts import InterruptedAtFree
from helpers.programs import XOR, write

LENET = str(Path(__file__).parents[2] / "examples" / "lenet5.dl")
LSTM = str(Path(__file__).parents[2] / "examples" / "char_lstm.dl")
EXAMPLES = Path(__file__).parents[2] / "examples"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and dlc.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["check"], ["summary"], ["graph"], ["compile"], ["gradcheck"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command + ["--help"])
    assert e.value.code == 0 and "usage: dlc" in capsys.readouterr().out


def test_graph_formats(capsys, tmp_path):
    assert main(["graph", LENET]) == 0
    text = capsys.readouterr().out
    assert "conv2d(" in text and "output loss" in text
    assert main(["graph", LENET, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {n["op"] for n in data["nodes"]} >= {"conv2d", "maxpool2d", "matmul"} and "loss" in data["outputs"]
    assert all(n["span"] for n in data["nodes"] if n["op"] == "conv2d")
    assert main(["graph", LENET, "--grad", "--format", "dot", "-o", str(tmp_path / "g.dot")]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and "conv2d_weight_grad" in dot and "conv2d_input_grad" in dot


def test_gradient_graph_of_a_recurrence_has_a_reverse_scan(capsys):
    assert main(["compile", LSTM, "--emit", "grad"]) == 0
    text = capsys.readouterr().out
    assert "reverse=True" in text and "grad:hs.Wh" in text


def test_emit_kernels_of_the_prediction_shows_what_predict_runs(capsys, tmp_path):
    """`--predict`: the prediction lowered as dlc predict and a built library lower it, its
    weights packed once (a program's first kernel) and, where an example holds a megabyte,
    its first layers in a loop over the batch; without outputs, or with grad, an error."""
    assert main(["compile", LENET, "--emit", "kernels", "--predict"]) == 0
    kernels = capsys.readouterr().out
    assert "weight packs" in kernels and "sparse_cross_entropy" not in kernels
    big = write(
        tmp_path,
        "model big {\n    input x: f32[B, 3, 128, 128]\n    output y = global_avg_pool(conv2d(x, 32, 3, act = relu))\n}\n",
        train="",
        name="big.dl",
    )
    assert main(["compile", big, "--emit", "kernels", "--predict"]) == 0
    assert "scan $t0 in B:" in capsys.readouterr().out
    assert main(["compile", big, "--emit", "graph", "--predict"]) == 0
    assert "output output:y" in capsys.readouterr().out
    assert "--predict shows" in failure(["compile", big, "--emit", "grad", "--predict"], capsys)
    no_outputs = write(tmp_path, XOR.replace("    output", "    # output"), name="none.dl")
    assert f"{no_outputs}:2:1: error: model" in failure(
        ["compile", no_outputs, "--emit", "kernels", "--predict"], capsys
    )


def test_emit_ast(capsys):
    assert main(["compile", LENET, "--emit", "ast"]) == 0
    out = capsys.readouterr().out
    assert "ModelBlock(name='lenet5')" in out and "Pipe" not in out and "CallExpr()" in out


def test_real_command_runs_without_traceback(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text("model m {\n    input x: f32[B, 3]\n    y = dense(x, 0)\n    loss mean(y)\n}\n")
    r = subprocess.run([sys.executable, "-m", "dlc.runtime.cli", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}:3:9: error:" in r.stderr and "positive" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dlc.runtime.cli", "summary", LENET], capture_output=True, text=True)
    assert r.returncode == 0 and "61,706" in r.stdout


def test_dlc_alone_prints_its_help_on_stderr_and_exits_2():
    r = subprocess.run([sys.executable, "-m", "dlc.runtime.cli"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("usage: dlc") and "export" in r.stderr


def test_a_closed_pipe_ends_dlc_quietly_with_success():
    """`dlc compile ... | head -1`: the reader has what it wanted."""
    r = subprocess.run(
        f"'{sys.executable}' -m dlc.runtime.cli compile '{LENET}' --emit kernels | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stderr == ""


@pytest.mark.parametrize(
    "typo, message",
    [
        ("h = dense(x, 3, activation = relu)", "dense has no argument named 'activation'; did you mean 'act'?"),
        ("h = dense(x, 3, act = rleu)", "unknown name 'rleu'; did you mean 'relu'?"),
        ("optimiser = adam()", "unknown train setting 'optimiser'; did you mean 'optimizer'?"),
        ("optimizer = adma(lr = 1e-3)", "unknown optimizer 'adma'; did you mean 'adam'?"),
        ("data = digit()", "unknown data source 'digit'; did you mean 'digits'?"),
    ],
)
def test_a_mistyped_name_gets_a_did_you_mean(tmp_path, capsys, typo, message):
    layer, setting = (typo, "epochs = 1") if typo.startswith("h =") else ("h = dense(x, 3)", typo)
    data = "" if setting.startswith("data") else "data = digits()\n"
    src = (
        f"model m {{\n input x: f32[B, 64]\n target y: i32[B]\n {layer}\n loss sparse_cross_entropy(h, y)\n}}\n"
        f"train m {{\n {data} {setting}\n}}\n"
    )
    path = tmp_path / "m.dl"
    path.write_text(src)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    assert message in capsys.readouterr().err
    assert main(["check", str(path)]) == 1  # found without reading data, where it is written
    line = next(i for i, text in enumerate(src.splitlines(), 1) if typo in text)
    assert f"{path}:{line}:" in capsys.readouterr().err.split(f": error: {message}")[0]


CHARS = """
model chars {
    input  x: i32[B, T]
    target y: i32[B, T]
    logits = dense(embedding(x, 3, 4), 3)
    loss   sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}
"""


# ---- train's seed, DLC_NUM_THREADS --------------------------------------------------------------
def test_a_seed_beyond_the_32_bit_random_key_is_refused(tmp_path, capsys):
    path = write(tmp_path, XOR)
    line = usage_error(["train", path, "--seed", str(2**40), "--out", str(tmp_path / "run")], capsys)
    assert line == f"--seed: error: needs a whole number, from 0 to 2147483647; got '{2**40}'"
    block = write(tmp_path, XOR, f"train xor {{ data = xor() seed = {2**40} }}", "b.dl")
    err = failure(["check", block], capsys)
    assert "b.dl:" in err and "seed must be" in err


@pytest.mark.parametrize("value", ["abc", "0", "-1", "", "1025"])
def test_dlc_num_threads_must_be_a_thread_count(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("DLC_NUM_THREADS", value)
    err = usage_error(["train", write(tmp_path, XOR), "--out", str(tmp_path / "run")], capsys)
    assert f"DLC_NUM_THREADS: error: needs a whole number of threads, from 1 to 1024; got '{value}'" in err
    assert not (tmp_path / "run").exists()


def test_a_team_beyond_1024_threads_is_a_usage_error_not_a_crash(tmp_path, capsys):
    """The thread pool holds at most 1024 threads: a million is refused before anything runs."""
    line = usage_error(["predict", write(tmp_path, XOR), "--threads", "1000000"], capsys)
    assert "--threads: error:" in line and "from 1 to 1024; got '1000000'" in line


def test_dlc_num_threads_is_not_read_when_threads_is_given(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DLC_NUM_THREADS", "abc")
    assert (
        main(
            ["train", write(tmp_path, XOR), "--out", str(tmp_path / "run"), "--threads", "1", "--backend", "reference"]
        )
        == 0
    )
    assert os.environ["DLC_NUM_THREADS"] == "1"


# ---- numbers of the commands' flags ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["eval", "--weights", "w.npz", "--batch", "0"], "--batch"),
        (["eval", "--weights", "w.npz", "--batch", "-1"], "--batch"),
        (["predict", "--weights", "w.npz", "--input", "in.npz", "--batch", "0"], "--batch"),
        (["gradcheck", "--size", "-2"], "--size"),
        (["gradcheck", "--size", "0"], "--size"),
        (["gradcheck", "--entries", "0"], "--entries"),
        (["gradcheck", "--seed", "-1"], "--seed"),
        (["gradcheck", "--seed", str(2**40)], "--seed"),
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
    ],
)
def test_numeric_flags_out_of_range_are_usage_errors(tmp_path, capsys, argv, flag):
    line = usage_error([argv[0], write(tmp_path, XOR)] + argv[1:], capsys)
    assert line.startswith(f"{flag}: error: ") and f"got '{argv[-1]}'" in line


def test_generate_refuses_a_nan_temperature_in_the_api(tmp_path):
    model = DlcModel(write(tmp_path, CHARS, ""), backend="reference")
    model.params = {p.name: np.zeros(p.type.shape, np.float32) for p in model.eval_model.params}
    with pytest.raises(DlcError, match="temperature"):
        model.generate("a", 3, temperature=float("nan"))


# ---- predict's text input ------------------------------------------------------------------------
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
    err = failure(
        [
            "predict",
            path,
            "--weights",
            weights,
            "--input",
            str(text),
            "--backend",
            "reference",
            "--output",
            str(tmp_path / "p.npz"),
        ],
        capsys,
    )
    assert phrase in err and "in.txt" in err
    text.write_text("abca")
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                weights,
                "--input",
                str(text),
                "--backend",
                "reference",
                "--output",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "p.npz")["next"].shape == (1, 3)


# ---- a bare relative file name is a path -----------------------------------------------------------
def test_a_bare_file_name_is_a_data_path(tmp_path, capsys):
    path = write(tmp_path, XOR)
    np.savez(
        tmp_path / "train.npz",
        x=np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32),
        y=np.array([[0], [1], [1], [0]], np.float32),
    )
    for name in ("train.npz", "./train.npz"):
        assert (
            main(
                ["train", path, "--data", name, "--out", str(tmp_path / "run"), "--backend", "reference", "--overwrite"]
            )
            == 0
        )
    assert main(["train", path, "--data", "nothere.npz", "--out", str(tmp_path / "run"), "--overwrite"]) == 2
    assert f"--data:1:1: error: npz: data file not found: {tmp_path / 'nothere.npz'}" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                path,
                "--weights",
                str(tmp_path / "run" / "last.npz"),
                "--data",
                "train.npz",
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    assert 'evaluating "train.npz"' in capsys.readouterr().err
    # an error inside a call is still the call's, not a missing file
    assert main(["train", path, "--data", "digits(scale = x.y)"]) == 2
    assert capsys.readouterr().err.startswith("--data:1:16: error: a train setting must be")


# ---- Ctrl-C at any moment ---------------------------------------------------------------------------
def test_the_entry_point_imports_nothing_heavy():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, dlc.runtime.cli; "
            "print(sorted(m for m in ('numpy', 'dlc.compiler', 'lark') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_ctrl_c_during_start_up_exits_130(delay):
    """Interrupts while importing the compiler, parsing and building the graph (compiling resnet
    takes ~40 s), counted from before the entry point's import (a few milliseconds: the test
    above), as the `dlc` script does it."""
    code = "import sys; print('go', file=sys.stderr, flush=True); from dlc.runtime.cli import main; sys.exit(main())"
    # Ctrl-C's default action, as in a terminal: a shell's background job (CI started with `&`)
    # would pass on SIGINT ignored, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen(
        [sys.executable, "-c", code, "compile", "--emit", "asm", str(EXAMPLES / "resnet.dl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert p.stderr.readline() == "go\n"
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.strip() == "interrupted", err


def test_an_interrupt_a_callback_dropped_still_ends_with_130(monkeypatch, capsys):
    """CPython prints and drops an exception raised in a __del__ or a weakref callback (as
    importlib's module-lock callback once did with a Ctrl-C during start-up): the command
    runs on, and must still end as interrupted."""
    import dlc.runtime.cli as cli

    dropped = []

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside __del__

    def command(argv):
        Collected()
        return 0

    monkeypatch.setattr(cli, "_main", command)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal
    try:
        assert cli.main([]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert dropped == [KeyboardInterrupt] and capsys.readouterr().err.strip() == "interrupted"


def test_an_interrupt_inside_llvmlite_waits_until_llvmlite_has_returned(monkeypatch, capsys):
    """llvmlite frees a string it returned, then forgets it (`OutputString.close`): an
    interrupt raised between the two left the string to be freed again by its `__del__`,
    and the process died of a double free (SIGABRT) in one start-up of six. Here the free
    itself is interrupted: it must run once, and the command end as interrupted."""
    import llvmlite.binding as llvm

    import dlc.runtime.cli as cli

    def command(argv):
        llvm.get_host_cpu_name()
        gc.collect()  # the string's __del__, had the interrupt cut its close in half
        time.sleep(0.5)  # the interrupt, sent again, arrives (or lands in a callback that drops it)
        return 0

    library = InterruptedAtFree(monkeypatch)
    monkeypatch.setattr(cli, "_main", command)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal
    try:
        assert cli.main([]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert library.freed_once() and capsys.readouterr().err.strip() == "interrupted"


# ---- --optimizer and --freeze replace the train block's ------------------------------------------
ADAM = "train xor { data = xor() batch = 4 epochs = 1 optimizer = adam(lr = 1e-3, beta2 = 0.99) }"


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"optimizer": "sgd"}, Call("sgd", [], {"lr": 1e-2})),
        ({"optimizer": "sgd", "lr": 0.3}, Call("sgd", [], {"lr": 0.3})),
        ({"optimizer": "sgd(lr = 0.1, momentum = 0.9)"}, Call("sgd", [], {"lr": 0.1, "momentum": 0.9})),
        ({"lr": 0.3}, Call("adam", [], {"lr": 0.3, "beta2": 0.99})),
    ],
)
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
    assert shown == sizes["h.W"] + sizes["h.b"]  # --freeze p: h trains, p does not


# ---- images out, neighbours ---------------------------------------------------------------------------
def _read_png(path) -> np.ndarray:
    """The pixels of an 8-bit grey or RGB PNG with filter 0 on every row (what dlc writes)."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert depth == 8 and colour in (0, 2)
    channels = 1 if colour == 0 else 3
    chunks, at = [], 8
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + n])
        at += 12 + n
    rows = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, channels)


def test_png_grid_holds_each_image_in_its_cell(tmp_path):
    from dlc.runtime.data import png

    images = np.random.default_rng(0).random((5, 3, 4, 6))  # 5 colour images, 4 x 6, in [0, 1]
    png.write_png(tmp_path / "g.png", png.grid(png.image_batch("y", images)))
    pixels = _read_png(tmp_path / "g.png")
    zoom = 256 // (6 * 3)  # 3 columns, 2 rows
    assert pixels.shape == (2 * (4 * zoom + 1) - 1, 3 * (6 * zoom + 1) - 1, 3)
    cell = pixels[4 * zoom + 1 : 8 * zoom + 1, 6 * zoom + 1 : 12 * zoom + 1]  # image 4: row 1, column 1
    assert np.array_equal(cell[::zoom, ::zoom], np.round(images[4].transpose(1, 2, 0) * 255).astype(np.uint8))
    assert (pixels[4 * zoom] == 255).all()  # the gap between the rows
    with pytest.raises(DlcError, match=r"output 'y' is \[5, 2, 4, 6\], not a batch of images"):
        png.image_batch("y", np.zeros((5, 2, 4, 6)))


def test_predict_png_names_the_output_it_draws(tmp_path, capsys):
    path = write(
        tmp_path,
        """
model m {
    input x: f32[B, 4]
    output picture = reshape(x, B, 1, 2, 2)
    output flat = x
}
""",
        train="",
    )
    np.savez(tmp_path / "in.npz", x=np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    args = ["predict", path, "--weights", str(tmp_path / "w.npz"), "--data", str(tmp_path / "in.npz")]
    np.savez(tmp_path / "w.npz")
    assert main(args + ["--output", str(tmp_path / "picture.png")]) == 0
    assert "picture [3, 1, 2, 2]" in capsys.readouterr().out
    assert _read_png(tmp_path / "picture.png").shape[2] == 1
    assert main(args + ["--output", str(tmp_path / "out.png")]) == 1
    assert "name the file after it (picture.png, flat.png)" in capsys.readouterr().err
    assert main(args + ["--output", str(tmp_path / "flat.png")]) == 1
    assert "output 'flat' is [3, 4], not a batch of images" in capsys.readouterr().err


def test_neighbours_needs_a_word_list_and_a_known_word(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("the cat sat on the mat and the dog sat on the log " * 20)
    path = write(
        tmp_path,
        """
model w {
    input center: i32[B]
    input context: i32[B]
    input negatives: i32[B, K]
    v = embedding(center, 8, 4)
    u = embedding(context, 8, 4, name = "out")
    n = embedding(negatives, 8, 4, name = "out")
    loss mean(softplus(-sum(v * u, -1))) + mean(softplus(sum(expand_dims(v, 1) * n, -1)))
}
""",
        train="""
train w {
    data = skipgram("t.txt", words = 9, subsample = 0)    # the text has 8
    epochs = 1
}""",
    )
    assert main(["train", path, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    weights = str(tmp_path / "run" / "last.npz")
    assert main(["neighbours", path, "--weights", weights, "cat", "-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("cat: ") and len(line.split(", ")) == 3 and "cat " not in line[5:]
    assert main(["neighbours", path, "--weights", weights, "cats"]) == 1
    assert "'cats' is not among the 8 words the model was trained on; did you mean 'cat'?" in capsys.readouterr().err
    assert main(["neighbours", path, "--weights", weights, "cat", "--param", "v.b"]) == 1
    assert "'v.b' is not a [8, dim] table" in capsys.readouterr().err
    saved = np.load(weights)
    np.savez(tmp_path / "plain.npz", **{k[6:]: saved[k] for k in saved if k.startswith("param:")})  # no metadata
    assert main(["neighbours", path, "--weights", str(tmp_path / "plain.npz"), "cat"]) == 1
    assert "no word list" in capsys.readouterr().err


# ---- dlc checkpoint rename -------------------------------------------------------------------------------
def test_checkpoint_rename_renames_parameters_their_optimizer_state_and_int8_arrays(tmp_path, capsys):
    rng = np.random.default_rng(0)
    params = {"h.W": rng.random((2, 4)), "h.b": rng.random(4), "hh.W": rng.random((4, 2)), "enc.h.W": rng.random(3)}
    opt = {"h.W": {"m": rng.random((2, 4))}, "hh.W": {"m": rng.random((4, 2))}}
    int8 = {"int8:h.W:weight": np.ones((4, 2), np.int8)}
    checkpoint.save(tmp_path / "c.npz", params, opt, {"quantization": {"products": ["h.W"]}, "epoch": 3}, int8)
    argv = ["checkpoint", "rename", str(tmp_path / "c.npz"), "h=hid", "enc.h=enc.inner", "-o", str(tmp_path / "r.npz")]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[:3] == ["enc.h.W -> enc.inner.W", "h.W -> hid.W", "h.b -> hid.b"]
    arrays, meta = checkpoint.read(tmp_path / "r.npz")
    assert sorted(arrays) == [
        "int8:hid.W:weight",
        "opt:hh.W:m",
        "opt:hid.W:m",
        "param:enc.inner.W",
        "param:hh.W",
        "param:hid.W",
        "param:hid.b",
    ]  # hh is no h
    np.testing.assert_array_equal(arrays["param:hid.W"], params["h.W"])
    np.testing.assert_array_equal(arrays["opt:hid.W:m"], opt["h.W"]["m"])
    assert meta["quantization"]["products"] == ["hid.W"] and meta["epoch"] == 3


@pytest.mark.parametrize(
    "renames, message",
    [
        (["g=k"], "has no parameter g nor any under g. (its parameters: h.W, h.b, k.W)"),
        (["h=k"], "two parameters would both be named k.W"),
        (["h=a", "h.W=b"], "h.W lies under h, which renames it too"),
    ],
)
def test_checkpoint_rename_refuses_what_would_lose_or_miss_a_parameter(tmp_path, capsys, renames, message):
    checkpoint.save(tmp_path / "c.npz", {"h.W": np.ones(2), "h.b": np.ones(1), "k.W": np.ones(2)}, {}, {})
    err = failure(["checkpoint", "rename", str(tmp_path / "c.npz"), *renames, "-o", str(tmp_path / "r.npz")], capsys)
    assert message in err
    assert not (tmp_path / "r.npz").exists()


def test_checkpoint_rename_takes_names(tmp_path, capsys):
    message = usage_error(["checkpoint", "rename", str(tmp_path / "c.npz"), "h", "-o", str(tmp_path / "r.npz")], capsys)
    assert "needs OLD=NEW, two names such as h=hidden or enc.h=enc.hidden; got 'h'" in message
