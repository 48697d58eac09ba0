"""The VS Code extension (editors/vscode/): its TextMate grammar's own tests, the grammar over
every example and stdlib file against dlc's lexer, and `vsce package`. They need node and
the extension's npm devDependencies: `npm ci --prefix editors/vscode`."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import dlc
from dlc.compiler.frontend import syntax as A
from dlc.tools.editor_shot import scopes
from helpers.browser import require_chromium

ROOT = Path(dlc.__file__).resolve().parent
VSCODE = ROOT / "editors" / "vscode"
BIN = VSCODE / "node_modules" / ".bin"
FILES = sorted((ROOT / "examples").glob("*.dl")) + sorted(
    Path(str(resources.files("dlc.compiler").joinpath("stdlib"))).glob("*.dl")
)

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (BIN / "vscode-tmgrammar-test").exists() or not (BIN / "vsce").exists(),
    reason="needs node and the extension's npm packages: npm ci --prefix editors/vscode",
)

# the scope (a prefix) each of the grammar's terminals must get
EXPECTED = {
    "COMMENT": "comment.",
    "STRING": "string.",
    "NUMBER": "constant.numeric",
    "SIZE": "constant.numeric",
    "DTYPE": "support.type",
}
KEYWORD_SCOPES = ("keyword.", "storage.type", "constant.language", "support.type")


def run(*command, **kw):
    return subprocess.run(command, cwd=VSCODE, capture_output=True, text=True, timeout=300, **kw)


def test_the_grammar_tests_pass():
    out = run(str(BIN / "vscode-tmgrammar-test"), "-g", "syntaxes/dl.tmLanguage.json", "test/*.dl")
    assert out.returncode == 0 and "failed" not in out.stdout, out.stdout + out.stderr


def test_a_wrong_expectation_fails(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text((VSCODE / "test" / "statements.dl").read_text().replace("support.type.dtype.dl", "keyword.x"))
    out = run(str(BIN / "vscode-tmgrammar-test"), "-g", "syntaxes/dl.tmLanguage.json", str(bad))
    assert out.returncode != 0 and "missing required scopes: keyword.x" in out.stdout


def test_every_example_and_stdlib_file_is_colored_as_dlc_lexes_it(tmp_path):
    for f in FILES:
        shutil.copy(f, tmp_path / f.name)
    out = run(
        str(BIN / "vscode-tmgrammar-snap"),
        "-g",
        "syntaxes/dl.tmLanguage.json",
        "--updateSnapshot",
        str(tmp_path / "*.dl"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    words = A.keywords()
    for f in FILES:
        at = scopes((tmp_path / (f.name + ".snap")).read_text())
        assert not [k for k, s in at.items() if any(x.startswith("invalid") for x in s)], f.name
        for tok in A._parser().lex(f.read_text(), dont_ignore=True):
            got = " ".join(at.get((tok.line, tok.column), []))
            if tok.type in EXPECTED:
                assert EXPECTED[tok.type] in got, (f.name, tok.line, str(tok), got)
            elif str(tok) in words:
                assert any(s in got for s in KEYWORD_SCOPES), (f.name, tok.line, str(tok), got)
            elif tok.type == "NAME":
                assert "variable." in got or "entity.name" in got, (f.name, tok.line, str(tok), got)


def test_the_extensions_settings_reach_the_server(tmp_path):
    """test/settings.test.js: extension.js's client options with vscode-languageclient's
    configuration features over a real `dlc lsp` (docs/editors.md, "VS Code")."""
    pytest.importorskip("pygls", reason="the server needs the lsp extra: pip install \"dlc[lsp]\"")
    server = [sys.executable, "-c", "from dlc.runtime.cli import main; main(['lsp'])"]
    out = run("node", "--test", "test/", env=os.environ | {"DLC_LSP_COMMAND": json.dumps(server)})
    assert out.returncode == 0 and "# pass 1" in out.stdout, out.stdout + out.stderr


def test_vsce_packages_the_extension(tmp_path):
    vsix = tmp_path / "dlc-dl.vsix"
    out = run(str(BIN / "vsce"), "package", "--skip-license", "--allow-missing-repository", "--out", str(vsix))
    assert out.returncode == 0, out.stdout + out.stderr
    names = zipfile.ZipFile(vsix).namelist()
    for part in ("extension.js", "language-configuration.json", "syntaxes/dl.tmLanguage.json", "package.json"):
        assert f"extension/{part}" in names
    assert not [n for n in names if n.startswith("extension/test/")]
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)
    manifest = json.loads(zipfile.ZipFile(vsix).read("extension/package.json"))
    assert manifest["contributes"]["grammars"][0]["scopeName"] == "source.dl"
    assert manifest["contributes"]["configuration"]["properties"]["dlc.inlayHints"]["default"] is True


def test_the_editor_picture_is_drawn_from_the_grammar_and_the_server(tmp_path):
    require_chromium("the editor picture")
    out = tmp_path / "editor.png"
    main = subprocess.run(
        [sys.executable, "-m", "dlc.tools.editor_shot", "--out", str(out), "--size", "900", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert main.returncode == 0, main.stderr
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (900, 500)


def test_the_editor_picture_without_chromium_skips_naming_it(monkeypatch, tmp_path):
    import helpers.browser

    monkeypatch.setattr(helpers.browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.skip.Exception, match=r"needs Chromium at .*\(apt-get install chromium\)"):
        test_the_editor_picture_is_drawn_from_the_grammar_and_the_server(tmp_path)
