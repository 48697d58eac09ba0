"""Quantized checkpoints (docs/quantization.md, "The quantized checkpoint"): a dlc checkpoint
whose float32 parameters are joined, for each integer product P, by `int8:P:weight`,
`int8:P:weight_scale`, `int8:P:input_scale` and `int8:P:input_zero_point`, and whose metadata
says how they were calibrated (`quantization`). Reading them back checks every array against
the model and the arithmetic's bounds: a hostile file is refused, naming the array."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np

from dlc.compiler.errors import DlcError, did_you_mean
from dlc.compiler.frontend.model import Model
from dlc.compiler.ir import int8
from dlc.compiler.ir.graph import to_text
from dlc.compiler.passes.int8 import products
from dlc.runtime.interop import checkpoint

FORMAT = "dlc-int8-1"
PARTS = ("weight", "weight_scale", "input_scale", "input_zero_point")


def arrays(quantization: dict) -> dict:
    """The `int8:` arrays of a quantization (QuantizedProduct by product name)."""
    return {f"int8:{name}:{part}": np.asarray(getattr(q, part)) for name, q in quantization.items() for part in PARTS}


def describe(quantization: dict, settings: dict, model: Model) -> dict:
    """The checkpoint metadata's `quantization`: the format, how it was calibrated, the products,
    and the stamp of the graph they were calibrated in (`stamp`)."""
    return {"format": FORMAT, **settings, "products": list(quantization), "graph": stamp(model)}


def stamp(model: Model) -> str:
    """What the scales depend on, as a hash: the evaluation graph of `model` (its operations in
    order, their shapes and settings), not the text it was written in, nor the parameters'
    names: a comment or a blank line leaves it as it is, and so does a binding renamed, whose
    checkpoint `dlc checkpoint rename` renames (the products' names with it)."""
    names: dict = {}
    lines = []
    for line in to_text(model.graph, spans=False).splitlines():
        found = _PARAM_NAME.search(line) if " = param {" in line else None
        if found:  # a parameter by its place among the parameters
            index = names.setdefault(found.group(1), len(names))
            line = line[: found.start(1)] + f"#{index}" + line[found.end(1) :]
        lines.append(line)
    return checkpoint.source_hash("\n".join(lines))


_PARAM_NAME = re.compile(r"\bname=([^,}]+)")  # a param node's name in to_text's line


def read_in_float32(path) -> str:
    """What dlc says where a quantized checkpoint is read without --int8 (dlc predict, eval and
    build alike): its float32 parameters are the weights, its integer products go unused."""
    return (
        f"{path} is a quantized checkpoint: without --int8 its float32 parameters are the weights, "
        "and every product is computed in float32"
    )


def load(path, model: Model, source: str) -> tuple[dict, dict]:
    """(QuantizedProduct by name, the calibration's settings) of the quantized checkpoint at
    `path` for `model` (the evaluation model, built from the .dl text `source`)."""
    path = Path(path)
    saved, meta = checkpoint.read(path)
    info = meta.get("quantization")
    if not isinstance(info, dict):
        raise DlcError(f"{path} holds no int8 quantization: make one with `dlc quantize`")
    if info.get("format") != FORMAT:
        raise DlcError(
            f"{path} holds a quantization of format {info.get('format')!r}, which this dlc does not read ({FORMAT})"
        )
    if meta.get("model") not in (None, model.name):
        raise DlcError(f"{path} is a quantization of model '{meta.get('model')}', not '{model.name}'")
    if (
        "graph" in info
        and info["graph"] != stamp(model)
        or (
            "graph" not in info and meta.get("source_hash") != checkpoint.source_hash(source)  # a dlc before the stamp
        )
    ):
        raise DlcError(
            f"{path} was quantized from another version of model {model.name}, which computes otherwise now "
            "(the scales were calibrated for other products): quantize again"
        )
    found: dict = {}
    for key, value in saved.items():
        kind, _, rest = key.partition(":")
        if kind == "int8":
            name, _, part = rest.rpartition(":")
            if part not in PARTS:
                raise DlcError(
                    f"{path}: {key} is not an array of a quantized checkpoint (its parts are {', '.join(PARTS)})"
                )
            found.setdefault(name, {})[part] = value
    every = products(model.graph)
    chosen = {p.weight: p for p in every if p.integer}
    kept = {p.weight: p for p in every if p.weight is not None and not p.integer}
    for name in found:
        if name in kept:
            raise DlcError.at_user_line(
                f"{path} quantizes {name}, whose {kept[name].op} stays float32: {kept[name].reason}; quantize again",
                kept[name].span,
            )
        if name not in chosen:
            raise DlcError(
                f"{path} quantizes {name}, which is not the weights of an integer product of model "
                f"{model.name}{did_you_mean(name, chosen)}"
            )
    params = {p.name: p for p in model.params}
    out = {}
    for name, p in chosen.items():
        parts = found.get(name, {})
        absent = [part for part in PARTS if part not in parts]
        if absent:
            raise DlcError.at_user_line(
                f"{path} lacks int8:{name}:{absent[0]}, the quantization of this {p.op}: quantize again", p.span
            )
        shape = tuple(params[name].type.shape)
        want = {
            "weight": (np.int8, shape),
            "weight_scale": (np.float32, (shape[p.channel_axis],)),
            "input_scale": (np.float32, ()),
            "input_zero_point": (np.uint8, ()),
        }
        for part, (dtype, part_shape) in want.items():
            value = parts[part]
            if value.dtype != dtype or value.shape != part_shape:
                raise DlcError.at_user_line(
                    f"{path}: int8:{name}:{part} is {value.dtype}{list(value.shape)}, not "
                    f"{np.dtype(dtype)}{list(part_shape)}",
                    p.span,
                )
        _check_range(
            path,
            f"int8:{name}:weight",
            parts["weight"],
            -int8.WEIGHT_MAX,
            int8.WEIGHT_MAX,
            "weights are int8 from -127 to 127",
            p.span,
        )
        for part in ("weight_scale", "input_scale"):
            _check_range(
                path,
                f"int8:{name}:{part}",
                parts[part],
                int8.LEAST_SCALE,
                int8.MOST_SCALE,
                "a scale is a number from 2^-60 to 2^40",
                p.span,
            )
        out[name] = int8.QuantizedProduct(
            parts["weight"], parts["weight_scale"], parts["input_scale"][()], parts["input_zero_point"][()]
        )
    return out, {k: v for k, v in info.items() if k not in ("format", "products")}


def _check_range(path, key: str, value: np.ndarray, least, most, rule: str, span):
    """Refuse the first element of `value` outside [least, most] (NaN is outside)."""
    bad = np.flatnonzero(~((value >= least) & (value <= most)))
    if bad.size:
        at = np.unravel_index(bad[0], value.shape)
        index = f"[{', '.join(map(str, at))}]" if value.ndim else ""
        raise DlcError.at_user_line(f"{path}: {key}{index} is {value[at].item()}: {rule}", span)
