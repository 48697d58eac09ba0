"""Pretrained word vectors (runtime/data/vectors.py): GloVe and word2vec text files, the
`pretrained(path)` initializer on both engines, the `sentences` data source whose ids are
the file's rows, a located error for every bad file, and the example that fine-tunes them."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.loader import load_text
from dlc.runtime import api
from dlc.runtime.data import registry as D, vectors as V
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.text import words
from dlc.runtime.cli import main
from dlc.compiler.frontend.settings import Call

EXAMPLES = Path(__file__).parents[2] / "examples"

GLOVE = """the 0.1 0.2 0.3
cat -1.5 2e-3 4
sat 0 0 1.25
"""
WORDS = ["the", "cat", "sat"]
TABLE = np.array([[0.1, 0.2, 0.3], [-1.5, 2e-3, 4], [0, 0, 1.25]], np.float32)

MODEL = """
model m {{
    input  x: i32[B, T]
    target y: i32[B]
    emb = embedding(x, {rows}, 3, init = pretrained("{file}"))
    logits = dense(mean(emb, 1), 2)
    loss sparse_cross_entropy(logits, y)
}}

train m {{
    data   = "ids.npz"
    epochs = 2
    batch  = 2
    optimizer = sgd(lr = 0.5)
}}
"""


def write_model(folder: Path, file: str = "vectors.txt", rows: int = 5) -> Path:
    """A model whose embedding starts from `file` (the data does not read it: errors come
    from the initializer)."""
    np.savez(
        folder / "ids.npz",
        x=np.array([[2, 3, 4], [4, 1, 0], [3, 3, 0], [2, 0, 0]], np.int32),
        y=np.array([0, 1, 1, 0], np.int32),
    )
    path = folder / "m.dl"
    path.write_text(MODEL.format(rows=rows, file=file))
    return path


def train_error(path: Path, capsys, *args) -> str:
    """`dlc train` must fail with status 1; its standard error."""
    assert main(["train", str(path), "--out", str(path.parent / "runs"), *args]) == 1
    return capsys.readouterr().err


# ---- the two formats ---------------------------------------------------------------------------------
def test_glove_text():
    wv = V.parse(GLOVE, "v.txt")
    assert list(wv.words) == WORDS and wv.dim == 3
    np.testing.assert_array_equal(wv.vectors, TABLE)
    assert wv.ids == {"the": 2, "cat": 3, "sat": 4}


def test_word2vec_text_has_a_header():
    wv = V.parse("3 3\n" + GLOVE, "v.txt")
    assert list(wv.words) == WORDS
    np.testing.assert_array_equal(wv.vectors, TABLE)


def test_blank_lines_crlf_trailing_spaces_and_gzip(tmp_path):
    text = "\n3 3\r\n" + GLOVE.replace("\n", " \r\n\r\n")  # word2vec writes a space after each value
    (tmp_path / "v.txt.gz").write_bytes(gzip.compress(text.encode()))
    wv = V.read(tmp_path / "v.txt.gz")
    assert list(wv.words) == WORDS
    np.testing.assert_array_equal(wv.vectors, TABLE)


def test_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text(GLOVE)
    assert V.read(path).vectors[0, 0] == np.float32(0.1)
    path.write_text(GLOVE.replace("0.1", "0.7"))  # same size, maybe the same mtime
    assert V.read(path).vectors[0, 0] == np.float32(0.7)


def test_table_has_zero_pad_and_unk_rows():
    t = V.table(V.parse(GLOVE, "v.txt"), (5, 3))
    np.testing.assert_array_equal(t[:2], 0)
    np.testing.assert_array_equal(t[2:], TABLE)
    with pytest.raises(DlcError, match=r"3 words of 3 values, so the embedding it starts is \[5, 3\]"):
        V.table(V.parse(GLOVE, "v.txt"), (3, 3))


# ---- every bad file: an error at its line, `dlc train` exits with 1 ------------------------------------
BAD_FILES = {  # text, line, column, message
    "ragged": ("the 1 2 3\ncat 1 2\n", 2, 1, "2 values after the word, but line 1 has 3"),
    "ragged after a header": (
        "2 3\nthe 1 2 3\ncat 1 2 3 4\n",
        3,
        1,
        "4 values after the word, but the header (line 1) says 3",
    ),
    "header count": ("3 3\nthe 1 2 3\ncat 1 2 3\n", 1, 1, "the header says 3 words, but the file has 2"),
    "not a number": (
        "the 1 2 3\ncat 1 two 3\n",
        2,
        7,
        "value 2 of the word 'cat', 'two', is not a finite float32 number",
    ),
    "nan": ("the 1 2 3\ncat 1 2 nan\n", 2, 9, "value 3 of the word 'cat', 'nan', is not a finite float32 number"),
    "beyond float32": ("the 1e39 2 3\n", 1, 5, "value 1 of the word 'the', '1e39', is not a finite float32 number"),
    "duplicate word": ("the 1 2 3\ncat 1 2 3\nthe 4 5 6\n", 3, 1, "the word 'the' is given twice, on lines 1 and 3"),
    "empty": ("\n\n", 1, 1, "no word vectors: the file is empty"),
    "header only": ("2 3\n", 1, 1, "no word vectors: a word2vec header (2 words of 3 values)"),
    "word without values": ("the\ncat\n", 1, 1, "a word without values"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_an_error_at_its_line(case, tmp_path, capsys):
    text, line, col, message = BAD_FILES[case]
    (tmp_path / "vectors.txt").write_text(text)
    err = train_error(write_model(tmp_path), capsys)
    assert err.startswith(f"{tmp_path / 'vectors.txt'}:{line}:{col}: error: {message}"), err
    assert f"{tmp_path / 'm.dl'}:5:11: note: read for this parameter" in err  # the embedding's line


def test_wrong_shape_names_the_shape_the_file_needs(tmp_path, capsys):
    (tmp_path / "vectors.txt").write_text(GLOVE)
    for rows in (6, 7):  # (fewer rows than the data's ids is an error about the data, found first)
        err = train_error(write_model(tmp_path, rows=rows), capsys)
        assert err.startswith(
            f"{tmp_path / 'm.dl'}:5:11: error: {tmp_path / 'vectors.txt'} holds 3 words of 3 "
            f"values, so the embedding it starts is [5, 3] (<pad>, <unk> and the words), but the "
            f"parameter is [{rows}, 3]"
        ), err
    path = write_model(tmp_path)
    path.write_text(path.read_text().replace(", 3, init", ", 4, init"))
    err = train_error(path, capsys)
    assert "the embedding it starts is [5, 3]" in err and "but the parameter is [5, 4]" in err, err


def test_missing_file(tmp_path, capsys):
    err = train_error(write_model(tmp_path, file="nowhere.txt"), capsys)
    assert err.startswith(f"{tmp_path / 'm.dl'}:5:11: error: word vector file not found: {tmp_path / 'nowhere.txt'}"), (
        err
    )


def test_a_file_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "vectors.txt").write_bytes(b"caf\xe9 1 2 3\n")
    err = train_error(write_model(tmp_path), capsys)
    assert err.startswith(
        f"{tmp_path / 'm.dl'}:5:11: error: word vectors: {tmp_path / 'vectors.txt'} is not UTF-8 text"
    ), err


def test_the_command_exits_with_status_1(tmp_path):
    (tmp_path / "vectors.txt").write_text("the 1 2 3\ncat 1 2\n")
    done = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "train", str(write_model(tmp_path)), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "vectors.txt:2:1: error: 2 values after the word" in done.stderr
    assert "Traceback" not in done.stderr


def test_word_vectors_belongs_in_an_initializer():
    src = """
