"""Tables as data (runtime/data/tables.py): Parquet files and folders of part files, Arrow IPC
files and streams, Hugging Face `datasets` folders (built here in save_to_disk's layout, without
the datasets package); numeric, categorical and list columns; x and y bound by name; categories in
the checkpoint and back in predict; and a clear error for every hostile table."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import pyarrow as pa  # the optional extra dlc[tables], which dlc[test] installs
import pyarrow.compute
import pyarrow.feather
import pyarrow.ipc
import pyarrow.parquet as pq

from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.settings import Call
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.data import registry as D, tables
from dlc.runtime.training.inputs import input_arrays

from helpers.cli import failure
from helpers.programs import CLASSIFIER

SPAN = Span("train.dl", 3, 12)
SPECIES = np.array(["setosa", "versicolor", "virginica"])


def call(name="parquet", *args, **kwargs):
    spans = {k: Span("train.dl", 3, 40 + i) for i, k in enumerate(kwargs)}
    return Call(name, list(args), kwargs, SPAN, {0: Span("train.dl", 3, 20)} | spans)


def err(spec, base, *patterns) -> DlcError:
    with pytest.raises(DlcError) as info:
        D.load(spec, base, SPAN)
    e = info.value
    assert "\n" not in e.message and e.span is not None, (e.message, e.span)
    for p in patterns:
        assert p in e.message, (p, e.message)
    return e


def iris(n=60, seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % 3
    return pa.table(
        {
            "a": ids + rng.normal(0, 0.2, n),
            "b": rng.normal(0, 1, n).astype(np.float32),
            "c": rng.integers(0, 5, n),
            "species": SPECIES[ids],
        }
    )


# ---- reading -----------------------------------------------------------------------------------------
def test_parquet_features_stack_as_x_and_a_string_label_gives_class_ids(tmp_path):
    t = iris()
    pq.write_table(t, tmp_path / "iris.parquet")
    ds = D.load(call("parquet", "iris.parquet", label="species"), tmp_path)
    assert ds.names == ["a", "b", "c", "species"] and ds.stacked == {"x": ["a", "b", "c"], "y": ["species"]}
    assert ds.meta == {
        "features": ["a", "b", "c"],
        "label": "species",
        "categories": {"species": ["setosa", "versicolor", "virginica"]},
    }
    x, y = ds.column("x"), ds.column("y")
    assert x.shape == (60, 3)
    np.testing.assert_array_equal(x[:, 2], t["c"].to_numpy())
    np.testing.assert_array_equal(SPECIES[y], t["species"].to_numpy(zero_copy_only=False))
    assert y.dtype == np.int32 and ds.columns["c"].dtype == np.int64  # as stored; the binding casts
    picked = D.load(call("parquet", "iris.parquet", label="species", columns=["c", "a"]), tmp_path)
    np.testing.assert_array_equal(picked.column("x"), np.stack([t["c"].to_numpy(), t["a"].to_numpy()], 1))
    whole = D.load("iris.parquet", tmp_path)  # by extension: every column, no label
    assert whole.stacked == {"x": ["a", "b", "c"]} and whole.meta["categories"] == {"species": list(SPECIES)}


def test_only_the_chosen_columns_are_read(tmp_path, monkeypatch):
    t = iris().append_column("nested", pa.array([{"p": i} for i in range(60)]))
    pq.write_table(t, tmp_path / "t.parquet")
    asked = []
    opened = tables._open

    def spy(*args):
        o = opened(*args)
        read = o.read
        o.read = lambda columns: asked.append(columns) or read(columns)
        return o

    monkeypatch.setattr(tables, "_open", spy)
    ds = D.load(call("parquet", "t.parquet", label="species", columns=["b"]), tmp_path)
    assert asked == [["b", "species"]] and ds.names == ["b", "species"]


def test_folders_of_part_files_and_arrow_files(tmp_path):
    t = iris()
    folder = tmp_path / "spark"
    folder.mkdir()
    pq.write_table(t.slice(0, 25), folder / "part-00000.parquet")
    pq.write_table(t.slice(25), folder / "part-00001.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_bytes(b"crc")
    spark = D.load(call("parquet", "spark", label="species"), tmp_path)
    assert sorted(spark.column("x")[:, 0]) == sorted(t["a"].to_numpy())
    assert len(D.load("spark", tmp_path)) == 60  # a folder of Parquet files by content
    pq.write_to_dataset(t, tmp_path / "hive", partition_cols=["species"])  # species=setosa/...: a column
    hive = D.load(call("parquet", "hive", label="species"), tmp_path)
    assert hive.meta["categories"]["species"] == list(SPECIES) and len(hive) == 60
    pa.feather.write_feather(t, tmp_path / "t.feather")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    for name in ("t.feather", "t.arrow", "s.arrow"):
        ds = D.load(call("arrow", name, label="species"), tmp_path)
        np.testing.assert_array_equal(ds.column("x")[:, 1], t["b"].to_numpy())
        assert len(D.load(name, tmp_path)) == 60


def test_dictionary_columns_keep_their_order_and_lists_are_padded(tmp_path):
    color = pa.DictionaryArray.from_arrays(pa.array([2, 0, 1, 2], pa.int8()), pa.array(["red", "green", "blue"]))
    t = pa.table(
        {
            "color": color,
            "tokens": pa.array([[5, 6, 7], [8], [], [9, 10]]),
            "words": pa.array([["b", "a"], ["c"], ["a"], []]),
            "vec": pa.array([[1.0, 2.0]] * 4, pa.list_(pa.float32(), 2)),
            "tags": pa.array([["N", "V", "N"], ["V"], [], ["N", "N"]]),
            "steps": pa.array([[1, 2], [3], [], [4]], pa.list_(pa.uint8())),
        }
    )
    pq.write_table(t, tmp_path / "t.parquet")
    ds = D.load(call("parquet", "t.parquet", label="tags"), tmp_path)
    assert ds.meta["categories"] == {"color": ["red", "green", "blue"], "words": ["a", "b", "c"], "tags": ["N", "V"]}
    np.testing.assert_array_equal(ds.columns["color"], [2, 0, 1, 2])
    np.testing.assert_array_equal(ds.columns["tokens"], [[5, 6, 7], [8, 0, 0], [0, 0, 0], [9, 10, 0]])
    np.testing.assert_array_equal(ds.columns["tokens_lengths"], [3, 1, 0, 2])
    np.testing.assert_array_equal(ds.columns["words"], [[1, 0], [2, 0], [0, 0], [0, 0]])
    assert ds.columns["vec"].shape == (4, 2) and "vec_lengths" not in ds.columns
    np.testing.assert_array_equal(ds.columns["tags"], [[0, 1, 0], [1, -1, -1], [-1, -1, -1], [0, 0, -1]])
    assert ds.stacked == {"y": ["tags"]} and "features" not in ds.meta  # no numeric column of one value
    steps = D.load(call("parquet", "t.parquet", label="steps", columns=["vec"]), tmp_path).columns["steps"]
    np.testing.assert_array_equal(steps, [[1, 2], [3, -1], [-1, -1], [4, -1]])  # unsigned, padded with -1


def save_to_disk(folder, table: pa.Table, features: dict, files=2):
    """A `datasets` Dataset folder as save_to_disk writes it: Arrow streams and two JSON files."""
    folder.mkdir(parents=True)
    names, step = [], -(-len(table) // files)
    for i in range(files):
        name = f"data-{i:05d}-of-{files:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.slice(i * step, step))
        names.append({"filename": name})
    (folder / "state.json").write_text(
        json.dumps({"_data_files": names, "_fingerprint": "0", "_format_type": None, "_split": folder.name})
    )
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))


def test_a_datasets_folder_and_its_splits(tmp_path):
    assert "datasets" not in sys.modules
    t = pa.table(
        {
            "text_len": pa.array([3.0, 5.0, 1.0, 2.0]),
            "label": pa.array([1, 0, 1, -1], pa.int64()),
            "ner": pa.array([[0, 1], [2], [], [1, 1, 0]], pa.list_(pa.int64())),
        }
    )
    features = {
        "text_len": {"dtype": "float64", "_type": "Value"},
        "label": {"names": ["neg", "pos"], "_type": "ClassLabel"},
        "ner": {"feature": {"names": ["O", "PER", "LOC"], "_type": "ClassLabel"}, "_type": "Sequence"},
    }
    save_to_disk(tmp_path / "one", t, features)
    ds = D.load(call("parquet", "one", label="label"), tmp_path)
    assert ds.meta["categories"] == {"label": ["neg", "pos"], "ner": ["O", "PER", "LOC"]}
    np.testing.assert_array_equal(ds.column("y"), [1, 0, 1, -1])  # ids as stored (-1: no label)
    np.testing.assert_array_equal(ds.columns["ner_lengths"], [2, 1, 0, 3])
    for split in ("train", "test"):
        save_to_disk(tmp_path / "dict" / split, t.slice(0, 3 if split == "train" else 1), features, files=1)
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert len(D.load(call("arrow", "dict", label="label", split="test"), tmp_path)) == 1
    assert len(D.load(call("arrow", "dict", label="label", split="train"), tmp_path)) == 3
    err(call("arrow", "dict", label="label"), tmp_path, "holds the splits train, test", 'split = "train"')
    e = err(call("arrow", "dict", split="tset"), tmp_path, "no split 'tset'", "did you mean 'test'")
    assert e.span.col == 40
    err(call("arrow", "one", split="train"), tmp_path, "one split", "leave out 'split'")
    assert len(D.load("dict/test", tmp_path)) == 1  # a datasets folder by content
    assert "datasets" not in sys.modules


# ---- hostile tables ------------------------------------------------------------------------------
def test_nulls_nested_records_and_other_types_are_located_errors(tmp_path):
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "b": [1, 2, 3]}), tmp_path / "null.parquet")
    err("null.parquet", tmp_path, "null.parquet", "column 'a' has a null at row 1", "drop or fill")
    pq.write_table(pa.table({"a": pa.array([[1], [2, None]])}), tmp_path / "inner.parquet")
    err("inner.parquet", tmp_path, "column 'a' has a null inside its list at row 1")
    batches = [pa.record_batch({"a": pa.array(rows)}) for rows in ([[1], [2, 3]], [[4], [5], [None]])]
    with pa.OSFile(str(tmp_path / "chunks.arrow"), "wb") as sink, pa.ipc.new_file(sink, batches[0].schema) as w:
        for b in batches:
            w.write_batch(b)
    err("chunks.arrow", tmp_path, "column 'a' has a null inside its list at row 4")  # in the second chunk
    pq.write_table(pa.table({"a": [1.0, 2.0], "s": [{"p": 1}, {"p": 2}]}), tmp_path / "s.parquet")
    err(call("parquet", "s.parquet"), tmp_path, "column 's' holds nested records (struct<p: int64>)", "columns = [")
    assert D.load(call("parquet", "s.parquet", columns=["a"]), tmp_path).names == ["a"]
    pq.write_table(pa.table({"when": pa.array([0, 1], pa.timestamp("s"))}), tmp_path / "t.parquet")
    err("t.parquet", tmp_path, "column 'when' holds timestamp[", "cast it in the file")
    pq.write_table(pa.table({"m": pa.array([[[1]], [[2]]])}), tmp_path / "deep.parquet")
    err("deep.parquet", tmp_path, "column 'm' holds lists of list<")
    pq.write_table(pa.table({"a": [1.0, float("nan")]}), tmp_path / "nan.parquet")
    err("nan.parquet", tmp_path, "column 'a' holds a value that is not a finite float32 number at index [1]")


def test_bad_arguments_point_at_themselves(tmp_path):
    pq.write_table(iris(), tmp_path / "iris.parquet")
    e = err(
        call("parquet", "iris.parquet", label="specis"),
        tmp_path,
        "no column 'specis'",
        "did you mean 'species'",
        "its columns: 'a', 'b', 'c', 'species'",
    )
    assert e.span.col == 40
    e = err(call("parquet", "iris.parquet", label="species", columns=["a", "bb"]), tmp_path, "no column 'bb'")
    assert e.span.col == 41
    err(call("parquet", "iris.parquet", label="species", columns=["a", "species"]), tmp_path, "is the label")
    err(call("parquet", "iris.parquet", columns=["a", "a"]), tmp_path, "'a' is named twice")
    err(call("parquet", "iris.parquet", label=3), tmp_path, "'label' must be a column's name in quotes")
    err(call("parquet", "iris.parquet", columns=[1]), tmp_path, "'columns' must be a list of column names")
    err(call("parquet", "iris.parquet", split="train"), tmp_path, "is not one")
    err(call("parquet", "missing.parquet"), tmp_path, "data file not found")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    err("junk.parquet", tmp_path, "junk.parquet is not a Parquet or Arrow table that pyarrow reads")
    pq.write_table(iris(), tmp_path / "cut.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "cut.parquet").read_bytes()[:300])
    err("cut.parquet", tmp_path, "cut.parquet is not a Parquet or Arrow table")
    (tmp_path / "junk.arrow").write_bytes(b"ARROW1 and then nothing")
    err("junk.arrow", tmp_path, "junk.arrow is not a Parquet or Arrow table")
    twice = pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"])
    with pa.OSFile(str(tmp_path / "twice.arrow"), "wb") as sink, pa.ipc.new_file(sink, twice.schema) as w:
        w.write_table(twice)
    err("twice.arrow", tmp_path, "the table has 2 columns named 'a'")
    (tmp_path / "empty").mkdir()
    err(call("parquet", "empty"), tmp_path, "a folder of no Parquet files")


def test_without_pyarrow_the_error_says_what_to_install(tmp_path, monkeypatch):
    pq.write_table(iris(), tmp_path / "iris.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    err("iris.parquet", tmp_path, "needs pyarrow", 'pip install "dlc[tables]"')


# ---- training, the checkpoint and predict ------------------------------------------------------------
MODEL = (
    CLASSIFIER.replace("f32[B, 2]", "f32[B, 3]").replace("\n}", "\n    output probs = softmax(logits)\n}")
    + "train clf { data = DATA  batch = 10  epochs = 3  optimizer = adam(lr = 0.01) }\n"
)


def trained(tmp_path, data='parquet("iris.parquet", label = "species")'):
    pq.write_table(iris(), tmp_path / "iris.parquet")
    path = tmp_path / "m.dl"
    path.write_text(MODEL.replace("DATA", data))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--backend", "reference", "-q"]) == 0
    return str(path), str(tmp_path / "run" / "best.npz")


def test_dlc_train_on_parquet_keeps_the_categories_and_predict_names_the_classes(tmp_path, capsys):
    path, weights = trained(tmp_path)
    meta = DlcModel(path).load_weights(weights).meta["meta"]
    assert meta == {"features": ["a", "b", "c"], "label": "species", "categories": {"species": list(SPECIES)}}
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                path,
                "--weights",
                weights,
                "--data",
                str(tmp_path / "iris.parquet"),
                "--output",
                str(out),
                "--backend",
                "reference",
            ]
        )
        == 0
    )
    assert "probs: a column per class of species: setosa, versicolor, virginica" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "probs_setosa,probs_versicolor,probs_virginica"


def test_new_rows_are_read_as_the_training_data_was(tmp_path, capsys):
    path, weights = trained(tmp_path)
    model = DlcModel(path).load_weights(weights)
    t = iris()
    expected = model.predict(str(tmp_path / "iris.parquet"))["probs"]
    # new rows: columns in another order, a column the model never saw, no label
    shuffled = pa.table({"c": t["c"], "extra": pa.array(np.ones(60, np.float32)), "b": t["b"], "a": t["a"]})
    pq.write_table(shuffled, tmp_path / "new.parquet")
    np.testing.assert_allclose(model.predict(str(tmp_path / "new.parquet"))["probs"], expected, rtol=1e-6)
    # a label of fewer classes, in another order of ids, scores as the trained ids say
    ev = model.evaluate(str(tmp_path / "iris.parquet"), log=lambda s: None)  # the label is the trained one
    assert "in order" not in capsys.readouterr().err and ev == model.evaluate(
        'parquet("iris.parquet", label = "species")', log=lambda s: None
    )
    pq.write_table(
        pa.table(
            {"a": t["a"], "b": t["b"], "c": t["c"], "species": pa.array(t["species"].to_pylist()).dictionary_encode()}
        ),
        tmp_path / "dict.parquet",
    )
    assert model.evaluate('parquet("dict.parquet", label = "species")', log=lambda s: None) == ev
    pq.write_table(t.slice(0, 2).set_column(3, "species", pa.array(["setosa", "rose"])), tmp_path / "rose.parquet")
    with pytest.raises(DlcError, match="column 'species' has 'rose' at row 1 .* not trained on"):
        model.evaluate('parquet("rose.parquet", label = "species")', log=lambda s: None)
    # predict reads no label: a value training never saw is no matter there
    np.testing.assert_allclose(model.predict(str(tmp_path / "rose.parquet"))["probs"], expected[:2], rtol=1e-6)
    pq.write_table(t.drop_columns(["b"]), tmp_path / "nob.parquet")
    with pytest.raises(DlcError, match="x stacks the columns a, b, c, but the data has no column 'b'"):
        model.predict(str(tmp_path / "nob.parquet"))


def test_a_column_no_input_reads_is_neither_kept_nor_checked(tmp_path):
    t = iris()
    pq.write_table(t.append_column("name", pa.array([f"flower {i}" for i in range(60)])), tmp_path / "named.parquet")
    path, weights = trained(tmp_path, 'parquet("named.parquet", label = "species")')
    model = DlcModel(path).load_weights(weights)
    assert set(model.meta["meta"]["categories"]) == {"species"}  # not the 60 names
    pq.write_table(t.append_column("name", pa.array([f"new {i}" for i in range(60)])), tmp_path / "new.parquet")
    np.testing.assert_allclose(
        model.predict(str(tmp_path / "new.parquet"))["probs"],
        model.predict(str(tmp_path / "named.parquet"))["probs"],
        rtol=1e-6,
    )


def test_a_validation_table_is_read_with_the_training_categories(tmp_path):
    t = iris()
    pq.write_table(t.filter(pa.compute.not_equal(t["species"], "setosa")), tmp_path / "val.parquet")
    path, weights = trained(
        tmp_path, 'parquet("iris.parquet", label = "species") validation = parquet("val.parquet", label = "species")'
    )
    model = DlcModel(path).load_weights(tmp_path / "run" / "last.npz")
    # val.parquet alone would number versicolor 0 and virginica 1; read as trained they are 1 and 2
    probs = model.predict(str(tmp_path / "val.parquet"))["probs"]
    ids = np.searchsorted(SPECIES, pq.read_table(tmp_path / "val.parquet")["species"].to_numpy(zero_copy_only=False))
    loss = -np.mean(np.log(probs[np.arange(len(ids)), ids]))
    scored = model.evaluate('parquet("val.parquet", label = "species")', log=lambda s: None)
    assert set(ids) == {1, 2} and scored["loss"] == pytest.approx(loss, rel=1e-4)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["val_loss"] == pytest.approx(loss, rel=1e-4)  # training's validation alike


def test_columns_bind_to_inputs_of_their_names(tmp_path):
    rng = np.random.default_rng(1)
    city = np.array(["oslo", "rome", "lima"])[rng.integers(0, 3, 40)]
    t = pa.table(
        {
            "age": rng.normal(0, 1, 40),
            "rooms": rng.integers(0, 5, 40),
            "city": city,
            "price": rng.normal(0, 1, 40).astype(np.float32),
        }
    )
    pq.write_table(t, tmp_path / "homes.parquet")
    (tmp_path / "m.dl").write_text("""
