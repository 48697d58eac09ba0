"""Data loading (`dlc.runtime.data`): every source, loading files by extension, meta and
shapes, determinism, splits, augmentation, and a clear DlcError for every bad input: data that is
not real numbers or not finite, integer labels beyond int32, an empty split."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.data import files, images, registry as D
from dlc.runtime.data.augment import augment
from dlc.runtime.data.dataset import Dataset
from dlc.runtime.data.text import decode, encode
from dlc.compiler.frontend.settings import Call, Symbol
from dlc.runtime.api import DlcModel
from dlc.runtime.training.gradcheck import init_params

from helpers.cli import failure, flag_error
from helpers.programs import CLASSIFIER, XOR, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def call(name, *args, **kwargs):
    return Call(name, list(args), kwargs, Span("train.dl", 3, 17))


def err(spec, base_dir, *patterns) -> DlcError:
    """load(spec) must fail with a DlcError whose one-line message contains every pattern."""
    with pytest.raises(DlcError) as info:
        D.load(spec, base_dir)
    e = info.value
    assert "\n" not in e.message, e.message
    for p in patterns:
        assert p in e.message, f"{p!r} not in {e.message!r}"
    return e


# ---- fixtures written on the fly --------------------------------------------------------------------
def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + np.ascontiguousarray(a, dtype=dtype).tobytes()


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 10, dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return tmp_path, images, labels


# ---- the Dataset -----------------------------------------------------------------------------------
def test_dataset_take_and_len():
    ds = Dataset({"x": np.arange(10).reshape(5, 2), "y": np.arange(5)}, {"k": 1})
    assert len(ds) == 5 and ds.names == ["x", "y"]
    sub = ds.take(np.array([4, 0]))
    assert sub.columns["y"].tolist() == [4, 0] and sub.columns["x"].tolist() == [[8, 9], [0, 1]]
    assert sub.meta == {"k": 1} and sub.meta is not ds.meta
    assert len(ds.take(ds.columns["y"] % 2 == 0)) == 3
    assert "5 examples" in repr(ds)


def test_dataset_columns_must_align():
    with pytest.raises(DlcError, match="different numbers of examples"):
        Dataset({"x": np.zeros((3, 2)), "y": np.zeros(4)}, {})


@pytest.mark.parametrize("n,fraction,held", [(100, 0.1, 10), (7, 0.5, 4), (10, 0.0, 0), (10, 1.0, 10), (3, 0.2, 1)])
def test_split_sizes_and_disjoint(n, fraction, held):
    ds = Dataset({"i": np.arange(n)}, {"m": 2})
    rest, out = ds.split(fraction, seed=3)
    assert len(out) == held and len(rest) == n - held
    a, b = rest.columns["i"], out.columns["i"]
    assert not set(a) & set(b) and sorted(np.concatenate([a, b]).tolist()) == list(range(n))
    assert rest.meta == {"m": 2} and out.meta == {"m": 2}


def test_split_is_deterministic_and_shuffled():
    ds = Dataset({"i": np.arange(1000)}, {})
    r1, o1 = ds.split(0.2, seed=7)
    r2, o2 = ds.split(0.2, seed=7)
    r3, o3 = ds.split(0.2, seed=8)
    assert np.array_equal(o1.columns["i"], o2.columns["i"]) and np.array_equal(r1.columns["i"], r2.columns["i"])
    assert not np.array_equal(o1.columns["i"], o3.columns["i"])
    assert not np.array_equal(np.sort(o1.columns["i"]), np.arange(800, 1000))  # not just the tail


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "a", True])
def test_split_bad_fraction(fraction):
    with pytest.raises(DlcError, match="between 0 and 1"):
        Dataset({"i": np.arange(4)}, {}).split(fraction, seed=0)


# ---- npz -------------------------------------------------------------------------------------------
def test_npz_every_array_in_file_order(tmp_path):
    x, tags, w = np.ones((6, 3), np.float32), np.arange(6, dtype=np.int32), np.zeros((6, 2, 2))
    np.savez(tmp_path / "d.npz", words=x, tags=tags, z=w)
    ds = D.load(call("npz", "d.npz"), tmp_path)
    assert ds.names == ["words", "tags", "z"]
    assert ds.columns["tags"].dtype == np.int32 and np.array_equal(ds.columns["words"], x)
    np.savez_compressed(tmp_path / "c.npz", b=np.arange(3), a=np.arange(3.0))
    assert D.load("c.npz", tmp_path).names == ["b", "a"]  # by extension
    assert len(D.load(str(tmp_path / "c.npz"), Path("/nonexistent"))) == 3  # absolute path


def test_npz_bad_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive at all")
    err(call("npz", "junk.npz"), tmp_path, "junk.npz", "not a valid .npz")
    np.savez(tmp_path / "good.npz", a=np.arange(1000))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    err(call("npz", "cut.npz"), tmp_path, "cut.npz")
    np.save(tmp_path / "single.npy", np.arange(3))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    err(call("npz", "single.npz"), tmp_path, "not an .npz archive")
    np.savez(tmp_path / "obj.npz", a=np.array([{"k": 1}, None], dtype=object))
    err(call("npz", "obj.npz"), tmp_path, "'a'", "Python objects")
    np.savez(tmp_path / "ragged.npz", x=np.zeros((3, 2)), y=np.zeros(5))
    err(call("npz", "ragged.npz"), tmp_path, "different numbers of examples", "'x' has 3", "'y' has 5")
    np.savez(tmp_path / "scalar.npz", x=np.float32(1.0))
    err(call("npz", "scalar.npz"), tmp_path, "single value")
    np.savez(tmp_path / "empty.npz")
    err(call("npz", "empty.npz"), tmp_path, "holds no arrays")


# ---- csv -------------------------------------------------------------------------------------------
def test_csv_label_header_scale(tmp_path):
    (tmp_path / "a.csv").write_text("f1,f2,cls\n1,2,0\n3,4,1\n5,6,1\n")
    ds = D.load(call("csv", "a.csv", scale=0.5), tmp_path)
    assert ds.names == ["x", "y"]
    assert ds.columns["x"].dtype == np.float32 and ds.columns["x"].tolist() == [[0.5, 1], [1.5, 2], [2.5, 3]]
    assert ds.columns["y"].dtype == np.int32 and ds.columns["y"].tolist() == [0, 1, 1]
    assert ds.meta["label"] == "cls" and ds.meta["features"] == ["f1", "f2"]
    first = D.load(call("csv", "a.csv", label=0), tmp_path)
    assert first.columns["y"].tolist() == [1, 3, 5] and first.columns["x"].tolist() == [[2, 0], [4, 1], [6, 1]]
    nolabel = D.load(call("csv", "a.csv", label=None), tmp_path)
    assert nolabel.names == ["x"] and nolabel.columns["x"].shape == (3, 3)


def test_csv_float_labels_no_header_gzip(tmp_path):
    with gzip.open(tmp_path / "r.csv.gz", "wt") as f:
        f.write("1.5,2,0.25\n3,4,-1.5\n")
    ds = D.load("r.csv.gz", tmp_path)  # by extension, gzipped
    assert ds.columns["y"].dtype == np.float32 and ds.columns["y"].tolist() == [0.25, -1.5]
    assert ds.columns["x"].tolist() == [[1.5, 2], [3, 4]]
    (tmp_path / "h.csv").write_text("1,2\n3,4\n")
    forced = D.load(call("csv", "h.csv", header=True), tmp_path)
    assert len(forced) == 1
    assert len(D.load(call("csv", "h.csv", header=Symbol("auto")), tmp_path)) == 2


def test_csv_bad_files(tmp_path):
    (tmp_path / "words.csv").write_text("a,b\n1,2\n3,oops\n")
    err(call("csv", "words.csv"), tmp_path, "line 3, column 2", "'oops' is not a number")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    err(call("csv", "ragged.csv"), tmp_path, "line 2", "expected 3 values, found 2")
    (tmp_path / "empty.csv").write_text("\n\n")
    err(call("csv", "empty.csv"), tmp_path, "empty")
    (tmp_path / "only_header.csv").write_text("a,b\n")
    err(call("csv", "only_header.csv"), tmp_path, "no rows")
    (tmp_path / "one.csv").write_text("1\n2\n")
    err(call("csv", "one.csv"), tmp_path, "single column")
    (tmp_path / "ok.csv").write_text("1,2\n3,4\n")
    err(call("csv", "ok.csv", label=5), tmp_path, "label column 5 is out of range", "2 columns")
    err(call("csv", "ok.csv", header="maybe"), tmp_path, "'header' must be one of auto, true, false")
    (tmp_path / "fake.csv.gz").write_text("1,2\n")
    err(call("csv", "fake.csv.gz"), tmp_path, "not a gzip file")
    (tmp_path / "nan.csv").write_text("1,2\nnan,4\n")
    err(call("csv", "nan.csv"), tmp_path, "line 2, column 1", "not a finite number")
    (tmp_path / "huge.csv").write_text("1,2\n1e300,4\n")
    err(call("csv", "huge.csv"), tmp_path, "not a finite float32 number")


# ---- idx -------------------------------------------------------------------------------------------
def test_idx_images_and_labels(mnist):
    d, images, labels = mnist
    ds = D.load(call("idx", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", scale=1 / 255), d)
    assert ds.names == ["x", "y"]
    assert ds.columns["x"].dtype == np.float32 and ds.columns["x"].shape == (10, 28, 28)
    assert np.allclose(ds.columns["x"], images / 255) and ds.columns["x"].max() <= 1
    assert ds.columns["y"].dtype == np.int32 and np.array_equal(ds.columns["y"], labels)
    alone = D.load("train-images-idx3-ubyte", d)  # by extension: no labels
    assert alone.names == ["x"] and alone.columns["x"].max() > 1


def test_idx_gzip_and_types(tmp_path):
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 5
    (tmp_path / "s.idx3-short.gz").write_bytes(gzip.compress(idx_bytes(a, 0x0B)))
    (tmp_path / "lab.idx1.gz").write_bytes(gzip.compress(idx_bytes(np.array([7, 3]), 0x0C)))
    ds = D.load(call("idx", "s.idx3-short.gz", "lab.idx1.gz"), tmp_path)
    assert np.array_equal(ds.columns["x"], a) and ds.columns["y"].tolist() == [7, 3]
    for code, dtype in [(0x09, np.int8), (0x0D, np.float32), (0x0E, np.float64)]:
        v = (np.arange(6).reshape(3, 2) - 2).astype(dtype) / (1 if code == 0x09 else 4)
        (tmp_path / "t.idx").write_bytes(idx_bytes(v, code))
        assert np.allclose(D.load("t.idx", tmp_path).columns["x"], v)
    # the .dl file may name the unzipped file while only the .gz is present
    (tmp_path / "g-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((2, 2, 2), np.uint8))))
    assert len(D.load(call("idx", "g-images-idx3-ubyte"), tmp_path)) == 2


def test_idx_bad_files(mnist, tmp_path):
    d, images, labels = mnist
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw[:-100])
    err(call("idx", "cut-idx3-ubyte"), tmp_path, "truncated", "28x28", "found")
    (tmp_path / "head-idx3-ubyte").write_bytes(raw[:9])
    err(call("idx", "head-idx3-ubyte"), tmp_path, "truncated")
    (tmp_path / "magic-idx3-ubyte").write_bytes(b"\x12\x34" + raw[2:])
    err(call("idx", "magic-idx3-ubyte"), tmp_path, "bad magic number", "0x1234")
    (tmp_path / "type-idx3-ubyte").write_bytes(b"\x00\x00\x07\x03" + raw[4:])
    err(call("idx", "type-idx3-ubyte"), tmp_path, "bad magic number")
    (tmp_path / "long-idx3-ubyte").write_bytes(raw + b"\x00\x00")
    err(call("idx", "long-idx3-ubyte"), tmp_path, "2 bytes follow")
    (tmp_path / "tiny-idx1-ubyte").write_bytes(b"\x00")
    err(call("idx", "tiny-idx1-ubyte"), tmp_path, "only 1 bytes")
    (tmp_path / "bad.idx3.gz").write_bytes(gzip.compress(raw)[:50])
    err(call("idx", "bad.idx3.gz"), tmp_path, "corrupt or truncated gzip")
    (tmp_path / "few-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:7]))
    err(call("idx", str(d / "train-images-idx3-ubyte"), "few-labels-idx1-ubyte"), tmp_path, "10 images but", "7 labels")
    err(call("idx", "train-images-idx3-ubyte", "train-images-idx3-ubyte"), d, "one label per example")
    (tmp_path / "nan.idx2").write_bytes(idx_bytes(np.array([[1.0, np.nan]]), 0x0E))
    err(call("idx", "nan.idx2"), tmp_path, "not a finite float32 number", "[0, 1]")


# ---- text ------------------------------------------------------------------------------------------
def test_text_windows_and_vocab(tmp_path):
    (tmp_path / "t.txt").write_text("hello world\nhello dlc\n")
    s = "hello world\nhello dlc\n"
    ds = D.load(call("text", "t.txt", seq=5), tmp_path)
    vocab = "".join(sorted(set(s)))
    assert ds.meta["vocab"] == vocab and ds.meta["vocab_size"] == len(vocab)
    n = (len(s) - 1) // 5
    assert ds.columns["x"].shape == (n, 5) == ds.columns["y"].shape and ds.columns["x"].dtype == np.int32
    assert decode(ds.columns["x"][0], vocab) == "hello" and decode(ds.columns["y"][0], vocab) == "ello "
    assert decode(ds.columns["x"], vocab) == s[: n * 5]
    assert np.array_equal(ds.columns["x"][:, 1:], ds.columns["y"][:, :-1])
    err("t.txt", tmp_path, "seq = 100 is too long")  # by extension: the default seq
    (tmp_path / "long.txt").write_text(s * 10)
    assert D.load("long.txt", tmp_path).columns["x"].shape == ((len(s) * 10 - 1) // 100, 100)


def test_text_lines(tmp_path):
    """lines = true: one example per line, padded (x with 0, y with -1), and its lengths."""
    (tmp_path / "t.txt").write_text("hello\n\nab\nxyz")  # an empty line; the last has no line break
    ds = D.load(call("text", "t.txt", seq=4, lines=True), tmp_path)
    vocab = ds.meta["vocab"]
    assert ds.names == ["x", "y", "lengths"] and ds.columns["lengths"].tolist() == [4, 2]
    assert decode(ds.columns["x"][0], vocab) == "hell" and decode(ds.columns["y"][0], vocab) == "ello"
    assert decode(ds.columns["x"][1, :2], vocab) == "ab" and decode(ds.columns["y"][1, :2], vocab) == "b\n"
    assert ds.columns["x"][1, 2:].tolist() == [0, 0] and ds.columns["y"][1, 2:].tolist() == [-1, -1]
    (tmp_path / "one.txt").write_text("no line break")
    err(call("text", "one.txt", lines=True), tmp_path, "lines = true needs lines that end with a line break")


def test_skipgram_pairs_negatives_and_vocabulary(tmp_path):
    (tmp_path / "t.txt").write_text("The cat sat. The cat ran! A dog sat, the end.")
    ds = D.load(call("skipgram", "t.txt", words=4, window=2, negatives=3, subsample=0), tmp_path)
    words = ds.meta["vocab_words"]
    assert words == ["the", "cat", "sat", "a"]  # by count, ties alphabetical; the rest dropped
    kept = [words.index(w) for w in "the cat sat the cat a sat the".split()]
    pairs = {(kept[i], kept[j]) for i in range(len(kept)) for j in range(len(kept)) if 0 < abs(i - j) <= 2}
    center, context = ds.columns["center"], ds.columns["context"]
    assert len(center) == 2 * (len(kept) - 1) + 2 * (len(kept) - 2)  # every pair, both ways
    assert set(zip(center.tolist(), context.tolist())) == pairs
    negatives = ds.columns["negatives"]
    assert negatives.shape == (len(center), 3) and negatives.dtype == np.int32
    assert negatives.min() >= 0 and negatives.max() < 4
    again = D.load(call("skipgram", "t.txt", words=4, window=2, negatives=3, subsample=0), tmp_path)
    assert np.array_equal(again.columns["negatives"], negatives)  # seeded: the same every run
    err(call("skipgram", "t.txt", window=20, subsample=0), tmp_path, "needs more than window = 20")
    err(call("skipgram", "t.txt", words=1), tmp_path, "'words' must be at least 2")


def test_skipgram_negatives_follow_the_unigram_distribution_to_the_power_three_quarters(tmp_path):
    (tmp_path / "t.txt").write_text("a " * 800 + "b " * 100 + "c " * 100)
    ds = D.load(call("skipgram", "t.txt", negatives=20, subsample=0), tmp_path)
    share = np.bincount(ds.columns["negatives"].ravel(), minlength=3) / ds.columns["negatives"].size
    expected = np.array([800, 100, 100]) ** 0.75
    assert np.allclose(share, expected / expected.sum(), atol=0.01)


def test_text_given_vocab_and_errors(tmp_path):
    (tmp_path / "t.txt").write_text("abcab")
    ds = D.load(call("text", "t.txt", seq=2, vocab="cba"), tmp_path)
    assert ds.meta["vocab"] == "cba" and ds.columns["x"].tolist() == [[2, 1], [0, 2]]
    err(call("text", "t.txt", seq=2, vocab="ab"), tmp_path, "'c'", "not in the vocabulary")
    err(call("text", "t.txt", seq=2, vocab="abca"), tmp_path, "repeats")
    err(call("text", "t.txt", seq=5), tmp_path, "seq = 5 is too long", "5 characters")
    err(call("text", "t.txt", seq=0), tmp_path, "'seq' must be at least 1")
    (tmp_path / "e.txt").write_text("")
    err(call("text", "e.txt"), tmp_path, "empty")
    (tmp_path / "bin.txt").write_bytes(b"ab\xff\xfe")
    err(call("text", "bin.txt", seq=1), tmp_path, "not UTF-8")


def test_genesis(tmp_path):
    ds = D.load(call("text", "data/genesis.txt", seq=100), EXAMPLES)
    assert ds.columns["x"].shape[1] == 100 and len(ds) > 1000
    assert decode(ds.columns["x"][0], ds.meta["vocab"]).startswith("In the beginning God created")


def test_encode_decode_round_trip():
    vocab = "\n !,.abcdeéz"
    s = "abc, déz.\n a!"
    ids = encode(s, vocab)
    assert ids.dtype == np.int32 and ids.tolist()[:3] == [5, 6, 7]
    assert decode(ids, vocab) == s and decode(ids.tolist(), vocab) == s
    assert decode(np.array([], np.int32), vocab) == "" and encode("", vocab).shape == (0,)
    with pytest.raises(DlcError, match=r"'q' \(line 2\) is not in the vocabulary"):
        encode("ab\nq", vocab)
    with pytest.raises(DlcError, match="outside the vocabulary"):
        decode([0, 12], vocab)


# ---- digits ----------------------------------------------------------------------------------------
def test_digits(tmp_path):
    ds = D.load(call("digits"), tmp_path)
    x, y = ds.columns["x"], ds.columns["y"]
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
    assert y.shape == (1797,) and y.dtype == np.int32 and sorted(set(y.tolist())) == list(range(10))
    flat = D.load(call("digits", scale=1, image=False), tmp_path)
    assert flat.columns["x"].shape == (1797, 64) and flat.columns["x"].max() == 16
    assert np.array_equal(flat.columns["x"].reshape(-1, 1, 8, 8) / 16, x)
    assert D.load(Symbol("digits"), tmp_path).names == ["x", "y"]  # `data = digits`
    err(call("digits", image="yes"), tmp_path, "'image' must be true or false")


def test_digits_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "digits_path", lambda: tmp_path / "nope" / "digits.csv.gz")
    err(call("digits"), tmp_path, "digits data set is missing", "nope")


# ---- synthetic -------------------------------------------------------------------------------------
def test_xor():
    ds = D.load(call("xor"), Path("."))
    assert ds.columns["x"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and ds.columns["y"].tolist() == [
        [0],
        [1],
        [1],
        [0],
    ]
    assert ds.columns["x"].dtype == np.float32 == ds.columns["y"].dtype
    big = D.load(call("xor", repeat=3), Path("."))
    assert big.columns["x"].shape == (12, 2) and big.columns["y"].shape == (12, 1)
    err(call("xor", seed=1), Path("."), "xor has no option 'seed'", "it takes: repeat")


def test_spirals_and_blobs():
    sp = D.load(call("spirals", n=301, classes=4), Path("."))
    assert sp.columns["x"].shape == (301, 2) and sp.columns["x"].dtype == np.float32
    assert sp.columns["y"].dtype == np.int32 and np.bincount(sp.columns["y"]).tolist() == [76, 75, 75, 75]
    assert np.abs(sp.columns["x"]).max() <= 1.0
    bl = D.load(call("blobs", n=100, centers=3, std=0.5), Path("."))
    assert bl.columns["x"].shape == (100, 2) and bl.columns["y"].dtype == np.int32
    assert set(bl.columns["y"].tolist()) == {0, 1, 2} and bl.meta["classes"] == 3
    sign = D.load(call("blobs", n=200, labels="sign"), Path("."))  # the perceptron's data
    y, x = sign.columns["y"], sign.columns["x"]
    assert y.dtype == np.float32 and y.shape == (200,) and set(y.tolist()) == {-1.0, 1.0}
    c = np.array(sign.meta["centers"])
    w = c[1] - c[0]  # separable along the centers' axis
    assert np.mean(np.sign((x - c.mean(0)) @ w) == y) > 0.99
    assert D.load(call("blobs", labels=Symbol("sign")), Path(".")).columns["y"].dtype == np.float32
    err(call("blobs", centers=3, labels="sign"), Path("."), "needs centers = 2")
    err(call("blobs", labels="onehot"), Path("."), "'labels' must be one of index, sign")


def test_sine():
    ds = D.load(call("sine", window=30, n=500, noise=0.05), Path("."))
    x, y = ds.columns["x"], ds.columns["y"]
    assert x.shape == (500, 30, 1) and y.shape == (500, 1) and x.dtype == np.float32 == y.dtype
    assert np.array_equal(x[1:, -1, 0], y[:-1, 0])  # windows slide by one; y is the next value
    clean = D.load(call("sine", window=10, n=200, frequencies=3), Path("."))
    assert np.abs(clean.columns["x"]).max() <= 1.0 + 1e-6 and len(clean.meta["periods"]) == 3


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_seq2seq_tasks(task):
    ds = D.load(call(task, min_len=3, max_len=6, symbols=5, n=200), Path("."))
    assert ds.names == ["src", "dec_in", "dec_out", "src_lengths"]
    assert ds.meta == {"pad": 0, "bos": 1, "eos": 2, "vocab_size": 8, "max_len": 6, "task": task}
    src, dec_in, dec_out = ds.columns["src"], ds.columns["dec_in"], ds.columns["dec_out"]
    assert src.shape == (200, 6) and dec_in.shape == dec_out.shape == (200, 7)
    assert all(a.dtype == np.int32 for a in (src, dec_in, dec_out))
    assert set(range(3, 8)) == set(src[src > 0].tolist())
    lengths = (src > 0).sum(1)
    assert lengths.min() == 3 and lengths.max() == 6
    assert ds.columns["src_lengths"].dtype == np.int32 and np.array_equal(ds.columns["src_lengths"], lengths)
    for s, di, do, n in zip(src, dec_in, dec_out, lengths):
        seq = s[:n].tolist()
        assert s[n:].tolist() == [0] * (6 - n) and 0 not in seq
        want = {"copy": seq, "reverse": seq[::-1], "sort": sorted(seq)}[task]
        assert di.tolist() == [1] + want + [0] * (6 - n)
        assert do.tolist() == want + [2] + [0] * (6 - n)


def test_examples_seq2seq_setting():
    ds = D.load(call("reverse", min_len=8, max_len=12, symbols=11, n=20000), Path("."))
    assert ds.meta["vocab_size"] == 14 and len(ds) == 20000 and ds.columns["src"].max() == 13


SEEDED = [
    call("spirals"),
    call("blobs"),
    call("sine", noise=0.1, frequencies=2),
    call("copy", n=50),
    call("reverse", n=50),
    call("sort", n=50),
]


@pytest.mark.parametrize("spec", SEEDED, ids=lambda c: c.name)
def test_synthetic_determinism(spec):
    a, b = D.load(spec, Path(".")), D.load(spec, Path("."))
    other = D.load(Call(spec.name, [], {**spec.kwargs, "seed": 5}), Path("."))
    assert a.names == b.names and all(np.array_equal(a.columns[k], b.columns[k]) for k in a.names)
    assert any(not np.array_equal(a.columns[k], other.columns[k]) for k in a.names)


# ---- augmentation ----------------------------------------------------------------------------------
def test_augment_shift_flip_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 1.0, (64, 3, 8, 8)).astype(np.float32)
    same = augment(x, np.random.default_rng(1))
    assert same is not x and np.array_equal(same, x)
    shifted = augment(x, np.random.default_rng(1), shift=2)
    assert shifted.shape == x.shape and shifted.dtype == np.float32
    assert shifted.min() >= 0 and shifted.max() <= x.max()
    assert (shifted == 0).any() and not np.array_equal(shifted, x)
    # every shifted image is its original moved by at most 2 pixels, zero filled
    for a, b in zip(x[:8], shifted[:8]):
        assert any(np.array_equal(b, _moved(a, dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3))
    flipped = augment(x, np.random.default_rng(2), flip=True)
    is_flip = [np.array_equal(f, o[..., ::-1]) for f, o in zip(flipped, x)]
    is_same = [np.array_equal(f, o) for f, o in zip(flipped, x)]
    assert all(p or q for p, q in zip(is_flip, is_same)) and 10 < sum(is_flip) < 54
    noisy = augment(x, np.random.default_rng(3), noise=0.1)
    assert 0.08 < float(np.std(noisy - x)) < 0.12
    grey = augment(np.ones((5, 6, 6), np.uint8), rng, shift=1, flip=True)
    assert grey.shape == (5, 6, 6) and set(np.unique(grey).tolist()) <= {0, 1}
    a1 = augment(x, np.random.default_rng(9), shift=1, flip=True, noise=0.01)
    a2 = augment(x, np.random.default_rng(9), shift=1, flip=True, noise=0.01)
    assert np.array_equal(a1, a2)


def _moved(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_augment_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(DlcError, match="expected images"):
        augment(np.zeros((4, 8)), rng)
    with pytest.raises(DlcError, match="'shift' must be at least 0"):
        augment(np.zeros((4, 8, 8)), rng, shift=-1)
    with pytest.raises(DlcError, match="not smaller than"):
        augment(np.zeros((4, 8, 8)), rng, shift=8)
    with pytest.raises(DlcError, match="'noise' must be at least 0"):
        augment(np.zeros((4, 8, 8)), rng, noise=-0.5)


# ---- paths and bad specs ---------------------------------------------------------------------------
def test_paths_resolve_against_base_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", a=np.arange(2))
    assert len(D.load("sub/d.npz", tmp_path)) == 2
    assert len(D.load(call("npz", "d.npz"), tmp_path / "sub")) == 2


def test_missing_file_and_unknown_format(tmp_path):
    e = err(call("npz", "nope.npz"), tmp_path, "data file not found", "nope.npz")
    assert e.span == Span("train.dl", 3, 17)  # located at the call
    e = err("nope.csv", tmp_path, "data file not found")
    assert e.span is None
    with pytest.raises(DlcError) as info:
        D.load("nope.csv", tmp_path, span=Span("t.dl", 5, 9))  # a plain file name: the setting's place
    assert info.value.span == Span("t.dl", 5, 9)
    err(call("idx", "img-idx3-ubyte", "lab-idx1-ubyte"), tmp_path, "not found", "img-idx3-ubyte")
    (tmp_path / "d.bin").write_bytes(b"\0")
    err("d.bin", tmp_path, "cannot tell the format", ".npz", ".csv")
    (tmp_path / "dir.npz").mkdir()
    err("dir.npz", tmp_path, "not a file")


def test_unknown_source_and_bad_spec(tmp_path):
    e = err(call("imagenet"), tmp_path, "unknown data source 'imagenet'", "digits", "reverse", "npz", "mnist")
    assert e.span is not None
    err(call("split", 0.1), tmp_path, "unknown data source 'split'", "validation = split(0.1)")
    err(Symbol("train_set"), tmp_path, "data must be a file name", "train_set")
    err(3, tmp_path, "data must be a file name")
    assert set(D.SOURCES) >= {
        "npz",
        "csv",
        "idx",
        "digits",
        "text",
        "xor",
        "spirals",
        "blobs",
        "sine",
        "copy",
        "reverse",
        "sort",
    }


@pytest.mark.parametrize(
    "spec,patterns",
    [
        (call("reverse", n=-5), ["reverse", "'n' must be at least 1", "-5"]),
        (call("copy", min_len=12, max_len=8), ["min_len (12) must not exceed max_len (8)"]),
        (call("sort", min_len=0), ["'min_len' must be at least 1"]),
        (call("sort", symbols=2.5), ["'symbols' must be an integer", "2.5"]),
        (call("spirals", n="many"), ["'n' must be an integer", "'many'"]),
        (call("spirals", classes=1), ["'classes' must be at least 2"]),
        (call("blobs", std=-1), ["'std' must be at least 0"]),
        (call("sine", window=0), ["'window' must be at least 1"]),
        (call("sine", noise=Symbol("loud")), ["'noise' must be a number, got loud"]),
        (call("xor", repeat=True), ["'repeat' must be an integer, got true"]),
        (call("spirals", seed=-1), ["'seed' must be at least 0"]),
        (call("reverse", 1, 2, 3, 4, 5, 6), ["reverse takes at most 5 arguments"]),
        (call("reverse", lenght=3), ["reverse has no option 'lenght'", "min_len, max_len"]),
        (call("npz"), ["npz needs 'path'"]),
        (call("npz", "a.npz", path="b.npz"), ["'path' is given twice"]),
        (call("npz", Symbol("train")), ["'path' must be a file name in quotes, got train"]),
        (call("idx", "a", scale="big"), ["'scale' must be a number"]),
    ],
)
def test_bad_arguments(spec, patterns, tmp_path):
    (tmp_path / "a").write_bytes(idx_bytes(np.zeros((1, 2), np.uint8)))
    e = err(spec, tmp_path, *patterns)
    assert e.span == Span("train.dl", 3, 17)


def test_integral_floats_accepted():
    assert len(D.load(call("reverse", n=1e2), Path("."))) == 100  # `n = 1e2` evaluates to 100.0


# ---- data files that are not data ----------------------------------------------------------------
def test_an_npz_of_strings_is_refused(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array([["1", "2"]] * 4), y=np.zeros((4, 1), np.float32))
    with pytest.raises(DlcError, match=r"column 'x' holds strings \(<U1\), not numbers"):
        D.load("s.npz", tmp_path)


def test_a_zip_member_that_is_not_an_array_is_refused(tmp_path):
    array = io.BytesIO()
    np.save(array, np.zeros((4, 2), np.float32))
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("x.npy", array.getvalue())
        z.writestr("notes.txt", "hello")
    with pytest.raises(DlcError, match=r"'notes.txt' of .*z.npz is not an .npy array"):
        D.load("z.npz", tmp_path)


def test_an_idx_header_with_255_dims_is_refused(tmp_path):
    (tmp_path / "big-idx3-ubyte").write_bytes(bytes([0, 0, 8, 255]) + b"\0" * 4 * 255)
    with pytest.raises(DlcError, match="255 dimensions"):
        D.load("big-idx3-ubyte", tmp_path)


def test_idx_labels_beyond_32_bit_integers_do_not_wrap(tmp_path):
    (tmp_path / "img-idx3-ubyte").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">II", 4, 2) + bytes(8))
    (tmp_path / "lab-idx1-ubyte").write_bytes(
        bytes([0, 0, 0x0E, 1]) + struct.pack(">I", 4) + struct.pack(">4d", *[2.0**32 + 3] * 4)
    )
    y = files.idx(tmp_path, "img-idx3-ubyte", "lab-idx1-ubyte").columns["y"]
    assert y.dtype == np.float32 and y[0] == np.float32(2.0**32 + 3)


# ---- coercions that lose information: refused, in the command and in the API -----------------------
@pytest.mark.parametrize(
    "x, phrase",
    [
        (np.zeros((4, 2), np.complex64) + 1j, "complex"),
        (np.array([["1", "2"]] * 4), "strings"),
    ],
)
def test_data_that_is_not_real_numbers_is_refused(tmp_path, capsys, x, phrase):
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros((4, 1), np.float32))
    path = write(tmp_path, XOR)
    err = flag_error(
        ["train", path, "--data", "d.npz", "--out", str(tmp_path / "run"), "--backend", "reference"], capsys
    )
    assert phrase in err and "d.npz" in err
    model = DlcModel(path, backend="reference")
    model.params = {k: v.astype(np.float32) for k, v in init_params(model.train_model).items()}
    with pytest.raises(DlcError, match=phrase):
        model.predict({"x": x})


@pytest.mark.parametrize("y", [np.full(4, 2**32 + 3, np.int64), np.full(4, 2**63, np.uint64)])
def test_integer_labels_beyond_int32_are_refused(tmp_path, capsys, y):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=y)
    path = write(tmp_path, CLASSIFIER, "train clf { data = xor() }")
    err = failure(["train", path, "--data", "d.npz", "--out", str(tmp_path / "run"), "--backend", "reference"], capsys)
    assert f"y has values from {y[0]} to {y[0]}" in err


def test_an_empty_validation_split_is_refused(tmp_path, capsys):
    path = write(tmp_path, XOR, "train xor { data = xor() validation = split(0.1) epochs = 1 }")
    err = failure(["train", path, "--out", str(tmp_path / "run"), "--backend", "reference"], capsys)
    assert "validation = split(0.1) holds out no example of the 4" in err


# ---- sources bind their arguments with the one binder of the train settings ------------------------
def test_data_sources_bind_through_the_same_helper():
    with pytest.raises(DlcError) as e:
        D.load(Call("xor", [1, 2]), ".")
    assert "xor takes at most 1 argument (repeat), got 2" in e.value.message
    assert len(D.load(Call("xor", [3]), ".")) == 12


# ---- non-finite data is refused ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_npz_float_columns_must_be_finite(tmp_path, bad):
    x = np.ones((4, 2), np.float64)
    x[2, 1] = bad
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, np.int32))
    with pytest.raises(DlcError) as e:
        D.load("d.npz", tmp_path)
    message = e.value.message
    assert "d.npz" in message and "'x'" in message and "[2, 1]" in message and "not a finite" in message, message


def test_npz_integer_columns_and_finite_floats_load(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2), np.float64), y=np.arange(4))
    assert len(D.load("d.npz", tmp_path)) == 4
