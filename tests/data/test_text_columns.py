"""Text as data (runtime/data/text_tables.py, and text(...) with a tokenizer): a text column and a
label column of CSV, TSV, JSON Lines and Parquet, a folder of .txt files by class, language-model
windows of tokens; the tokenizer and the label's names kept in the checkpoint, so that
`dlc predict --text`, `dlc generate` and the Python API read text with no flag repeated; and a
located error, with status 1, for every hostile input."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")  # the optional extra dlc[text], which dlc[test] installs

from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.settings import Call
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.data import registry as D, tokenizer as T

from helpers.cli import failure, flag_error

SPAN = Span("train.dl", 3, 12)
GOOD = ["a wonderful film", "the music was moving", "great acting and a great plot", "i loved it"]
BAD = ["a dull film", "the plot was clumsy", "terrible acting, a boring plot", "i hated it"]
ROWS = [(t, "positive") for t in GOOD] + [(t, "negative") for t in BAD]

CLASSIFIER = """
const VOCAB = 200
model text_clf {
    input  x: i32[B, T]
    input  mask: i32[B, T]
    target y: i32[B]
    emb = embedding(x, VOCAB, 16)
    kept = expand_dims(float(mask), -1)
    logits = dense(sum(emb * kept, 1) / sum(kept, 1), 2)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
    output probs = softmax(logits)
}
"""


def call(*args, **kwargs):
    spans = {k: Span("train.dl", 3, 40 + i) for i, k in enumerate(kwargs)}
    return Call("texts", list(args), kwargs, SPAN, {0: Span("train.dl", 3, 20)} | spans)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(t for t, _ in ROWS * 5) + "\n")
    T.train([corpus], "wordpiece", 200, min_frequency=1).tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def library_ids(tok_path, texts):
    lib = tokenizers.Tokenizer.from_file(str(tok_path))
    return [lib.encode(t).ids for t in texts]


def write_csv(path, rows, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="") as f:
        out = csv.writer(f, delimiter=delimiter)
        out.writerow(header)
        out.writerows(rows)
    return path


def check_columns(ds, tok_path, texts, names=("negative", "positive")):
    want = library_ids(tok_path, texts)
    assert list(ds.columns) == ["x", "y", "lengths", "mask", "types"]
    assert not ds.columns["types"].any()  # single texts: all of type 0
    assert ds.columns["x"].shape == (len(texts), max(map(len, want)))
    for row, ids in enumerate(want):
        assert ds.columns["x"][row, : len(ids)].tolist() == ids
        assert ds.columns["lengths"][row] == len(ids) == ds.columns["mask"][row].sum()
    assert ds.meta["class_names"] == list(names)
    assert ds.meta["vocab_size"] == tokenizers.Tokenizer.from_file(str(tok_path)).get_vocab_size()


def test_a_csv_tsv_jsonl_and_parquet_give_the_same_columns(tmp_path, tok_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_csv(tmp_path / "r.csv", ROWS)
    write_csv(tmp_path / "r.tsv", ROWS, delimiter="\t")
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"label": y, "text": t}) + "\n" for t, y in ROWS))
    pq.write_table(pa.table({"text": [t for t, _ in ROWS], "label": [y for _, y in ROWS]}), tmp_path / "r.parquet")
    found = [D.load(call(f"r.{ext}", str(tok_path)), tmp_path) for ext in ("csv", "tsv", "jsonl", "parquet")]
    check_columns(found[0], tok_path, [t for t, _ in ROWS])
    assert found[0].columns["y"].tolist() == [1] * 4 + [0] * 4
    for ds in found[1:]:
        for name, column in found[0].columns.items():
            assert np.array_equal(ds.columns[name], column), name


def test_columns_are_chosen_by_name_and_integer_labels_kept(tmp_path, tok_path):
    write_csv(tmp_path / "r.csv", [(i, t, i % 3) for i, (t, _) in enumerate(ROWS)], header=("id", "review", "stars"))
    ds = D.load(call("r.csv", str(tok_path), text="review", label="stars"), tmp_path)
    assert ds.columns["y"].tolist() == [i % 3 for i in range(8)] and "class_names" not in ds.meta
    unlabelled = D.load(call("r.csv", str(tok_path), text="review", label=None), tmp_path)
    assert list(unlabelled.columns) == ["x", "lengths", "mask", "types"]


def test_the_columns_bind_by_transformers_names_and_in_order(tmp_path, tok_path):
    """A model imported from a Hugging Face folder declares input_ids, attention_mask,
    token_type_ids and label; a model of other names takes x, y, lengths, ... in order."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.runtime.training.inputs import bindings

    write_csv(tmp_path / "r.csv", ROWS)
    ds = D.load(call("r.csv", str(tok_path)), tmp_path)
    hf = load_text(
        "model m { input input_ids: i32[B, T]  input attention_mask: i32[B, T]  input token_type_ids: i32[B, T]\n"
        "target label: i32[B]\n logits = dense(mean(embedding(input_ids, 200, 4), 1), 2)\n"
        "loss sparse_cross_entropy(logits, label) }\n"
    ).build("m", training=True)
    chosen = bindings(hf, ds)
    assert {name: ds.reads([c]) for name, c in chosen.items()} == {
        "input_ids": {"x"},
        "attention_mask": {"mask"},
        "token_type_ids": {"types"},
        "label": {"y"},
    }
    own = load_text(
        "model m { input tokens: i32[B, T]  target cls: i32[B]\n"
        "logits = dense(mean(embedding(tokens, 200, 4), 1), 2)\n loss sparse_cross_entropy(logits, cls) }\n"
    ).build("m", training=True)
    assert [ds.reads([c]) for c in bindings(own, ds).values()] == [{"x"}, {"y"}]


