"""Errors that say what to do (dlc issue 22, item 5): for the common mistakes, the message
names the fix, and the error and its notes point at the user's lines, never only into
the standard library. Each case checks the message, its file:line:col and its notes."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dlc.runtime.cli import main

LOCATED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|note): (?P<msg>.*)$")


def run(tmp_path, capsys, program: str) -> list:
    """Run `dlc check m.dl` on the program; the located lines of stderr as
    (file name, line, col, kind, message), the error first."""
    path = tmp_path / "m.dl"
    path.write_text(textwrap.dedent(program).lstrip("\n"))
    code = main(["check", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    located = [
        (Path(m["file"]).name, int(m["line"]), int(m["col"]), m["kind"], m["msg"])
        for m in map(LOCATED.match, err.splitlines())
        if m
    ]
    assert located and located[0][3] == "error", err
    return located


def error_at(located, line: int, col: int, *phrases):
    file, l, c, _, msg = located[0]
    assert (file, l, c) == ("m.dl", line, col), located[0]
    for phrase in phrases:
        assert phrase in msg, msg


def note_at(located, line: int, col: int, phrase: str):
    notes = [n for n in located[1:] if n[0] == "m.dl" and n[1:3] == (line, col) and phrase in n[4]]
    assert notes, f"no note '{phrase}' at m.dl:{line}:{col} in {located}"


def test_loss_written_as_a_binding_is_told_the_loss_statement(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model mlp {
            input x: f32[B, 8]
            target y: i32[B]
            logits = dense(x, 3)
            loss = sparse_cross_entropy(logits, y)
        }
        """,
    )
    error_at(located, 5, 10, "the loss statement has no '='", "write `loss sparse_cross_entropy(logits, y)`")


def test_another_statement_keyword_assigned_is_told_its_statement(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 8]
            metric = mean(x)
        }
        """,
    )
    error_at(located, 3, 12, "'metric' starts a statement, `metric NAME = EXPR`")


def test_a_missing_brace_names_the_model_never_closed(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model mlp {
            input x: f32[B, 8]
            target y: i32[B]
            logits = dense(x, 3)
            loss sparse_cross_entropy(logits, y)

        train mlp {
            epochs = 1
        }
        """,
    )
    error_at(located, 1, 1, "'model mlp' is never closed: a '}' is missing before 'train' on line 7")
    note_at(located, 7, 1, "expected '}' here")


def test_a_missing_brace_of_a_def_names_the_def(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        def block(x) {
            return dense(x, 4)

        model m {
            input x: f32[B, 8]
            output y = block(x)
        }
        """,
    )
    error_at(located, 1, 1, "'def block(x)' is never closed")


def test_an_unclosed_paren_is_pointed_at(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 4]
            h = dense(x, 3
            output h
        }
        """,
    )
    error_at(located, 3, 14, "'(' is never closed: a ')' is missing before 'output' on line 4")
    note_at(located, 4, 5, "expected ')' here")


def test_a_mistake_inside_open_parens_on_one_line_is_not_blamed_on_them(tmp_path, capsys):
    """The token that stops the parser is not the first of its line: the parens are not the
    mistake, the token is."""
    located = run(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 4]
            h = dense(x,
                      3 4)
            output h
        }
        """,
    )
    error_at(located, 4, 17, "unexpected '4'")


def test_a_forgotten_flatten_names_the_dense_layer(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model cnn {
            input x: f32[B, 1, 16, 4]
            target y: i32[B]
            h = conv2d(x, 16, 3, padding = "same", act = relu)
            logits = dense(h, 10)
            loss sparse_cross_entropy(logits, y)
        }
        """,
    )
    error_at(located, 6, 10, "the logits are f32[B, 16, 16, 10]", "2 axes too many", "flatten its input first")
    note_at(located, 5, 14, "f32[B, 16, 16, 10] is made here, by dense")


def test_a_channels_last_image_is_told_conv_and_pooling_read_nchw(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model cnn {
            input x: f32[B, 16, 8, 1]
            target y: i32[B]
            h = x |> maxpool2d(2)
            logits = dense(flatten(h), 10)
            loss sparse_cross_entropy(logits, y)
        }
        """,
    )
    error_at(
        located,
        4,
        14,
        "does not fit in the input f32[B, 16, 8, 1]",
        "conv2d and pooling read NCHW",
        "looks channels-last",
        "declare the input f32[B, 1, 16, 8]",
    )
    note_at(located, 2, 5, "operand 1 is f32[B, 16, 8, 1]")


def test_a_channels_last_image_in_conv2d(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model cnn {
            input x: f32[B, 28, 28, 3]
            output h = conv2d(x, 8, 5)
        }
        """,
    )
    error_at(located, 3, 16, "looks channels-last", "declare the input f32[B, 3, 28, 28]")


def test_a_residual_mismatch_points_at_the_users_layer_not_the_library(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 16]
            h = dense(x, 32, relu)
            output y = x + h
        }
        """,
    )
    error_at(located, 4, 16, "do not broadcast")
    note_at(located, 3, 9, "operand 2 is f32[B, 32], from here")
    assert all(not n[0].startswith("<stdlib>") for n in located), located


def test_a_function_named_in_quotes_is_told_to_drop_them(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        model m {
            input x: f32[B, 16]
            act = "relu"
            output y = dense(x, 8, act)
        }
        """,
    )
    error_at(located, 4, 16, "'act' is the string \"relu\", not a function", "without quotes: act = relu")


def test_a_function_default_in_quotes_is_told_to_drop_them(tmp_path, capsys):
    located = run(
        tmp_path,
        capsys,
        """
        def block(x, act = "gelu") = dense(x, 8, act)
        model m {
            input x: f32[B, 16]
            output y = block(x)
        }
        """,
    )
    error_at(located, 1, 30, "without quotes: act = gelu")
    note_at(located, 4, 16, "in the call of block here")


def test_training_a_model_without_a_loss_is_an_error_at_the_model_before_compiling(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(
        "model m {\n    input x: f32[B, 64]\n    target y: i32[B]\n    logits = dense(x, 10)\n"
        "    metric accuracy = accuracy(logits, y)\n}\n"
        "train m {\n    data = digits(image = false)\n    epochs = 1\n}\n"
    )
    code = main(["train", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "compiling" not in err, err
    assert err.startswith(f"{path}:1:1: error: model m has no loss, so there is nothing to train"), err


@pytest.mark.parametrize("fn", ["concat", "stack"])
def test_a_numpy_style_axis_is_told_to_give_it_by_name(tmp_path, capsys, fn):
    located = run(
        tmp_path,
        capsys,
        f"""
        model m {{
            input a: f32[B, 8]
            input b: f32[B, 8]
            output y = {fn}(a, b, -1)
        }}
        """,
    )
    error_at(
        located,
        4,
        23 + len(fn),
        f"{fn} takes its tensors positionally and the axis by name",
        "did you mean 'axis = -1'?",
    )  # at the -1
