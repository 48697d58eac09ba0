"""What the Hugging Face image families (vit.py, resnet.py, mobilenet_v2.py) share: a config's keys read
and checked, its activation by name, its class names, the photos' settings of preprocessor_config.json as
the `images(...)` source of the emitted train block, and the tensors of a folder taken by name."""

from __future__ import annotations

import json
import re

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.format import format_text
from dlc.compiler.huggingface.folder import setting

# transformers' ACT2FN names -> the standard library's activations (compiler/stdlib/activations.dl)
ACTIVATIONS = {
    "relu": "relu",
    "relu6": "relu6",
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
}
# Pillow's resampling filters by the number a preprocessor_config.json gives
RESAMPLING = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
CENTER_FRACTION = 0.875  # images(...)'s evaluation crop: the centre `size` of the short side resized to size / 0.875


def key(config: dict, name: str, default, kind=int, low=None):
    """config[name] (or `default` when absent) checked to be a `kind` at least `low` (folder.setting)."""
    what = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list"}[kind]
    why = f"{what} of at least {low}" if low is not None else what
    v = setting(config, name, kind, default, check=None if low is None else (lambda x: x >= low), why=why)
    return float(v) if kind is float else v


def ints(config: dict, name: str, default: list, low: int = 1) -> list:
    """config[name]: a non-empty list of integers of at least `low`."""
    why = f"a list of whole numbers of at least {low}"
    ok = lambda v: v and all(isinstance(x, int) and not isinstance(x, bool) and x >= low for x in v)  # noqa: E731
    return setting(config, name, list, default, check=ok, why=why)


def activation(config: dict, name: str, default: str) -> str:
    """The standard library's activation for config[name]."""
    act = config.get(name, default)
    if act not in ACTIVATIONS:
        raise DlcError(
            f"config.json: {name} {json.dumps(act)} is not an activation dlc imports (it imports "
            f"{', '.join(sorted(ACTIVATIONS))})"
        )
    return ACTIVATIONS[act]


def class_names(config: dict) -> list:
    """The classifier's class names by id, from id2label (`LABEL_i` where it names none)."""
    labels = config.get("id2label") or {}
    count = key(config, "num_labels", len(labels) or 2, int, low=1)
    try:
        named = {int(k): str(v) for k, v in labels.items()}
    except (AttributeError, ValueError):
        raise DlcError(f"config.json: id2label must map class ids to names, got {json.dumps(labels)[:60]}") from None
    if labels and sorted(named) != list(range(len(named))):
        raise DlcError(f"config.json: id2label must name the classes 0..{len(named) - 1}, got ids {sorted(named)}")
    return [named.get(i, f"LABEL_{i}") for i in range(max(count, len(named)))]


# ---- the photos' settings ---------------------------------------------------------------------------------
def image_size(preprocessor: dict | None, default: int) -> int:
    """The side of the square the model reads: the preprocessor's crop, else its size, else `default`."""
    p = preprocessor or {}
    for name in ("crop_size", "size"):
        v = p.get(name)
        if isinstance(v, dict):
            sides = {v[k] for k in ("height", "width", "shortest_edge") if k in v}
            if name == "crop_size" and not p.get("do_center_crop", True):
                continue
            if len(sides) == 1 and all(isinstance(s, int) and s > 0 for s in sides):
                return sides.pop()
            raise DlcError(f"preprocessor_config.json: {name} must be a square, got {json.dumps(v)}")
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def transform_notes(preprocessor: dict | None, size: int) -> list:
    """How images(...)'s evaluation transform (the short side resized to size / 0.875, the centre size x
    size cropped, bilinear) differs from the preprocessor's, a short line each (none when they agree)."""
    if preprocessor is None:
        return []
    p, notes = preprocessor, []
    s = p.get("size")
    short = s.get("shortest_edge") if isinstance(s, dict) else s if isinstance(s, int) else None
    if isinstance(s, dict) and "height" in s and not p.get("do_center_crop", False):
        notes.append(
            f"it resizes a photo to {s['height']} x {s['width']}, images(...) its short side to "
            f"{int(size / CENTER_FRACTION)}, then crops the centre {size} x {size}"
        )
    elif "crop_pct" in p and short is not None and short < 384 and p["crop_pct"] != CENTER_FRACTION:
        notes.append(f"its crop_pct is {p['crop_pct']}, images(...) crops {CENTER_FRACTION}")
    elif p.get("do_center_crop") and short is not None and short != int(size / CENTER_FRACTION):
        notes.append(
            f"it resizes the short side to {short} before its {size} crop, images(...) to {int(size / CENTER_FRACTION)}"
        )
    resample = RESAMPLING.get(p.get("resample", 2), str(p.get("resample")))
    if resample != "bilinear":
        notes.append(f"it resamples {resample}, images(...) bilinear")
    if p.get("do_rescale", True) and p.get("rescale_factor", 1 / 255) != 1 / 255:
        notes.append(f"it rescales by {p['rescale_factor']}, images(...) by 1/255")
    return notes


