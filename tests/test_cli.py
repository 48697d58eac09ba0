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
