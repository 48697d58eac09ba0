"""Parameter counts of the standard layers: the concrete numbers (no torch needed), and,
when PyTorch is installed, the same numbers from torch.nn for the same configuration.

Only trainable parameters count; batchnorm's running statistics are state in dlc and
buffers in torch (both counted separately below).
"""

from __future__ import annotations

import pytest

from dlc.compiler.ir.dims import numel

from helpers.numeric import build, state_count, trainable_count


def layer_model(input_decl: str, call: str) -> str:
    return f"model m {{\n    input x: {input_decl}\n    y = {call}\n    output y\n}}\n"


def torch_count(make):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
    module = make(torch.nn)
    return sum(p.numel() for p in module.parameters())


# name: (input declaration, dlc call, expected trainable count, torch module factory, expected params by name)
CASES = {
    "dense-10-20": ("f32[B, 10]", "dense(x, 20)", 220, lambda nn: nn.Linear(10, 20), {"y.W": (10, 20), "y.b": (20,)}),
    "dense-10-20-nobias": (
        "f32[B, 10]",
        "dense(x, 20, bias = false)",
        200,
        lambda nn: nn.Linear(10, 20, bias=False),
        {"y.W": (10, 20)},
    ),
    "conv2d-3-8-k3": (
        "f32[B, 3, 16, 16]",
        "conv2d(x, 8, 3)",
        224,
        lambda nn: nn.Conv2d(3, 8, 3),
        {"y.W": (8, 3, 3, 3), "y.b": (8,)},
    ),
    "conv2d-16-32-k5x3": (
        "f32[B, 16, 16, 16]",
        "conv2d(x, 32, (5, 3), padding = \"same\")",
        7712,
        lambda nn: nn.Conv2d(16, 32, (5, 3), padding=(2, 1)),
        {"y.W": (32, 16, 5, 3), "y.b": (32,)},
    ),
    "conv1d-4-6-k3": (
        "f32[B, 4, 20]",
        "conv1d(x, 6, 3)",
        78,
        lambda nn: nn.Conv1d(4, 6, 3),
        {"y.W": (6, 4, 3), "y.b": (6,)},
    ),
    "embedding-100-16": (
        "i32[B, T]",
        "embedding(x, 100, 16)",
        1600,
        lambda nn: nn.Embedding(100, 16),
        {"y.W": (100, 16)},
    ),
    "batchnorm-8": (
        "f32[B, 8, 5, 5]",
        "batchnorm(x)",
        16,
        lambda nn: nn.BatchNorm2d(8),
        {"y.gamma": (8,), "y.beta": (8,), "y.running_mean": (8,), "y.running_var": (8,)},
    ),
    "layernorm-16": (
        "f32[B, T, 16]",
        "layernorm(x)",
        32,
        lambda nn: nn.LayerNorm(16),
        {"y.gamma": (16,), "y.beta": (16,)},
    ),
    "rnn-10-20": (
        "f32[B, T, 10]",
        "rnn(x, 20)",
        640,
        lambda nn: nn.RNN(10, 20),
        {"y.Wx": (10, 20), "y.Wh": (20, 20), "y.bx": (20,), "y.bh": (20,)},
    ),
    "lstm-10-20": (
        "f32[B, T, 10]",
        "lstm(x, 20)",
        2560,
        lambda nn: nn.LSTM(10, 20),
        {"y.Wx": (10, 80), "y.Wh": (20, 80), "y.bx": (80,), "y.bh": (80,)},
    ),
    "gru-10-20": (
        "f32[B, T, 10]",
        "gru(x, 20)",
        1920,
        lambda nn: nn.GRU(10, 20),
        {"y.Wx": (10, 60), "y.Wh": (20, 60), "y.bx": (60,), "y.bh": (60,)},
    ),
    "bilstm-10-20": (
        "f32[B, T, 10]",
        "bidirectional(x, lstm, 20)",
        5120,
        lambda nn: nn.LSTM(10, 20, bidirectional=True),
        None,
    ),
    "mha-16-4": (
        "f32[B, T, 16]",
        "multi_head_attention(x, x, 4)",
        1088,
        lambda nn: nn.MultiheadAttention(16, 4),
        {
            "y.Wq": (16, 16),
            "y.Wk": (16, 16),
            "y.Wv": (16, 16),
            "y.bq": (16,),
            "y.bk": (16,),
            "y.bv": (16,),
            "y.Wo": (16, 16),
            "y.bo": (16,),
        },
    ),
    "mha-16-4-kdim12": (
        "f32[B, T, 16]",
        "multi_head_attention(x, m, 4)",
        960,
        lambda nn: nn.MultiheadAttention(16, 4, kdim=12, vdim=12),
        None,
    ),
    "encoder-block-16-4-64": (
        "f32[B, T, 16]",
        "transformer_encoder_block(x, 4, 64)",
        3280,
        lambda nn: nn.TransformerEncoderLayer(16, 4, 64),
        None,
    ),
    "decoder-block-16-4-64": (
        "f32[B, T, 16]",
        "transformer_decoder_block(x, m, 4, 64)",
        4400,
        lambda nn: nn.TransformerDecoderLayer(16, 4, 64),
        None,
    ),
    # bias = false: the counts of torch's bias=False modules
    "conv2d-3-8-k3-nobias": (
        "f32[B, 3, 16, 16]",
        "conv2d(x, 8, 3, bias = false)",
        216,
        lambda nn: nn.Conv2d(3, 8, 3, bias=False),
        {"y.W": (8, 3, 3, 3)},
    ),
    "conv1d-4-6-k3-nobias": (
        "f32[B, 4, 20]",
        "conv1d(x, 6, 3, bias = false)",
        72,
        lambda nn: nn.Conv1d(4, 6, 3, bias=False),
        {"y.W": (6, 4, 3)},
    ),
    "conv2d-transpose-3-8-nobias": (
        "f32[B, 3, 8, 8]",
        "conv2d_transpose(x, 8, 3, bias = false)",
        216,
        lambda nn: nn.ConvTranspose2d(3, 8, 3, bias=False),
        {"y.W": (3, 8, 3, 3)},
    ),
    "layernorm-16-nobias": (
        "f32[B, T, 16]",
        "layernorm(x, bias = false)",
        16,
        lambda nn: nn.LayerNorm(16, bias=False),
        {"y.gamma": (16,)},
    ),
    "mha-16-4-nobias": (
        "f32[B, T, 16]",
        "multi_head_attention(x, x, 4, bias = false)",
        1024,
        lambda nn: nn.MultiheadAttention(16, 4, bias=False),
        {"y.Wq": (16, 16), "y.Wk": (16, 16), "y.Wv": (16, 16), "y.Wo": (16, 16)},
    ),
    "self-attention-16-4-nobias": (
        "f32[B, T, 16]",
        "self_attention(x, 4, bias = false)",
        1024,
        lambda nn: nn.MultiheadAttention(16, 4, bias=False),
        None,
    ),
    "encoder-block-16-4-64-nobias": (
        "f32[B, T, 16]",
        "transformer_encoder_block(x, 4, 64, bias = false)",
        3104,
        lambda nn: nn.TransformerEncoderLayer(16, 4, 64, bias=False),
        None,
    ),
    "decoder-block-16-4-64-nobias": (
        "f32[B, T, 16]",
        "transformer_decoder_block(x, m, 4, 64, bias = false)",
        4144,
        lambda nn: nn.TransformerDecoderLayer(16, 4, 64, bias=False),
        None,
    ),
    "encoder-2-16-4-64-nobias": (
        "f32[B, T, 16]",
        "transformer_encoder(x, 2, 4, 64, bias = false)",
        6224,
        lambda nn: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 64, bias=False),
            2,
            norm=nn.LayerNorm(16, bias=False),
            enable_nested_tensor=False,
        ),
        None,
    ),
    "decoder-2-16-4-64-nobias": (
        "f32[B, T, 16]",
        "transformer_decoder(x, m, 2, 4, 64, bias = false)",
        8304,
        lambda nn: nn.TransformerDecoder(
            nn.TransformerDecoderLayer(16, 4, 64, bias=False), 2, norm=nn.LayerNorm(16, bias=False)
        ),
        None,
    ),
}


