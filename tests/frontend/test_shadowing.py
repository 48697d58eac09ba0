"""Names that hide a builtin (docs/language.md, Imports): the standard library never does,
and a user's def or const that does gets a warning at its name, which `dlc check` prints
on standard error (the language server's is in tests/editors/test_lsp.py)."""

from __future__ import annotations

from importlib import resources

from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.builtins import BUILTINS
from dlc.compiler.frontend.loader import hides_builtin, load, load_text
from dlc.runtime.cli import main

SHADOWS = """\
def exp(x) = x + 1.0

model m {
    input x: f32[B, 4]
    def   abs(v) = v
    output y = exp(abs(x))
}
"""


def test_no_standard_library_def_or_const_has_a_builtins_name():
    stdlib = resources.files("dlc.compiler").joinpath("stdlib")
    found = []
    for f in sorted(stdlib.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".dl"):
            module = syntax.parse(f.read_text(), f.name)
            found += [f"{w.span}: {w.message}" for w in hides_builtin(module)]
            # the walk reaches every def: those nested in defs too
            assert {d.name for d in syntax.walk(module) if isinstance(d, syntax.Def)} >= {
                item.name for item in module.items if isinstance(item, syntax.Def)
            }
    assert not found, "\n".join(found)


def test_a_def_or_const_with_a_builtins_name_is_warned_at_its_name():
    program = load_text(SHADOWS + "const max = 3\n", "shadows.dl")
    got = [(w.span.line, w.span.col, w.span.end_col, w.message) for w in program.warnings]
    assert got == [
        (1, 5, 8, "def 'exp' hides the builtin 'exp' wherever it is visible; rename it to keep both"),
        (5, 11, 14, "def 'abs' hides the builtin 'abs' wherever it is visible; rename it to keep both"),
        (8, 7, 10, "const 'max' hides the builtin 'max' wherever it is visible; rename it to keep both"),
    ]
    assert {"exp", "abs", "max"} <= set(BUILTINS)


PLAIN = "model m {\n    input x: f32[B, 4]\n    output y = exp(x)\n}\n"


def test_the_def_is_what_the_program_calls():
    assert load_text(PLAIN, "plain.dl").build(training=False).graph.nodes_with("exp")
    assert not load_text(SHADOWS, "shadows.dl").build(training=False).graph.nodes_with("exp")


def test_an_imported_files_def_is_warned_in_that_file(tmp_path):
    (tmp_path / "lib.dl").write_text("def log(x) = x\n")
    (tmp_path / "m.dl").write_text('import "lib.dl"\nmodel m {\n    input x: f32[B]\n    output y = log(x)\n}\n')
    (w,) = load(str(tmp_path / "m.dl")).warnings
    assert (w.span.file, w.span.line, w.span.col) == (str(tmp_path / "lib.dl"), 1, 5)


def test_dlc_check_prints_the_warning_and_succeeds(tmp_path, capsys):
    path = tmp_path / "shadows.dl"
    path.write_text(SHADOWS)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: ok" in out
    lines = err.splitlines()
    assert (
        lines[0] == f"{path}:1:5: warning: def 'exp' hides the builtin 'exp' wherever it is visible; "
        "rename it to keep both"
    )
    assert lines[1:3] == ["    def exp(x) = x + 1.0", "        ^^^"]
    assert f"{path}:5:11: warning: def 'abs' hides" in err


def test_a_program_without_shadowing_has_no_warning():
    assert load_text(PLAIN, "plain.dl").warnings == []