model m {
    input x: f32[B, 3]
    output y = x + word_vectors("v.txt", (5, 3))[0]
}"""
    with pytest.raises(DlcError, match="use it in an initializer"):
        load_text(src, "m.dl").build()
    src = """
model m {
    input x: f32[B, 3]
    param v: f32[3] = pretrained("v.txt")
    output y = x + v
}"""
    with pytest.raises(DlcError, match=r"a \[words, dim\] table, not a parameter of shape \[3\]"):
        load_text(src, "m.dl").build()


# ---- the initial embedding is the file's, on both engines --------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "native"])
def test_initial_rows_are_the_files_vectors(backend, tmp_path):
    (tmp_path / "vectors.txt").write_text("3 3\n" + GLOVE)  # word2vec's format
    path = write_model(tmp_path)
    model = api.load(str(path), backend=backend)
    start = model.train(out=str(tmp_path / "zero"), epochs=0, log=lambda m: None).params["emb.W"]
    np.testing.assert_array_equal(start[:2], 0)
    np.testing.assert_array_equal(start[2:], TABLE)
    frozen = model.train(out=str(tmp_path / "frozen"), freeze="emb", log=lambda m: None).params
    np.testing.assert_array_equal(frozen["emb.W"][2:], TABLE)
    tuned = model.train(out=str(tmp_path / "tuned"), log=lambda m: None).params["emb.W"]
    assert not np.allclose(tuned[2:], TABLE)  # fine-tuned: the vectors moved


def test_gradcheck_reads_the_vectors(tmp_path, capsys):
    (tmp_path / "vectors.txt").write_text(GLOVE)
    assert main(["gradcheck", str(write_model(tmp_path))]) == 0
    assert "parameters pass" in capsys.readouterr().out


# ---- the sentences data source -------------------------------------------------------------------------
def sentences(folder: Path, text: str, **kwargs) -> Dataset:
    (folder / "vectors.txt").write_text(GLOVE)
    (folder / "s.tsv").write_text(text)
    return D.load(
        Call(
            "sentences",
            ["s.tsv"],
            {"vocab": "vectors.txt", **kwargs},
            Span("t.dl", 3, 5),
            {"vocab": Span("t.dl", 3, 30)},
        ),
        folder,
    )


def test_sentence_ids_are_the_files_rows(tmp_path):
    ds = sentences(tmp_path, "pos\tThe cat sat.\n\nneg\tthe dog sat\nneg\tcat\n")
    # the 2, cat 3, sat 4; '.' and 'dog' unknown (1); 0 after the last word
    assert ds.columns["x"].tolist() == [[2, 3, 4, 1], [2, 1, 4, 0], [3, 0, 0, 0]]
    assert ds.columns["x"].dtype == np.int32
    assert ds.columns["y"].tolist() == [1, 0, 0] and ds.meta["labels"] == ["neg", "pos"]
    assert ds.meta["classes"] == 2 and ds.meta["words"] == 3 and ds.meta["unknown"] == 2
    assert ds.names == ["x", "y", "lengths"] and ds.columns["lengths"].tolist() == [4, 3, 1]


def test_sentence_options_and_integer_labels(tmp_path):
    ds = sentences(tmp_path, "2\tThe cat sat\n0\tcat\n", length=2, lower=False)
    assert ds.columns["x"].tolist() == [[1, 3], [3, 0]]  # 'The' is not 'the'; cut after 2 words
    assert ds.columns["y"].tolist() == [2, 0] and "labels" not in ds.meta and ds.meta["classes"] == 3
    assert ds.columns["lengths"].tolist() == [2, 1]  # the words kept


def test_words_of_a_sentence():
    assert words("I don't like well-known films, 2 stars!") == [
        "I",
        "don't",
        "like",
        "well-known",
        "films",
        ",",
        "2",
        "stars",
        "!",
    ]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("pos the cat\n", 1, "sentences: expected a label, a tab and a sentence"),
        ("pos\tthe cat\n\nneg\t \n", 3, "sentences: the sentence has no words"),
        ("\n\n", None, "holds no sentences"),
    ],
)
def test_bad_sentences(tmp_path, text, line, message):
    with pytest.raises(DlcError) as e:
        sentences(tmp_path, text)
    assert message in e.value.message
    assert e.value.span == (Span(str(tmp_path / "s.tsv"), line, 1) if line else Span("t.dl", 3, 5))


def test_a_bad_vocabulary_points_at_the_file_and_the_argument(tmp_path):
    (tmp_path / "s.tsv").write_text("pos\tthe cat\n")
    with pytest.raises(DlcError) as e:
        sentences(tmp_path, "pos\tthe cat\n", length=0)
    assert "'length' must be at least 1" in e.value.message
    (tmp_path / "bad.txt").write_text("the 1 2\nthe 3 4\n")
    with pytest.raises(DlcError) as e:
        D.load(
            Call("sentences", ["s.tsv"], {"vocab": "bad.txt"}, Span("t.dl", 3, 5), {"vocab": Span("t.dl", 3, 30)}),
            tmp_path,
        )
    assert str(e.value.span) == f"{tmp_path / 'bad.txt'}:2:1" and "given twice" in e.value.message
    assert e.value.notes == [("read as the vocabulary of sentences(...) here", Span("t.dl", 3, 30))]
    with pytest.raises(DlcError) as e:
        D.load(
            Call("sentences", ["s.tsv"], {"vocab": "none.txt"}, Span("t.dl", 3, 5), {"vocab": Span("t.dl", 3, 30)}),
            tmp_path,
        )
    assert "not found" in e.value.message and e.value.span == Span("t.dl", 3, 30)


# ---- the example ----------------------------------------------------------------------------------------
def test_example_data_agrees_with_its_model():
    wv = V.read(EXAMPLES / "data" / "vectors.txt")
    model = dlc.load(str(EXAMPLES / "sentiment_vectors.dl")).train_model
    assert [p.type.shape for p in model.params if p.name == "emb.W"] == [(len(wv.words) + 2, wv.dim)]
    assert 100 <= len(wv.words) <= 1000 and 16 <= wv.dim <= 50


def test_example_fine_tunes_and_beats_a_random_start(tmp_path):
    """The test sentences use only opinion words the labelled sentences never use: pretrained
    vectors (fine-tuned) classify them, a random start cannot do much better than chance."""
    source = (EXAMPLES / "sentiment_vectors.dl").read_text()
    random_start = tmp_path / "random_start.dl"
    random_start.write_text(
        source.replace(', init = pretrained("data/vectors.txt")', "").replace('"data/', f'"{EXAMPLES / "data"}/')
    )
    assert random_start.read_text() != source
    pretrained = dlc.load(str(EXAMPLES / "sentiment_vectors.dl")).train(out=str(tmp_path / "p"), log=lambda m: None)
    random = dlc.load(str(random_start)).train(out=str(tmp_path / "r"), log=lambda m: None)
    assert pretrained.test["accuracy"] >= 0.9, pretrained.test
    assert random.test["accuracy"] <= 0.75, random.test
    assert pretrained.history[-1]["val_accuracy"] >= 0.9
    start = V.table(V.read(EXAMPLES / "data" / "vectors.txt"), pretrained.params["emb.W"].shape)
    assert not np.allclose(pretrained.params["emb.W"], start)  # the vectors were fine-tuned
