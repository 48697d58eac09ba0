"""Pretrained word vectors: files in GloVe or word2vec text format, and the embedding table
and token ids they give.

Both formats have one line per word: the word, then its values, separated by spaces.
word2vec's (also fastText's .vec) starts with a header line "COUNT DIM"; GloVe's has none.
A first line of exactly two whole numbers is read as that header, and must then agree
with the lines after it. Blank lines are skipped; the file may be gzipped.

The ids a model sees follow Keras (TextVectorization and its pretrained-embedding
recipe): 0 is `<pad>`, 1 is `<unk>` (a word not in the file), and the file's i-th word
(from 0) is i + 2. So an embedding started from a file of N words of D values is
[N + 2, D]; its rows 0 and 1 start at zero (`table`). The `sentences` data source
(runtime/data/text.py) encodes text with these ids.

A model asks for a file's table with the `word_vectors(path, shape)` builtin (the
`pretrained(path)` initializer of the standard library): an input of the init graph
named `word_vectors:PATH`, which `init_feeds` reads when the parameters are initialized.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from dlc.compiler.frontend.builtins import WORD_VECTORS_INPUT
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.ir.graph import Graph
from dlc.runtime.data.formats import read_utf8

PAD, UNK = 0, 1  # the reserved ids; the file's words follow
RESERVED = 2

_ROWS_PER_BLOCK = 8192  # lines converted to floats at once: bounds the memory of their strings


@dataclass(frozen=True, eq=False)
class WordVectors:
    path: str
    words: tuple  # in file order: word i has id i + RESERVED
    vectors: np.ndarray  # float32 [len(words), dim], read-only (shared by every reader of the file)

    @functools.cached_property
    def ids(self) -> dict:
        """word -> id."""
        return {w: i + RESERVED for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


_PARSED: dict = {}  # (file name, digest of its text) -> WordVectors, the latest few files read
_PARSED_KEPT = 4


def read(path: pathlib.Path) -> WordVectors:
    """The word vectors of a file (UTF-8 text, optionally gzipped). A text is parsed once (by
    its digest): the data sources and the initializer of a run share the result."""
    if not path.is_file():
        raise DlcError(f"word vector file not found: {path}")
    text = read_utf8("word vectors", path)
    key = (str(path), hashlib.blake2b(text.encode("utf-8", "surrogatepass")).digest())
    if key not in _PARSED:
        _PARSED[key] = parse(text, str(path))
        while len(_PARSED) > _PARSED_KEPT:
            del _PARSED[next(iter(_PARSED))]
    return _PARSED[key]


def parse(text: str, name: str) -> WordVectors:
    """Word vectors from the text of a file called `name`. Every problem is an error at the
    file's line (and column): a header that disagrees with the lines, a line with another
    number of values, a value that is not a finite float32 number, a word given twice, no
    vectors at all."""
    rows = [(i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not rows:
        raise DlcError(
            "no word vectors: the file is empty (expected one line per word: the word, then its values)",
            Span(name, 1, 1),
        )
    top = rows[0][0]
    header = _header(rows[0][1])
    if header:
        rows = rows[1:]
        if not rows:
            raise DlcError(
                f"no word vectors: a word2vec header ({header[0]} words of {header[1]} values) and nothing after it",
                Span(name, top, 1),
            )
    dim = header[1] if header else len(rows[0][1].split()) - 1
    if dim < 1:
        raise DlcError("a word without values (expected the word, then its values)", Span(name, rows[0][0], 1))
    first = {}
    blocks = []
    for start in range(0, len(rows), _ROWS_PER_BLOCK):
        block = rows[start : start + _ROWS_PER_BLOCK]
        fields = []
        for lineno, line in block:
            parts = line.split()
            if len(parts) != dim + 1:
                why = f"the header (line {top}) says {dim}" if header else f"line {top} has {dim}"
                raise DlcError(
                    f"{len(parts) - 1} values after the word, but {why} (a word vector file has one word "
                    f"and {dim} values per line)",
                    Span(name, lineno, 1),
                )
            word = parts[0]
            if word in first:
                raise DlcError(
                    f"the word {word!r} is given twice, on lines {first[word]} and {lineno}", Span(name, lineno, 1)
                )
            first[word] = lineno
            fields.append(parts[1:])
        blocks.append(_values(block, fields, name))
    if header and header[0] != len(first):
        raise DlcError(f"the header says {header[0]} words, but the file has {len(first)}", Span(name, top, 1))
    return WordVectors(name, tuple(first), _read_only(np.concatenate(blocks)))


def _header(line: str) -> tuple | None:
    """(count, dim) of a word2vec header line "COUNT DIM", else None."""
    parts = line.split()
    if len(parts) == 2 and all(re.fullmatch("[0-9]+", p) for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _values(block: list, fields: list, name: str) -> np.ndarray:
    """The float32 values of a block of lines; a value that is not a number, or not finite in
    float32 (nan, inf, 1e39), is an error at its line and column."""
    try:
        with np.errstate(over="ignore"):
            values = np.array(fields, dtype=np.float32)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    for (lineno, line), row in zip(block, fields):
        for k, text in enumerate(row):
            if not _finite32(text):
                starts = [m.start() + 1 for m in re.finditer(r"\S+", line)]
                raise DlcError(
                    f"value {k + 1} of the word {line.split()[0]!r}, {text[:30]!r}, is not a finite float32 number",
                    Span(name, lineno, starts[k + 1]),
                )
    raise DlcError(f"{name} holds a value that is not a number")  # numpy refused what Python reads


def _finite32(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and abs(v) <= float(np.finfo(np.float32).max)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# ---- the embedding table --------------------------------------------------------------------------
def table(wv: WordVectors, shape: tuple, span: Span | None = None) -> np.ndarray:
    """The initial value of an embedding [N + 2, D] started from a file of N words of D values:
    rows 0 (<pad>) and 1 (<unk>) zero, row i + 2 the file's i-th vector. Another shape is an
    error at `span` (the parameter's initializer), saying what the file needs."""
    need = (len(wv.words) + RESERVED, wv.dim)
    if tuple(shape) != need:
        raise DlcError.at_user_line(
            f"{wv.path} holds {len(wv.words)} words of {wv.dim} values, so the embedding it starts is "
            f"[{need[0]}, {need[1]}] (<pad>, <unk> and the words), but the parameter is [{', '.join(map(str, shape))}]",
            span,
        )
    out = np.zeros(need, np.float32)
    out[RESERVED:] = wv.vectors
    return out


def init_feeds(init: Graph, base: pathlib.Path) -> dict:
    """The tables the init graph asks for (its `word_vectors:PATH` inputs), read from files
    relative to `base` (the model file's folder, as for data paths)."""
    feeds = {}
    for n in init.nodes_with("input"):
        name = init.attrs(n)["name"]
        if not name.startswith(WORD_VECTORS_INPUT):
            continue
        span = init.nx.nodes[n]["span"]
        path = pathlib.Path(os.path.expanduser(name[len(WORD_VECTORS_INPUT) :]))
        try:
            wv = read(path if path.is_absolute() else base / path)
        except DlcError as e:
            if e.span is None:
                raise DlcError.at_user_line(e.message, span) from None
            e.notes.append(("read for this parameter", span.caller or span))
            raise
        feeds[name] = table(wv, init.types(n)[0].shape, span)
    return feeds