def test_a_datasets_class_label_names_the_ids(tmp_path, tok_path):
    import pyarrow as pa
    import pyarrow.ipc

    table = pa.table({"text": [t for t, _ in ROWS], "label": [1] * 4 + [0] * 4})
    with pa.ipc.new_stream(tmp_path / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table)
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    features = {"text": {"_type": "Value"}, "label": {"_type": "ClassLabel", "names": ["neg", "pos"]}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"features": features}))
    ds = D.load(call(".", str(tok_path)), tmp_path)
    assert ds.meta["class_names"] == ["neg", "pos"] and ds.columns["y"].tolist() == [1] * 4 + [0] * 4


def test_a_folder_of_class_folders_of_txt_files(tmp_path, tok_path):
    for k, (text, label) in enumerate(ROWS):
        (tmp_path / "reviews" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "reviews" / label / f"{k}.txt").write_text(text)
    ds = D.load(call("reviews", str(tok_path)), tmp_path)
    texts = [t for t, y in ROWS if y == "negative"] + [t for t, y in ROWS if y == "positive"]  # by folder, by name
    check_columns(ds, tok_path, texts)
    assert ds.columns["y"].tolist() == [0] * 4 + [1] * 4


def test_hostile_class_folders_are_refused(tmp_path, tok_path):
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.txt").write_text("a film")
    (tmp_path / "empty" / "good").mkdir(parents=True)
    (tmp_path / "binary" / "good").mkdir(parents=True)
    (tmp_path / "binary" / "good" / "a.txt").write_bytes(b"\xff\xfe\x00")
    for folder, message in (
        ("loose", "has no class folders (it holds 1 text files but no class folders)"),
        ("empty", "holds no text files (.txt): add its text files or remove it"),
        ("binary", "is not UTF-8 text"),
    ):
        with pytest.raises(DlcError, match=re.escape(message)) as info:
            D.load(call(folder, str(tok_path)), tmp_path, SPAN)
        assert info.value.span is not None


