"""Parity of the .dl standard library with PyTorch, in float64.

For every activation, layer and loss: with the same weights, dlc's forward outputs and
its gradients (w.r.t. the float inputs, declared here as params, and w.r.t. every
parameter of the layer) match PyTorch within 1e-5 relative. The scalar both sides
differentiate is sum(y * r) for a fixed random r per output.

The torch side runs the real torch.nn module through torch.func.functional_call with
parameters computed from the dlc-layout tensors (W.T, concatenations, ...), so autograd
hands back gradients in dlc's layout directly. Composite layers (recurrent, attention,
transformer) get them by dlc's own mapping to torch.nn's names (runtime/interop/torch_layout.py),
which these tests so check too.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
nn = torch.nn
F = torch.nn.functional

from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.frontend.loader import load_text  # noqa: E402
from helpers.numeric import build, forward, gradients  # noqa: E402
from helpers.torch_parity import DT, call, parity  # noqa: E402


def stdlib_defs(filename: str) -> set:
    text = resources.files("dlc.compiler").joinpath("stdlib", filename).read_text()
    return set(re.findall(r"^def (\w+)", text, re.M))


# ---- activations ------------------------------------------------------------------------------------------------
ACTIVATIONS = {
    "identity(x)": lambda x: x,
    "relu(x)": F.relu,
    "leaky_relu(x)": lambda x: F.leaky_relu(x, 0.01),
    "leaky_relu(x, 0.2)": lambda x: F.leaky_relu(x, 0.2),
    "elu(x)": F.elu,
    "elu(x, 0.5)": lambda x: F.elu(x, 0.5),
    "selu(x)": F.selu,
    "gelu(x)": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_exact(x)": F.gelu,
    "swish(x)": F.silu,
    "swish(x, 2.0)": lambda x: x * torch.sigmoid(2.0 * x),
    "silu(x)": F.silu,
    "softplus(x)": F.softplus,
    "hard_sigmoid(x)": F.hardsigmoid,
    "relu6(x)": F.relu6,
    "step(x)": lambda x: (x >= 0).to(DT),
    "sign_step(x)": lambda x: torch.where(x >= 0, 1.0, -1.0).to(DT),
    "softmax(x)": lambda x: F.softmax(x, -1),
    "softmax(x, 0)": lambda x: F.softmax(x, 0),
    "log_softmax(x)": lambda x: F.log_softmax(x, -1),
    "log_softmax(x, 0)": lambda x: F.log_softmax(x, 0),
    "sigmoid(x)": torch.sigmoid,
    "tanh(x)": torch.tanh,
}


def test_every_activation_is_covered():
    covered = {k.split("(")[0] for k in ACTIVATIONS}
    missing = stdlib_defs("activations.dl") - covered
    assert not missing, f"activations without a parity test: {sorted(missing)}"


@pytest.mark.parametrize("expr", list(ACTIVATIONS))
def test_activation(expr):
    x = np.random.default_rng(1).standard_normal((3, 5)) * 2.5  # reaches hard_sigmoid's flat parts
    parity({"x": (3, 5)}, f"y = {expr}", lambda T, f: {"y": ACTIVATIONS[expr](T["x"])}, values={"x": x})


SMOOTH_AT_ZERO = [
    "softplus(x)",
    "elu(x)",
    "gelu(x)",
    "gelu_exact(x)",
    "silu(x)",
    "swish(x, 2.0)",
    "sigmoid(x)",
    "softmax(x)",
    "log_softmax(x)",
]


@pytest.mark.parametrize("expr", SMOOTH_AT_ZERO)
def test_smooth_activation_at_zero(expr):
    """These functions are differentiable at 0, so x = 0 (a zero-initialized layer gives it
    exactly) must get the true derivative, not a one-sided one."""
    x = np.array([[0.0, 0.0, 0.0], [0.0, 0.7, -1.3]])
    parity({"x": (2, 3)}, f"y = {expr}", lambda T, f: {"y": ACTIVATIONS[expr](T["x"])}, values={"x": x})


# ---- dense, convolution, pooling -----------------------------------------------------------------------------------
def _linear(T, prefix, x, fin, fout, bias=True):
    m = nn.Linear(fin, fout, bias=bias, dtype=DT)
    mapping = {"weight": T[f"{prefix}.W"].T}
    if bias:
        mapping["bias"] = T[f"{prefix}.b"]
    return call(m, mapping, x)


DENSE = {
    "plain": ("y = dense(x, 4)", (2, 5), lambda T: _linear(T, "y", T["x"], 5, 4)),
    "tanh": ("y = dense(x, 4, tanh)", (2, 5), lambda T: torch.tanh(_linear(T, "y", T["x"], 5, 4))),
    "rank3": ("y = dense(x, 4, relu)", (2, 3, 5), lambda T: F.relu(_linear(T, "y", T["x"], 5, 4))),
    "nobias": ("y = dense(x, 4, bias = false)", (2, 5), lambda T: _linear(T, "y", T["x"], 5, 4, bias=False)),
}


@pytest.mark.parametrize("case", list(DENSE))
def test_dense(case):
    body, shape, fn = DENSE[case]
    parity({"x": shape}, body, lambda T, f: {"y": fn(T)})


CONV1D = {
    "valid": ("y = conv1d(x, 4, 3)", dict(stride=1, padding=0)),
    "pad1": ("y = conv1d(x, 4, 3, padding = 1)", dict(stride=1, padding=1)),
    "same": ("y = conv1d(x, 4, 3, padding = \"same\")", dict(stride=1, padding=1)),
    "same-k4": ("y = conv1d(x, 4, 4, padding = \"same\")", dict(stride=1, padding="same")),
    "stride2": ("y = conv1d(x, 4, 3, 2)", dict(stride=2, padding=0)),
    "k5-stride2-pad2": ("y = conv1d(x, 4, 5, 2, 2)", dict(stride=2, padding=2)),
}


@pytest.mark.parametrize("case", list(CONV1D))
def test_conv1d(case):
    body, kw = CONV1D[case]
    k = 5 if "k5" in case else 3

    def fn(T, f):
        m = nn.Conv1d(3, 4, k, dtype=DT, **kw)
        return {"y": call(m, {"weight": T["y.W"], "bias": T["y.b"]}, T["x"])}

    parity({"x": (2, 3, 9)}, body, fn)


CONV2D = {
    "valid": ("y = conv2d(x, 4)", dict(kernel_size=3)),
    "same": ("y = conv2d(x, 4, 3, padding = \"same\")", dict(kernel_size=3, padding=1)),
    "same-k5x3": ("y = conv2d(x, 4, (5, 3), padding = \"same\")", dict(kernel_size=(5, 3), padding=(2, 1))),
    # an even kernel pads one more after than before, as PyTorch does (it was one less in all)
    "same-k2": ("y = conv2d(x, 4, 2, padding = \"same\")", dict(kernel_size=2, padding="same")),
    "same-k4x3": ("y = conv2d(x, 4, (4, 3), padding = \"same\")", dict(kernel_size=(4, 3), padding="same")),
    "stride2": ("y = conv2d(x, 4, 3, 2)", dict(kernel_size=3, stride=2)),
    "stride2-pad1": ("y = conv2d(x, 4, 3, 2, 1)", dict(kernel_size=3, stride=2, padding=1)),
    "k3x2-stride21-pad1": ("y = conv2d(x, 4, (3, 2), (2, 1), 1)", dict(kernel_size=(3, 2), stride=(2, 1), padding=1)),
    "nobias-relu": ("y = conv2d(x, 4, 3, act = relu, bias = false)", dict(kernel_size=3, bias=False)),
}


@pytest.mark.parametrize("case", list(CONV2D))
def test_conv2d(case):
    body, kw = CONV2D[case]

    def fn(T, f):
        m = nn.Conv2d(3, 4, dtype=DT, **kw)
        mapping = {"weight": T["y.W"]}
        if kw.get("bias", True):
            mapping["bias"] = T["y.b"]
        y = call(m, mapping, T["x"])
        return {"y": F.relu(y) if "relu" in case else y}

    parity({"x": (2, 3, 7, 6)}, body, fn)


POOLS = {
    "maxpool2d(x)": lambda x: nn.MaxPool2d(2)(x),
    "maxpool2d(x, 3, 2, 1)": lambda x: nn.MaxPool2d(3, 2, 1)(x),
    "maxpool2d(x, 2, 1)": lambda x: nn.MaxPool2d(2, 1)(x),
    "avgpool2d(x)": lambda x: nn.AvgPool2d(2)(x),
    "avgpool2d(x, 3, 2, 1)": lambda x: nn.AvgPool2d(3, 2, 1)(x),
    "avgpool2d(x, 3, 1)": lambda x: nn.AvgPool2d(3, 1)(x),
    "global_avg_pool(x)": lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1),
    "flatten(x)": lambda x: nn.Flatten()(x),
}


@pytest.mark.parametrize("expr", list(POOLS))
def test_pooling_and_flatten(expr):
    parity({"x": (2, 3, 6, 7)}, f"y = {expr}", lambda T, f: {"y": POOLS[expr](T["x"])}, scale=1.0)


# ---- normalization and embedding -------------------------------------------------------------------------------------
BN_SHAPES = {"2d": (6, 3), "3d": (4, 3, 5), "4d": (4, 3, 2, 3)}


def _bn_values(seed=3):
    r = np.random.default_rng(seed)
    return {
        "y.gamma": r.uniform(0.5, 1.5, 3),
        "y.beta": r.standard_normal(3),
        "y.running_mean": r.standard_normal(3),
        "y.running_var": r.uniform(0.5, 2.0, 3),
    }


def _bn_module(rank):
    return (nn.BatchNorm1d if rank <= 3 else nn.BatchNorm2d)(3, momentum=0.1, eps=1e-5, dtype=DT)


@pytest.mark.parametrize("rank", list(BN_SHAPES))
def test_batchnorm_training(rank):
    shape = BN_SHAPES[rank]

    def fn(T, f):
        m = _bn_module(len(shape)).train()
        rm, rv = T["y.running_mean"].detach().clone(), T["y.running_var"].detach().clone()
        y = call(m, {"weight": T["y.gamma"], "bias": T["y.beta"], "running_mean": rm, "running_var": rv}, T["x"])
        return {"y": y, "update:y.running_mean": rm, "update:y.running_var": rv}

    x = np.random.default_rng(4).standard_normal(shape) * 2 + 1
    model, out, _ = parity({"x": shape}, "y = batchnorm(x)", fn, values={"x": x, **_bn_values()})
    assert {p.name for p in model.params if not p.trainable} == {"y.running_mean", "y.running_var"}
    # the update really moved the statistics (so the comparison above is not vacuous)
    assert np.abs(out["update:y.running_mean"] - _bn_values()["y.running_mean"]).max() > 1e-3


@pytest.mark.parametrize("rank", list(BN_SHAPES))
def test_batchnorm_eval(rank):
    shape = BN_SHAPES[rank]

    def fn(T, f):
        m = _bn_module(len(shape)).eval()
        y = call(
            m,
            {
                "weight": T["y.gamma"],
                "bias": T["y.beta"],
                "running_mean": T["y.running_mean"],
                "running_var": T["y.running_var"],
            },
            T["x"],
        )
        return {"y": y}

    model, out, _ = parity({"x": shape}, "y = batchnorm(x)", fn, values=_bn_values(), training=False)
    assert not any(k.startswith("update:") for k in out)


def test_batchnorm_momentum_argument():
    shape = (5, 3)

    def fn(T, f):
        m = nn.BatchNorm1d(3, momentum=0.3, eps=1e-3, dtype=DT).train()
        rm, rv = T["y.running_mean"].detach().clone(), T["y.running_var"].detach().clone()
        y = call(m, {"weight": T["y.gamma"], "bias": T["y.beta"], "running_mean": rm, "running_var": rv}, T["x"])
        return {"y": y, "update:y.running_mean": rm, "update:y.running_var": rv}

    parity({"x": shape}, "y = batchnorm(x, 0.3, 0.001)", fn, values=_bn_values())


@pytest.mark.parametrize("shape", [(2, 3, 6), (4, 6)], ids=["rank3", "rank2"])
def test_layernorm(shape):
    def fn(T, f):
        m = nn.LayerNorm(6, eps=1e-5, dtype=DT)
        return {"y": call(m, {"weight": T["y.gamma"], "bias": T["y.beta"]}, T["x"])}

    values = {"y.gamma": np.random.default_rng(5).uniform(0.5, 1.5, 6)}
    parity({"x": shape}, "y = layernorm(x)", fn, values=values, scale=1.0)


@pytest.mark.parametrize("size", [5, 2], ids=["odd", "even"])
def test_local_response_norm(size):
    def fn(T, f):
        return {"y": nn.LocalResponseNorm(size, alpha=0.3, beta=0.75, k=2.0)(T["x"])}

    parity({"x": (2, 7, 3, 4)}, f"y = local_response_norm(x, {size}, 0.3, 0.75, 2.0)", fn, scale=1.0)


def test_embedding():
    ids = np.array([[1, 3, 3, 0], [4, 1, 1, 1]], np.int32)  # repeated ids accumulate, id 2 unused

    def fn(T, f):
        m = nn.Embedding(5, 3, dtype=DT)
        return {"y": call(m, {"weight": T["y.W"]}, f["ids"])}

    _, _, step = parity({}, "input ids: i32[2, 4]\ny = embedding(ids, 5, 3)", fn, feeds={"ids": ids})
    assert np.all(step["grad:y.W"][2] == 0) and np.abs(step["grad:y.W"][1]).max() > 0


def test_shared_weights_accumulate_gradients():
    """name = "shared" makes two calls use one dense layer: the gradients of both uses add up."""

    def fn(T, f):
        a = torch.tanh(_linear(T, "shared", T["x"], 4, 4))
        return {"y": _linear(T, "shared", a, 4, 4)}

    parity({"x": (2, 4)}, "a = dense(x, 4, tanh, name = \"shared\")\ny = dense(a, 4, name = \"shared\")", fn)


# ---- recurrent layers --------------------------------------------------------------------------------------------
TORCH_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
D, H, SEQ = 3, 4, (2, 5, 3)


def _run_cell(cell, T, x, reverse=False, hx=None, prefix="y", **kw):
    m = TORCH_CELLS[cell](D, H, batch_first=True, dtype=DT, **kw)
    xin = x.flip(1) if reverse else x
    args = (xin,) if hx is None else (xin, hx)
    out, state = call(m, T.torch(prefix), *args)
    return (out.flip(1) if reverse else out), state


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent(cell, reverse):
    body = f"y = {cell}(x, {H}" + (", reverse = true)" if reverse else ")")
    parity({"x": SEQ}, body, lambda T, f: {"y": _run_cell(cell, T, T["x"], reverse)[0]}, scale=0.7)


def test_rnn_relu():
    def fn(T, f):
        return {"y": _run_cell("rnn", T, T["x"], nonlinearity="relu")[0]}

    parity({"x": SEQ}, f"y = rnn(x, {H}, relu)", fn, scale=0.7)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lstm_state_in_and_out(reverse):
    """state = (h0, c0) and return_state = true, against torch's (h0, c0) and (h_n, c_n)."""

    def fn(T, f):
        hx = (T["h0"][None], T["c0"][None])
        out, (h, c) = _run_cell("lstm", T, T["x"], reverse, hx)
        return {"y": out, "h": h[0], "c": c[0]}

    body = f"y, h, c = lstm(x, {H}, reverse = {'true' if reverse else 'false'}, state = (h0, c0), return_state = true)"
    parity({"x": SEQ, "h0": (2, H), "c0": (2, H)}, body, fn, outputs=("y", "h", "c"), scale=0.7)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_state_in_and_out(cell):
    def fn(T, f):
        out, h = _run_cell(cell, T, T["x"], hx=T["h0"][None])
        return {"y": out, "h": h[0]}

    body = f"y, h = {cell}(x, {H}, state = (h0,), return_state = true)"
    parity({"x": SEQ, "h0": (2, H)}, body, fn, outputs=("y", "h"), scale=0.7)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_concat(cell):
    def fn(T, f):
        m = TORCH_CELLS[cell](D, H, batch_first=True, bidirectional=True, dtype=DT)
        return {"y": call(m, T.torch("y"), T["x"])[0]}

    parity({"x": SEQ}, f"y = bidirectional(x, {cell}, {H})", fn, scale=0.7)