model reg {
    input  age: f32[B]
    input  rooms: i32[B]
    input  city: i32[B]
    target price: f32[B]
    h = concat([embedding(city, 3, 4), embedding(rooms, 5, 2), reshape(age, B, 1)], axis = 1)
    p = reshape(dense(h, 1), B)
    loss mse(p, price)
}
train reg { data = parquet("homes.parquet", label = "price")  batch = 8  epochs = 2 }
""")
    model = DlcModel(tmp_path / "m.dl")
    arrays = input_arrays(model.train_model, D.load(call("parquet", "homes.parquet", label="price"), tmp_path))
    assert {k: a.dtype for k, a in arrays.items()} == {
        "age": np.float32,
        "rooms": np.int32,
        "city": np.int32,
        "price": np.float32,
    }
    np.testing.assert_array_equal(arrays["rooms"], t["rooms"].to_numpy())
    np.testing.assert_array_equal(np.array(["lima", "oslo", "rome"])[arrays["city"]], city)
    assert main(["train", str(tmp_path / "m.dl"), "--out", str(tmp_path / "run"), "--backend", "reference", "-q"]) == 0


def test_a_category_column_bound_to_a_float_input_is_a_located_error(tmp_path, capsys):
    t = iris()
    pq.write_table(pa.table({"a": t["a"], "b": t["b"], "species": t["species"]}), tmp_path / "t.parquet")
    path = tmp_path / "m.dl"
    path.write_text("""
