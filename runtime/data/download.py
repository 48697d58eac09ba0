"""The public data sets dlc downloads: `dlc data fetch NAME` and `dlc data list`.

    mnist           MNIST, 28x28 grey handwritten digits, 60000 + 10000
    fashion_mnist   Fashion-MNIST, 28x28 grey clothes, 60000 + 10000
    cifar10         CIFAR-10, 32x32 colour images of 10 classes, 50000 + 10000
    cifar100        CIFAR-100, 32x32 colour images of 100 classes (20 superclasses), 50000 + 10000

Each file is downloaded from the data set's official location (`KNOWN`; the environment
variable DLC_DATA_MIRROR names another server or folder holding the same files as
MIRROR/NAME/FILE) into the data folder (DLC_DATA_DIR, else ~/.cache/dlc/data), as
FILE.part, resumed with an HTTP Range request when a download stopped, checked against
its published SHA-256 and only then renamed to FILE. The files are then converted to
NAME/train.npz and NAME/test.npz ("x" uint8 images [N, C, H, W], "y" uint8 labels; CIFAR-100
also "coarse"), written in a temporary folder renamed into place whole, so a data set in
the data folder is always complete; the downloads are removed after. The data sources mnist(),
fashion_mnist(), cifar10() and cifar100() (runtime/data/images.py) read the converted files.

The checksums are those torchvision publishes (torchvision/prototype/datasets/_builtin/
mnist.py and cifar.py, pytorch/vision), which agree with tensorflow-datasets'
url_checksums/mnist.txt and fashion_mnist.txt; the sizes are tensorflow-datasets' (MNIST,
Fashion-MNIST) and the servers' (CIFAR).

CIFAR's official archives hold Python pickles; they are read with an unpickler that builds
only plain containers and numpy arrays (`_ArrayUnpickler`), after the checksum matched.
Every failure (no network, an HTTP error, a checksum mismatch, a folder that cannot be
written, a damaged archive) is a DlcError naming the file or URL.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import dlc
from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.runtime.data.formats import read_idx
from dlc.runtime.terminal import REDRAW_S, duration, terminal_width

__all__ = [
    "KNOWN",
    "Known",
    "Remote",
    "SPLITS",
    "known",
    "data_dir",
    "converted",
    "fetch",
    "listing",
    "hint",
    "progress_line",
]

CHUNK = 1 << 16
TIMEOUT_S = 30  # for connecting and for each read
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Remote:
    """A published file: its name on the server, SHA-256 and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Known:
    """A data set dlc can fetch: where its files are and how they become train.npz and test.npz."""

    name: str  # as `dlc data fetch NAME` and the data source write it
    title: str
    locations: tuple  # base URLs, tried in order
    files: tuple  # Remote files
    convert: Callable  # (folder of the downloads, Known) -> {split: {column: array}}
    looks_like: str  # a regular expression for file names of this data set

    @property
    def download_size(self) -> int:
        return sum(f.size for f in self.files)


