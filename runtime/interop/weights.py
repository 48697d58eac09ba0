"""Weights files: .safetensors in dlc's names and layouts or in torch.nn's
(runtime/interop/torch_layout.py), and reading any weights file into a model: whole (`load`: eval,
predict, export --weights) or in part (`transfer`: init_from). docs/interop.md.

A .safetensors file written here says in its metadata which layout it holds (`format`:
`dlc`, or `pt` as torch's tools write it) and which model it is (`model`, `source_hash`,
`dlc_version`); a file without that tag (one torch wrote) holds torch's names when more
of its tensors are named as torch names them than as dlc does. A checkpoint (.npz) holds
dlc's names, or torch's by the same test when it is a plain .npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import dlc
from dlc.compiler.errors import DlcError, Span, optional_package
from dlc.runtime.interop import checkpoint
from dlc.runtime.interop.torch_layout import TorchLayout

SUFFIX = ".safetensors"
LAYOUTS = {"dlc": "dlc", "torch": "pt"}  # layout -> the file's `format` metadata


def _safetensors():
    optional_package("safetensors", "onnx", "reading and writing .safetensors files")
    import safetensors.numpy

    return safetensors


def save(path, params: dict, model, source_hash: str, layout: str = "dlc") -> list:
    """Write `params` (every parameter and state array of `model`, by dlc name) to a
    .safetensors file in `layout`, "dlc" or "torch". Returns the names that have no torch.nn
    counterpart and keep their dlc names and layouts (none in dlc's layout)."""
    st = _safetensors()
    tensors, kept = params, []
    if layout == "torch":
        torch = TorchLayout(model.params)
        tensors, kept = torch.to_torch(params), torch.kept
    tensors = {k: np.asarray(v, order="C") for k, v in tensors.items()}
    meta = {"format": LAYOUTS[layout], "model": model.name, "source_hash": source_hash, "dlc_version": dlc.__version__}
    try:
        st.numpy.save_file(tensors, str(path), metadata=meta)  # to a temporary file, then renamed
    except st.SafetensorError as e:
        raise DlcError(f"cannot write {path}: {e}", Span.whole(path)) from None
    return kept


def _read(path: Path) -> tuple[dict, dict, str | None]:
    """(arrays by the file's names, checkpoint metadata, the layout the file declares or None)."""
    if path.suffix != SUFFIX:
        arrays, _, meta = checkpoint.load(path)
        return arrays, meta, "dlc" if meta.get("format") == checkpoint.FORMAT else None
    if not path.is_file():
        raise DlcError(f"no weights file at {path}")
    st = _safetensors()
    try:
        with st.safe_open(str(path), "np") as f:
            tag = (f.metadata() or {}).get("format")
            arrays = {}
            for key in f.keys():
                # a type numpy has not (bfloat16, float8) fails, or arrives as ml_dtypes' when
                # that is loaded (onnx loads it)
                try:
                    arrays[key] = f.get_tensor(key)
                except TypeError:
                    arrays[key] = None
                if arrays[key] is None or arrays[key].dtype.kind not in "biuf":
                    raise DlcError(
                        f"{path}: {key} holds {f.get_slice(key).get_dtype()} numbers, which dlc cannot "
                        "read; save the tensors as float32 (in torch: .float())"
                    )
    except st.SafetensorError as e:
        raise DlcError(f"{path} is not a readable safetensors file ({e})") from None
    return arrays, {}, {v: k for k, v in LAYOUTS.items()}.get(tag)


class WeightsFile:
    """A weights file's arrays under the file's own names, and the names and shapes a model's
    parameters (`Model.params`) have in the file's layout."""

    def __init__(self, path, params: list):
        self.path = Path(path)
        arrays, self.meta, layout = _read(self.path)
        self.expected = {p.name: tuple(p.type.shape) for p in params}
        self.torch = None
        if layout != "dlc":
            torch = TorchLayout(params)
            if layout == "torch" or sum(k in torch.shapes() for k in arrays) > sum(k in self.expected for k in arrays):
                self.torch, self.expected = torch, torch.shapes()
                arrays = {k: v for k, v in arrays.items() if k not in torch.ignored}
        self.arrays = arrays

    def to_dlc(self, arrays: dict) -> dict:
        """Arrays under the file's names (with the expected shapes) -> by dlc name."""
        return self.torch.to_dlc(arrays) if self.torch else dict(arrays)


def load(path, params: list) -> tuple[dict, dict]:
    """(the model's parameters, the checkpoint's metadata) from a file that holds exactly them,
    in either layout; anything else is refused, naming the first mismatches in the file's names."""
    f = WeightsFile(path, params)
    checkpoint.check_params(path, f.arrays, f.expected)
    return checkpoint.conform(path, f.to_dlc(f.arrays), params), f.meta


def transfer(path, initial: dict, params: list) -> tuple[dict, str]:
    """`initial` with every parameter that the file at `path` holds under its name and with
    its shape, in either layout (init_from), and a report: how many matched, which are new,
    which the file holds with another shape, which tensors of the file were not used. A file
    of which nothing matches is refused, naming the first mismatches."""
    f = WeightsFile(path, params)
    fits = {k: v for k, v in f.arrays.items() if f.expected.get(k) == tuple(v.shape)}
    if not fits:
        checkpoint.check_params(path, f.arrays, f.expected)
    loaded = f.to_dlc(fits)
    values = {k: loaded[k].astype(v.dtype) if k in loaded else v for k, v in initial.items()}
    new = [n for n in initial if n not in loaded]
    skipped = [
        f"{k} ({list(f.arrays[k].shape)} vs {list(shape)})"
        for k, shape in f.expected.items()
        if k in f.arrays and k not in fits
    ]
    unused = [k for k in f.arrays if k not in f.expected]
    report = (
        f"{len(loaded)} matched, {len(new)} new"
        + (f" ({', '.join(new)})" if new else "")
        + (f", {len(skipped)} skipped for shape: {', '.join(skipped)}" if skipped else "")
        + (f", {len(unused)} not used: {', '.join(unused)}" if unused else "")
    )
    return values, report
