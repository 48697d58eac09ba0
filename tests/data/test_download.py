"""`dlc data fetch` and `dlc data list` (runtime.data.download) against a local HTTP server, and the
data sources that read what they fetch (mnist(), cifar10(), ...): small fake data sets in
the official formats (gzipped IDX files, a tar.gz of CIFAR's pickled batches) stand for the
real ones, with their checksums computed here."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import struct
import tarfile
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError, Span
from dlc.runtime.data import download as fetch, registry as D
from dlc.runtime.cli import main
from dlc.compiler.frontend.settings import Call

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# ---- a server for the files, with Range requests -------------------------------------------------
class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1; `cut[path] = n` sends the full
    Content-Length but only n bytes, once; with `ranges` false, Range requests are ignored."""

    def __init__(self):
        self.files, self.cut, self.requests, self.ranges = {}, {}, [], True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body, asked = server.files.get(self.path), self.headers.get("Range")
                server.requests.append((self.path, asked))
                if body is None:
                    self.send_error(404)
                    return
                start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and server.ranges else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start : server.cut.pop(self.path, None)])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def serve(self, name: str, files: dict):
        """Data set `name`'s files (name -> bytes), where a mirror keeps them: /NAME/FILE."""
        self.files.update({f"/{name}/{f}": b for f, b in files.items()})


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """An empty data folder, and the server as the mirror."""
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DLC_DATA_MIRROR", server.url)
    return tmp_path / "data"


def publish(monkeypatch, name: str, files: dict):
    """`files` (name -> bytes) as data set `name`'s published files: their checksums and sizes
    in the table."""
    remotes = tuple(fetch.Remote(f, hashlib.sha256(b).hexdigest(), len(b)) for f, b in files.items())
    monkeypatch.setitem(fetch.KNOWN, name, dataclasses.replace(fetch.KNOWN[name], files=remotes))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- fake data sets in the official formats ------------------------------------------------------