def test_length_truncates_and_pads(tmp_path, tok_path):
    write_csv(tmp_path / "r.csv", ROWS)
    ds = D.load(call("r.csv", str(tok_path), length=5), tmp_path)
    assert ds.columns["x"].shape == (8, 5) and ds.meta["tokenizer"]["length"] == 5
    sep = tokenizers.Tokenizer.from_file(str(tok_path)).token_to_id("[SEP]")
    assert all(ds.columns["x"][row, n - 1] == sep for row, n in enumerate(ds.columns["lengths"]))


def test_language_model_windows_of_tokens(tmp_path, tok_path):
    corpus = "\n".join(t for t, _ in ROWS) + "\n"
    (tmp_path / "c.txt").write_text(corpus)
    ds = D.load(Call("text", ["c.txt"], {"seq": 4, "tokenizer": str(tok_path)}, SPAN), tmp_path)
    lib = tokenizers.Tokenizer.from_file(str(tok_path))
    ids = [i for line in corpus.splitlines(keepends=True) for i in lib.encode(line, add_special_tokens=False).ids]
    n = (len(ids) - 1) // 4
    assert ds.columns["x"].ravel().tolist() == ids[: n * 4] and ds.columns["y"].ravel().tolist() == ids[1 : n * 4 + 1]
    assert ds.meta["token_columns"] == ["x", "y"] and "vocab" not in ds.meta
    with pytest.raises(DlcError, match="'lines' is of character ids") as info:
        D.load(Call("text", ["c.txt"], {"lines": True, "tokenizer": str(tok_path)}, SPAN), tmp_path)
    assert info.value.span is not None


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("r.csv", "text,label\n", {}, "holds no texts"),
        ("r.csv", "", {}, "is empty: it needs a header row"),
        ("r.csv", "review,label\na film,pos\n", {}, "no column 'text'"),
        ("r.csv", "text,label\na film,pos,extra\n", {}, "expected 2 fields"),
        ("r.jsonl", '{"text": "fine", "label": "pos"}\n{"text": 5, "label": "neg"}\n', {}, "holds 5, not text"),
        ("r.jsonl", '{"text": "fine", "label": "pos"}\n{"label": "neg"}\n', {}, "line 2 has no column 'text'"),
        ("r.jsonl", '{"text": "fine"\n', {}, "the line is not JSON"),
        pytest.param("r.jsonl", "[" * 10**5 + "]" * 10**5 + "\n", {}, "the line is not JSON", id="nested-deeply"),
        ("r.jsonl", '["fine", "pos"]\n', {}, "a line of JSON Lines is an object"),
        ("r.csv", "text,label\na film,pos\n", {"tokenizer": "missing.json"}, "tokenizer file not found"),
        ("r.csv", "text,label\na film,pos\n", {"tokenizer": "damaged.json"}, "is not JSON"),
        ("r.txt", "a film\n", {}, "cannot tell the format"),
        ("r.csv", "text,label\na film,pos\n", {"length": 0}, "'length' must be at least 1"),
        ("r.csv", "text,label\na film,pos\n", {"length": 10**12}, "give a smaller length"),
    ],
)
def test_hostile_text_data_is_located(tmp_path, tok_path, name, content, kwargs, message):
    (tmp_path / name).write_text(content)
    (tmp_path / "damaged.json").write_text('{"model": ')
    kwargs = {"tokenizer": str(tok_path)} | kwargs
    with pytest.raises(DlcError) as info:
        D.load(call(name, **kwargs), tmp_path, SPAN)
    e = info.value
    assert message in e.message and "\n" not in e.message and e.span is not None, (e.message, e.span)


def test_a_parquet_column_of_numbers_is_not_text(tmp_path, tok_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2], "label": ["a", "b"]}), tmp_path / "r.parquet")
    with pytest.raises(DlcError, match=r"row 0 \(from 0\): column 'text' holds 1, not text"):
        D.load(call("r.parquet", str(tok_path)), tmp_path)


def write_model(tmp_path, tok_path, model=CLASSIFIER, source="texts(\"r.csv\", tokenizer = \"{tok}\")"):
    write_csv(tmp_path / "r.csv", ROWS * 4)
    path = tmp_path / "m.dl"
    data = source.format(tok=tok_path)
    path.write_text(model + f"train text_clf {{ data = {data} batch = 8 epochs = 30 optimizer = adam(lr = 0.05) }}\n")
    return path