# ---- conversion -----------------------------------------------------------------------------------
def _idx_pair(folder: Path, ds: Known) -> dict:
    """MNIST's layout: train- and t10k- images and labels, gzipped IDX files."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ds.name)
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ds.name)
        if (
            images.dtype != np.uint8
            or images.ndim != 3
            or labels.dtype != np.uint8
            or labels.ndim != 1
            or len(images) != len(labels)
        ):
            raise DlcError(
                f"{ds.name}: the {prefix} files are not {ds.title}'s: images {images.dtype}"
                f"{list(images.shape)}, labels {labels.dtype}{list(labels.shape)}"
            )
        out[split] = {"x": images[:, None], "y": labels}
    return out


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array constructor, wherever this numpy keeps it


class _ArrayUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy arrays only: a downloaded pickle is untrusted, and
    any other class or function it names could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not an array") from None


def _cifar(folder: Path, ds: Known) -> dict:
    """CIFAR's layout: a tar.gz of pickled dicts ("data" uint8 [n, 3072], the labels a list),
    CIFAR-10 in data_batch_1..5 and test_batch, CIFAR-100 in train and test."""
    archive = folder / ds.files[0].name
    hundred = ds.name == "cifar100"
    parts = {
        "train": ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test"] if hundred else ["test_batch"],
    }
    label_keys = {"y": "fine_labels", "coarse": "coarse_labels"} if hundred else {"y": "labels"}
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and any(base in names for names in parts.values()):
                    batches[base] = _unpickle(tar.extractfile(member).read(), f"{archive}: {member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DlcError(f"{ds.name}: {archive} is not a valid tar.gz archive ({e})") from None
    out = {}
    for split, names in parts.items():
        missing = [n for n in names if n not in batches]
        if missing:
            raise DlcError(f"{ds.name}: {archive} lacks {', '.join(missing)}: it is not {ds.title}'s archive")
        columns = {"x": [], **{k: [] for k in label_keys}}
        for n in names:
            batch = batches[n]
            x = batch.get("data") if isinstance(batch, dict) else None
            if (
                not isinstance(x, np.ndarray)
                or x.dtype != np.uint8
                or x.ndim != 2
                or x.shape[1] != 3 * 32 * 32
                or not len(x)
            ):
                raise DlcError(f"{ds.name}: {n} of {archive} holds no uint8 images of 3x32x32")
            columns["x"].append(x.reshape(-1, 3, 32, 32))  # each row: the red, green, blue 32x32 planes
            for k, key in label_keys.items():
                y = np.asarray(batch.get(key, []))
                if y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 255:
                    raise DlcError(f"{ds.name}: {n} of {archive} holds no '{key}' for its {len(x)} images")
                columns[k].append(y.astype(np.uint8))
        out[split] = {k: np.concatenate(v) for k, v in columns.items()}
    return out


def _unpickle(raw: bytes, where: str):
    try:
        return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()  # Python 2 pickles of numpy arrays
    except Exception as e:  # whatever a damaged or hostile pickle makes the unpickler raise
        raise DlcError(f"{where} is not one of CIFAR's pickled batches ({e})") from None


# ---- the data sets ----------------------------------------------------------------------------------
def _files(sizes_and_sums: dict) -> tuple:
    return tuple(Remote(name, sha, size) for name, (size, sha) in sizes_and_sums.items())


_MNIST = _files(
    {  # name: (size, SHA-256)
        "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    }
)
_FASHION_MNIST = _files(
    {
        "train-images-idx3-ubyte.gz": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    }
)
_CIFAR10 = _files(
    {"cifar-10-python.tar.gz": (170498071, "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")}
)
_CIFAR100 = _files(
    {"cifar-100-python.tar.gz": (169001437, "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7")}
)

KNOWN: dict[str, Known] = {
    ds.name: ds
    for ds in [
        Known(
            "mnist",
            "MNIST",
            ("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist"),
            _MNIST,
            _idx_pair,
            r"mnist|(train|t10k)-(images|labels)-idx",
        ),
        Known(
            "fashion_mnist",
            "Fashion-MNIST",
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
            _FASHION_MNIST,
            _idx_pair,
            r"fashion",
        ),
        Known("cifar10", "CIFAR-10", ("https://www.cs.toronto.edu/~kriz",), _CIFAR10, _cifar, r"cifar-?10(?!0)"),
        Known("cifar100", "CIFAR-100", ("https://www.cs.toronto.edu/~kriz",), _CIFAR100, _cifar, r"cifar-?100"),
    ]
}


def known(name: str) -> Known:
    ds = KNOWN.get(name)
    if ds is None:
        raise DlcError(
            f"unknown data set '{name}'{did_you_mean(name, KNOWN)} (dlc fetches {', '.join(KNOWN)})", Span.whole(name)
        )
    return ds


def data_dir() -> Path:
    """The data folder: DLC_DATA_DIR, else ~/.cache/dlc/data."""
    return Path(os.environ.get("DLC_DATA_DIR") or Path.home() / ".cache" / "dlc" / "data").expanduser()


def _is_cached(ds: Known, root: Path) -> bool:
    return all((root / ds.name / f"{split}.npz").is_file() for split in SPLITS)


def converted(name: str, split: str) -> Path:
    """The converted file of a fetched data set's split; a missing one says how to fetch it."""
    ds = known(name)
    root = data_dir()
    if not _is_cached(ds, root):
        raise DlcError(f"{name}: {ds.title} is not in the data folder {root}; run: dlc data fetch {name}")
    return root / name / f"{split}.npz"


