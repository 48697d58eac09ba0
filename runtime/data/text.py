"""Text: characters and words as ids, and the sources of text data.

    text(path, seq = 100, vocab = none, lines = false, windows = "fixed", tokenizer = none)
                                                     character ids: "x" windows, "y" next characters (lines:
                                                     one line each, padded, and "lengths"; windows = "random":
                                                     a window at every offset, drawn at random by the trainer;
                                                     a tokenizer: windows of its token ids)
    sentences(path, vocab, length = none, lower = true)   word ids of labelled sentences, "vocab" a word
                                                     vector file, and "lengths"
    skipgram(path, words = 1000, window = 2, negatives = 5)   word2vec's pairs and negative samples

A character vocabulary is a string of distinct characters: a character's id is its place in
it (`encode`, `decode`). Word ids are those of a word vector file (runtime/data/vectors.py).
"""

from __future__ import annotations

import re

import numpy as np

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.data import tokenizer, vectors
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.files import path_arg
from dlc.runtime.data.formats import label_column, read_utf8
from dlc.runtime.data.source import source
from dlc.compiler.frontend.settings import REQUIRED, Args, choice, flag, integer, number, show


# ---- characters -----------------------------------------------------------------------------------
def _check_vocab(vocab, src: str = "vocab", span: Span | None = None) -> str:
    if not isinstance(vocab, str) or not vocab:
        raise DlcError(f"{src}: the vocabulary must be a non-empty string of characters, got {show(vocab)}", span)
    if len(set(vocab)) != len(vocab):
        dup = next(c for i, c in enumerate(vocab) if c in vocab[:i])
        raise DlcError(f"{src}: the vocabulary repeats the character {dup!r}", span)
    return vocab