def idx_gz(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return gzip.compress(head + a.astype(np.uint8).tobytes())


def fake_mnist(train: int = 64, test: int = 16, seed: int = 0) -> tuple[dict, dict]:
    """(files, arrays): MNIST's four gzipped IDX files of random images and labels."""
    rng = np.random.default_rng(seed)
    arrays = {
        split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        for split, n in (("train", train), ("test", test))
    }
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(arrays[split][0])
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(arrays[split][1])
    return files, arrays


def py2_pickle(obj) -> bytes:
    """A pickle naming numpy's array constructor as the official (Python 2) CIFAR files do."""
    return pickle.dumps(obj, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def tar_gz(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def fake_cifar(name: str, per_batch: int = 6, seed: int = 0) -> tuple[dict, dict]:
    """(files, arrays): CIFAR-10's or CIFAR-100's python archive of random batches."""
    rng = np.random.default_rng(seed)
    hundred = name == "cifar100"
    folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    batches = {
        "train": ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test"] if hundred else ["test_batch"],
    }
    members, arrays = {}, {}
    for split, names in batches.items():
        xs, ys, coarse = [], [], []
        for n in names:
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = rng.integers(0, 100 if hundred else 10, per_batch).tolist()
            batch = {"batch_label": n, "data": x, "filenames": [f"{i}.png" for i in range(per_batch)]}
            if hundred:
                c = rng.integers(0, 20, per_batch).tolist()
                batch.update(fine_labels=y, coarse_labels=c)
                coarse += c
            else:
                batch["labels"] = y
            members[f"{folder}/{n}"] = py2_pickle(batch)
            xs.append(x)
            ys += y
        arrays[split] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), np.array(coarse))
    members[f"{folder}/{'meta' if hundred else 'batches.meta'}"] = py2_pickle({"label_names": ["a", "b"]})
    return {fetch.KNOWN[name].files[0].name: tar_gz(members)}, arrays


def call(name, *args, **kwargs):
    return Call(name, list(args), kwargs, Span("train.dl", 3, 17))


def leftovers(cache: Path) -> list:
    """Files in the data folder (downloads, temporary folders, converted files)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


# ---- fetching ------------------------------------------------------------------------------------
def test_fetch_converts_mnist_and_the_source_reads_it(cache, server, monkeypatch, capsys):
    files, arrays = fake_mnist()
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", files)
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 0, err
    assert out == f"mnist: {cache / 'mnist'}\n"
    assert f"downloading {server.url}/mnist/train-images-idx3-ubyte.gz" in err and "converted 64 train, 16 test" in err
    assert leftovers(cache) == ["mnist/test.npz", "mnist/train.npz"]  # the downloads are gone
    for split, (images, labels) in arrays.items():
        ds = D.load(call("mnist", split=split), cache)
        assert ds.names == ["x", "y"] and ds.meta == {"classes": 10}
        assert ds.columns["x"].dtype == np.float32 and ds.columns["x"].shape == (len(images), 1, 28, 28)
        np.testing.assert_allclose(ds.columns["x"][:, 0], images / 255, rtol=1e-6)
        assert ds.columns["y"].dtype == np.int32 and ds.columns["y"].tolist() == labels.tolist()
    raw = D.load(call("mnist", scale=1), cache).columns["x"]
    assert raw.max() == arrays["train"][0].max()
    code, out, err = run(capsys, "data", "list")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("mnist "))
    assert "MNIST" in row and str(cache / "mnist") in row and "MB" in row
    assert next(line for line in out.splitlines() if line.startswith("cifar10 ")).endswith("no")
    asked = len(server.requests)
    code, out, err = run(capsys, "data", "fetch", "mnist")  # again: nothing to download
    assert code == 0 and "already fetched" in err and len(server.requests) == asked


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fetch_converts_cifar(name, cache, server, monkeypatch, capsys):
    files, arrays = fake_cifar(name)
    publish(monkeypatch, name, files)
    server.serve(name, files)
    code, out, err = run(capsys, "data", "fetch", name)
    assert code == 0, err
    assert leftovers(cache) == [f"{name}/test.npz", f"{name}/train.npz"]
    for split, (images, labels, _) in arrays.items():
        ds = D.load(call(name, split=split, scale=1), cache)
        assert ds.columns["x"].shape == (len(images), 3, 32, 32)
        assert np.array_equal(ds.columns["x"], images) and ds.columns["y"].tolist() == labels.tolist()
        assert ds.meta["classes"] == (100 if name == "cifar100" else 10)
    if name == "cifar100":
        ds = D.load(call(name, split="test", labels="coarse"), cache)
        assert ds.columns["y"].tolist() == arrays["test"][2].tolist() and ds.meta["classes"] == 20


def test_a_mirror_folder(tmp_path, monkeypatch, capsys):
    """DLC_DATA_MIRROR may be a folder holding NAME/FILE, for a machine without the internet."""
    files, _ = fake_mnist(train=8, test=4)
    (tmp_path / "mirror" / "mnist").mkdir(parents=True)
    for f, b in files.items():
        (tmp_path / "mirror" / "mnist" / f).write_bytes(b)
    publish(monkeypatch, "mnist", files)
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DLC_DATA_MIRROR", str(tmp_path / "mirror"))
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 0, err
    assert len(D.load(call("mnist", split="test"), tmp_path)) == 4


def test_a_damaged_download_is_deleted(cache, server, monkeypatch, capsys):
    files, _ = fake_mnist()
    bad = dict(files)
    raw = bytearray(files["t10k-images-idx3-ubyte.gz"])
    raw[len(raw) // 2] ^= 0xFF
    bad["t10k-images-idx3-ubyte.gz"] = bytes(raw)
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", bad)
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "Traceback" not in err
    assert "the download of t10k-images-idx3-ubyte.gz" in err and "is damaged" in err
    assert hashlib.sha256(bad["t10k-images-idx3-ubyte.gz"]).hexdigest() in err and "deleted" in err
    kept = leftovers(cache)
    assert "downloads/mnist/t10k-images-idx3-ubyte.gz.part" not in kept and not any(
        "mnist/" in f and f.endswith(".npz") for f in kept
    )  # nothing converted
    assert not (cache / "mnist").exists() and not (cache / ".mnist.tmp").exists()
    with pytest.raises(DlcError, match="run: dlc data fetch mnist"):
        D.load(call("mnist"), cache)
    server.files["/mnist/t10k-images-idx3-ubyte.gz"] = files["t10k-images-idx3-ubyte.gz"]  # repaired
    assert run(capsys, "data", "fetch", "mnist")[0] == 0  # the verified files are not fetched again
    assert [p for p, _ in server.requests].count("/mnist/train-images-idx3-ubyte.gz") == 1


def test_a_truncated_file_is_refused(cache, server, monkeypatch, capsys):
    files, _ = fake_mnist()
    short = dict(files)
    short["train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][:1000]
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", short)
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "Traceback" not in err
    size = len(files["train-images-idx3-ubyte.gz"])
    assert f"the server offers 1000 bytes, but the published file is {size}" in err
    assert f"{server.url}/mnist/train-images-idx3-ubyte.gz" in err
    assert leftovers(cache) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "server-ignores-range"])
def test_a_stopped_download_resumes(ranges, cache, server, monkeypatch, capsys):
    files, arrays = fake_mnist(train=200)
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", files)
    path, stop = "/mnist/train-images-idx3-ubyte.gz", 40_000
    server.cut[path], server.ranges = stop, ranges
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "Traceback" not in err
    assert "the download stopped at 0.0 MB" in err and "resumes there" in err
    part = cache / "downloads" / "mnist" / "train-images-idx3-ubyte.gz.part"
    assert part.stat().st_size == stop
    assert not (cache / "mnist").exists()
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 0, err
    assert server.requests[:2] == [(path, None), (path, f"bytes={stop}-")]  # then asked for the rest
    assert ("from byte 40000" in err) == ranges
    ds = D.load(call("mnist", scale=1), cache)
    assert np.array_equal(ds.columns["x"][:, 0], arrays["train"][0])


@contextlib.contextmanager
def unprivileged():
    """As user nobody when running as root, whom file modes do not stop."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def read_only_folder():
    """A folder nobody may write to, in a folder anyone may enter (so user nobody meets the mode)."""
    outer = Path(tempfile.mkdtemp(prefix="dlc-read-only-"))
    outer.chmod(0o755)
    folder = outer / "data"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    shutil.rmtree(outer)


def test_a_read_only_data_folder(read_only_folder, tmp_path, monkeypatch, server, capsys):
    files, _ = fake_mnist()
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", files)
    monkeypatch.setenv("DLC_DATA_DIR", str(read_only_folder))
    monkeypatch.setenv("DLC_DATA_MIRROR", server.url)
    with unprivileged():
        code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "Traceback" not in err
    assert f"cannot write to the data folder {read_only_folder}: Permission denied; set DLC_DATA_DIR" in err
    assert server.requests == []
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "file" / "data"))  # under a file: cannot be made
    (tmp_path / "file").write_text("")
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "cannot write to the data folder" in err and "Not a directory" in err