def test_bidirectional_sum():
    def fn(T, f):
        m = nn.LSTM(D, H, batch_first=True, bidirectional=True, dtype=DT)
        out = call(m, T.torch("y"), T["x"])[0]
        return {"y": out[..., :H] + out[..., H:]}

    parity({"x": SEQ}, f"y = bidirectional(x, lstm, {H}, \"sum\")", fn, scale=0.7)


def test_stacked_lstm():
    def fn(T, f):
        m = nn.LSTM(D, H, num_layers=2, batch_first=True, dtype=DT)
        return {"y": call(m, T.torch("y"), T["x"])[0]}

    parity({"x": SEQ}, f"y = stacked(x, lstm, {H}, 2)", fn, scale=0.7)


# ---- attention ---------------------------------------------------------------------------------------------------------
B, TQ, TK, DM, HEADS = 2, 3, 4, 8, 2


def causal(T):
    return torch.triu(torch.full((T, T), -1e9, dtype=DT), diagonal=1)


def _mha(T, q, kv, **kw):
    m = nn.MultiheadAttention(DM, HEADS, batch_first=True, dtype=DT)
    return call(m, T.torch("y"), q, kv, kv, need_weights=False, **kw)[0]


def test_multi_head_self_attention():
    parity({"x": (B, TQ, DM)}, f"y = multi_head_attention(x, x, {HEADS})", lambda T, f: {"y": _mha(T, T["x"], T["x"])})