def encode(text: str, vocab: str) -> np.ndarray:
    """The int32 ids of the characters of `text` in `vocab`."""
    vocab = _check_vocab(vocab, "encode")
    if not isinstance(text, str):
        raise DlcError(f"encode: expected a string, got {type(text).__name__}")
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    vcodes = np.frombuffer(vocab.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    order = np.argsort(vcodes, kind="stable")
    pos = np.searchsorted(vcodes[order], codes)
    pos_c = np.minimum(pos, len(vocab) - 1)
    ok = vcodes[order][pos_c] == codes
    if not np.all(ok):
        at = int(np.argmin(ok))
        line = text.count("\n", 0, at) + 1
        missing = sorted(set(text) - set(vocab))
        shown = "".join(missing[:10]) + ("..." if len(missing) > 10 else "")
        raise DlcError(
            f"encode: the character {text[at]!r} (line {line}) is not in the vocabulary"
            f" ({len(missing)} unknown: {shown!r})"
        )
    return order[pos_c].astype(np.int32)


def decode(ids, vocab: str) -> str:
    """The text of character ids (any shape; read in order)."""
    vocab = _check_vocab(vocab, "decode")
    a = np.asarray(ids)
    if a.size == 0:
        return ""
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise DlcError(f"decode: character ids must be integers, got {a.dtype}")
    a = a.ravel()
    bad = (a < 0) | (a >= len(vocab))
    if np.any(bad):
        raise DlcError(f"decode: id {int(a[np.argmax(bad)])} is outside the vocabulary of {len(vocab)} characters")
    return "".join(np.array(list(vocab), dtype=object)[a])


@source(path=REQUIRED, seq=100, vocab=None, lines=False, windows="fixed", tokenizer=None)
def text(base_dir, args: Args) -> Dataset:
    """Character windows of a text: "x" [N, seq] ids, "y" the same windows one character later;
    with a `tokenizer` (runtime/data/tokenizer.py), windows of its tokens instead.
    With `lines`, one example per non-empty line instead (`line_examples`). `windows`:
    "fixed", the windows side by side; "random", the window at every offset (views of the
    text, no copy), of which the trainer draws a batch at random every step (meta "windows")."""
    p = path_arg(args, "path", base_dir)
    seq = args.check("seq", integer, low=1)
    lines = args.check("lines", flag)
    windows = args.check("windows", choice, options=("fixed", "random"))
    if windows == "random" and lines:
        raise DlcError(
            "text: windows = \"random\" draws windows across lines; leave out lines = true", args.span("windows")
        )
    vocab = args["vocab"]
    if vocab is not None:
        vocab = _check_vocab(vocab, "text", args.span("vocab"))
    s = read_utf8("text", p)
    if not s:
        raise DlcError(f"text: {p} is empty")
    if args["tokenizer"] is not None:
        if vocab is not None or lines:
            other = "vocab" if vocab is not None else "lines"
            raise DlcError(
                f"text: '{other}' is of character ids; with a tokenizer, leave it out (texts(...) reads a text a line)",
                args.span(other),
            )
        tok = tokenizer.load(args["tokenizer"], base_dir, args.span("tokenizer"))
        meta = {"tokenizer": tok.to_meta(), "vocab_size": tok.vocab_size, "token_columns": ["x", "y"]}
        return _windows(tok.corpus(s), seq, windows, meta, p, "tokens")
    if vocab is None:
        vocab = "".join(sorted(set(s)))
    try:
        ids = encode(s, vocab)
    except DlcError as e:
        raise DlcError(f"text: {p}: {e.message[len('encode: ') :]}") from None
    if lines:
        return line_examples(s, ids, seq, vocab)
    return _windows(ids, seq, windows, {"vocab": vocab, "vocab_size": len(vocab)}, p, "characters")


def _windows(ids: np.ndarray, seq: int, windows: str, meta: dict, p, unit: str) -> Dataset:
    """The windows of `seq` ids of a text (`unit`: what an id is) and the next ids: side by side,
    or with windows = "random" the one at every offset."""
    n = (len(ids) - 1) // seq
    if n < 1:
        raise DlcError(
            f"text: seq = {seq} is too long for {p}: it has {len(ids)} {unit} and one window needs seq + 1 = {seq + 1}"
        )
    if windows == "random":
        view = np.lib.stride_tricks.sliding_window_view
        return Dataset({"x": view(ids[:-1], seq), "y": view(ids[1:], seq)}, meta | {"windows": seq})
    x = ids[: n * seq].reshape(n, seq)
    y = ids[1 : n * seq + 1].reshape(n, seq)
    return Dataset({"x": x, "y": y}, meta)


def line_examples(s: str, ids: np.ndarray, seq: int, vocab: str) -> Dataset:
    """Each non-empty line of `s` (character ids `ids`) as one example of variable length: "x"
    [N, seq] the line's first `seq` characters, then 0; "y" the characters after them (the
    last one the line's end, "\n"), then -1 (`ignore = -1` in the loss); "lengths" [N] the
    characters of each."""
    spans, at = [], 0  # (first character, its "\n") of each line that ends with one
    for line in s.split("\n")[:-1]:
        if line:
            spans.append((at, at + len(line)))
        at += len(line) + 1
    if not spans:
        raise DlcError("text: lines = true needs lines that end with a line break; the text has none")
    x = np.zeros((len(spans), seq), np.int32)
    y = np.full((len(spans), seq), -1, np.int32)
    lengths = np.array([min(b - a, seq) for a, b in spans], np.int32)
    for row, ((a, _), n) in enumerate(zip(spans, lengths)):
        x[row, :n] = ids[a : a + n]
        y[row, :n] = ids[a + 1 : a + n + 1]
    return Dataset({"x": x, "y": y, "lengths": lengths}, {"vocab": vocab, "vocab_size": len(vocab)})


# ---- words ------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")  # words (don't, well-known) and single marks


def words(text: str) -> list:
    """The tokens of a sentence: runs of letters and digits (with inner apostrophes and
    hyphens) and every other mark on its own."""
    return _TOKEN.findall(text)


@source(path=REQUIRED, vocab=REQUIRED, length=None, lower=True)
def sentences(base_dir, args: Args) -> Dataset:
    """Word-level text classification: one `LABEL<TAB>SENTENCE` per line (blank lines skipped).
    "x" [N, length] the ids of the sentence's words in the word vector file `vocab`
    (runtime/data/vectors.py: 0 <pad> after the last word, 1 <unk> for a word not in the file, the
    file's i-th word i + 2), lowercased first with `lower`; `length` (default: the longest
    sentence) cuts longer ones. "y" the labels: integers as written, or names numbered in
    sorted order (meta["labels"]). "lengths" the words of each sentence (at most `length`), last
    so that a model of x and y binds as before. meta["words"] is the file's words,
    meta["unknown"] how many words of the sentences are not among them."""
    p = path_arg(args, "path", base_dir)
    q = path_arg(args, "vocab", base_dir)
    length = args.check("length", integer, low=1) if args["length"] is not None else None
    lower = args.check("lower", flag)
    try:
        ids = vectors.read(q).ids
    except DlcError as e:
        e.notes.append(("read as the vocabulary of sentences(...) here", args.span("vocab")))
        raise
    labels, rows = [], []
    for lineno, line in enumerate(read_utf8("sentences", p).split("\n"), 1):
        if not line.strip():
            continue
        label, tab, sentence = line.partition("\t")
        if not tab:
            raise DlcError("sentences: expected a label, a tab and a sentence", Span(str(p), lineno, 1))
        tokens = words(sentence.lower() if lower else sentence)
        if not tokens:
            raise DlcError("sentences: the sentence has no words", Span(str(p), lineno, 1))
        labels.append(label.strip())
        rows.append([ids.get(w, vectors.UNK) for w in tokens])
    if not rows:
        raise DlcError(f"sentences: {p} holds no sentences")
    width = length or max(map(len, rows))
    x = np.full((len(rows), width), vectors.PAD, np.int32)
    for i, row in enumerate(rows):
        x[i, : min(len(row), width)] = row[:width]
    meta = {"words": len(ids), "unknown": int(sum(w == vectors.UNK for row in rows for w in row))}
    if all(re.fullmatch(r"\d+", label) for label in labels):
        y = np.array([int(label) for label in labels])
    else:
        meta["labels"] = sorted(set(labels))
        y = np.searchsorted(meta["labels"], labels)
    meta["classes"] = int(y.max()) + 1
    lengths = np.array([min(len(row), width) for row in rows], np.int32)
    return Dataset({"x": x, "y": label_column(y), "lengths": lengths}, meta)


# ---- word2vec -----------------------------------------------------------------------------------------
@source(path=REQUIRED, words=1000, window=2, negatives=5, subsample=1e-3, seed=0)
def skipgram(base_dir, args: Args) -> Dataset:
    """Skip-gram pairs with negative samples (word2vec, Mikolov et al., 2013) from a text:
    its lowercased words (letters only) among the `words` most frequent (the rest are
    dropped, as word2vec drops rare words), each frequent word kept with word2vec's
    probability sqrt(subsample / frequency) (0 keeps every word), then every pair of a word
    and a word at most `window` places from it. "center" [N] and "context" [N] are their ids
    (0 the most frequent word), "negatives" [N, negatives] ids drawn from the unigram
    distribution to the power 3/4. The draws use `seed`: the data is the same every run.
    meta["vocab_words"] lists the words by id (what `dlc neighbours` shows)."""
    p = path_arg(args, "path", base_dir)
    size = args.check("words", integer, low=2)
    window = args.check("window", integer, low=1)
    k = args.check("negatives", integer, low=1)
    t = args.check("subsample", number, low=0)
    rng = np.random.default_rng(args.check("seed", integer, low=0))
    tokens = re.findall(r"[a-z]+", read_utf8("skipgram", p).lower())
    names, counts = np.unique(tokens, return_counts=True)
    order = np.lexsort((names, -counts))[:size]  # most frequent first, ties alphabetical
    vocab = {str(names[i]): j for j, i in enumerate(order)}
    ids = np.array([vocab[w] for w in tokens if w in vocab], np.int64)
    freq = counts[order] / len(ids)
    if t > 0:
        ids = ids[rng.random(len(ids)) < np.sqrt(t / freq[ids])]
    if len(ids) <= window:
        raise DlcError(
            f"skipgram: {p} has {len(ids)} words among the {size} most frequent; it needs more than window = {window}"
        )
    center = np.concatenate([ids[:-d] for d in range(1, window + 1)] + [ids[d:] for d in range(1, window + 1)])
    context = np.concatenate([ids[d:] for d in range(1, window + 1)] + [ids[:-d] for d in range(1, window + 1)])
    noise = counts[order] ** 0.75
    negatives = rng.choice(len(order), size=(len(center), k), p=noise / noise.sum())
    return Dataset(
        {
            "center": center.astype(np.int32),
            "context": context.astype(np.int32),
            "negatives": negatives.astype(np.int32),
        },
        {"vocab_words": [str(names[i]) for i in order]},
    )