def per_channel(preprocessor: dict | None, name: str) -> list | None:
    """image_mean or image_std: a number per channel, or None when the processor does not normalize."""
    p = preprocessor or {}
    if not p.get("do_normalize", True) or name not in p:
        return None
    v = p[name]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v] * 3
    if not isinstance(v, list) or len(v) not in (1, 3) or not all(isinstance(x, (int, float)) for x in v):
        raise DlcError(f"preprocessor_config.json: {name} must be a number per channel, got {json.dumps(v)}")
    return [float(x) for x in v]


def image_settings(preprocessor: dict | None, size: int) -> dict:
    """The photos' size and normalization, as a run on images(...) keeps them in its checkpoint."""
    return {
        "size": size,
        "mean": per_channel(preprocessor, "image_mean"),
        "std": per_channel(preprocessor, "image_std"),
    }


def laid_out(lines: list) -> str:
    """The program of `lines` as `dlc fmt` lays it out (a long pipe of blocks broken at the line width)."""
    return format_text("\n".join(lines) + "\n")


def number_list(v: list) -> str:
    return "[" + ", ".join(f"{x:g}" for x in v) + "]"


def model_start(lines: list, name: str, x_type: str, head: str, body: list, results: list, as_def: bool) -> list:
    """`lines` (the program's comments and defs), then the model `name` of the input `x: x_type` (and
    a classifier's target) up to its head: the lines of `body` (indented), which bind `results`, the
    base model's outputs. With `as_def` (`--def`), the body is a def `name` returning them, which the
    model calls with `name = ""` (its parameters keep their names) and binds under the same names."""
    inputs = [f"    input  x: {x_type}"] + ["    target y: i32[B]"] * (head == "image")
    if not as_def:
        return lines + [f"model {name} {{", *inputs, *body]
    if name in re.findall(r"^def (\w+)", "\n".join(lines), re.MULTILINE):
        raise DlcError(f"--def: the program defines a def {name} of its own already: write it under another name")
    returned = ", ".join(results)
    call = f'    {returned} = {name}(x, name = "")'
    return lines + [
        f"def {name}(x: {x_type}) {{",
        *body,
        f"    return {returned}",
        "}",
        "",
        f"model {name} {{",
        *inputs,
        call,
    ]


def classifier_end(features: str, config: dict, name: str, preprocessor: dict | None, size: int, weights) -> list:
    """The lines that end an image classifier's model, its logits a dense layer of `features` (a .dl
    expression) into the config's classes, with its loss, accuracy and outputs, and the train block after it."""
    return [
        f"    logits = dense({features}, {len(class_names(config))})",
        "    loss   sparse_cross_entropy(logits, y)",
        "    metric accuracy = accuracy(logits, y)",
        "    output probs = softmax(logits)",
        "    output logits",
        "}",
        "",
        train_block(name, preprocessor, size, weights),
    ]