def test_self_attention_alias_with_causal_mask():
    def fn(T, f):
        return {"y": _mha(T, T["x"], T["x"], attn_mask=causal(TQ))}

    parity({"x": (B, TQ, DM)}, f"y = self_attention(x, {HEADS}, causal_mask({TQ}))", fn)


def test_multi_head_cross_attention():
    def fn(T, f):
        return {"y": _mha(T, T["x"], T["mem"])}

    parity({"x": (B, TQ, DM), "mem": (B, TK, DM)}, f"y = multi_head_attention(x, mem, {HEADS})", fn)


def test_multi_head_attention_other_memory_width():
    def fn(T, f):
        m = nn.MultiheadAttention(DM, HEADS, kdim=5, vdim=5, batch_first=True, dtype=DT)
        return {"y": call(m, T.torch("y"), T["x"], T["mem"], T["mem"], need_weights=False)[0]}

    parity({"x": (B, TQ, DM), "mem": (B, TK, 5)}, f"y = multi_head_attention(x, mem, {HEADS})", fn)


def test_multi_head_attention_padding_mask():
    ids = np.array([[5, 2, 7, 0], [3, 0, 0, 0]], np.int32)

    def fn(T, f):
        return {"y": _mha(T, T["x"], T["mem"], key_padding_mask=f["ids"] == 0)}

    body = f"input ids: i32[{B}, {TK}]\ny = multi_head_attention(x, mem, {HEADS}, padding_mask(ids))"
    parity({"x": (B, TQ, DM), "mem": (B, TK, DM)}, body, fn, feeds={"ids": ids})


