"""The front end's caches on disk (compiler/frontend/parse_cache.py): the grammar's tables
and the standard library's syntax trees are written once, read by later processes, give the
same parser and trees, and a bad entry is ignored and rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import dlc
from dlc.compiler.frontend import parse_cache, syntax as A

ROOT = Path(dlc.__file__).resolve().parent
GRAMMAR = resources.files("dlc.grammar").joinpath("dl.lark").read_text()
OPTIONS = dict(propagate_positions=True, maybe_placeholders=True, start=["start", "expr"])
STDLIB = [
    (f.name, f.read_text())
    for f in sorted(resources.files("dlc.compiler").joinpath("stdlib").iterdir(), key=lambda f: f.name)
    if f.name.endswith(".dl")
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    return tmp_path


def entries(cache: Path, prefix: str) -> list[Path]:
    return sorted(cache.glob(prefix + "-*.json"))


def test_the_cached_grammar_parses_as_the_built_one(cache):
    built = parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    [entry] = entries(cache, "grammar")
    read = parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    assert read is not built and entries(cache, "grammar") == [entry]
    for path in sorted((ROOT / "examples").glob("*.dl")):
        text = path.read_text()
        assert read.parse(text, start="start") == built.parse(text, start="start"), path.name
        assert [(t.type, str(t)) for t in read.lex(text, dont_ignore=True)] == [
            (t.type, str(t)) for t in built.lex(text, dont_ignore=True)
        ]


def test_the_cached_stdlib_trees_equal_the_parsed_ones(cache):
    parsed = parse_cache.parsed_modules(STDLIB, A)
    [entry] = entries(cache, "syntax")
    entry.touch()
    before = entry.stat().st_mtime_ns
    read = parse_cache.parsed_modules(STDLIB, A)
    assert read == parsed and entry.stat().st_mtime_ns == before  # read, not written again
    # spans too (the AST's == leaves them out)
    assert [m.items[-1].span for m in read] == [m.items[-1].span for m in parsed]
    changed = [(STDLIB[0][0], STDLIB[0][1] + "\ndef extra(x) = x\n")] + STDLIB[1:]
    assert parse_cache.parsed_modules(changed, A)[0].items[-1].name == "extra"
    assert len(entries(cache, "syntax")) == 2


def test_the_stdlib_trees_are_made_again_for_another_transformer_or_grammar(cache, monkeypatch, tmp_path):
    """The trees are the transformer's (in syntax.py) of the grammar's parse: an entry made
    before either changed is not read."""
    parse_cache.parsed_modules(STDLIB, A)
    edited = tmp_path / "syntax.py"
    edited.write_text(Path(A.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(A, "__file__", str(edited))
    parse_cache.parsed_modules(STDLIB, A)
    assert len(entries(cache, "syntax")) == 2
    monkeypatch.setattr(parse_cache, "grammar_text", lambda: GRAMMAR + "\n// edited\n")
    parse_cache.parsed_modules(STDLIB, A)
    assert len(entries(cache, "syntax")) == 3


@pytest.mark.parametrize("bad", [b"", b"{\"x\":", b"[[1, 2], {\"3\": 4}]", b"[]", b"\xff\xfe", b"null"])
def test_a_bad_entry_is_ignored_and_rebuilt(cache, bad):
    parsed = parse_cache.parsed_modules(STDLIB, A)
    parser = parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    for entry in entries(cache, "syntax") + entries(cache, "grammar"):
        entry.write_bytes(bad)
    assert parse_cache.parsed_modules(STDLIB, A) == parsed
    text = (ROOT / "examples" / "digits_cnn.dl").read_text()
    assert parse_cache.lark_parser(GRAMMAR, **OPTIONS).parse(text, start="start") == parser.parse(text, start="start")
    assert all(e.read_bytes() != bad for e in entries(cache, "syntax") + entries(cache, "grammar"))


def test_check_with_a_corrupt_cache_and_an_unwritable_one(cache, tmp_path):
    example = str(ROOT / "examples" / "digits_cnn.dl")
    command = [sys.executable, "-m", "dlc.runtime.cli", "check", example]
    env = dict(os.environ, DLC_CACHE_DIR=str(cache))
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert entries(cache, "grammar") and entries(cache, "syntax")
    for entry in cache.glob("*.json"):
        entry.write_text(entry.read_text()[:1000])
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    env["DLC_CACHE_DIR"] = str(blocked / "cache")
    unwritable = subprocess.run(command, env=env, capture_output=True, text=True)
    assert (unwritable.returncode, unwritable.stdout, unwritable.stderr) == (0, first.stdout, "")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_folder_or_entry_others_can_write_is_neither_read_nor_written(cache, mode):
    """Tables anyone could have written are not trusted, as the compile cache trusts no
    such folder: the parser is built as if there were no cache, and nothing is written."""
    cache.chmod(mode)
    parser = parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    assert list(cache.iterdir()) == []
    assert parser.parse("model m { input x: f32[B] output y = x }", start="start")
    cache.chmod(0o700)
    parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    (entry,) = entries(cache, "grammar")
    entry.chmod(0o666)  # good tables, but anyone's: rebuilt and replaced, not read
    assert parse_cache.lark_parser(GRAMMAR, **OPTIONS).parse("model m { input x: f32[B] output y = x }", start="start")
    assert not entry.stat().st_mode & 0o077, "an entry others can write was read rather than replaced"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(parse_cache, "shipped_dir", lambda: folder)
    return folder


def test_a_shipped_entry_is_read_by_its_key_only(cache, shipped):
    """What an install ships (setup.py) is read before the user's cache, without writing
    there; a grammar or library it was not made from builds into the user's cache; a bad
    one is built as if not shipped."""
    parsed, parser = parse_cache.parsed_modules(STDLIB, A), parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    for entry in cache.glob("*.json"):
        entry.rename(shipped / entry.name)
    assert parse_cache.parsed_modules(STDLIB, A) == parsed
    text = (ROOT / "examples" / "digits_cnn.dl").read_text()
    assert parse_cache.lark_parser(GRAMMAR, **OPTIONS).parse(text, start="start") == parser.parse(text, start="start")
    assert list(cache.glob("*.json")) == [], "a shipped entry was built again"
    changed = [(STDLIB[0][0], STDLIB[0][1] + "\ndef extra(x) = x\n")] + STDLIB[1:]
    assert parse_cache.parsed_modules(changed, A)[0].items[-1].name == "extra"
    parse_cache.lark_parser(GRAMMAR + "\n// edited\n", **OPTIONS)
    assert len(entries(cache, "syntax")) == len(entries(cache, "grammar")) == 1
    for entry in shipped.glob("*.json"):
        entry.write_text("[")
    assert parse_cache.parsed_modules(STDLIB, A) == parsed
    parse_cache.lark_parser(GRAMMAR, **OPTIONS)
    assert len(entries(cache, "syntax")) == len(entries(cache, "grammar")) == 2
