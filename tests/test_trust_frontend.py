"""Inputs found by fuzzing that crashed the front end ("internal error", exit 3) or ran
away: each must be a located error (FILE:LINE:COL, exit 1), reported in bounded time.
The front end, autodiff and the graph passes must also stay linear in the size of the
model (a 10,000-layer MLP once took minutes)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.passes import autodiff
from dlc.compiler.ir import graph as G
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.cli import main
from dlc.runtime.training.optim import make_schedule
from test_errors import assert_located, prog


def check_located(tmp_path, capsys, program, line, col, phrase, cmd=("check",), files=None, where="m.dl"):
    path = tmp_path / "m.dl"
    path.write_text(prog(program))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(prog(text))
    code = main([cmd[0], str(path), *cmd[1:]])
    out, err = capsys.readouterr()
    assert_located(code, out, err, tmp_path / where, line, col, phrase)
    assert code == 1, err


def check_expression(tmp_path, capsys, expr, col, phrase):
    """`a = expr` in a model with `x: f32[B, 4]` and its sum `s` fails at line 4, column `col`."""
    check_located(tmp_path, capsys, f"""
        model m {{
            input x: f32[B, 4]
            s = sum(x)
            a = {expr}
            output y = x
        }}
        """, 4, col, phrase)


def run_dlc(path: Path, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "dlc.runtime.cli", "check", str(path), *args],
                          capture_output=True, text=True, timeout=timeout)


# ---- 1. files that are not UTF-8 --------------------------------------------------------------------------------
LATIN1 = "model m {\n    input x: f32[B, 4]\n    output y = x   # café\n}\n".encode("latin-1")


def test_file_not_utf8(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_bytes(LATIN1)
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 1, err
    assert lines[0] == f"{path}:3:25: error: the file is not UTF-8 text (byte 0xe9)", err
    assert lines[1] == "        output y = x   # caf\ufffd"          # the line, the bad byte replaced
    assert lines[2] == "    " + " " * 24 + "^"


def test_imported_file_not_utf8(tmp_path, capsys):
    (tmp_path / "lib.dl").write_bytes(b"const A = 1\n# \xff\n")
    path = tmp_path / "m.dl"
    path.write_text('import "lib.dl"\nmodel m {\n    input x: f32[B, 4]\n    output y = x\n}\n')
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert err.startswith(f"{tmp_path / 'lib.dl'}:2:3: error: the file is not UTF-8 text (byte 0xff)"), err


# ---- 2. and 5. static numbers are 64-bit integers and finite floats ------------------------------------------------
@pytest.mark.parametrize("expr, col, phrase", [
    # 5001 digits: more than Python converts from text
    pytest.param("1" + "0" * 5000, 21, "the integer 10000000000000000000... (5001 digits) is too large", id="5001-digits"),
    ("9223372036854775808", 21, "is too large"),                       # 2^63
    ("1e309", 21, "the number is too large for a float"),
    ("int(-1e309)", 26, "the number is too large for a float"),
    ("int(1e308 * 10)", 25, "1e+308 * 10 overflows"),
    ("int(1e300)", 21, "int(1e+300) does not fit in 64 bits"),
    ("2 ^ 63", 21, "2 ^ 63 overflows"),
    ("(0 - 8) ^ 0.5", 21, "is not a real number"),                     # Python makes a complex number
    ("3037000500 * 3037000500", 21, "overflows"),
    ("sum((2 ^ 62, 2 ^ 62))", 21, "overflows"),
])
def test_static_number_range(tmp_path, capsys, expr, col, phrase):
    check_located(tmp_path, capsys, f"""
        model m {{
            input x: f32[B, 4]
            output y = x * ({expr})
        }}
        """, 3, col, phrase)


@pytest.mark.parametrize("length, phrase", [
    ("1e5", "the length of a scan must be a static integer, got the float 100000"),
    ("99999999999999999999", "the integer 99999999999999999999 is too large"),
    ("1e999", "the number is too large for a float"),
])
def test_scan_length_literal(tmp_path, capsys, length, phrase):
    check_located(tmp_path, capsys, f"""
        model m {{
            input x: f32[B, 4]
            s = scan t in {length} carry h = zeros[B, 4] {{ h = h + 1 }}
            output y = x
        }}
        """, 3, 19, phrase)


def test_largest_integer_is_fine(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text("const BIG = 9223372036854775807\nconst HALF = BIG // 2\n"
                    "model m {\n    input x: f32[B, 4]\n    output y = x * (HALF - 2 ^ 62 + 1)\n}\n")
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


# ---- 3. maximum / minimum of what is not a number or a tensor -----------------------------------------------------------
@pytest.mark.parametrize("expr, phrase", [
    ("maximum(relu, relu)", "maximum needs numbers or tensors, got the function relu"),
    ('minimum("a", 1)', 'minimum needs numbers or tensors, got the string "a"'),
    ('maximum(x, "a")', 'maximum needs numbers or tensors, got the string "a"'),
    ("maximum(true, 1)", "maximum needs numbers or tensors, got the bool true"),
])
def test_maximum_of_non_numbers(tmp_path, capsys, expr, phrase):
    check_expression(tmp_path, capsys, expr, 9, phrase)


# ---- 4. dim arithmetic with what is not an integer ---------------------------------------------------------------
@pytest.mark.parametrize("expr, col, phrase", [
    ("reshape(x, B * 0.0, 4)", 20, "cannot apply * to the dim B and the float 0"),
    ('B + "s"', 9, 'cannot apply + to the dim B and the string "s"'),
    ("2.5 - B", 9, "cannot apply - to the float 2.5 and the dim B"),
    ("B * true", 9, "cannot apply * to the dim B and the bool true"),
    ("B // 0", 9, "division by zero"),
])
def test_dim_arithmetic(tmp_path, capsys, expr, col, phrase):
    check_expression(tmp_path, capsys, expr, col, phrase)


# ---- 6. and 7. axes are checked against the rank, by one helper ---------------------------------------------------
@pytest.mark.parametrize("expr, phrase", [
    ("size(x, ())", "an axis must be an integer, got a tuple of 0"),
    ("size(x, relu)", "an axis must be an integer, got the function relu"),
    ("sum(x, (0, 2.5))", "an axis must be an integer, got the float 2.5"),
    ("mean(s, 0)", "axis 0 is out of range for f32[]"),
    ("sum(s, 0)", "axis 0 is out of range for f32[]"),
    ("max(s, 0)", "axis 0 is out of range for f32[]"),
    ("min(s, 0)", "axis 0 is out of range for f32[]"),
    ("argmax(s)", "axis -1 is out of range for f32[]"),
    ("size(s, 0)", "axis 0 is out of range for f32[]"),
    ("squeeze(s, 0)", "axis 0 is out of range for f32[]"),
    ("concat(s, s, axis = 0)", "axis 0 is out of range for f32[]"),
    ("swapaxes(s, 0, 0)", "axis 0 is out of range for f32[]"),
    ("split(s, 1, 0)", "axis 0 is out of range for f32[]"),
    ("expand_dims(s, 1)", "axis 1 is out of range for f32[]"),
    ("stack(x, x, axis = 3)", "axis 3 is out of range for f32[B, 4]"),
    ("stack(x, x, axis = -4)", "axis -4 is out of range for f32[B, 4]"),
    ("softmax(s)", "axis -1 is out of range for f32[]"),
])
def test_axis_out_of_range(tmp_path, capsys, expr, phrase):
    check_expression(tmp_path, capsys, expr, 9, phrase)


def test_axes_in_range_still_work(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(prog("""
        model m {
            input x: f32[B, 4]
            s = sum(x)
            a = stack(s, s) + stack(x, x, axis = 2)[0, 0] + stack(x, x, axis = -1)[0, 0]
            b = expand_dims(s, 0) + expand_dims(s, -1) + size(x, -1) + mean(x, (0, -1))
            output y = a + b
        }
        """))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


# ---- 8. what passed check and failed in lowering ------------------------------------------------------------------
@pytest.mark.parametrize("expr, col, phrase", [
    ("gather(sum(x), i)", 16, "gather: the table must have rank >= 1, got f32[]"),
    ("arange(-1)", 16, "dimension sizes must be positive, got -1"),
    ("arange(0)", 16, "dimension sizes must be positive, got 0"),
    ("arange(2.5)", 16, "arange needs a size, got the float 2.5"),
])
def test_refused_at_check_time(tmp_path, capsys, expr, col, phrase):
    check_located(tmp_path, capsys, f"""
        model m {{
            input x: f32[B, 4]
            input i: i32[B]
            output y = {expr}
        }}
        """, 4, col, phrase)


def test_zero_sized_dims_never_reach_a_graph():
    """A type rule that would make a dim of size 0 or less is refused where the node is made."""
    g = G.Graph()
    g.span = Span("m.dl", 3, 5)
    with pytest.raises(DlcError) as e:
        g.add1("iota", shape=(4, -1), axis=0, dtype="i32")
    assert e.value.span == g.span
    assert "iota: dimension sizes must be positive, got i32[4, -1]" in e.value.message


# ---- 9. - 11. train settings --------------------------------------------------------------------------------------
TRAIN = """
    model m {
        input x: f32[B, 4]
        output y = x
    }
    train m {
        SETTING
    }
    """


@pytest.mark.parametrize("setting, col, phrase", [
    ("__class__ = 1", 5, "unknown train setting '__class__'"),
    ("__dict__ = 1", 5, "unknown train setting '__dict__'"),
    ("spans = 1", 5, "unknown train setting 'spans'"),
    ("epochs = 0 + -1", 5, "epochs must be an integer >= 0, got -1"),     # not "division by zero"
    ("epochs = 2 - 3", 5, "epochs must be an integer >= 0, got -1"),
    ("l2 = 10.0 ^ 400", 10, "10 ^ 400 overflows"),
    ("l2 = 1 / 0", 10, "division by zero"),
    ('schedule = "bogus"', 5, "unknown schedule 'bogus'"),
    ("schedule = 0", 5, "schedule must be a call such as cosine(warmup = 1), got 0"),
    ("schedule = false", 5, "schedule must be a call such as cosine(warmup = 1), got false"),
])
def test_bad_train_settings(tmp_path, capsys, setting, col, phrase):
    check_located(tmp_path, capsys, TRAIN.replace("SETTING", setting), 6, col, phrase)


def test_settings_arithmetic_evaluates_the_operator_written(tmp_path, capsys):
    path = tmp_path / "m.dl"
    path.write_text(prog(TRAIN.replace("SETTING", "l2 = 1e10 * 40.0\n        epochs = 2 ^ 3 - 7")))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


def test_unknown_schedule_is_located():
    span = Span("m.dl", 7, 5)
    with pytest.raises(DlcError) as e:
        make_schedule("cosine(warmup = 1)", 1.0, 1, 1, span)
    assert e.value.span == span
    assert e.value.message.startswith("unknown schedule 'cosine(warmup = 1)'; did you mean 'cosine'? (known: constant, ")


# ---- 12. limits: repeat steps, graph size, static values ------------------------------------------------------
@pytest.mark.parametrize("body, line, col, phrase", [
    ("repeat i in 0..1000000000000 { x = x + 1 }", 3, 5, "too many repeat steps: this repeat runs 1000000000000"),
    ("repeat i in 0..10000000 { j = i }", 3, 5, "too many repeat steps: this repeat runs 10000000"),
    ("repeat i in 0..1000 { repeat j in 0..1000 { k = j } }", 3, 27, "too many repeat steps"),
    ("k = 9 ^ 9 ^ 9", 3, 9, "9 ^ 387420489 overflows"),                # never computed
])
def test_runaway_programs_stop(tmp_path, body, line, col, phrase):
    path = tmp_path / "m.dl"
    path.write_text(f"model m {{\n    input x: f32[B, 4]\n    {body}\n    output h = x\n}}\n")
    started = time.perf_counter()
    r = run_dlc(path, timeout=60)
    assert time.perf_counter() - started < 30
    assert_located(r.returncode, r.stdout, r.stderr, path, line, col, phrase)
    assert r.returncode == 1, r.stderr


def test_graph_node_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(G, "MAX_NODES", 500)
    check_located(tmp_path, capsys, """
        model m {
            input x: f32[B, 4]
            h = x
            repeat i in 0..100 {
                h = dense(h, 4, relu)
            }
            output h
        }
        """, 5, 13, "the model needs more than 500 graph nodes")


@pytest.mark.parametrize("expr, col, phrase", [
    ("(x,) * 1000000000000", 9, "a tuple of 1000000000000 items is too long (at most 1,000,000)"),
    ("range(1000000000000)", 9, "a tuple of 1000000000000 items is too long"),
    ("(1, 2) + range(999999)", 9, "a tuple of 1000001 items is too long"),
])
def test_huge_static_values_are_refused(tmp_path, capsys, expr, col, phrase):
    check_expression(tmp_path, capsys, expr, col, phrase)


def test_doubling_a_string_stops(tmp_path, capsys):
    check_located(tmp_path, capsys, """
        model m {
            input x: f32[B, 4]
            s = "ab"
            repeat i in 0..100 { s = s + s }
            output y = x
        }
        """, 4, 30, "a string of 1048576 items is too long")


# ---- 12. cost linear in the number of layers ------------------------------------------------------------------------
def mlp(layers: int) -> str:
    return (f"model mlp {{\n    input x: f32[B, 8]\n    target y: i32[B]\n    h = x\n"
            f"    repeat i in 0..{layers} {{ h = dense(h, 8, relu) }}\n"
            f"    loss sparse_cross_entropy(h, y)\n}}\n")


def _optimize_seconds(layers: int) -> float:
    step = autodiff.train_step(load_text(mlp(layers)).build().graph)
    best = float("inf")
    for _ in range(2):
        started = time.process_time()
        optimize(step)
        best = min(best, time.process_time() - started)
    return best


def test_graph_passes_are_linear_in_depth():
    # 4x the layers: linear is 4x; a scan of every output (two per layer) at every rewrite
    # and every use count made it 20x
    small, large = _optimize_seconds(300), _optimize_seconds(1200)
    assert large / small < 9, (small, large)


def test_gradient_graph_is_linear_in_depth():
    """The train step of a 3,000-layer MLP (33,000 forward nodes): with one graph walk per
    parameter (quadratic) this took minutes."""
    model = load_text(mlp(3000)).build()
    started = time.perf_counter()
    step = autodiff.train_step(model.graph)
    assert time.perf_counter() - started < 30
    assert len([k for k in step.outputs if k.startswith("grad:")]) == 6000


def test_graph_outputs_count_what_they_read():
    """Graph.uses and Graph.redirect look outputs up by the values they read (a scan of
    every output at each rewrite made the graph passes quadratic in the depth)."""
    g = G.Graph()
    a, b = (g.add1("constant", value=np.asarray(v), dtype="f32") for v in (1.0, 2.0))
    c = g.add1("add", [a, b])
    g.outputs = {"p": a, "q": a}
    assert (g.uses(a), g.uses(b)) == (3, 1)                    # two outputs and the add
    g.outputs["q"] = b
    del g.outputs["p"]
    g.outputs.update(r=c, s=c)
    assert (g.uses(a), g.uses(b), g.uses(c)) == (1, 2, 2)
    g.redirect(c.node, [b])
    assert list(g.outputs) == ["q", "r", "s"]                  # in their order, as a dict keeps them
    assert [t.key() for t in g.outputs.values()] == [b.key()] * 3
    assert (g.uses(b), g.uses(c)) == (4, 0)
    assert g.outputs.pop("q").key() == b.key() and g.uses(b) == 3
    g.outputs.setdefault("t", a)
    g.outputs["r"] = a
    assert list(g.outputs) == ["r", "s", "t"] and (g.uses(a), g.uses(b)) == (3, 2)


@pytest.mark.parametrize("perm", ["1.0, 0", '"a", 0', "true, 0", "0, 0", "2, 0"])
def test_transpose_takes_a_permutation_of_integer_axes(tmp_path, capsys, perm):
    """Found by the fuzzer: transpose(x, 1.0, 0) passed the permutation check (1.0 == 1)."""
    from dlc.runtime.cli import main
    path = tmp_path / "t.dl"
    path.write_text(f"model m {{\n input x: f32[B, 2]\n v = transpose(x, {perm})\n loss mean(x)\n}}\n")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "t.dl:3:" in err and "is not a permutation" in err