@pytest.mark.parametrize("dtype", ["f32", "bool"])
def test_multi_head_attention_key_mask(dtype):
    """A [B, Tk] mask of the real keys, bool or additive, is torch's key_padding_mask."""
    ids = np.array([[5, 2, 7, 0], [3, 0, 0, 0]], np.int32)
    keep = ids != 0

    def fn(T, f):
        return {"y": _mha(T, T["x"], T["mem"], key_padding_mask=torch.tensor(~keep))}

    body = f"input m: {dtype}[{B}, {TK}]\ny = multi_head_attention(x, mem, {HEADS}, m)"
    parity(
        {"x": (B, TQ, DM), "mem": (B, TK, DM)},
        body,
        fn,
        feeds={"m": keep if dtype == "bool" else np.where(keep, 0.0, -1e9)},
    )


def test_attention_mask_of_the_wrong_shape_is_an_error_at_the_call():
    """padding_mask is [B, 1, 1, T], for multi-head attention: given to additive attention, whose
    scores are [B, T], it is refused at the user's line instead of broadcasting to [B, B, B, T]."""
    src = """model m {
    input q: f32[B, 3]
    input k: f32[B, T, 4]
    input ids: i32[B, T]
    ctx, w = additive_attention(q, k, 6, padding_mask(ids))
    output ctx
}"""
    with pytest.raises(DlcError) as e:
        load_text(src, "m.dl").build(training=False)
    assert e.value.span.file == "m.dl" and e.value.span.line == 5, e.value.render()
    assert "additive_attention: the mask f32[B, 1, 1, T] does not fit the attention scores f32[B, T]" in e.value.message
    assert "here give [B, Tk] such as ids != 0" in e.value.message


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "causal"])
def test_scaled_dot_product_attention(masked):
    shapes = {"q": (2, 2, 4, 3), "k": (2, 2, 4, 3), "v": (2, 2, 4, 5)}
    mask = ", causal_mask(4)" if masked else ""

    def fn(T, f):
        return {"y": F.scaled_dot_product_attention(T["q"], T["k"], T["v"], is_causal=masked)}

    parity(shapes, f"y = scaled_dot_product_attention(q, k, v{mask})", fn, scale=1.0)


def test_scaled_dot_product_attention_rank3_cross():
    shapes = {"q": (2, 3, 4), "k": (2, 5, 4), "v": (2, 5, 2)}
    parity(
        shapes,
        "y = scaled_dot_product_attention(q, k, v)",
        lambda T, f: {"y": F.scaled_dot_product_attention(T["q"], T["k"], T["v"])},
        scale=1.0,
    )


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "masks"])
def test_cached_attention_is_attention_over_the_cache_and_the_new_keys(masked):
    """Attention over a cache's keys and values and the new ones (each part's fused attention
    weighted by its log-sum-exp) as over their concatenation: the output and every gradient,
    through the log-sum-exps too; masked, a row that reads none of its cache."""
    shapes = {"q": (2, 2, 3, 4), "past_k": (2, 2, 5, 4), "past_v": (2, 2, 5, 3), "k": (2, 2, 3, 4), "v": (2, 2, 3, 3)}
    cached = np.where(np.arange(5)[None] < np.array([[0], [3]]), 0.0, -1e9).reshape(2, 1, 1, 5)  # 0 and 3 cached
    causal_ = np.where(np.tril(np.ones((3, 3))) > 0, 0.0, -1e9)

    def fn(T, f):
        keys, values = torch.cat([T["past_k"], T["k"]], 2), torch.cat([T["past_v"], T["v"]], 2)
        mask = np.concatenate([np.broadcast_to(cached, (2, 1, 3, 5)), np.broadcast_to(causal_, (2, 1, 3, 3))], -1)
        return {
            "y": F.scaled_dot_product_attention(T["q"], keys, values, attn_mask=torch.tensor(mask) if masked else None)
        }

    if masked:
        body = "input cached: f32[2, 1, 1, 5]\ny = cached_attention(q, past_k, past_v, k, v, cached, causal_mask(3))"
        parity(shapes, body, fn, feeds={"cached": cached}, scale=1.0)
    else:
        parity(shapes, "y = cached_attention(q, past_k, past_v, k, v)", fn, scale=1.0)


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


FFN = 16


@pytest.mark.parametrize("variant", ["pre_norm", "post_norm", "pre_norm_causal"])
def test_transformer_encoder_block(variant):
    pre = variant.startswith("pre")
    mask = ", mask = causal_mask(3)" if "causal" in variant else ""
    body = f"y = transformer_encoder_block(x, {HEADS}, {FFN}, rate = 0.0, pre_norm = {str(pre).lower()}{mask})"

    def fn(T, f):
        m = nn.TransformerEncoderLayer(
            DM, HEADS, FFN, dropout=0.0, activation=_gelu_tanh, batch_first=True, norm_first=pre, dtype=DT
        ).train()
        return {"y": call(m, T.torch("y"), T["x"], src_mask=causal(TQ) if mask else None)}

    values = {f"y.ln{i}.gamma": np.random.default_rng(6 + i).uniform(0.5, 1.5, DM) for i in (1, 2)}
    parity({"x": (B, TQ, DM)}, body, fn, values=values)


@pytest.mark.parametrize("variant", ["pre_norm", "post_norm"])
def test_transformer_decoder_block(variant):
    pre = variant == "pre_norm"
    body = (
        f"y = transformer_decoder_block(x, mem, {HEADS}, {FFN}, rate = 0.0, mask = causal_mask({TQ}), "
        f"pre_norm = {str(pre).lower()})"
    )

    def fn(T, f):
        m = nn.TransformerDecoderLayer(
            DM, HEADS, FFN, dropout=0.0, activation=_gelu_tanh, batch_first=True, norm_first=pre, dtype=DT
        ).train()
        return {"y": call(m, T.torch("y"), T["x"], T["mem"], tgt_mask=causal(TQ))}

    parity({"x": (B, TQ, DM), "mem": (B, TK, DM)}, body, fn)


