"""torch.nn's names and layouts for a model's parameters (docs/interop.md).

The layers of the standard library are PyTorch's, so each parameter one of them declares
is a tensor of a torch.nn module's state dict. Which one follows from the calls that led
to the declaration (`ParamInfo.calls`, recorded by the compiler), not from the name: the
innermost call is the layer that declared it (`dense` is a `Linear`: `W` is `weight`,
transposed), and the calls around it may be torch modules holding it under other names
(a `transformer_encoder_block` is a `TransformerEncoderLayer`, whose attention `attn` is
`self_attn`). The module path is the dlc name's prefix with those renamings:
`enc.0.attn.Wq` is the first third of `enc.0.self_attn.in_proj_weight`.

A parameter declared by the user's own `param`, or by a layer without a torch.nn
counterpart (Bahdanau and Luong attention), keeps its dlc name and layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from dlc.compiler.errors import DlcError

RECURRENT = "rnn|lstm|gru"

_LINEAR = {"weight": (("W",), True), "bias": (("b",), False)}
_CONV = {"weight": (("W",), False), "bias": (("b",), False)}
_NORM = {"weight": (("gamma",), False), "bias": (("beta",), False)}


def _recurrent(layer: str, shapes: dict) -> dict:
    """nn.RNN / LSTM / GRU: the gate order (i, f, g, o; r, z, n) and the two biases are torch's already."""
    return {
        f"weight_ih_{layer}": (("Wx",), True),
        f"weight_hh_{layer}": (("Wh",), True),
        f"bias_ih_{layer}": (("bx",), False),
        f"bias_hh_{layer}": (("bh",), False),
    }


def _attention(layer: str, shapes: dict) -> dict:
    """nn.MultiheadAttention packs the input projections into one tensor when the keys and
    values have the queries' width (kdim = vdim = embed_dim), else keeps three."""
    if shapes.get("Wk") == shapes.get("Wq") and shapes.get("Wv") == shapes.get("Wq"):
        projections = {"in_proj_weight": (("Wq", "Wk", "Wv"), True)}
    else:
        projections = {f"{x}_proj_weight": ((f"W{x}",), True) for x in "qkv"}
    return projections | {
        "in_proj_bias": (("bq", "bk", "bv"), False),
        "out_proj.weight": (("Wo",), True),
        "out_proj.bias": (("bo",), False),
    }


# A layer that declares parameters -> its torch attributes, given the recurrent layer's
# suffix and the shapes of its parameters: {attribute: ((dlc parameters, concatenated
# along torch's first axis), transposed)}.
LAYERS = {
    "dense": lambda layer, shapes: _LINEAR,
    "conv1d": lambda layer, shapes: _CONV,
    "conv2d": lambda layer, shapes: _CONV,
    "conv1d_transpose": lambda layer, shapes: _CONV,
    "conv2d_transpose": lambda layer, shapes: _CONV,
    "embedding": lambda layer, shapes: {"weight": (("W",), False)},
    "positional_embedding": lambda layer, shapes: {"weight": (("P",), False)},  # learned positions: nn.Embedding
    "layernorm": lambda layer, shapes: _NORM,
    "batchnorm": lambda layer, shapes: (
        _NORM | {"running_mean": (("running_mean",), False), "running_var": (("running_var",), False)}
    ),
    "rnn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "multi_head_attention": _attention,
}
NO_TORCH_MODULE = {"additive_attention", "multiplicative_attention", "luong_attention"}

# A layer made of layers -> for each call in it (the callee, its name relative to the
# container's): its torch path relative to the container's and, for a recurrent layer,
# the suffix of its tensors (l0, l1, l0_reverse). A call no entry names keeps its name.
CONTAINERS = {
    "bidirectional": [(RECURRENT, "fwd", "", "l0"), (RECURRENT, "bwd", "", "l0_reverse")],
    "stacked": [(RECURRENT, r"layer\.(\d+)", "", r"l\1")],
    "feed_forward": [("dense", "inner", "linear1"), ("dense", "", "linear2")],
    "transformer_encoder_block": [
        ("multi_head_attention", "attn", "self_attn"),
        ("feed_forward", "ffn", ""),
        ("layernorm", r"ln(\d)", r"norm\1"),
    ],
    "transformer_decoder_block": [
        ("multi_head_attention", "self_attn", "self_attn"),
        ("multi_head_attention", "cross_attn", "multihead_attn"),
        ("feed_forward", "ffn", ""),
        ("layernorm", r"ln(\d)", r"norm\1"),
        ("layernorm", "", "norm3"),
    ],  # post-norm: the last layernorm is unnamed
    "transformer_encoder": [("transformer_encoder_block", r"(\d+)", r"layers.\1"), ("layernorm", "", "norm")],
    "transformer_decoder": [("transformer_decoder_block", r"(\d+)", r"layers.\1"), ("layernorm", "", "norm")],
    "residual_block": [("conv2d", "proj", "downsample.0"), ("batchnorm", "proj_bn", "downsample.1")],  # torchvision
}