def test_an_unknown_name(cache, server, capsys):
    code, out, err = run(capsys, "data", "fetch", "mnsit")
    assert code == 1
    assert err.strip() == (
        "mnsit: error: unknown data set 'mnsit'; did you mean 'mnist'? (dlc fetches mnist, fashion_mnist, cifar10, "
        "cifar100)"
    )
    code, out, err = run(capsys, "data", "fetch", "mnist", "imagenet")  # checked before anything is fetched
    assert code == 1 and "'imagenet'" in err and server.requests == []
    with pytest.raises(SystemExit) as info:  # no action: a usage error
        main(["data"])
    assert info.value.code == 2


def test_no_network(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DLC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DLC_DATA_MIRROR", f"http://127.0.0.1:{port}")
    code, out, err = run(capsys, "data", "fetch", "cifar10")
    assert code == 1 and "Traceback" not in err
    assert f"cannot download cifar-10-python.tar.gz: http://127.0.0.1:{port}/cifar10/cifar-10-python.tar.gz:" in err
    assert "refused" in err and "https_proxy" in err and "DLC_DATA_MIRROR" in err
    assert leftovers(tmp_path / "data") == []


def test_http_errors_try_the_next_location(cache, server, monkeypatch, capsys):
    """Without a mirror, the official locations are tried in turn (MNIST has two)."""
    files, _ = fake_mnist()
    publish(monkeypatch, "mnist", files)
    server.serve("mnist", files)
    monkeypatch.delenv("DLC_DATA_MIRROR")
    monkeypatch.setitem(
        fetch.KNOWN,
        "mnist",
        dataclasses.replace(fetch.KNOWN["mnist"], locations=(f"{server.url}/gone", f"{server.url}/mnist")),
    )
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 0, err
    assert server.requests[0][0] == "/gone/train-images-idx3-ubyte.gz"
    server.files.clear()
    (cache / "mnist" / "test.npz").unlink()  # an incomplete data set is fetched again
    code, out, err = run(capsys, "data", "fetch", "mnist")
    assert code == 1 and "/gone/train-images-idx3-ubyte.gz: HTTP 404" in err


def test_a_hostile_pickle_runs_nothing(cache, server, monkeypatch, capsys, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    files = {
        "cifar-10-python.tar.gz": tar_gz(
            {f"cifar-10-batches-py/data_batch_{i}": pickle.dumps(Payload()) for i in range(1, 6)}
        )
    }
    publish(monkeypatch, "cifar10", files)
    server.serve("cifar10", files)
    code, out, err = run(capsys, "data", "fetch", "cifar10")
    assert code == 1 and "Traceback" not in err
    assert "is not one of CIFAR's pickled batches" in err and "system, which is not an array" in err
    assert not marker.exists() and not (cache / "cifar10").exists()


def test_a_damaged_archive(cache, server, monkeypatch, capsys):
    """An archive with the published checksum that is not the data set's (a wrong table, a mirror)."""
    files = {"cifar-100-python.tar.gz": tar_gz({"cifar-100-python/meta": b"x"})}
    publish(monkeypatch, "cifar100", files)
    server.serve("cifar100", files)
    code, out, err = run(capsys, "data", "fetch", "cifar100")
    assert code == 1 and "lacks train" in err and not (cache / "cifar100").exists()
    files = {"cifar-100-python.tar.gz": b"not gzip"}
    publish(monkeypatch, "cifar100", files)
    server.serve("cifar100", files)
    code, out, err = run(capsys, "data", "fetch", "cifar100")
    assert code == 1 and "is not a valid tar.gz archive" in err


# ---- the sources and the hints -------------------------------------------------------------------
def test_a_missing_data_set_names_the_command(cache):
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        with pytest.raises(DlcError) as info:
            D.load(call(name, split="test"), cache)
        assert info.value.message.endswith(f"is not in the data folder {cache}; run: dlc data fetch {name}")
        assert info.value.span == Span("train.dl", 3, 17)
    with pytest.raises(DlcError, match="'split' must be one of train, test, got 'valid'"):
        D.load(call("mnist", split="valid"), cache)
    with pytest.raises(DlcError, match="'labels' must be one of fine, coarse"):
        D.load(call("cifar100", labels="medium"), cache)


@pytest.mark.parametrize(
    "path, name",
    [
        ("data/train-images-idx3-ubyte", "mnist"),
        ("t10k-labels-idx1-ubyte.gz", "mnist"),
        ("mnist.npz", "mnist"),
        ("fashion/train-images-idx3-ubyte", "fashion_mnist"),
        ("data/cifar10.npz", "cifar10"),
        ("cifar-10-batches.npz", "cifar10"),
        ("CIFAR100.npz", "cifar100"),
        ("points.csv", None),
    ],
)
def test_file_not_found_hints_at_fetch(path, name, tmp_path):
    with pytest.raises(DlcError) as info:
        D.load(path, tmp_path)
    message = info.value.message
    assert "data file not found" in message
    assert (f"run: dlc data fetch {name} (and read it with {name}())" in message) if name else "fetch" not in message


@pytest.mark.parametrize("width", [10, 30, 50, 80, 200])
def test_the_progress_line_fits(width):
    line = fetch.progress_line("train-images-idx3-ubyte.gz", 4_200_000, 9_912_422, 2.0, 4_000_000, width)
    assert len(line) == width
    if width >= 80:
        assert line.startswith("train-images-idx3-ubyte.gz  [########") and "4.2/9.9 MB  2.0 MB/s" in line
    assert ("eta 0:02" in line) == (width == 200)  # the part that does not fit is left out
    assert fetch.progress_line("x", 0, 100, 0.0, 0, 80).rstrip().endswith("0.0 MB/s")


# ---- the examples train on what was fetched ------------------------------------------------------
@pytest.mark.parametrize(
    "example, name",
    [
        ("mnist_mlp", "mnist"),
        ("vgg_cnn", "cifar10"),
        # the same fetched files read by deeper models, each a native compile of half a minute
        pytest.param("lenet5", "mnist", marks=pytest.mark.slow),
        pytest.param("resnet", "cifar10", marks=pytest.mark.slow),
    ],
)
def test_examples_train_as_written_after_a_fetch(example, name, cache, server, monkeypatch, capsys, tmp_path):
    files, _ = fake_mnist(train=40, test=10) if name == "mnist" else fake_cifar(name, per_batch=8)
    publish(monkeypatch, name, files)
    server.serve(name, files)
    assert run(capsys, "data", "fetch", name)[0] == 0
    code, out, err = run(
        capsys, "train", str(EXAMPLES / f"{example}.dl"), "--epochs", "1", "--out", str(tmp_path / "run")
    )
    assert code == 0, err
    assert f"trained {example} for 1 epoch " in out and "test: loss" in out