def test_additive_attention():
    """Bahdanau: score_t = v . tanh(Wq q + Wk k_t), written out per time step in torch."""

    def fn(T, f):
        q, keys = T["q"], T["k"]
        scores = torch.stack(
            [torch.tanh(q @ T["ctx.Wq"] + keys[:, t] @ T["ctx.Wk"]) @ T["ctx.v"][:, 0] for t in range(keys.shape[1])],
            dim=1,
        )
        w = torch.softmax(scores, dim=1)
        return {"ctx": torch.einsum("bt,btd->bd", w, keys), "w": w}

    parity({"q": (2, 3), "k": (2, 5, 4)}, "ctx, w = additive_attention(q, k, 6)", fn, outputs=("ctx", "w"), scale=1.0)


@pytest.mark.parametrize("form", ["additive", "bool"])
def test_additive_attention_masked(form):
    """The mask as -1e9 where a key is padding, or as a bool [B, Tk] of the real keys."""
    mask = np.zeros((2, 5))
    mask[0, 3:] = -1e9
    mask[1, 1:] = -1e9
    given = mask if form == "additive" else mask == 0

    def fn(T, f):
        q, keys = T["q"], T["k"]
        scores = torch.einsum(
            "btu,u->bt", torch.tanh((q @ T["ctx.Wq"])[:, None] + keys @ T["ctx.Wk"]), T["ctx.v"][:, 0]
        )
        w = torch.softmax(scores + torch.tensor(mask, dtype=DT), dim=1)
        return {"ctx": torch.einsum("bt,btd->bd", w, keys), "w": w}

    dtype = "f32" if form == "additive" else "bool"
    model, out, _ = parity(
        {"q": (2, 3), "k": (2, 5, 4)},
        f"input m: {dtype}[2, 5]\nctx, w = additive_attention(q, k, 6, m)",
        fn,
        outputs=("ctx", "w"),
        feeds={"m": given},
        scale=1.0,
    )
    assert np.all(out["output:w"][mask < 0] < 1e-12)


@pytest.mark.parametrize("score", ["dot", "general"])
def test_multiplicative_attention(score):
    """Luong: score_t = q . k_t ("dot") or (q W) . k_t ("general")."""
    dq = 4 if score == "dot" else 3

    def fn(T, f):
        q = T["q"] @ T["ctx.W"] if score == "general" else T["q"]
        w = torch.softmax(torch.bmm(T["k"], q[:, :, None])[:, :, 0] + f["mask"], dim=1)
        return {"ctx": torch.bmm(w[:, None, :], T["k"])[:, 0], "w": w}

    mask = np.zeros((2, 5))
    mask[1, 4] = -1e9
    parity(
        {"q": (2, dq), "k": (2, 5, 4)},
        f"input mask: f32[2, 5]\nctx, w = multiplicative_attention(q, k, \"{score}\", mask)",
        fn,
        outputs=("ctx", "w"),
        feeds={"mask": mask},
        scale=1.0,
    )


@pytest.mark.parametrize("score", ["dot", "general"])
def test_luong_attention(score):
    """Global attention for all decoder steps: context = softmax(q k^T + mask) k, with q = queries W for
    "general"; torch's scaled_dot_product_attention with scale 1 computes the context."""
    dq = 4 if score == "dot" else 3
    mask = np.zeros((2, 3, 5))
    mask[0, :, 4] = -1e9
    mask[1, 0, 1:] = -1e9

    def fn(T, f):
        q = T["q"] @ T["ctx.W"] if score == "general" else T["q"]
        ctx = F.scaled_dot_product_attention(q, T["k"], T["k"], attn_mask=f["mask"], scale=1.0)
        return {"ctx": ctx, "w": torch.softmax(torch.einsum("btd,bsd->bts", q, T["k"]) + f["mask"], -1)}

    parity(
        {"q": (2, 3, dq), "k": (2, 5, 4)},
        f"input mask: f32[2, 3, 5]\nctx, w = luong_attention(q, k, \"{score}\", mask)",
        fn,
        outputs=("ctx", "w"),
        feeds={"mask": mask},
        scale=1.0,
    )


def test_luong_attention_key_mask():
    """A bool [B, S] mask of the real keys is the same for every query of luong_attention."""
    keep = np.array([[True, True, True, True, False], [True, True, False, False, False]])
    additive = torch.tensor(np.where(keep, 0.0, -1e9)[:, None, :], dtype=DT)

    def fn(T, f):
        q = T["q"] @ T["ctx.W"]
        return {"ctx": F.scaled_dot_product_attention(q, T["k"], T["k"], attn_mask=additive, scale=1.0)}

    parity(
        {"q": (2, 3, 3), "k": (2, 5, 4)},
        "input m: bool[2, 5]\nctx, w = luong_attention(q, k, mask = m)",
        fn,
        outputs=("ctx",),
        feeds={"m": keep},
        scale=1.0,
    )


# ---- losses and metrics ---------------------------------------------------------------------------------------------
def _r(seed=8):
    return np.random.default_rng(seed)


LOSSES = {
    "mse": ("y = mse(p, t)", lambda T, f: F.mse_loss(T["p"], f["t"])),
    "mae": ("y = mae(p, t)", lambda T, f: F.l1_loss(T["p"], f["t"])),
    "huber": ("y = huber(p, t)", lambda T, f: F.huber_loss(T["p"], f["t"], delta=1.0)),
    "huber-delta0.5": ("y = huber(p, t, 0.5)", lambda T, f: F.huber_loss(T["p"], f["t"], delta=0.5)),
    "huber-delta2": ("y = huber(p, t, 2.0)", lambda T, f: F.huber_loss(T["p"], f["t"], delta=2.0)),
}