def hint(path: str) -> str:
    """ "; run: dlc data fetch NAME ..." for a file name that looks like a known data set's, else ""."""
    for ds in sorted(KNOWN.values(), key=lambda d: d.name != "fashion_mnist"):  # its files are named as MNIST's
        if re.search(ds.looks_like, path.lower()):
            return f"; to download {ds.title}, run: dlc data fetch {ds.name} (and read it with {ds.name}())"
    return ""


# ---- fetching ------------------------------------------------------------------------------------
def _urls(ds: Known, remote: Remote) -> list:
    """The official locations of `remote`, or its place on DLC_DATA_MIRROR (a URL or a folder)."""
    mirror = os.environ.get("DLC_DATA_MIRROR")
    if mirror and "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    bases = [f"{mirror.rstrip('/')}/{ds.name}"] if mirror else ds.locations
    return [f"{base}/{remote.name}" for base in bases]


def _cannot_write(root: Path, e: OSError) -> DlcError:
    return DlcError(
        f"cannot write to the data folder {root}: {e.strerror or e}; set DLC_DATA_DIR to a folder you can write to"
    )


def fetch(name: str, log=None) -> Path:
    """Download, verify and convert data set `name` into the data folder (nothing to do when it
    is there); its folder. `log` gets one line per step (default: standard error)."""
    ds = known(name)
    log = log or (lambda line: print(line, file=sys.stderr))
    root = data_dir()
    target = root / ds.name
    if _is_cached(ds, root):
        log(f"{ds.name}: already fetched")
        return target
    downloads = root / "downloads" / ds.name
    try:
        downloads.mkdir(parents=True, exist_ok=True)
        for remote in ds.files:
            _download(remote, _urls(ds, remote), downloads, log)
        splits = ds.convert(downloads, ds)
        _install(splits, target)
        shutil.rmtree(downloads)
    except OSError as e:  # the network's errors are _Failed: these are the folder's
        raise _cannot_write(root, e) from None
    log(f"{ds.name}: converted " + ", ".join(f"{len(c['x'])} {split}" for split, c in splits.items()) + " examples")
    return target


