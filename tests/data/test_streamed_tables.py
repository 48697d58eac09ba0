"""Tables streamed by row group (runtime/data/row_groups.py): every kind of table gives, row for row,
the arrays it gives read whole; Parquet's shuffled epochs take row groups a window at a time; a
streamed run is deterministic on any number of threads and across --resume (and, on an Arrow file,
the very run of the table read whole); other data is read with the trained categories; hostile
tables are errors with their row, found before the first step."""

from __future__ import annotations


import numpy as np
import pytest

import pyarrow as pa  # the optional extra dlc[tables], which dlc[test] installs
import pyarrow.feather
import pyarrow.ipc
import pyarrow.parquet as pq

from dlc import load
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import Call
from dlc.runtime.data import registry as D, row_groups, tables
from dlc.runtime.data.prefetch import Batches
from dlc.runtime.data.row_groups import TableColumn
from dlc.runtime.data.streamed import read_rows

from helpers.programs import CLASSIFIER
from helpers.stopping import StopAt

N = 90


def table(n=N, seed=0) -> pa.Table:
    """Numbers, strings that first appear late, a dictionary, lists of numbers and of strings, a label."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % 3
    return pa.table(
        {
            "a": ids + rng.normal(0, 0.2, n),
            "b": rng.normal(0, 1, n).astype(np.float32),
            "city": np.where(np.arange(n) < 50, "oslo", np.array(["rome", "lima", "kyiv"])[ids]),
            "kind": pa.array(np.array(["u", "w", "v"])[rng.integers(0, 3, n)]).dictionary_encode(),
            "seq": pa.array([list(range(i % 5)) for i in range(n)], pa.list_(pa.int64())),
            "tags": pa.array([["x", "y", "z"][: i % 4] for i in range(n)]),
            "species": np.array(["setosa", "versicolor", "virginica"])[ids],
        }
    )


def write(tmp_path, kind: str, t: pa.Table) -> str:
    """`t` as a table of `kind` in tmp_path, in small row groups (7 to 11 rows): its path."""
    if kind == "parquet":
        pq.write_table(t, tmp_path / "t.parquet", row_group_size=11)
        return "t.parquet"
    if kind in ("parts", "partitioned"):  # partitioned: key=value folders, a column of their own
        for i, lo in enumerate(range(0, len(t), 40)):
            folder = tmp_path / "parts" / (f"shelf={i % 2}" if kind == "partitioned" else "")
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.slice(lo, 40), folder / f"part-{i}.parquet", row_group_size=9)
        return "parts"
    if kind in ("arrow", "compressed"):
        compression = "lz4" if kind == "compressed" else "uncompressed"
        pa.feather.write_feather(t, tmp_path / "t.arrow", chunksize=7, compression=compression)
        return "t.arrow"
    with pa.OSFile(str(tmp_path / "t.stream"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        for batch in t.to_batches(max_chunksize=8):
            w.write_batch(batch)
    return "t.stream"


def read(tmp_path, path, **kwargs):
    return D.load(Call("parquet", [path], {"label": "species"} | kwargs), tmp_path)


@pytest.mark.parametrize("kind", ["parquet", "parts", "partitioned", "arrow", "compressed", "stream"])
def test_a_streamed_table_gives_the_arrays_of_the_whole_table(tmp_path, kind):
    path = write(tmp_path, kind, table())
    whole, streamed = read(tmp_path, path, stream=False), read(tmp_path, path, stream=True)
    assert isinstance(streamed.columns["a"], TableColumn) and not isinstance(whole.columns["a"], TableColumn)
    assert streamed.meta == whole.meta and streamed.stacked == whole.stacked
    assert streamed.meta["categories"]["city"] == ["kyiv", "lima", "oslo", "rome"]  # rome first at row 50
    rows = np.random.default_rng(1).permutation(N)[:40]
    for name, column in whole.columns.items():
        got = read_rows(streamed.columns[name], slice(0, N))
        assert got.dtype == column.dtype and np.array_equal(got, column), name
        assert np.array_equal(read_rows(streamed.columns[name][rows], slice(0, 40)), column[rows]), name
    assert np.array_equal(read_rows(streamed.column("x"), rows), whole.column("x")[rows])


def test_larger_tables_stream_unless_told(tmp_path, monkeypatch):
    path = write(tmp_path, "parquet", table())
    monkeypatch.setattr(tables, "STREAM_ABOVE", 10_000_000)
    assert not isinstance(read(tmp_path, path).columns["a"], TableColumn)
    monkeypatch.setattr(tables, "STREAM_ABOVE", 1_000)  # this table's columns take a few kB decoded
    assert isinstance(read(tmp_path, path).columns["a"], TableColumn)
    assert not isinstance(read(tmp_path, path, stream=False).columns["a"], TableColumn)
    with pytest.raises(DlcError, match="'stream' must be true or false, got 1"):
        read(tmp_path, path, stream=1)


def test_parquet_epochs_take_row_groups_a_window_at_a_time(tmp_path):
    pq.write_table(table(n=400), tmp_path / "t.parquet", row_group_size=10)  # 40 groups
    column = read(tmp_path, "t.parquet", stream=True).columns["a"]
    order = column.shuffled(np.random.default_rng([0, 3]))
    assert sorted(order.tolist()) == list(range(400))
    assert np.array_equal(order, column.shuffled(np.random.default_rng([0, 3])))  # a function of seed and epoch
    assert not np.array_equal(order, column.shuffled(np.random.default_rng([0, 4])))
    groups = order // 10
    for lo in range(0, 400, 10 * row_groups.WINDOW):  # each window's rows come from WINDOW groups
        assert len(set(groups[lo : lo + 10 * row_groups.WINDOW])) == row_groups.WINDOW
    assert len(set(groups[:20])) > 1  # rows of a window mixed among its groups


def test_a_parquet_table_keeps_a_few_decoded_row_groups(tmp_path):
    pq.write_table(table(n=400), tmp_path / "t.parquet", row_group_size=10)
    ds = read(tmp_path, "t.parquet", stream=True)
    column = ds.columns["a"]
    plan = [(column.shuffled(np.random.default_rng(0))[lo : lo + 16], 0) for lo in range(0, 400, 16)]
    for _ in Batches(ds.columns, plan, threads=2):
        assert len(column.table.groups.cache) <= row_groups.CACHED


MODEL = CLASSIFIER + "train clf { data = DATA  batch = 8  epochs = 2 }\n"


def model_file(tmp_path, data: str) -> str:
    path = tmp_path / "m.dl"
    path.write_text(MODEL.replace("DATA", data).replace("epochs = 2", "epochs = 2 optimizer = adam(lr = 0.01)"))
    return str(path)


def same(a, b):
    assert a.params.keys() == b.params.keys()
    for name, value in a.params.items():
        assert np.array_equal(value, b.params[name]), name


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_a_streamed_run_resumed_equals_an_uninterrupted_one_on_any_threads(tmp_path, kind):
    path = write(tmp_path, kind, table().select(["a", "b", "species"]))
    m = model_file(tmp_path, f'parquet("{path}", label = "species", stream = true) validation = split(0.2)')
    whole = load(m, backend="reference").train(out=tmp_path / "whole", progress="none", data_threads=2)
    first = load(m, backend="reference").train(
        out=tmp_path / "parts", progress="none", data_threads=1, callbacks=[StopAt(12)]
    )
    assert first.stopped == "stopped" and len(first.history) == 1  # 9 batches an epoch: inside the second
    rest = load(m, backend="reference").train(out=tmp_path / "parts", resume=True, progress="none", data_threads=2)
    same(whole, rest)
    assert [r["val_loss"] for r in whole.history] == [r["val_loss"] for r in rest.history]


def test_a_streamed_arrow_file_trains_as_the_table_read_whole(tmp_path):
    path = write(tmp_path, "arrow", table().select(["a", "b", "species"]))
    runs = [
        load(model_file(tmp_path, f'parquet("{path}", label = "species", stream = {s})'), backend="reference").train(
            out=tmp_path / s, progress="none"
        )
        for s in ("true", "false")
    ]
    same(*runs)  # a permutation of every row, as the table in memory is shuffled


def test_validation_and_new_rows_are_read_with_the_trained_categories(tmp_path):
    t = table().select(["a", "city", "species"])
    pq.write_table(t, tmp_path / "train.parquet", row_group_size=11)
    later = t.filter(pa.compute.not_equal(t["city"], "kyiv"))  # lima numbered 0 alone, 1 as trained
    pq.write_table(later, tmp_path / "val.parquet", row_group_size=11)
    text = CLASSIFIER.replace("input  x: f32[B, 2]", "input  a: f32[B]\n    input  city: i32[B]").replace(
        "dense(x, 16, tanh)", "dense(concat([reshape(a, B, 1), embedding(city, 4, 3)], axis = 1), 16, tanh)"
    )
    path = tmp_path / "m.dl"
    data = 'parquet("train.parquet", label = "species", stream = true)'
    val = 'parquet("val.parquet", label = "species", stream = true)'
    path.write_text(text + f"train clf {{ data = {data} validation = {val} batch = 8 epochs = 1 }}\n")
    run = load(str(path), backend="reference").train(out=tmp_path / "run", progress="none")
    whole = load(str(path), backend="reference")
    scored = whole.load_weights(tmp_path / "run" / "last.npz").evaluate(
        val.replace("true", "false"), log=lambda s: None
    )
    assert run.history[-1]["val_loss"] == pytest.approx(scored["loss"], rel=1e-5)
    unseen = t.set_column(1, "city", pa.array(["paris"] * N))
    pq.write_table(unseen, tmp_path / "unseen.parquet")
    with pytest.raises(DlcError, match="column 'city' has 'paris', a category the model was not trained on"):
        whole.evaluate('parquet("unseen.parquet", label = "species", stream = true)', log=lambda s: None)


def test_hostile_tables_are_found_before_the_first_step_with_their_row(tmp_path):
    t = table()
    a = t["a"].to_numpy().copy()
    a[73] = np.nan
    pq.write_table(t.set_column(0, "a", pa.array(a)), tmp_path / "nan.parquet", row_group_size=11)
    with pytest.raises(DlcError, match=r"column 'a' holds a value that is not a finite float32 number at index \[73\]"):
        read(tmp_path, "nan.parquet", stream=True)
    nulls = t.set_column(2, "city", pa.array([None if i == 61 else "oslo" for i in range(N)]))
    pq.write_table(nulls, tmp_path / "null.parquet", row_group_size=11)
    with pytest.raises(DlcError, match=r"column 'city' has a null at row 61 \(from 0\)"):
        read(tmp_path, "null.parquet", stream=True)
    inside = t.set_column(4, "seq", pa.array([[1, None] if i == 40 else [1] for i in range(N)]))
    pq.write_table(inside, tmp_path / "inside.parquet", row_group_size=11)
    with pytest.raises(DlcError, match=r"column 'seq' has a null inside its list at row 40"):
        read(tmp_path, "inside.parquet", stream=True)
    with pa.OSFile(str(tmp_path / "z.stream"), "wb") as sink:
        with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
            w.write_table(t)
    with pytest.raises(DlcError, match="is a compressed Arrow stream, which is not read by row group"):
        read(tmp_path, "z.stream", stream=True)
    assert len(read(tmp_path, "z.stream")) == N  # read whole, as a small table is
    (tmp_path / "empty.arrow").write_bytes(b"")
    with pytest.raises(DlcError, match="is not a Parquet or Arrow table that pyarrow reads"):
        read(tmp_path, "empty.arrow", stream=True)