@pytest.mark.parametrize("case", list(LOSSES))
def test_regression_loss(case):
    body, fn = LOSSES[case]
    r = _r()
    t = r.standard_normal((4, 3))
    p = t + r.standard_normal((4, 3)) * 1.5  # errors on both sides of huber's delta
    parity({"p": (4, 3)}, "input t: f32[4, 3]\n" + body, lambda T, f: {"y": fn(T, f)}, feeds={"t": t}, values={"p": p})


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_binary_cross_entropy(soft):
    r = _r(9)
    p = r.uniform(0.05, 0.95, (4, 3))
    t = r.uniform(0, 1, (4, 3)) if soft else (r.random((4, 3)) < 0.5).astype(np.float64)
    parity(
        {"p": (4, 3)},
        "input t: f32[4, 3]\ny = binary_cross_entropy(p, t)",
        lambda T, f: {"y": F.binary_cross_entropy(T["p"], f["t"])},
        feeds={"t": t},
        values={"p": p},
    )


def test_binary_cross_entropy_with_logits():
    r = _r(10)
    z = r.standard_normal((4, 3)) * 4  # large |z| too: the stable form matters
    z[0, 0], z[0, 1] = 40.0, -40.0
    t = (r.random((4, 3)) < 0.5).astype(np.float64)
    parity(
        {"z": (4, 3)},
        "input t: f32[4, 3]\ny = binary_cross_entropy_with_logits(z, t)",
        lambda T, f: {"y": F.binary_cross_entropy_with_logits(T["z"], f["t"])},
        feeds={"t": t},
        values={"z": z},
    )


def test_binary_cross_entropy_with_logits_at_zero_logits():
    """A zero-initialized output layer gives z = 0 exactly; the gradient there is sigmoid(0) - y = 0.5 - y."""
    z = np.array([[0.0, 0.0, 0.0], [0.0, 1.5, -2.0]])
    t = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    parity(
        {"z": (2, 3)},
        "input t: f32[2, 3]\ny = binary_cross_entropy_with_logits(z, t)",
        lambda T, f: {"y": F.binary_cross_entropy_with_logits(T["z"], f["t"])},
        feeds={"t": t},
        values={"z": z},
    )


def test_categorical_cross_entropy_probability_targets():
    r = _r(11)
    target = r.random((4, 5))
    target /= target.sum(-1, keepdims=True)
    parity(
        {"z": (4, 5)},
        "input t: f32[4, 5]\ny = categorical_cross_entropy(z, t)",
        lambda T, f: {"y": F.cross_entropy(T["z"], f["t"])},
        feeds={"t": target},
        scale=2.0,
    )


def test_sparse_cross_entropy():
    labels = np.array([0, 4, 2, 2], np.int32)
    parity(
        {"z": (4, 5)},
        "input t: i32[4]\ny = sparse_cross_entropy(z, t)",
        lambda T, f: {"y": F.cross_entropy(T["z"], f["t"])},
        feeds={"t": labels},
        scale=2.0,
    )


def test_sparse_cross_entropy_sequence():
    labels = np.array([[0, 4, 1], [3, 3, 2]], np.int32)
    parity(
        {"z": (2, 3, 5)},
        "input t: i32[2, 3]\ny = sparse_cross_entropy(z, t)",
        lambda T, f: {"y": F.cross_entropy(T["z"].permute(0, 2, 1), f["t"])},
        feeds={"t": labels},
        scale=2.0,
    )


def test_sparse_cross_entropy_ignore_index():
    """ignore = -1 is torch's ignore_index: the mean over the other labels; the gradient of
    the ignored rows is zero."""
    labels = np.array([[0, 4, -1], [3, -1, -1]], np.int32)
    parity(
        {"z": (2, 3, 5)},
        "input t: i32[2, 3]\ny = sparse_cross_entropy(z, t, ignore = -1)",
        lambda T, f: {"y": F.cross_entropy(T["z"].permute(0, 2, 1), f["t"], ignore_index=-1)},
        feeds={"t": labels},
        scale=2.0,
    )


@pytest.mark.parametrize("dtype", ["f32", "bool"])
def test_sparse_cross_entropy_mask(dtype):
    """mask = m counts the labels where m is nonzero, as a mean over them (and with ignore too)."""
    labels = np.array([[0, 4, 1], [3, 3, 2]], np.int32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])

    def fn(T, f):
        nll = F.cross_entropy(T["z"].permute(0, 2, 1), f["t"], reduction="none")
        kept = f["m"].double() * (f["t"] != 3).double()
        return {"y": (nll * f["m"].double()).sum() / f["m"].double().sum(), "w": (nll * kept).sum() / kept.sum()}

    parity(
        {"z": (2, 3, 5)},
        f"input t: i32[2, 3]\ninput m: {dtype}[2, 3]\ny = sparse_cross_entropy(z, t, mask = m)"
        "\nw = sparse_cross_entropy(z, t, ignore = 3, mask = m)",
        fn,
        outputs=("y", "w"),
        feeds={"t": labels, "m": mask.astype(np.float64 if dtype == "f32" else bool)},
        scale=2.0,
    )


def test_margin_losses():
    r = _r(12)
    y = np.where(r.random((6,)) < 0.5, -1.0, 1.0)
    z = r.standard_normal(6) * 2

    def fn(T, f):
        return {"a": torch.clamp(-f["t"] * T["z"], min=0).mean(), "b": torch.clamp(1 - f["t"] * T["z"], min=0).mean()}

    parity(
        {"z": (6,)},
        "input t: f32[6]\na = perceptron_loss(z, t)\nb = hinge(z, t)",
        fn,
        outputs=("a", "b"),
        feeds={"t": y},
        values={"z": z},
    )


def test_penalties():
    def fn(T, f):
        return {"a": T["p"].abs().sum(), "b": (T["p"] ** 2).sum() + (T["q"] ** 2).sum(), "c": T["q"].abs().sum()}

    values = {"p": away(np.random.default_rng(13), (3, 2)), "q": away(np.random.default_rng(14), (4,))}
    parity({"p": (3, 2), "q": (4,)}, "a = l1(p)\nb = l2((p, q))\nc = l1(q)", fn, outputs=("a", "b", "c"), values=values)


def away(r, shape):
    return r.choice([-1.0, 1.0], size=shape) * r.uniform(0.2, 1.5, shape)