def _install(splits: dict, target: Path):
    """Write the converted splits in a temporary folder and rename it to `target` whole."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a conversion that was killed
    tmp.mkdir(parents=True)
    try:
        for split, columns in splits.items():
            np.savez(tmp / f"{split}.npz", **columns)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete folder (a split deleted by hand)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Failed(Exception):
    """A download that did not finish: its URL and why."""


def _download(remote: Remote, urls: list, folder: Path, log) -> Path:
    """`remote` as folder/NAME, verified; resumed from folder/NAME.part, trying each URL in turn."""
    final = folder / remote.name
    part = folder / (remote.name + ".part")
    if final.is_file():  # kept by a fetch that stopped before converting: verified again
        if _sha256(final) == remote.sha256:
            return final
        final.unlink()
    errors = []
    for url in urls:
        try:
            _transfer(url, part, remote, log)
            break
        except _Failed as e:
            errors.append(str(e))
    else:
        kept = part.stat().st_size if part.is_file() else 0
        resume = (
            f"; {_mb(kept)} of {_mb(remote.size)} are kept in {part}, and running the command again resumes there"
            if kept
            else ""
        )
        raise DlcError(
            f"cannot download {remote.name}: "
            + "; ".join(errors)
            + resume
            + ". Behind a proxy, set https_proxy; or set DLC_DATA_MIRROR to a server or folder with "
            "the files",
            Span.whole(final),
        )
    digest = _sha256(part)
    if digest != remote.sha256:
        part.unlink()
        raise DlcError(
            f"the download of {remote.name} from {url} is damaged: its SHA-256 is {digest}, not the "
            f"published {remote.sha256}; it was deleted, so running the command again downloads it anew"
        )
    os.replace(part, final)
    return final


def _transfer(url: str, part: Path, remote: Remote, log):
    """Append to `part` what it lacks of `remote` from `url` (all of it when the server ignores
    the Range request); _Failed when the server cannot be reached or stops early."""
    have = part.stat().st_size if part.is_file() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have == remote.size:
        return
    # here, not at the top: urllib.request brings ssl, http and email, 40 ms of every dlc
    # command's start-up that only a download uses
    import http.client
    import urllib.error
    import urllib.request

    headers = {"User-Agent": f"dlc/{dlc.__version__}"}  # some servers refuse Python's default one
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise _Failed(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _Failed(f"{url}: {getattr(e, 'reason', None) or e}") from None
    with response:
        if have and getattr(response, "status", None) != 206:  # the whole file again
            have = 0
        if have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise _Failed(
                f"{url}: the server answered a request for bytes {have}- with {response.headers.get('Content-Range')!r}"
            )
        length = response.headers.get("Content-Length")
        offered = have + int(length) if length and length.isdigit() else None
        if offered is not None and offered != remote.size:
            raise _Failed(f"{url}: the server offers {offered} bytes, but the published file is {remote.size}")
        log(f"downloading {url}" + (f" from byte {have}" if have else ""))
        bar = _Progress(remote.name, remote.size, have)
        with open(part, "ab" if have else "wb") as f, bar:
            while have < remote.size:
                try:
                    chunk = response.read(min(CHUNK, remote.size - have))
                except (http.client.HTTPException, OSError) as e:  # IncompleteRead, a reset, a timeout
                    chunk, reason = b"", f"{type(e).__name__}: {e}"
                else:
                    reason = "the server closed the connection"
                if not chunk:
                    raise _Failed(f"{url}: the download stopped at {_mb(have)} of {_mb(remote.size)} ({reason})")
                f.write(chunk)
                have += len(chunk)
                bar.update(have)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class _Progress:
    """A one-line progress bar on standard error when it is a terminal, fitted to its width."""

    def __init__(self, name: str, total: int, done: int):
        self.name, self.total, self.start = name, total, done
        self.started = time.perf_counter()
        self.drawn = -float("inf")
        self.live = sys.stderr.isatty()

    def update(self, done: int):
        now = time.perf_counter()
        if not self.live or (now - self.drawn < REDRAW_S and done < self.total):
            return
        self.drawn = now
        width = terminal_width(sys.stderr) - 1
        sys.stderr.write(
            "\r" + progress_line(self.name, done, self.total, now - self.started, done - self.start, width)
        )
        sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):  # the line ends however the download does (done, failed, Ctrl-C)
        if self.live and self.drawn > -float("inf"):
            sys.stderr.write("\n")


def progress_line(name: str, done: int, total: int, elapsed: float, fresh: int, width: int) -> str:
    """`name [####    ] 4.1/9.9 MB  1.2 MB/s  eta 5s`, exactly `width` characters: the
    parts after the bar are left out from the end when they do not fit, and the name is cut."""
    rate = fresh / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else None
    parts = [
        f"[{'#' * (20 * done // max(total, 1)):<20}]",
        f"{done / 1e6:.1f}/{total / 1e6:.1f} MB",
        f"{rate / 1e6:.1f} MB/s",
        "" if left is None else f"eta {duration(left)}",
    ]
    tail = parts[0]
    for part in parts[1:]:
        if part and len(name) + len(tail) + len(part) + 4 <= width:
            tail += "  " + part
    room = max(width - len(tail) - 2, 0)
    line = f"{name[:room]}  {tail}" if room else tail
    return line[:width].ljust(width)


# ---- what is cached ------------------------------------------------------------------------------
def listing() -> str:
    """A table of the known data sets: download size, and the size and folder of the cached ones."""
    root = data_dir()
    rows = [("NAME", "DATA SET", "DOWNLOAD", "CACHED")]
    for ds in KNOWN.values():
        folder = root / ds.name
        if _is_cached(ds, root):
            cached = f"{_mb(sum(p.stat().st_size for p in folder.glob('*.npz')))} in {folder}"
        else:
            parts = root / "downloads" / ds.name
            got = sum(p.stat().st_size for p in parts.glob("*")) if parts.is_dir() else 0
            cached = f"no (partly downloaded: {_mb(got)})" if got else "no"
        rows.append((ds.name, ds.title, _mb(ds.download_size), cached))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join([*(v.ljust(w) for v, w in zip(r, widths)), r[3]]) for r in rows]
    origin = "DLC_DATA_DIR" if os.environ.get("DLC_DATA_DIR") else "set DLC_DATA_DIR to move it"
    return "\n".join(lines + [f"data folder: {root} ({origin})"])