# BatchNorm's buffer that dlc does not keep (its momentum is fixed): written by torch, ignored here
BATCHNORM_COUNT = "num_batches_tracked"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _relative(path: str, outer: str) -> str:
    return path[len(outer) :].lstrip(".") if outer else path


def _module(calls: tuple) -> tuple[str, str]:
    """(torch module path, recurrent suffix) of the innermost of `calls`."""
    path, layer, outer = "", "l0", None
    for call in calls:
        rel, segment, layer = _relative(call.path, outer.path if outer else ""), None, "l0"
        if outer is not None and outer.stdlib and call.stdlib:
            for callee, name, torch_path, *suffix in CONTAINERS.get(outer.name, ()):
                match = re.fullmatch(name, rel)
                if match and re.fullmatch(callee, call.name):
                    segment, layer = match.expand(torch_path), match.expand(suffix[0]) if suffix else "l0"
                    break
        path, outer = _join(path, rel if segment is None else segment), call
    return path, layer


@dataclass(frozen=True)
class TorchTensor:
    """One tensor of the torch state dict: the dlc parameters it holds, concatenated along
    its first axis, each transposed or not."""

    name: str
    parts: tuple
    transposed: bool
    shape: tuple


class TorchLayout:
    """The torch state dict of a model's parameters (`Model.params`), both ways."""

    def __init__(self, params: list):
        self.dlc_shapes = {p.name: tuple(p.type.shape) for p in params}
        self.tensors: list[TorchTensor] = []
        self.kept: list[str] = []  # no torch.nn counterpart: their dlc names and layouts
        self.ignored: set[str] = set()  # torch tensors dlc has no parameter for (num_batches_tracked)
        layers: dict = {}
        for p in params:
            layers.setdefault(p.calls, []).append(p.name)
        for calls, names in layers.items():
            self._add_layer(calls, names)
        owner: dict = {}
        for t in self.tensors:
            if t.name in owner:
                raise DlcError(
                    f"the parameters {owner[t.name]} and {', '.join(t.parts)} would both be "
                    f"'{t.name}' in torch.nn's names; rename one of them"
                )
            owner[t.name] = ", ".join(t.parts)

    def _add_layer(self, calls: tuple, names: list):
        leaf = calls[-1] if calls else None
        if leaf is None or not leaf.stdlib or leaf.name not in LAYERS:
            self._keep(names)
            return
        module, layer = _module(calls)
        local = {_relative(n, leaf.path): n for n in names}
        table = LAYERS[leaf.name](layer, {k: self.dlc_shapes[n] for k, n in local.items()})
        used = set()
        for attr, (parts, transposed) in table.items():
            if all(part in local for part in parts):  # a layer without bias has no `bias`
                full = tuple(local[part] for part in parts)
                shapes = [self.dlc_shapes[n][::-1] if transposed else self.dlc_shapes[n] for n in full]
                shape = (sum(s[0] for s in shapes),) + shapes[0][1:]
                self.tensors.append(TorchTensor(_join(module, attr), full, transposed, shape))
                used.update(parts)
        if leaf.name == "batchnorm":
            self.ignored.add(_join(module, BATCHNORM_COUNT))
        self._keep([n for k, n in local.items() if k not in used])

    def _keep(self, names: list):
        self.kept += names
        self.tensors += [TorchTensor(n, (n,), False, self.dlc_shapes[n]) for n in names]

    def shapes(self) -> dict:
        return {t.name: t.shape for t in self.tensors}

    def to_torch(self, params: dict, concatenate=np.concatenate) -> dict:
        """dlc arrays by dlc name -> the torch state dict: transposed views (`.T`), joined by
        `concatenate` (torch.cat for torch tensors, which keeps them differentiable)."""
        out = {}
        for t in self.tensors:
            values = [params[n].T if t.transposed else params[n] for n in t.parts]
            out[t.name] = values[0] if len(values) == 1 else concatenate(values)
        return out

    def to_dlc(self, tensors: dict) -> dict:
        """Torch arrays by torch name -> dlc arrays, for every torch tensor given (with its shape)."""
        out = {}
        for t in self.tensors:
            if t.name not in tensors:
                continue
            whole = np.asarray(tensors[t.name])
            rows = np.cumsum([self.dlc_shapes[n][-1 if t.transposed else 0] for n in t.parts[:-1]])
            for n, part in zip(t.parts, np.split(whole, rows) if len(t.parts) > 1 else [whole]):
                out[n] = np.asarray(part.T if t.transposed else part, order="C")
        return out
