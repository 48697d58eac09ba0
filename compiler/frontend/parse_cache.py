"""What parsing makes, cached on disk so that a new process does not make it again: the
grammar's LALR tables and the standard library's syntax trees.

Each entry is a JSON file in dlc's cache directory named by the SHA-256 of everything it is
made from (the grammar's text and Lark's version; for the library's trees, its files, the
code of the AST and its transformer, the grammar and Lark's version too), so a change makes a
new entry and never reads a stale one. JSON holds only data: an
entry cannot run code, and one that does not load (truncated, edited, of an older layout)
is ignored, rebuilt and written again. A cache directory that cannot be written only costs
the time of building.

An install ships the entries of its own grammar and standard library: building the wheel
(setup.py's build_py) makes them once and puts them in the package's grammar folder, where
`cached` looks first, so that a fresh install's first `dlc check` reads its tables instead of
building them (about 210 ms on a Zen 5). They are found by the same key, so an edited grammar
or library, or another Lark, never reads them: it builds into the user's cache as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

FORMAT = 1  # of the entries' layout; part of every key


def cache_dir() -> Path:
    """dlc's cache directory: $DLC_CACHE_DIR, else ~/.cache/dlc (compiled code lives there too)."""
    return Path(os.environ.get("DLC_CACHE_DIR") or Path.home() / ".cache" / "dlc")


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256(str(FORMAT).encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:32]


def shipped_dir() -> Path:
    """The entries an install shipped (made when its wheel was built; none in a source tree)."""
    return Path(str(resources.files("dlc.grammar")))


def cached(name: str, build, encode, decode):
    """The value of entry `name`: decoded from the shipped entry's or the user's JSON text
    (`decode(text)`), else built, encoded and written to the user's cache. A directory or
    file of the user's cache that is not this user's alone is neither read nor written: its
    tables could be anyone's (the compile cache refuses such a directory with a message). A
    shipped entry is read wherever it is: who can write the installed package can change its
    code as well."""
    shipped = shipped_dir() / name
    if shipped.is_file():
        try:
            return decode(shipped.read_text(encoding="utf-8"))
        except Exception:  # a bad one: built as if not shipped
            pass
    folder = cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass
    if not _private(folder):
        return build()
    path = folder / name
    try:
        if _private(path):
            return decode(path.read_text(encoding="utf-8"))
    except Exception:  # a bad one (not JSON, of the wrong shape): rebuilt
        pass
    value = build()
    _write(path, json.dumps(encode(value), separators=(",", ":")))
    return value


def _private(path: Path) -> bool:
    try:
        return private(path.stat())
    except OSError:
        return False


def private(st: os.stat_result) -> bool:
    """A file or folder this user owns and nobody else can write to: the only kind dlc's
    caches read (anyone else could have written anything there)."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _write(path: Path, text: str):
    """Write atomically (a reader sees the old file or the new, never half of one)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


# ---- the grammar's tables -------------------------------------------------------------------------
def grammar_text() -> str:
    """grammar/dl.lark, the language's grammar."""
    return resources.files("dlc.grammar").joinpath("dl.lark").read_text()


def lark_parser(grammar: str, **options):
    """Lark(grammar, parser="lalr", **options), its tables read from the cache when built before."""
    import lark
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    def build():
        return lark.Lark(grammar, parser="lalr", **options)

    def encode(parser):
        return parser.memo_serialize([TerminalDef, Rule])

    def decode(text):
        data, memo = json.loads(text, object_pairs_hook=_int_keys)
        return lark.Lark._load_from_dict(data, memo)

    key = digest(grammar, lark.__version__, repr(sorted(options.items())))
    return cached(f"grammar-{key}.json", build, encode, decode)


def _int_keys(pairs: list) -> dict:
    """An object of the JSON text as it is parsed: JSON's keys are strings, and Lark's tables
    number their states and memo with ints."""
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


# ---- syntax trees ----------------------------------------------------------------------------------
def parsed_modules(files: list[tuple[str, str]], syntax) -> list:
    """`syntax.parse(text, name)` of each (name, text), read from the cache when parsed
    before. `syntax` is the AST's module (passed in: it imports this one)."""
    classes = {
        name: cls for name, cls in vars(syntax).items() if isinstance(cls, type) and issubclass(cls, syntax.SyntaxNode)
    }

    def build():
        return [syntax.parse(text, name) for name, text in files]

    def decode(text):
        modules = json.loads(text, object_hook=lambda value: _decode(value, classes))
        if (
            not isinstance(modules, list)
            or len(modules) != len(files)
            or not all(isinstance(m, syntax.Module) for m in modules)
        ):
            raise ValueError("not the syntax trees of these files")
        return modules

    import lark

    code = Path(syntax.__file__).read_bytes()  # the AST and the transformer that builds it
    key = digest(code, grammar_text(), lark.__version__, *(part for name, text in files for part in (name, text)))
    return cached(f"syntax-{key}.json", build, lambda modules: [_encode(m) for m in modules], decode)


def _encode(value):
    from dlc.compiler.errors import Span

    if isinstance(value, Span):
        return {"@span": [value.file, value.line, value.col, value.end_line, value.end_col]}
    if dataclasses.is_dataclass(value):
        return {
            "@node": type(value).__name__,
            **{f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot cache {type(value).__name__} in a syntax tree")


def _decode(value: dict, classes: dict):
    """An object of the JSON text as it is parsed (its members already decoded): a Span or
    a node of the AST."""
    from dlc.compiler.errors import Span

    if "@span" in value:
        return Span(*value["@span"])
    return classes[value.pop("@node")](**value)  # only the AST's classes: a KeyError otherwise