model reg {
    input  species: f32[B]
    target a: f32[B]
    p = reshape(dense(reshape(species, B, 1), 1), B)
    loss mse(p, a)
}
train reg { data = parquet("t.parquet", columns = ["species"], label = "a") }
""")
    err = failure(["train", str(path), "--out", str(tmp_path / "run"), "--backend", "reference"], capsys)
    assert f"{path}:8:" in err and "species is f32[B] but the data's column 'species' holds categories" in err
    # a table of numbers whose label is not named: the model's y finds no column
    pq.write_table(
        pa.table({"a": t["a"], "b": t["b"], "c": t["c"], "cls": pa.array(np.arange(60) % 3)}), tmp_path / "n.parquet"
    )
    path.write_text(MODEL.replace("DATA", '"n.parquet"'))
    err = failure(["train", str(path), "--out", str(tmp_path / "run"), "--backend", "reference"], capsys)
    assert f"{path}:10:" in err and 'label = "name"' in err


def test_a_damaged_category_list_in_a_checkpoint_is_refused(tmp_path):
    path, weights = trained(tmp_path)
    z = dict(np.load(weights))
    doc = json.loads(z["meta"].tobytes())
    doc["meta"]["categories"] = {"species": [1, 2]}
    z["meta"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(DlcError, match="metadata is damaged \\(meta is"):
        DlcModel(path).load_weights(tmp_path / "bad.npz")
