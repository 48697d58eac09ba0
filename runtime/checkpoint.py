"""Checkpoints: one .npz per checkpoint, written atomically, loadable without pickle.

Arrays are stored as `param:<name>` and `opt:<name>:<slot>`; everything else (epoch,
step, RNG position, history, vocabulary, a hash of the model source, the dlc version)
is one JSON document stored as the uint8 array `meta`. Nothing in the file can run
code when it is read.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

import dlc
from dlc.compiler.errors import DlcError
from dlc.compiler.graph import DTYPES

FORMAT = "dlc-checkpoint-1"


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save(path: Path, params: dict, opt_state: dict, meta: dict):
    """Write to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    arrays = {f"param:{k}": np.asarray(v) for k, v in params.items()}
    for name, slots in opt_state.items():
        for slot, v in slots.items():
            arrays[f"opt:{name}:{slot}"] = np.asarray(v)
    doc = {"format": FORMAT, "dlc_version": dlc.__version__, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DlcError(f"cannot write the checkpoint {path}: {e.strerror}") from None


def load(path) -> tuple[dict, dict, dict]:
    """(params, optimizer state, meta) of a checkpoint; a damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DlcError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise DlcError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DlcError(f"{path} is not a readable checkpoint (its metadata is damaged)") from None
    params, opt = {}, {}
    for key, value in arrays.items():
        kind, _, rest = key.partition(":")
        if kind == "param":
            params[rest] = value
        elif kind == "opt":
            name, _, slot = rest.rpartition(":")
            opt.setdefault(name, {})[slot] = value
        else:   # a plain npz of weights: names are the keys
            params[key] = value
    return params, opt, meta


def conform(path, saved: dict, params: list) -> dict:
    """The saved arrays as the model's parameters (`Model.params`): exactly its names and
    shapes, numbers only, converted to each parameter's dtype and made contiguous, so an
    engine can use them as they are (a plain .npz of float64 weights is welcome)."""
    check_params(path, saved, {p.name: p.type.shape for p in params})
    out = {}
    for p in params:
        value = saved[p.name]
        if value.dtype.kind not in "biuf":
            raise DlcError(f"{path}: {p.name} holds {value.dtype} values; a parameter needs numbers ({p.type})")
        out[p.name] = np.ascontiguousarray(value, DTYPES[p.type.dtype])
    return out


def check_params(path, saved: dict, expected: dict):
    """Refuse a checkpoint whose parameters are not exactly the model's."""
    problems = []
    for name, shape in expected.items():
        if name not in saved:
            problems.append(f"missing {name} {list(shape)}")
        elif tuple(saved[name].shape) != tuple(shape):
            problems.append(f"{name} is {list(saved[name].shape)} in the checkpoint but {list(shape)} in the model")
    problems += [f"unexpected {name}" for name in saved if name not in expected]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DlcError(f"the checkpoint {path} does not match the model: {shown}")
