"""Highlighting of .dl (editors/): the Pygments lexer (its words are the grammar's, every
example lexes without an error token, `pygmentize -l dl` finds it through the installed
entry point) and, with npm's tools, the TextMate grammar's tests and the VS Code
extension's package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dlc
from dlc.compiler.frontend import syntax as A
from helpers.wheel import built_wheel

pygments = pytest.importorskip("pygments", reason="the Pygments lexer needs the extra dlc[highlight]")
from pygments.token import Comment, Error, Keyword, Name, Number, String  # noqa: E402

from dlc.editors import pygments_lexer as L  # noqa: E402

ROOT = Path(dlc.__file__).resolve().parent
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
VSCODE = ROOT / "editors" / "vscode"


def test_the_lexer_knows_the_grammar_words():
    words = L.DECLARATIONS + L.STATEMENTS + L.OPERATOR_WORDS + L.CONSTANTS + L.DTYPES
    assert len(set(words)) == len(words)
    assert set(words) == set(A.keywords())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_lexes_without_errors(path):
    tokens = list(L.DlLexer().get_tokens(path.read_text()))
    assert not [v for t, v in tokens if t in Error]
    assert "".join(v for _, v in tokens) == path.read_text()


def test_what_each_token_is():
    text = 'model m {\n    input x: f32[B, 4]  # the input\n    h = dense(x, 2GB, act = "relu") ^ 1.5e-3\n}'
    kinds = {v: t for t, v in L.DlLexer().get_tokens(text) if v.strip()}
    assert kinds["model"] in Keyword.Declaration and kinds["m"] in Name.Class
    assert kinds["input"] in Keyword and kinds["f32"] in Keyword.Type
    assert kinds["# the input"] in Comment and kinds['"relu"'] in String
    assert kinds["dense"] in Name.Function and kinds["x"] in Name
    assert kinds["2GB"] in Number and kinds["1.5e-3"] in Number.Float


def test_dlc_core_does_not_import_the_lexer():
    code = (
        "import sys; from dlc.runtime.cli import main; main(['check', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.startswith(('pygments', 'dlc.editors'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "examples" / "xor_mlp.dl")], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith("[]"), out


def test_pygmentize_finds_the_lexer_of_the_installed_package(tmp_path):
    """`pip install .` gives the entry point: the session's wheel (helpers/wheel.py), unpacked
    on the path."""
    site = tmp_path / "site"
    zipfile.ZipFile(built_wheel()).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-m", "pygments", "-l", "dl", "-f", "html", str(EXAMPLES[0])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '<span class="kd">model</span>' in out and '<span class="c1">#' in out
