"""Where every error of `dlc` is (docs/cli.md, "Where an error is"): a corpus of bad inputs — bad
programs of each kind, bad flags and arguments of every command, bad data and checkpoint files —
run through the command line in-process, each error's first line held to start at its place:
`FILE:LINE:COL:` (in a .dl file, or in a flag's text), `--flag:` (a flag's value), an
argument as the usage names it (`CKPT:`, `OLD=NEW:`), the word not understood (`trian:`), or
`PATH:` (a file named whole: missing, unreadable, damaged). An error about a flag or an
argument exits 2, every other 1. Nothing here compiles: each input is refused before."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.runtime.cli import COMMANDS, command_parsers, main, parser
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.gradcheck import init_params

PLACED = re.compile(r"^(?P<place>.+?)(?::(?P<line>\d+):(?P<col>\d+))?: error: \S")

MODEL = """model cls {
    input  x: f32[B, 2]
    target y: i32[B]
    h = dense(x, 4, tanh)
    loss sparse_cross_entropy(dense(h, 2), y)
    output p = h
}
train cls { data = "d.npz"  epochs = 1  batch = 4 }
"""

# ---- bad programs, each through `dlc check` ---------------------------------------------------------------
PROGRAMS = {
    "syntax": "model m {\n    input x: f32[B, 2]\n    output y = x +\n}\n",
    "unclosed": "model m {\n    input x: f32[B, 2]\n    output y = dense(x, 2\n",
    "unknown name": "model m {\n    input x: f32[B, 2]\n    output y = desne(x, 2)\n}\n",
    "shapes": "model m {\n    input x: f32[B, 2]\n    input z: f32[B, 3]\n    output y = x + z\n}\n",
    "in the library": "model m {\n    input x: f32[B, 2, 3]\n    output y = bidirectional(x, lstm, -2)\n}\n",
    "train setting": MODEL.replace("batch = 4", "batch = 4  optimizer = adma"),
    "train data": MODEL.replace('"d.npz"', "digits(images = true)"),
    "import": 'import "nowhere.dl"\n' + MODEL,
    "repeat": "model m {\n    input x: f32[B, 2]\n    h = x\n    repeat i in 0..1000000 { h = h + 1.0 }\n"
    "    output y = h\n}\n",
    "not utf-8": b"model m {\n    input x: f32[B, 2]\n    output y = x # \xff\xfe\n}\n",
}


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A folder with a model, its data, a checkpoint of its parameters and bad files of each kind."""
    d = tmp_path_factory.mktemp("places")
    (d / "m.dl").write_text(MODEL)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 2)).astype(np.float32), rng.integers(0, 2, 8).astype(np.int32)
    np.savez(d / "d.npz", x=x, y=y)
    np.savez(d / "no_y.npz", x=x)
    np.savez(d / "extra.npz", x=x, y=y, a=y)
    np.savez(d / "empty.npz", x=x[:0], y=y[:0])
    np.savez(d / "shape.npz", x=rng.random((8, 3)).astype(np.float32), y=y)
    np.savez(d / "strings.npz", x=x.astype(str), y=y)
    (d / "text.npz").write_text("not an archive\n")
    (d / "strings.csv").write_text("a,b,c\nx,y,z\n")
    model = load(str(d / "m.dl")).build(None, training=True)
    checkpoint.save(d / "w.npz", init_params(model), {}, {})
    checkpoint.save(d / "other.npz", {"q.W": np.ones((2, 4))}, {}, {})
    checkpoint.save(d / "run" / "last.npz", {"q.W": np.ones((2, 4))}, {}, {})  # another run's
    (d / "bad.onnx").write_bytes(b"\x08\x07not a model")
    for name, text in PROGRAMS.items():
        path = d / f"{name.replace(' ', '_')}.dl"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def run(argv, capsys) -> tuple:
    """(status, stderr) of `dlc argv`: a usage error's SystemExit is its status."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def assert_placed(argv, status: int, err: str, names: set):
    """The first line of the error starts at a place of the input (`names`: the words a place
    may be besides a path and argv's words) and the status says whose it is: 2 a flag's or an
    argument's (a usage error), else 1."""
    shown = f"\n$ dlc {' '.join(map(str, argv))}\n--- status {status}; stderr:\n{err}"
    if status == 0:  # no error: a command that needs nothing more (dlc data list)
        assert "error" not in err, shown
        return
    assert status in (1, 2), shown
    assert "Traceback" not in err and "internal error" not in err, shown
    first = next((line for line in err.splitlines() if "error: " in line), None)
    assert first is not None, "no error" + shown
    m = PLACED.match(first)
    assert m, "the error does not start at its place" + shown
    where = m["place"]
    if m["line"]:  # in a file of the program, the library, or a flag's text
        assert where.startswith(("--", "<stdlib>/")) or Path(where).is_file(), shown
    else:  # a flag or an argument as the usage names it, a word of argv, or a file named whole
        assert where in names or where in map(str, argv) or Path(where).parent.is_dir(), shown
    by_usage = where.startswith("--") or "usage: dlc" in err
    assert status == (2 if by_usage else 1), "a flag's or an argument's error exits 2, another 1" + shown


def usage_names(p: argparse.ArgumentParser) -> set:
    """What a usage error may be at: the flags and arguments of `p` and its commands, their
    metavars, and the environment's variables dlc reads."""
    names = {"DLC_NUM_THREADS"}
    for action in p._actions:
        names |= set(action.option_strings) | {action.dest, str(action.metavar)}
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= usage_names(sub)
    return names


NAMES = usage_names(parser())


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_bad_program_is_refused_at_its_place(place, capsys, name):
    argv = ["check", place / f"{name.replace(' ', '_')}.dl"]
    assert_placed(argv, *run(argv, capsys), NAMES)


# ---- bad flags and arguments of every command -------------------------------------------------------------
def commands(d: Path) -> list:
    """(argv, parser) of every command and action (`dlc data fetch`): argv its required
    arguments, each given a file that is not there (or its first choice), so that a flag that
    is accepted ends the command at once, in a located error too."""
    out = []
    for name in COMMANDS:
        p = command_parsers(parser((name,)))[name]
        subs = next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
        for argv, q in [([name, action], sub) for action, sub in subs.items()] if subs else [([name], p)]:
            out.append((argv + required(q, d), q))
    return out


def required(p: argparse.ArgumentParser, d: Path) -> list:
    argv = []
    for a in p._actions:
        if not a.option_strings:
            argv.append(next(iter(a.choices)) if a.choices else d / "absent.file")
        elif a.required:
            argv += [a.option_strings[-1], d / "absent.file"]
    return argv


def bad_flags(d: Path) -> list:
    """Each command alone, with an unknown flag, with its arguments files that are not there,
    and each of its flags that takes a number or a choice given a value it cannot be."""
    cases = [[name, "--nope"] for name in COMMANDS] + [[name] for name in COMMANDS if name != "lsp"]  # alone it serves
    for argv, p in commands(d):
        if argv[0] == "lsp":
            continue
        cases.append(argv)
        for a in p._actions:
            if a.option_strings and a.nargs is None and (a.type not in (None, str) or a.choices):
                cases.append(argv + [a.option_strings[-1], "-1x"])
    return cases


def test_every_flag_and_argument_error_is_at_the_flag_with_status_2(place, capsys):
    cases = bad_flags(place)
    assert len(cases) > 80
    failures = []
    for argv in cases:
        try:
            assert_placed(argv, *run(argv, capsys), NAMES)
        except AssertionError as e:  # every case's, not only the first
            failures.append(str(e).split("\nassert")[0])
    assert not failures, "\n\n".join(failures)


# ---- bad flags beside good files, bad data and checkpoints ----------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["trian", "m.dl"],
        ["train", "m.dl", "--optimizer", "adma"],
        ["train", "m.dl", "--clip", "-1"],
        ["train", "m.dl", "--data", "digits("],
        ["train", "m.dl", "--model", "other"],
        ["summary", "m.dl", "--dim", "B=0"],
        ["checkpoint", "rename", "w.npz", "h", "-o", "r.npz"],
        ["compile", "m.dl", "--emit", "graph", "-o", "no/such/dir.txt"],
        ["check", "."],
        ["train", "m.dl", "--data", "absent.npz"],
        ["train", "m.dl", "--data", "text.npz"],
        ["train", "m.dl", "--data", "strings.npz"],
        ["train", "m.dl", "--data", "strings.csv"],
        ["train", "m.dl", "--data", "no_y.npz"],
        ["train", "m.dl", "--data", "extra.npz"],
        ["train", "m.dl", "--data", "empty.npz"],
        ["train", "m.dl", "--data", "shape.npz"],
        ["eval", "m.dl", "--weights", "absent.npz"],
        ["eval", "m.dl", "--weights", "text.npz"],
        ["eval", "m.dl", "--weights", "other.npz"],
        ["eval", "m.dl", "--weights", "w.npz", "--data", "no_y.npz"],
        ["predict", "m.dl", "--weights", "w.npz", "--input", "shape.npz", "-o", "p.npz"],
        ["train", "m.dl", "--out", "run"],
        ["import", "bad.onnx", "-o", "imported.dl"],
        ["checkpoint", "rename", "absent.npz", "h=g", "-o", "r.npz"],
        ["checkpoint", "rename", "w.npz", "g=k", "-o", "r.npz"],
    ],
)
def test_a_bad_input_beside_good_files_is_refused_at_its_place(place, capsys, argv, monkeypatch):
    monkeypatch.chdir(place)
    argv = argv + ["--backend", "reference"] * (argv[0] in ("train", "eval", "predict"))
    assert_placed(argv, *run(argv, capsys), NAMES)
