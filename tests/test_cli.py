"""The command line: help, version, graph formats, emit stages, output files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dlc
from dlc.runtime.cli import main

LENET = str(Path(__file__).parent.parent / "examples" / "lenet5.dl")
LSTM = str(Path(__file__).parent.parent / "examples" / "char_lstm.dl")


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


def test_emit_ast(capsys):
    assert main(["compile", LENET, "--emit", "ast"]) == 0
    out = capsys.readouterr().out
    assert "Model(name='lenet5')" in out and "Pipe" not in out and "Call()" in out


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
    r = subprocess.run(f"'{sys.executable}' -m dlc.runtime.cli compile '{LENET}' --emit kernels | head -1; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stderr == ""


@pytest.mark.parametrize("typo, message", [
    ("h = dense(x, 3, activation = relu)", "dense has no argument named 'activation'; did you mean 'act'?"),
    ("h = dense(x, 3, act = rleu)", "unknown name 'rleu'; did you mean 'relu'?"),
    ("optimiser = adam()", "unknown train setting 'optimiser'; did you mean 'optimizer'?"),
    ("optimizer = adma(lr = 1e-3)", "unknown optimizer 'adma'; did you mean 'adam'?"),
    ("data = digit()", "unknown data source 'digit'; did you mean 'digits'?"),
])
def test_a_mistyped_name_gets_a_did_you_mean(tmp_path, capsys, typo, message):
    layer, setting = (typo, "epochs = 1") if typo.startswith("h =") else ("h = dense(x, 3)", typo)
    data = "" if setting.startswith("data") else "data = digits()\n"
    src = (f"model m {{\n input x: f32[B, 64]\n target y: i32[B]\n {layer}\n loss sparse_cross_entropy(h, y)\n}}\n"
           f"train m {{\n {data} {setting}\n}}\n")
    path = tmp_path / "m.dl"
    path.write_text(src)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    assert message in capsys.readouterr().err