def test_metrics_forward():
    r = _r(15)
    logits = r.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 3, 0, 1], np.int32)
    labels[:3] = logits[:3].argmax(-1)  # at least half right
    p = r.uniform(0, 1, (6,))
    t = (r.random(6) < 0.5).astype(np.float64)
    src = """
model m {
    input z: f32[6, 4]
    input labels: i32[6]
    input p: f32[6]
    input t: f32[6]
    metric acc = accuracy(z, labels)
    metric bacc = binary_accuracy(p, t)
    metric bacc7 = binary_accuracy(p, t, 0.7)
}
"""
    out = forward(build(src), {"z": logits, "labels": labels, "p": p, "t": t}, {})
    tz, tl = torch.tensor(logits), torch.tensor(labels, dtype=torch.long)
    assert out["metric:acc"] == pytest.approx((tz.argmax(-1) == tl).double().mean().item(), abs=1e-12)
    tp, tt = torch.tensor(p), torch.tensor(t)
    assert out["metric:bacc"] == pytest.approx(((tp > 0.5) == (tt > 0.5)).double().mean().item(), abs=1e-12)
    assert out["metric:bacc7"] == pytest.approx(((tp > 0.7) == (tt > 0.5)).double().mean().item(), abs=1e-12)


def test_accuracy_of_the_real_labels():
    logits = _r(16).standard_normal((2, 4, 3))
    labels = logits.argmax(-1).astype(np.int32)
    labels[0, 0] = (labels[0, 0] + 1) % 3  # one wrong of the real ones
    labels[:, 3] = -1  # padding, mostly "wrong"
    src = """
model m {
    input z: f32[2, 4, 3]
    input labels: i32[2, 4]
    metric all = accuracy(z, labels)
    metric real = accuracy(z, labels, ignore = -1)
    metric masked = accuracy(z, labels, mask = labels >= 0)
}
"""
    out = forward(build(src), {"z": logits, "labels": labels}, {})
    assert out["metric:all"] == pytest.approx(5 / 8) and out["metric:real"] == pytest.approx(5 / 6)
    assert out["metric:masked"] == pytest.approx(5 / 6)


def test_every_loss_is_covered():
    covered = {
        "mse",
        "mae",
        "huber",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "categorical_cross_entropy",
        "sparse_cross_entropy",
        "perceptron_loss",
        "hinge",
        "l1",
        "l2",
        "accuracy",
        "binary_accuracy",
        "real_labels",
        "mean_over_real",
    }
    missing = stdlib_defs("losses.dl") - covered
    assert not missing, f"losses without a parity test: {sorted(missing)}"


def test_harness_detects_a_mismatch():
    """The harness must fail when the torch side differs (here: a leaky slope of 0.02 vs 0.01)."""
    with pytest.raises(AssertionError):
        parity({"x": (3, 4)}, "y = leaky_relu(x)", lambda T, f: {"y": F.leaky_relu(T["x"], 0.02)})


# ---- composite layers --------------------------------------------------------------------------------------------
def _bn_call(T, prefix, x, c):
    m = nn.BatchNorm2d(c, dtype=DT).train()
    rm, rv = T[f"{prefix}.running_mean"].detach().clone(), T[f"{prefix}.running_var"].detach().clone()
    y = call(m, {"weight": T[f"{prefix}.gamma"], "bias": T[f"{prefix}.beta"], "running_mean": rm, "running_var": rv}, x)
    return y, {f"update:{prefix}.running_mean": rm, f"update:{prefix}.running_var": rv}


@pytest.mark.parametrize("filters,stride", [(3, 1), (4, 2)], ids=["identity-shortcut", "projection"])
def test_residual_block(filters, stride):
    """A ResNet basic block against the same block built from torch.nn layers (training-mode batchnorm)."""

    def fn(T, f):
        x = T["x"]
        conv = lambda name, cin, k, s, p, v: call(
            nn.Conv2d(cin, filters, k, s, p, bias=False, dtype=DT), {"weight": T[f"y.{name}.W"]}, v
        )
        h, u1 = _bn_call(T, "y.bn1", conv("conv1", 3, 3, stride, 1, x), filters)
        h, u2 = _bn_call(T, "y.bn2", conv("conv2", filters, 3, 1, 1, F.relu(h)), filters)
        updates = {**u1, **u2}
        if stride == 1 and filters == 3:
            short = x
        else:
            short, u3 = _bn_call(T, "y.proj_bn", conv("proj", 3, 1, stride, 0, x), filters)
            updates.update(u3)
        return {"y": F.relu(h + short), **updates}

    model, _, _ = parity({"x": (2, 3, 6, 6)}, f"y = residual_block(x, {filters}, {stride})", fn, scale=0.7)
    assert sum(not p.trainable for p in model.params) == (4 if stride == 1 else 6)


def test_residual_wrapper():
    def fn(T, f):
        return {"y": T["x"] + torch.tanh(_linear(T, "y", T["x"], 8, 8))}

    parity({"x": (2, 8)}, "def layer(h) = dense(h, 8, tanh)\ny = residual(x, layer)", fn)


def test_feed_forward():
    def fn(T, f):
        inner = _gelu_tanh(_linear(T, "y.inner", T["x"], DM, FFN))
        return {"y": _linear(T, "y", inner, FFN, DM)}

    parity({"x": (B, TQ, DM)}, f"y = feed_forward(x, {FFN})", fn)