def _model(case):
    decl, call, *_ = CASES[case]
    src = layer_model(decl, call)
    if "(x, m," in call:
        width = 12 if "kdim" in case else 16
        src = src.replace("    y =", f"    input m: f32[B, S, {width}]\n    y =", 1)
    return build(src)


@pytest.mark.parametrize("case", list(CASES))
def test_layer_parameter_count(case):
    _, _, expected, _, shapes = CASES[case]
    model = _model(case)
    assert trainable_count(model) == expected
    if shapes is not None:
        assert {p.name: tuple(p.type.shape) for p in model.params} == shapes


@pytest.mark.parametrize("case", list(CASES))
def test_layer_parameter_count_matches_torch(case):
    _, _, expected, make, _ = CASES[case]
    assert torch_count(make) == expected
    assert trainable_count(_model(case)) == torch_count(make)


def test_batchnorm_state_is_not_trainable():
    model = _model("batchnorm-8")
    assert state_count(model) == 16
    assert {p.name for p in model.params if not p.trainable} == {"y.running_mean", "y.running_var"}


def test_batchnorm_state_matches_torch_buffers():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
    bn = torch.nn.BatchNorm2d(8)
    floats = sum(b.numel() for b in bn.buffers() if b.is_floating_point())  # not num_batches_tracked
    assert floats == state_count(_model("batchnorm-8")) == 16


MLP = """
model mlp {
    input x: f32[B, 3]
    target y: f32[B, 1]
    h1 = dense(x, 4, tanh)
    h2 = dense(h1, 4, tanh)
    out = dense(h2, 1)
    loss mse(out, y)
}
"""


def test_mlp_3_4_4_1_has_41_parameters():
    model = build(MLP)
    assert trainable_count(model) == 41  # (3*4 + 4) + (4*4 + 4) + (4*1 + 1)
    assert sum(numel(p.type.shape) for p in model.params) == 41
    assert [p.name for p in model.params] == ["h1.W", "h1.b", "h2.W", "h2.b", "out.W", "out.b"]


def test_mlp_3_4_4_1_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
    nn = torch.nn
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    assert sum(p.numel() for p in mlp.parameters()) == trainable_count(build(MLP)) == 41


def test_summary_reports_the_same_count():
    from dlc.compiler.frontend.summary import summary

    text = summary(build(MLP))
    assert "Trainable parameters:     41" in text