@pytest.mark.slow
def test_train_then_predict_text_from_the_cli_and_the_api(tmp_path, tok_path, capsys):
    path = write_model(tmp_path, tok_path)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "-q"]) == 0
    weights = str(tmp_path / "run" / "best.npz")
    tok_path.rename(tok_path.with_name("moved.json"))  # the checkpoint's copy is read, not the file
    try:
        capsys.readouterr()
        assert main(["predict", str(path), "--weights", weights, "--text", GOOD[0], "--text", BAD[1],
                     "--output", str(tmp_path / "p.npz")]) == 0  # fmt: skip
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f'"{GOOD[0]}": positive ') and out[1].startswith(f'"{BAD[1]}": negative ')
        model = DlcModel(path).load_weights(weights)
        probs = model.predict(text=[GOOD[0], BAD[1]])["probs"]
        assert np.array_equal(probs, np.load(tmp_path / "p.npz")["probs"])
        assert [best[0][0] for best in model.top_classes(probs)] == ["positive", "negative"]
        ids = model.tokenizer().encode(GOOD[0]).ids
        assert ids.shape[1] == max(map(len, library_ids(tok_path.with_name("moved.json"), GOOD + BAD)))
        assert model.tokenizer().decode(ids) == GOOD[0]
    finally:
        tok_path.with_name("moved.json").rename(tok_path)


@pytest.mark.parametrize(
    "source, message",
    [
        ('texts("r.csv", tokenizer = "missing.json")', "tokenizer file not found"),
        ('texts("r.csv", tokenizer = "{tok}", text = "review")', "no column 'review' (its columns: text, label)"),
        ('texts("gone.csv", tokenizer = "{tok}")', "data file not found"),
    ],
)
def test_dlc_train_locates_a_bad_text_source_and_exits_1(tmp_path, tok_path, capsys, source, message):
    path = write_model(tmp_path, tok_path, source=source)
    err = failure(["train", str(path), "--out", str(tmp_path / "run")], capsys)
    assert f"m.dl:{len(CLASSIFIER.splitlines()) + 1}:" in err and message in err, err


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tok_path, capsys):
    path = write_model(tmp_path, tok_path, CLASSIFIER.replace("VOCAB = 200", "VOCAB = 20"))
    size = tokenizers.Tokenizer.from_file(str(tok_path)).get_vocab_size()
    err = failure(["train", str(path), "--out", str(tmp_path / "run")], capsys)
    assert f"m.dl:{len(CLASSIFIER.splitlines()) + 1}:" in err
    assert f"the tokenizer has a vocabulary of {size} tokens, but x takes ids 0 to 19" in err


def test_texts_longer_than_the_positions_are_refused(tmp_path, tok_path, capsys):
    model = CLASSIFIER.replace(
        "emb = embedding(x, VOCAB, 16)", "emb = positional_embedding(embedding(x, VOCAB, 16), 4)"
    )
    path = write_model(tmp_path, tok_path, model)
    err = failure(["train", str(path), "--out", str(tmp_path / "run")], capsys)
    assert "tokens long, but the model has positions for 4: cut them to 4 (texts(..., length = 4)" in err
    path = write_model(tmp_path, tok_path, model, "texts(\"r.csv\", tokenizer = \"{tok}\", length = 4)")
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1", "-q"]) == 0


def test_a_fixed_sequence_axis_needs_texts_of_its_length(tmp_path, tok_path, capsys):
    path = write_model(tmp_path, tok_path, CLASSIFIER.replace("[B, T]", "[B, 3]"))
    err = failure(["train", str(path), "--out", str(tmp_path / "run")], capsys)
    assert "but x: i32[B, 3] takes 3: make them 3 (texts(..., length = 3)" in err