def train_block(name: str, preprocessor: dict | None, size: int, weights: str | None) -> str:
    """The train block of an image classifier: photos in class folders read as the folder's processor
    reads them, fine-tuned from the imported weights."""
    settings = [f'"photos/", size = {size}']
    for arg, key_ in (("mean", "image_mean"), ("std", "image_std")):
        v = per_channel(preprocessor, key_)
        if v is not None:
            settings.append(f"{arg} = {number_list(v)}")
    lines = [f"train {name} {{", "    # photos in a folder per class (as many classes as the classifier has)"]
    if preprocessor is None:
        lines.append("    # (the folder has no preprocessor_config.json: the photos are not normalized)")
    notes = transform_notes(preprocessor, size)
    lines += ["    # unlike preprocessor_config.json:"] * bool(notes) + [f"    #   {note}" for note in notes]
    lines.append(f"    data       = images({', '.join(settings)})")
    lines += [
        "    validation = split(0.1)",
        "    batch      = 32",
        "    epochs     = 3",
        "    optimizer  = adam(lr = 1e-4)",
    ]
    if weights is not None:
        lines.append(f'    init_from  = "{weights}"')
    return "\n".join(lines + ["}"])


# ---- tensors ----------------------------------------------------------------------------------------------
# A family names its tensors as (dlc name, Hugging Face name, how): how is "same" (one layout), "linear" (a
# torch Linear's weight [out, in], dlc's dense W [in, out]) or "count" (BatchNorm2d's num_batches_tracked,
# which torch reads only with momentum=None: not imported, written back as 0).
def conv_bn(dlc: str, hf: str, conv: str = "convolution", norm: str = "normalization") -> list:
    """The names of a bias-free convolution and its BatchNorm2d (the stdlib's conv2d and batchnorm)."""
    return [(f"{dlc}.conv.W", f"{hf}.{conv}.weight", "same"), *batchnorm(f"{dlc}.norm", f"{hf}.{norm}")]


def batchnorm(dlc: str, hf: str) -> list:
    return [
        (f"{dlc}.gamma", f"{hf}.weight", "same"),
        (f"{dlc}.beta", f"{hf}.bias", "same"),
        (f"{dlc}.running_mean", f"{hf}.running_mean", "same"),
        (f"{dlc}.running_var", f"{hf}.running_var", "same"),
        (None, f"{hf}.num_batches_tracked", "count"),
    ]


def dense(dlc: str, hf: str) -> list:
    return [(f"{dlc}.W", f"{hf}.weight", "linear"), (f"{dlc}.b", f"{hf}.bias", "same")]


def prefixed(names: list, prefix: str) -> list:
    """`names` with the base model's prefix (`resnet.`) on their Hugging Face names."""
    return [(d, prefix + h, how) for d, h, how in names]


def to_dlc(names: list, tensors: dict, prefix: str) -> dict:
    """The folder's tensors as dlc's parameters. A classifier's base model is under `prefix` and a base
    model's folder is not: a tensor is found either way."""
    params = {}
    for d, h, how in names:
        bare = h[len(prefix) :] if h.startswith(prefix) else h
        found = next((n for n in (h, bare, prefix + bare) if n in tensors), None)
        if found is None:
            if how == "count":
                continue
            raise DlcError(f"the model's weights have no tensor {h}, which its config.json needs")
        if how != "count":
            a = np.asarray(tensors[found], np.float32)
            params[d] = np.ascontiguousarray(a.T) if how == "linear" else a
    return params


def from_dlc(names: list, params: dict) -> dict:
    """dlc's parameters as the Hugging Face tensors of `names`, in torch's layouts."""
    out = {}
    for d, h, how in names:
        if how == "count":
            out[h] = np.zeros((), np.int64)
        else:
            a = np.asarray(params[d], np.float32)
            out[h] = np.ascontiguousarray(a.T) if how == "linear" else a
    return out