def test_positional_embedding_and_sinusoidal_encoding():
    def fn(T, f):
        pos = torch.arange(TQ, dtype=DT)[:, None]
        i = torch.arange(DM // 2, dtype=DT)[None, :]
        angles = pos / torch.pow(torch.tensor(10000.0, dtype=DT), i / (DM // 2))
        return {"y": T["x"] + T["y.P"][:TQ], "z": torch.cat([torch.sin(angles), torch.cos(angles)], -1)}

    parity(
        {"x": (B, TQ, DM)},
        f"y = positional_embedding(x, 5)\nz = sinusoidal_encoding({TQ}, {DM})",
        fn,
        outputs=("y", "z"),
    )


def test_transformer_encoder_stack():
    def fn(T, f):
        layer = nn.TransformerEncoderLayer(
            DM, HEADS, FFN, dropout=0.0, activation=_gelu_tanh, batch_first=True, norm_first=True, dtype=DT
        )
        m = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(DM, dtype=DT), enable_nested_tensor=False).train()
        return {"y": call(m, T.torch("y"), T["x"], mask=causal(TQ))}

    parity(
        {"x": (B, TQ, DM)}, f"y = transformer_encoder(x, 2, {HEADS}, {FFN}, rate = 0.0, mask = causal_mask({TQ}))", fn
    )


def test_transformer_decoder_stack():
    def fn(T, f):
        layer = nn.TransformerDecoderLayer(
            DM, HEADS, FFN, dropout=0.0, activation=_gelu_tanh, batch_first=True, norm_first=True, dtype=DT
        )
        m = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(DM, dtype=DT)).train()
        return {"y": call(m, T.torch("y"), T["x"], T["mem"], tgt_mask=causal(TQ))}

    parity(
        {"x": (B, TQ, DM), "mem": (B, TK, DM)},
        f"y = transformer_decoder(x, mem, 2, {HEADS}, {FFN}, rate = 0.0, mask = causal_mask({TQ}))",
        fn,
    )


# ---- symbolic batch dims: mean over B needs its runtime value ------------------------------------------------------
def test_symbolic_batch_batchnorm():
    x = np.random.default_rng(16).standard_normal((5, 3, 2, 2)) + 0.5

    def fn(T, f):
        m = nn.BatchNorm2d(3, dtype=DT).train()
        rm, rv = T["y.running_mean"].detach().clone(), T["y.running_var"].detach().clone()
        y = call(m, {"weight": T["y.gamma"], "bias": T["y.beta"], "running_mean": rm, "running_var": rv}, f["x"])
        return {"y": y, "update:y.running_mean": rm, "update:y.running_var": rv}

    parity(
        {},
        "input x: f32[N, 3, H, W]\ny = batchnorm(x)",
        fn,
        feeds={"x": x},
        values=_bn_values(),
        sizes={"N": 5, "H": 2, "W": 2},
    )


def test_symbolic_batch_dense_and_losses():
    r = np.random.default_rng(17)
    x, t = r.standard_normal((5, 4)), r.standard_normal((5, 2))
    labels = np.array([0, 1, 1, 0, 1], np.int32)

    def fn(T, f):
        h = _linear(T, "h", f["x"], 4, 2)
        return {
            "a": F.mse_loss(h, f["t"]),
            "b": F.cross_entropy(h, f["labels"]),
            "c": F.layer_norm(h, (2,), T["ln.gamma"], T["ln.beta"]).mean(0),
        }

    body = """input x: f32[B, 4]
input t: f32[B, 2]
input labels: i32[B]
h = dense(x, 2)
a = mse(h, t)
b = sparse_cross_entropy(h, labels)
c = mean(layernorm(h, name = "ln"), 0)"""
    parity(
        {},
        body,
        fn,
        outputs=("a", "b", "c"),
        feeds={"x": x, "t": t, "labels": labels},
        values={"ln.gamma": np.array([0.7, 1.3])},
        sizes={"B": 5},
    )


# ---- dropout (no torch counterpart with the same random numbers: its defining properties) ---------------------------
def test_dropout_training_and_eval():
    src = """
model m {
    param x: f32[40, 50] = normal
    input r: f32[40, 50]
    y = dropout(x, 0.25)
    output y
    loss sum(y * r)
}
"""
    r = np.random.default_rng(18)
    x = r.uniform(0.5, 1.5, (40, 50))
    feeds = {"r": r.standard_normal((40, 50)), "rng": np.array([7, 3], np.int32)}
    train = build(src)
    y = forward(train, feeds, {"x": x})["output:y"]
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-12)
    assert abs(1 - kept.mean() - 0.25) < 0.03  # 2000 draws: 3 sigma is ~0.029
    grad = gradients(train, feeds, {"x": x})["grad:x"]
    np.testing.assert_allclose(grad, np.where(kept, feeds["r"] / 0.75, 0.0), rtol=1e-12)
    again = forward(train, feeds, {"x": x})["output:y"]
    np.testing.assert_array_equal(again, y)  # same key, same mask
    other = forward(train, {**feeds, "rng": np.array([7, 4], np.int32)}, {"x": x})["output:y"]
    assert (other != 0).tolist() != kept.tolist()  # another step, another mask
    evaluated = build(src, training=False)
    np.testing.assert_array_equal(forward(evaluated, feeds, {"x": x})["output:y"], x)


def test_every_layer_is_covered():
    tested = {
        "dense",
        "flatten",
        "dropout",
        "conv2d",
        "conv1d",
        "maxpool2d",
        "avgpool2d",
        "global_avg_pool",
        "batchnorm",
        "layernorm",
        "local_response_norm",
        "embedding",
        "residual_block",
        "residual",
        "rnn",
        "lstm",
        "gru",
        "bidirectional",
        "stacked",
        "causal_mask",
        "padding_mask",
        "additive_attention",
        "multiplicative_attention",
        "scaled_dot_product_attention",
        "cached_attention",
        "multi_head_attention",
        "luong_attention",
        "self_attention",
        "sinusoidal_encoding",
        "positional_embedding",
        "feed_forward",
        "transformer_encoder_block",
        "transformer_decoder_block",
        "transformer_encoder",
        "transformer_decoder",
    }
    tested |= {
        "conv2d_transpose",
        "conv1d_transpose",
        "maxpool1d",
        "avgpool1d",
        "global_max_pool",
        "upsample2d",
    }  # in test_conv_family.py
    helpers = {
        "conv_padding",
        "same_padding",
        "dilated",  # tested through conv2d and conv1d
        "interpolation",
        "zero_row",  # through upsample2d and embedding
        "real_steps",
        "padded_out",
        "padded_cell",  # through the padded recurrences (test_packed_sequences.py)
        "broadcasts_into",
        "masked_scores",
        "scores_mask",
    }  # through every attention given a mask
    defs = stdlib_defs("layers.dl") | stdlib_defs("recurrent.dl") | stdlib_defs("attention.dl")
    missing = defs - tested - helpers
    assert not missing, f"layers without a parity test: {sorted(missing)}"


def test_same_padding_at_a_stride_is_refused_at_the_call():
    from dlc.compiler.errors import DlcError
    from dlc.compiler.frontend.loader import load_text

    text = 'model m {\n    input x: f32[B, 3, 8, 8]\n    output y = conv2d(x, 4, 3, 2, padding = "same")\n}\n'
    with pytest.raises(DlcError) as e:
        load_text(text).build(None, training=False)
    assert "needs stride 1" in e.value.render() and "3:16" in e.value.render()