def test_predict_and_eval_read_texts_with_the_checkpoints_tokenizer(tmp_path, tok_path, capsys, monkeypatch):
    """texts(...) given to predict and eval names no tokenizer: the checkpoint's encodes the texts
    as `--text` does; the same file named again is that one, another tokenizer is an error at it."""
    path = write_model(tmp_path, tok_path)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "2", "-q"]) == 0
    weights = str(tmp_path / "run" / "best.npz")
    write_csv(tmp_path / "new.csv", [(GOOD[0], "positive"), (BAD[1], "negative")])
    monkeypatch.chdir(tmp_path)
    texts = ["--text", GOOD[0], "--text", BAD[1], "--output", "by_text.npz"]
    assert main(["predict", str(path), "--weights", weights, *texts]) == 0
    by_text = np.load("by_text.npz")["probs"]
    for source in ['texts("new.csv", label = none)', f'texts("new.csv", tokenizer = "{tok_path}")']:
        assert main(["predict", str(path), "--weights", weights, "--data", source, "--output", "p.npz"]) == 0
        assert np.array_equal(np.load("p.npz")["probs"], by_text), source
    model = DlcModel(path).load_weights(weights)
    assert np.array_equal(model.predict('texts("new.csv")')["probs"], by_text)
    assert set(model.evaluate('texts("new.csv")', log=lambda _: None)) >= {"loss", "accuracy"}

    (tmp_path / "c.txt").write_text("other words entirely\n" * 20)
    T.train([tmp_path / "c.txt"], "bpe", 120, min_frequency=1).tok.save(str(tmp_path / "other.json"))
    capsys.readouterr()
    source = 'texts("new.csv", tokenizer = "other.json")'
    err = flag_error(["predict", str(path), "--weights", weights, "--data", source], capsys)
    assert err.startswith("--data:1:30: error: texts: 'other.json' is not the tokenizer of") and "other tok" in err
    with pytest.raises(DlcError, match="'other.json' is not the tokenizer of"):
        model.evaluate(source)


def test_predict_text_without_a_tokenizer_in_the_checkpoint_is_refused(tmp_path, capsys):
    from helpers.programs import CLASSIFIER as XOR_CLASSIFIER, write

    path = write(tmp_path, XOR_CLASSIFIER, "train clf { data = xor() batch = 4 epochs = 1 }")
    assert main(["train", path, "--out", str(tmp_path / "run"), "-q"]) == 0
    err = failure(["predict", path, "--weights", str(tmp_path / "run" / "best.npz"), "--text", "hello"], capsys)
    assert "clf has no tokenizer: its checkpoint keeps none" in err
    err = failure(
        ["predict", path, "--weights", str(tmp_path / "run" / "best.npz"), "--data", 'texts("r.csv")'], capsys
    )
    assert "clf has no tokenizer: its checkpoint keeps none" in err and 'or name one: texts(..., tokenizer =' in err


LANGUAGE_MODEL = """
const VOCAB = 200
model text_clf {
    input  x: i32[B, T]
    target y: i32[B, T]
    h = embedding(x, VOCAB, 16) |> lstm(32)
    logits = dense(h, VOCAB)
    loss   sparse_cross_entropy(logits, y)
    output next = softmax(logits[:, -1])
}
"""


@pytest.mark.slow
def test_generate_continues_a_prompt_in_the_checkpoints_tokens(tmp_path, tok_path, capsys):
    (tmp_path / "c.txt").write_text(("\n".join(t for t, _ in ROWS) + "\n") * 10)
    path = write_model(tmp_path, tok_path, LANGUAGE_MODEL, "text(\"c.txt\", seq = 8, tokenizer = \"{tok}\")")
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "-q"]) == 0
    capsys.readouterr()
    weights = str(tmp_path / "run" / "best.npz")
    assert main(["generate", str(path), "--weights", weights, "--prompt", "the plot", "--length", "3"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    model = DlcModel(path).load_weights(weights)
    continuation = model.generate("the plot", 3)
    assert printed == "the plot" + continuation
    tok = model.tokenizer()
    assert len(tok.corpus(continuation)) <= 3  # three tokens, read back as at most three
