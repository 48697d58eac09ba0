"""`dlc fmt` (compiler/frontend/format.py): the canonical layout is idempotent, keeps every
comment, and the formatted program builds the same graphs, over the examples, the standard
library and the front-end fuzz corpus; `--check` exits 1 with a diff."""

from __future__ import annotations

import re
import textwrap
from importlib import resources
from pathlib import Path

import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import syntax as A
from dlc.compiler.frontend.format import LINE_WIDTH, format_text
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.graph import to_text
from dlc.runtime.cli import main
from dlc.tools.fuzz import Corpus

ROOT = Path(dlc.__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
STDLIB = sorted(Path(str(resources.files("dlc.compiler").joinpath("stdlib"))).glob("*.dl"))
MUTANTS = 150  # inputs 0..MUTANTS-1 of the fuzz campaign's seed 0
LOCATION = re.compile(r"  @.*$|(?<=scan_body)@\d+", re.MULTILINE)  # a node's place; a scan body's line


def comments(text: str) -> list[str]:
    parser = A._parser()
    return [str(t).rstrip() for t in parser.lex(text, dont_ignore=True) if t.type == "COMMENT"]


def graphs(text: str, filename: str) -> list[str]:
    """Every model's graphs (training and evaluation forward, initializer) as text without
    source locations, and its parameters; a program that does not build gives its error."""
    try:
        program = load_text(text, filename)
        built = []
        for name in program.models:
            for training in (True, False):
                m = program.build(name, training=training)
                built += [
                    LOCATION.sub("", to_text(m.graph)),
                    LOCATION.sub("", to_text(m.init)),
                    repr([(p.name, str(p.type)) for p in m.params]),
                ]
        return built
    except DlcError as e:
        return [e.message]


def assert_canonical(text: str, filename: str):
    formatted = format_text(text, filename)
    assert format_text(formatted, filename) == formatted, "formatting twice changes the text"
    assert comments(formatted) == comments(text)
    assert A.parse(formatted, filename) == A.parse(text, filename)
    return formatted


@pytest.mark.parametrize("path", EXAMPLES + STDLIB, ids=lambda p: p.name)
def test_examples_and_stdlib_are_idempotent_and_build_the_same_graphs(path):
    text = path.read_text()
    formatted = assert_canonical(text, str(path))
    if path in EXAMPLES:
        assert graphs(formatted, str(path)) == graphs(text, str(path))


def test_fuzz_corpus_is_idempotent_and_builds_the_same_graphs():
    corpus, parsed, built = Corpus.default(), 0, 0
    for i in range(MUTANTS):
        try:
            text = corpus.mutant(0, i).decode("utf-8")
            A.parse(text, "m.dl")
        except (UnicodeDecodeError, DlcError):
            continue
        parsed += 1
        formatted = assert_canonical(text, "m.dl")
        before = graphs(text, "m.dl")
        assert graphs(formatted, "m.dl") == before, f"mutant {i}"
        built += not isinstance(before[0], str) or "\n" in before[0]
    assert parsed > MUTANTS // 3 and built > MUTANTS // 10, (parsed, built)


def test_the_canonical_layout():
    messy = textwrap.dedent("""\
        # a comment before the model


        model   m{
        input x:f32[B,4]   # the input
              target y : f32 [ B ]
        h=dense( x,8,act=relu )|>dropout(0.5)   # hidden
        z = -h [ :, : 2] ^2+f(- 1) # short


          loss mean( (z-y)^2 )
        q = g(a,
        b)
        }
        train m {
            data = npz("d.npz")
          validation=split(0.1)
        }
        """)
    assert format_text(messy) == textwrap.dedent("""\
        # a comment before the model

        model m {
            input  x: f32[B, 4]  # the input
            target y: f32[B]
            h = dense(x, 8, act = relu) |> dropout(0.5)  # hidden
            z = -h[:, :2]^2 + f(-1)                      # short

            loss   mean((z - y)^2)
            q = g(a,
                  b)
        }
        train m {
            data       = npz("d.npz")
            validation = split(0.1)
        }
        """)


def test_else_of_an_if_statement_and_of_an_expression():
    text = textwrap.dedent("""\
        def f(x, c) {
            if x > 1 {
                return 1
            }
            else {
                return if c
                    then 1
                    else 2
            }
        }
        """)
    assert format_text(text) == text


def test_a_syntax_error_is_reported_not_formatted(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text("model m {\n    input x: f32[B\n}\n")
    assert main(["fmt", str(path)]) == 1
    assert "m.dl:2:" in capsys.readouterr().err
    assert path.read_text() == "model m {\n    input x: f32[B\n}\n"


def test_a_file_that_does_not_parse_leaves_the_others_formatted(tmp_path, capsys):
    # docs/cli.md: each file is rewritten; one with a syntax error is reported and left alone
    (tmp_path / "a.dl").write_text("model m {\n    input x: f32[B\n}\n")
    (tmp_path / "b.dl").write_text("model m {\ninput x: f32[B]\n}\n")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "a.dl:2:" in err and "+    input  x: f32[B]" in out
    assert main(["fmt", str(tmp_path)]) == 1
    assert "a.dl:2:" in capsys.readouterr().err
    assert (tmp_path / "b.dl").read_text() == "model m {\n    input  x: f32[B]\n}\n"
    assert (tmp_path / "a.dl").read_text() == "model m {\n    input x: f32[B\n}\n"


def test_check_exits_1_with_a_diff_and_fmt_rewrites(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text("model m {\ninput x: f32[B]\n}\n")
    assert main(["fmt", "--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "-input x: f32[B]" in out and "+    input  x: f32[B]" in out
    assert main(["fmt", str(path)]) == 0
    assert path.read_text() == "model m {\n    input  x: f32[B]\n}\n"
    assert main(["fmt", "--check", str(path)]) == 0


def test_missing_and_not_utf8_files_are_errors(tmp_path, capsys):
    assert main(["fmt", str(tmp_path / "none.dl")]) == 1
    assert "no such file" in capsys.readouterr().err
    path = tmp_path / "bad.dl"
    path.write_bytes(b"model m {\n  \xff\n}\n")
    assert main(["fmt", str(path)]) == 1
    assert "bad.dl:2:3: error: the file is not UTF-8" in capsys.readouterr().err


def test_examples_and_stdlib_pass_fmt_check(capsys):
    assert main(["fmt", "--check", str(ROOT / "examples"), *map(str, STDLIB)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("line_end", ["\r\n", "\r", "\n"])
def test_fmt_keeps_the_line_ends_of_the_file(tmp_path, line_end):
    path = tmp_path / "m.dl"
    path.write_bytes("model m {\ninput x: f32[B]\n}\n".replace("\n", line_end).encode())
    assert main(["fmt", str(path)]) == 0
    assert path.read_bytes() == "model m {\n    input  x: f32[B]\n}\n".replace("\n", line_end).encode()
    assert main(["fmt", "--check", str(path)]) == 0


def test_fmt_makes_the_line_ends_those_of_the_first_line(tmp_path):
    path = tmp_path / "m.dl"
    path.write_bytes(b"model m {\r\n    input  x: f32[B]\n}\r\n")
    assert main(["fmt", "--check", str(path)]) == 1
    assert main(["fmt", str(path)]) == 0
    assert path.read_bytes() == b"model m {\r\n    input  x: f32[B]\r\n}\r\n"


def test_a_byte_order_mark_is_accepted_and_kept(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_bytes(b"\xef\xbb\xbfmodel m {\r\ninput x: f32[B, 4]\r\noutput y = dense(x, 2)\r\n}\r\n")
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    assert main(["fmt", str(path)]) == 0
    assert (
        path.read_bytes() == b"\xef\xbb\xbfmodel m {\r\n    input  x: f32[B, 4]\r\n    output y = dense(x, 2)\r\n}\r\n"
    )


LONG = textwrap.dedent("""\
    model m {
        input x: f32[B, 64]
        h = x |> dense(256, act = relu, init = glorot_uniform) |> dropout(0.1) |> dense(256, act = relu, init = glorot_uniform) |> dropout(0.1) |> dense(10)  # a comment
        z = concat(dense(x, 128, act = relu, init = glorot_uniform), dense(x, 128, act = tanh, init = glorot_uniform), dense(x, 128, act = sigmoid), axis = -1)
        output y = h
    }
    """)


def test_a_long_line_is_broken_at_its_pipes_and_its_outermost_calls_commas():
    assert max(map(len, LONG.splitlines())) > 150
    assert format_text(LONG) == textwrap.dedent("""\
        model m {
            input  x: f32[B, 64]
            h = x |> dense(256, act = relu, init = glorot_uniform) |> dropout(0.1)
                |> dense(256, act = relu, init = glorot_uniform) |> dropout(0.1) |> dense(10)  # a comment
            z = concat(dense(x, 128, act = relu, init = glorot_uniform), dense(x, 128, act = tanh, init = glorot_uniform),
                       dense(x, 128, act = sigmoid), axis = -1)
            output y = h
        }
        """)
    assert all(len(line) <= LINE_WIDTH for line in format_text(LONG).splitlines())
    # where the arguments under the call do not fit, the line is broken after its bracket
    assert format_text(LONG, width=60).splitlines()[6:10] == [
        "    z = concat(",
        "        dense(x, 128, act = relu, init = glorot_uniform),",
        "        dense(x, 128, act = tanh, init = glorot_uniform),",
        "        dense(x, 128, act = sigmoid), axis = -1)",
    ]


@pytest.mark.parametrize("width", [30, 60, 90])
@pytest.mark.parametrize("path", EXAMPLES + STDLIB, ids=lambda p: p.name)
def test_every_example_wrapped_narrow_is_idempotent_and_parses_the_same(path, width):
    text = path.read_text()
    formatted = format_text(text, str(path), width)
    assert format_text(formatted, str(path), width) == formatted, "formatting twice changes the text"
    assert A.parse(formatted, str(path)) == A.parse(text, str(path))
    assert comments(formatted) == comments(text)
    lines = formatted.count("\n")
    assert lines >= format_text(text, str(path)).count("\n")


def test_fmt_line_width_is_an_option(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(LONG)
    assert main(["fmt", "--line-width", "60", str(path)]) == 0
    assert path.read_text() == format_text(LONG, width=60) and max(map(len, path.read_text().splitlines())) < 90
    assert main(["fmt", "--check", "--line-width", "60", str(path)]) == 0
    assert main(["fmt", "--check", str(path)]) == 0  # a narrower layout is kept: lines are never joined
