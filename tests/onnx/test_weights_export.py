"""`dlc export` and weights files: .safetensors in dlc's names and layouts and in torch.nn's
(runtime/interop/weights.py, runtime/interop/torch_layout.py).

In torch's layout every model is exported from a checkpoint by `dlc export --format torch`,
loaded into its torch.nn twin with load_state_dict(strict=True), and must give the outputs
of DlcModel.predict within 1e-5; reading the file back gives the dlc parameters bit for bit.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import dlc
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load, load_text, stdlib_files
from dlc.runtime.interop import checkpoint
from dlc.runtime.interop import weights
from dlc.runtime.api import DlcModel
from dlc.runtime.cli import main
from dlc.runtime.interop.torch_layout import CONTAINERS, LAYERS, NO_TORCH_MODULE, TorchLayout
from dlc.runtime.training.trainer import Trainer, initial_parameters

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "examples"
TOL = 1e-5


# ---- the harness ---------------------------------------------------------------------------------------------
def moved_parameters(model, seed=0) -> dict:
    """The initial parameters moved off their initial values (zero biases, unit running
    variances), in float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, v in initial_parameters(model, seed).items():
        moved = (
            rng.uniform(0.5, 1.5, v.shape) if name.endswith("running_var") else v + 0.1 * rng.standard_normal(v.shape)
        )
        out[name] = moved.astype(np.float32)
    return out


def model_file(tmp_path, source: str) -> Path:
    path = tmp_path / "m.dl"
    path.write_text(source)
    return path


def export_torch(tmp_path, path):
    """(DlcModel with moved weights, the file `dlc export --format torch` wrote, the dlc parameters)."""
    model = DlcModel(str(path), backend="reference")
    params = moved_parameters(model.eval_model)
    checkpoint.save(tmp_path / "w.npz", params, {}, {})
    out = tmp_path / "w.safetensors"
    assert main(["export", str(path), "--weights", str(tmp_path / "w.npz"), "-o", str(out), "--format", "torch"]) == 0
    return model.load_weights(tmp_path / "w.npz"), out, params


def torch_inputs(inputs: dict) -> dict:
    return {k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in inputs.items()}


def check_twin(tmp_path, path, twin: nn.Module, inputs: dict):
    """The twin, given the exported file (strictly), computes predict's outputs; the file reads back exactly."""
    model, out, params = export_torch(tmp_path, path)
    twin.load_state_dict(safetensors.torch.load_file(out), strict=True)
    expected = model.predict(inputs)
    with torch.no_grad():
        got = twin.eval()(torch_inputs(inputs))
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name].numpy(), value, rtol=TOL, atol=TOL, err_msg=name)
    back, _ = weights.load(out, model.eval_model.params)
    assert back.keys() == params.keys()
    for name, value in params.items():
        assert back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def floats(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ids(high, *shape, low=0, seed=2):
    return np.random.default_rng(seed).integers(low, high, shape).astype(np.int32)


def gelu_tanh(x):  # dlc's gelu; a function, so torch's fused encoder path (exact gelu) is not taken
    return F.gelu(x, approximate="tanh")


def softmax_last(logits):
    return torch.softmax(logits[:, -1], -1)


# ---- torch twins of the examples ----------------------------------------------------------------------------------
class MLP(nn.Module):
    """digits_mlp, mnist_mlp: h = x |> dense |> dropout |> dense ... (h.0, h.1), logits."""

    def __init__(self, sizes, classes):
        super().__init__()
        self.h = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.logits = nn.Linear(sizes[-1], classes)

    def forward(self, b):
        h = b["x"]
        for layer in self.h:
            h = F.relu(layer(h))
        return {"probs": torch.softmax(self.logits(h), -1)}


class XorMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.h, self.p = nn.Linear(2, 4), nn.Linear(4, 1)

    def forward(self, b):
        return {"prob": torch.sigmoid(self.p(torch.tanh(self.h(b["x"]))))}


class LeNet(nn.Module):
    """lenet5 and digits_cnn: two convolutions with max pooling, dense layers."""

    def __init__(self, channels, kernel, widths, classes=10):
        super().__init__()
        (c0, c1, c3), k = channels, kernel
        self.c1 = nn.Conv2d(c0, c1, k, padding="same")
        self.c3 = nn.Conv2d(c1, c3, k, padding="same" if len(widths) == 2 else 0)
        self.f5 = nn.Linear(*widths[:2])
        if len(widths) == 3:
            self.f6 = nn.Linear(*widths[1:])
        self.logits = nn.Linear(widths[-1], classes)

    def forward(self, b):
        h = F.max_pool2d(F.relu(self.c1(b["x"])), 2)
        h = F.max_pool2d(F.relu(self.c3(h)), 2)
        h = F.relu(self.f5(h.flatten(1)))
        if hasattr(self, "f6"):
            h = F.relu(self.f6(h))
        return {"probs": torch.softmax(self.logits(h), -1)}


class VGGBlock(nn.Module):
    """examples/vgg_cnn.dl's own def: its convolutions are named conv.0, conv.1."""

    def __init__(self, cin, filters, convs):
        super().__init__()
        self.conv = nn.ModuleList(nn.Conv2d(cin if i == 0 else filters, filters, 3, padding=1) for i in range(convs))

    def forward(self, x):
        for conv in self.conv:
            x = F.relu(conv(x))
        return F.max_pool2d(x, 2)


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1, self.b2, self.b3 = VGGBlock(3, 32, 2), VGGBlock(32, 64, 2), VGGBlock(64, 128, 2)
        self.fc, self.logits = nn.Linear(128 * 16, 256), nn.Linear(256, 10)

    def forward(self, b):
        h = self.b3(self.b2(self.b1(b["x"])))
        return {"probs": torch.softmax(self.logits(F.relu(self.fc(h.flatten(1)))), -1)}


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: residual_block's twin."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.stage2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.stage3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64))
        self.logits = nn.Linear(64, 10)

    def forward(self, b):
        h = self.stage3(self.stage2(self.stage1(self.stem(b["x"]))))
        return {"probs": torch.softmax(self.logits(h.mean((2, 3))), -1)}


class Forecast(nn.Module):
    """simple_rnn, gru_forecast, stacked_gru: a recurrent layer hs, dense pred of its last state."""

    def __init__(self, cell, units, **kw):
        super().__init__()
        self.hs, self.pred = cell(1, units, batch_first=True, **kw), nn.Linear(units, 1)

    def forward(self, b):
        return {"next": self.pred(self.hs(b["x"])[0][:, -1])}


class CharLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.chars, self.hs, self.logits = nn.Embedding(96, 64), nn.LSTM(64, 256, batch_first=True), nn.Linear(256, 96)

    def forward(self, b):
        return {"next": softmax_last(self.logits(self.hs(self.chars(b["x"]))[0]))}


def packed(rnn: nn.Module, xs, lengths):
    """(outputs padded with zeros, final state) of a recurrent module on a padded batch."""
    out, state = rnn(nn.utils.rnn.pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False))
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])[0], state


class BiLSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5000, 64)
        self.hs = nn.LSTM(64, 64, batch_first=True, bidirectional=True)
        self.logits = nn.Linear(128, 17)

    def forward(self, b):
        hs = packed(self.hs, self.emb(b["words"]), b["lengths"])[0]
        return {"predicted": self.logits(hs).argmax(-1).int()}


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(14, 32), nn.Embedding(14, 32)
        self.enc, self.dec = nn.LSTM(32, 128, batch_first=True), nn.LSTM(32, 128, batch_first=True)
        self.logits = nn.Linear(128, 14)

    def forward(self, b):
        _, state = packed(self.enc, self.src_emb(b["src"]), (b["src"] != 0).sum(1))
        dec, _ = self.dec(self.tgt_emb(b["dec_in"]), state)
        return {"probs": torch.softmax(self.logits(dec), -1)}


def encoder(layers, d, heads, ffn):
    layer = nn.TransformerEncoderLayer(d, heads, ffn, activation=gelu_tanh, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)


def causal(t):
    return torch.triu(torch.full((t, t), -1e9), diagonal=1)


class TransformerClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.x = nn.Embedding(1000, 128), nn.Embedding(64, 128)  # x: learned positions
        self.h, self.logits = encoder(2, 128, 4, 512), nn.Linear(128, 10)

    def forward(self, b):
        tokens = b["tokens"]
        h = self.h(self.emb(tokens) + self.x.weight[: tokens.shape[1]])
        return {"probs": torch.softmax(self.logits(h.mean(1)), -1)}


class CharTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.chars, self.x0 = nn.Embedding(96, 128), nn.Embedding(128, 128)
        self.h, self.logits = encoder(4, 128, 4, 512), nn.Linear(128, 96)

    def forward(self, b):
        x, t = b["x"], b["x"].shape[1]
        return {"next": softmax_last(self.logits(self.h(self.chars(x) + self.x0.weight[:t], mask=causal(t))))}


def sinusoidal(t, d):
    freq = torch.exp(torch.arange(d // 2) * (-math.log(10000.0) / (d // 2)))
    angles = torch.arange(t)[:, None] * freq[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


class TransformerSeq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(14, 128), nn.Embedding(14, 128)
        self.memory = encoder(2, 128, 4, 256)
        layer = nn.TransformerDecoderLayer(128, 4, 256, activation=gelu_tanh, batch_first=True, norm_first=True)
        self.dec = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(128))
        self.logits = nn.Linear(128, 14)

    def forward(self, b):
        src, dec_in = b["src"], b["dec_in"]
        pad = src == 0
        memory = self.memory(self.src_emb(src) + sinusoidal(src.shape[1], 128), src_key_padding_mask=pad)
        t = dec_in.shape[1]
        dec = self.dec(
            self.tgt_emb(dec_in) + sinusoidal(t, 128), memory, tgt_mask=causal(t), memory_key_padding_mask=pad
        )
        return {"probs": torch.softmax(self.logits(dec), -1)}


class Perceptron(nn.Module):
    """The model's own params w and b keep their names."""

    def __init__(self):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(()))

    def forward(self, b):
        return {"label": (b["x"] @ self.w + self.b >= 0).float()}


SEQ2SEQ_SRC = np.array([[5, 7, 3, 9, 0, 0], [4, 4, 12, 6, 8, 3]], np.int32)  # padded with 0
EXAMPLE_TWINS = {
    "digits_mlp": (lambda: MLP([64, 128, 64], 10), {"x": floats(3, 64)}),
    "mnist_mlp": (lambda: MLP([784, 512, 256], 10), {"x": floats(2, 784)}),
    "xor_mlp": (XorMLP, {"x": floats(4, 2)}),
    "perceptron": (Perceptron, {"x": floats(5, 2)}),
    "digits_cnn": (lambda: LeNet((1, 16, 32), 3, [128, 64]), {"x": floats(3, 1, 8, 8)}),
    "lenet5": (lambda: LeNet((1, 6, 16), 5, [400, 120, 84]), {"x": floats(2, 1, 28, 28)}),
    "vgg_cnn": (VGG, {"x": floats(2, 3, 32, 32)}),
    "resnet": (ResNet, {"x": floats(2, 3, 32, 32)}),
    "simple_rnn": (lambda: Forecast(nn.RNN, 32), {"x": floats(3, 7, 1)}),
    "gru_forecast": (lambda: Forecast(nn.GRU, 64), {"x": floats(3, 7, 1)}),
    "stacked_gru": (lambda: Forecast(nn.GRU, 64, num_layers=3, dropout=0.1), {"x": floats(3, 7, 1)}),
    "char_lstm": (CharLSTM, {"x": ids(96, 2, 9)}),
    "bilstm_tagger": (BiLSTMTagger, {"words": ids(5000, 2, 7), "lengths": np.array([7, 4], np.int32)}),
    "seq2seq": (Seq2Seq, {"src": SEQ2SEQ_SRC, "dec_in": ids(14, 2, 5, low=1)}),
    "transformer_classifier": (TransformerClassifier, {"tokens": ids(1000, 2, 10)}),
    "char_transformer": (CharTransformer, {"x": ids(96, 2, 9)}),
    "transformer_seq2seq": (TransformerSeq2Seq, {"src": SEQ2SEQ_SRC, "dec_in": ids(14, 2, 5, low=1)}),
}


@pytest.mark.parametrize("example", list(EXAMPLE_TWINS))
def test_example_in_torch_layout_runs_in_its_torch_twin(tmp_path, example):
    make, inputs = EXAMPLE_TWINS[example]
    check_twin(tmp_path, EXAMPLES / f"{example}.dl", make(), inputs)


# ---- layers the examples do not use -----------------------------------------------------------------------------------
class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU())
        self.c2 = nn.Conv1d(8, 6, 4, stride=2, bias=False)
        self.n = nn.LayerNorm(7)
        self.y = nn.Linear(42, 5, bias=False)

    def forward(self, b):
        return {"y": self.y(self.n(self.c2(self.c(b["x"]))).flatten(1))}


def test_conv1d_batchnorm_layernorm_and_dense_without_bias(tmp_path):
    source = """model convbn {
    input x: f32[B, 3, 16]
    c = conv1d(x, 8, 3, padding = "same") |> batchnorm |> relu
    c2 = conv1d(c, 6, 4, stride = 2, bias = false)
    n = layernorm(c2)
    output y = dense(flatten(n), 5, bias = false)
}"""
    check_twin(tmp_path, model_file(tmp_path, source), ConvBN(), {"x": floats(3, 3, 16)})


class Attention(nn.Module):
    """Keys and values of another width than the queries: three input projections, not one."""

    def __init__(self):
        super().__init__()
        self.a = nn.MultiheadAttention(8, 2, kdim=5, vdim=5, batch_first=True)
        self.s = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, b):
        a = self.a(b["q"], b["mem"], b["mem"], need_weights=False)[0]
        return {"y": self.s(a, a, a, need_weights=False)[0]}


def test_multi_head_attention_with_another_memory_width(tmp_path):
    source = """model attn {
    input q: f32[B, 3, 8]
    input mem: f32[B, 4, 5]
    a = multi_head_attention(q, mem, 2)
    output y = self_attention(a, 2, name = "s")
}"""
    check_twin(tmp_path, model_file(tmp_path, source), Attention(), {"q": floats(2, 3, 8), "mem": floats(2, 4, 5)})


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = nn.GRU(3, 4, batch_first=True, bidirectional=True)
        self.s = nn.LSTM(8, 5, num_layers=2, batch_first=True)
        self.r = nn.RNN(5, 4, batch_first=True, nonlinearity="relu")

    def forward(self, b):
        h = self.s(self.g(b["x"])[0])[0]
        return {"y": self.r(h.flip(1))[0].flip(1)}


def test_bidirectional_gru_stacked_lstm_and_reversed_relu_rnn(tmp_path):
    source = """model rec {
    input x: f32[B, 6, 3]
    g = bidirectional(x, gru, 4)
    s = stacked(g, lstm, 5, 2)
    output y = rnn(s, 4, relu, reverse = true, name = "r")
}"""
    check_twin(tmp_path, model_file(tmp_path, source), Recurrent(), {"x": floats(2, 6, 3)})


class PostNormDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = nn.TransformerDecoderLayer(8, 2, 16, activation=gelu_tanh, batch_first=True, norm_first=False)
        self.f = nn.Module()
        self.f.linear1, self.f.linear2 = nn.Linear(8, 12), nn.Linear(12, 8)

    def forward(self, b):
        d = self.d(b["x"], b["mem"], tgt_mask=causal(4))
        return {"y": self.f.linear2(gelu_tanh(self.f.linear1(d)))}


def test_post_norm_decoder_block_and_a_feed_forward_of_its_own(tmp_path):
    source = """model dec {
    input x: f32[B, 4, 8]
    input mem: f32[B, 3, 8]
    d = transformer_decoder_block(x, mem, 2, 16, rate = 0.0, mask = causal_mask(4), pre_norm = false)
    output y = feed_forward(d, 12, name = "f")
}"""
    check_twin(
        tmp_path, model_file(tmp_path, source), PostNormDecoder(), {"x": floats(2, 4, 8), "mem": floats(2, 3, 8)}
    )


def test_every_layer_with_parameters_has_a_torch_layout():
    """A new layer of the standard library that declares parameters needs its torch.nn
    names (LAYERS) or a place among the layers without a torch.nn counterpart."""
    declaring = set()
    for f in stdlib_files():
        for name, body in re.findall(r"^def (\w+)(.*?)(?=^def |\Z)", f.read_text(), re.M | re.S):
            if re.search(r"^\s+(param|state) ", body, re.M):
                declaring.add(name)
    assert declaring == set(LAYERS) | NO_TORCH_MODULE
    defs = {name for f in stdlib_files() for name in re.findall(r"^def (\w+)", f.read_text(), re.M)}
    assert set(CONTAINERS) <= defs


def test_the_layer_is_known_by_its_definition_not_its_name(tmp_path):
    """A def of the user's named `dense` declares parameters of its own: they keep their names."""
    source = """def dense(x: f32[B, n], units: int) {
    param W: f32[n, units] = glorot_uniform
    return x @ W
}
model m {
    input x: f32[B, 3]
    h = dense(x, 4)
    output y = linear(h)
}
def linear(x: f32[B, n]) {
    param W: f32[n, 2] = glorot_uniform
    return x @ W
}"""
    model = load(str(model_file(tmp_path, source))).build(None, training=False)
    layout = TorchLayout(model.params)
    assert layout.kept == ["h.W", "y.W"] and list(layout.shapes()) == ["h.W", "y.W"]


# ---- dlc's layout -------------------------------------------------------------------------------------------------------
def test_safetensors_round_trip_keeps_names_dtypes_and_says_what_it_holds(tmp_path):
    path = EXAMPLES / "resnet.dl"
    model = DlcModel(str(path), backend="reference")
    params = moved_parameters(model.eval_model)
    checkpoint.save(tmp_path / "w.npz", params, {}, {})
    out = tmp_path / "w.safetensors"
    assert main(["export", str(path), "--weights", str(tmp_path / "w.npz"), "-o", str(out)]) == 0
    saved = safetensors.numpy.load_file(out)
    assert list(saved) == sorted(params) and "stage3.1.bn2.running_var" in saved
    for name, value in params.items():
        assert saved[name].dtype == np.float32
        np.testing.assert_array_equal(saved[name], value)
    with safetensors.safe_open(str(out), "np") as f:
        assert f.metadata() == {
            "format": "dlc",
            "model": "resnet",
            "dlc_version": dlc.__version__,
            "source_hash": checkpoint.source_hash(path.read_text()),
        }
    x = floats(2, 3, 32, 32)
    expected = model.load_weights(tmp_path / "w.npz").predict(x)["probs"]
    np.testing.assert_array_equal(model.load_weights(out).predict(x)["probs"], expected)


def test_torch_layout_file_says_so_and_loads_as_weights(tmp_path, capsys):
    model, out, params = export_torch(tmp_path, EXAMPLES / "digits_mlp.dl")
    with safetensors.safe_open(str(out), "np") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["model"] == "digits_mlp"
        assert sorted(f.keys()) == ["h.0.bias", "h.0.weight", "h.1.bias", "h.1.weight", "logits.bias", "logits.weight"]
    x = floats(4, 64)
    np.testing.assert_array_equal(
        DlcModel(str(EXAMPLES / "digits_mlp.dl"), backend="reference").load_weights(out).predict(x)["probs"],
        model.predict(x)["probs"],
    )
    # from torch: a state dict torch saved (no metadata) is known by its names
    twin = MLP([64, 128, 64], 10)
    safetensors.torch.save_file(twin.state_dict(), tmp_path / "t.safetensors")
    back, _ = weights.load(tmp_path / "t.safetensors", model.eval_model.params)
    np.testing.assert_array_equal(back["h.0.W"], twin.h[0].weight.detach().numpy().T)
    # and to dlc's layout again, through the command line
    assert (
        main(
            [
                "export",
                str(EXAMPLES / "digits_mlp.dl"),
                "--weights",
                str(tmp_path / "t.safetensors"),
                "-o",
                str(tmp_path / "d.safetensors"),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    np.testing.assert_array_equal(
        safetensors.numpy.load_file(tmp_path / "d.safetensors")["logits.b"], twin.logits.bias.detach().numpy()
    )


def test_export_names_the_parameters_that_keep_their_dlc_names(tmp_path, capsys):
    export_torch(tmp_path, EXAMPLES / "perceptron.dl")
    err = capsys.readouterr().err
    assert "2 parameters have no torch.nn counterpart and keep their dlc names and layouts: w, b" in err


def test_export_without_weights_writes_the_initial_parameters_of_the_train_block_seed(tmp_path, capsys):
    source = "model m {\n    input x: f32[B, 3]\n    output y = dense(x, 2)\n}\ntrain m {\n    seed = 7\n}\n"
    path = model_file(tmp_path, source)
    assert main(["export", str(path), "-o", str(tmp_path / "i.safetensors")]) == 0
    assert "no --weights: exporting the initial parameters of m (seed 7)" in capsys.readouterr().err
    saved = safetensors.numpy.load_file(tmp_path / "i.safetensors")
    model = load(str(path)).build(None, training=False)
    np.testing.assert_array_equal(saved["y.W"], initial_parameters(model, 7)["y.W"])
    assert not np.array_equal(saved["y.W"], initial_parameters(model, 0)["y.W"])


# ---- init_from ------------------------------------------------------------------------------------------------------------
def test_init_from_torch_weights_loads_what_fits(tmp_path):
    """Pretrained torch weights with another head: the hidden layers are taken, the head is new."""
    twin = MLP([64, 128, 64], 5)
    safetensors.torch.save_file(twin.state_dict(), tmp_path / "pretrained.safetensors")
    logs = []
    trainer = Trainer(
        load(str(EXAMPLES / "digits_mlp.dl")),
        None,
        {"init_from": str(tmp_path / "pretrained.safetensors")},
        tmp_path / "run",
        log=logs.append,
    )
    params = trainer.initial_params()
    np.testing.assert_array_equal(params["h.1.W"], twin.h[1].weight.detach().numpy().T)
    np.testing.assert_array_equal(params["h.0.b"], twin.h[0].bias.detach().numpy())
    assert np.array_equal(params["logits.W"], initial_parameters(trainer.train_model, 0)["logits.W"])
    assert logs == [
        f"init_from {tmp_path / 'pretrained.safetensors'}: 4 matched, 2 new (logits.W, logits.b), "
        "2 skipped for shape: logits.weight ([5, 64] vs [10, 64]), logits.bias ([5] vs [10])"
    ]


def test_init_from_a_file_of_another_model_is_refused(tmp_path, capsys):
    safetensors.numpy.save_file({"enc.weight": np.zeros((3, 3), np.float32)}, tmp_path / "other.safetensors")
    code = main(
        [
            "train",
            str(EXAMPLES / "digits_mlp.dl"),
            "--init-from",
            str(tmp_path / "other.safetensors"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "does not match the model" in err and "unexpected enc.weight" in err
    assert not (tmp_path / "run").exists()


# ---- errors -------------------------------------------------------------------------------------------------------------
def test_a_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    xor = load(str(EXAMPLES / "xor_mlp.dl")).build(None, training=False)
    checkpoint.save(tmp_path / "xor.npz", moved_parameters(xor), {}, {})
    code = main(
        [
            "export",
            str(EXAMPLES / "digits_mlp.dl"),
            "--weights",
            str(tmp_path / "xor.npz"),
            "-o",
            str(tmp_path / "out.safetensors"),
            "--format",
            "torch",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "does not match the model" in err and "missing h.0.W" in err and "unexpected h.W" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_torch_file_that_does_not_fit_names_the_first_mismatches_in_torch_names(tmp_path):
    twin = MLP([64, 100, 64], 10)
    state = {k: v for k, v in twin.state_dict().items() if k != "logits.bias"}
    safetensors.torch.save_file(state | {"extra.weight": torch.zeros(2)}, tmp_path / "t.safetensors")
    model = load(str(EXAMPLES / "digits_mlp.dl")).build(None, training=False)
    with pytest.raises(DlcError) as e:
        weights.load(tmp_path / "t.safetensors", model.params)
    message = str(e.value)
    assert "h.0.weight is [100, 64] in the checkpoint but [128, 64] in the model" in message
    assert "missing logits.bias [10]" in message and "unexpected extra.weight" in message


def test_batchnorm_count_from_torch_is_accepted_and_ignored(tmp_path):
    twin = ResNet()
    safetensors.torch.save_file(twin.state_dict(), tmp_path / "r.safetensors")
    assert "stage2.0.downsample.1.num_batches_tracked" in twin.state_dict()
    model = load(str(EXAMPLES / "resnet.dl")).build(None, training=False)
    back, _ = weights.load(tmp_path / "r.safetensors", model.params)
    np.testing.assert_array_equal(back["stage2.0.proj.W"], twin.stage2[0].downsample[0].weight.detach().numpy())
    np.testing.assert_array_equal(back["stem.1.running_var"], twin.stem[1].running_var.numpy())


@pytest.mark.parametrize(
    "output, fmt, phrase",
    [
        ("w.pt", "torch", "dlc does not write .pt files"),
        ("w.pth", None, "safetensors.torch.load_file"),
        ("w.bin", None, "cannot tell the format of"),
        ("w.safetensors", "onnx", "--format onnx does not write a .safetensors file"),
        ("w.onnx", "torch", "--format torch does not write a .onnx file"),
    ],
)
def test_output_names_and_formats_that_do_not_go_together_are_usage_errors(tmp_path, capsys, output, fmt, phrase):
    argv = ["export", str(EXAMPLES / "xor_mlp.dl"), "-o", str(tmp_path / output)] + (["--format", fmt] if fmt else [])
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and phrase in capsys.readouterr().err


def test_without_the_extra_export_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    code = main(["export", str(EXAMPLES / "xor_mlp.dl"), "-o", str(tmp_path / "w.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and 'pip install "dlc[onnx]"' in err and "safetensors" in err and "Traceback" not in err


def test_unreadable_files_are_clear_errors(tmp_path):
    model = load(str(EXAMPLES / "xor_mlp.dl")).build(None, training=False)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(DlcError, match="is not a readable safetensors file"):
        weights.load(tmp_path / "junk.safetensors", model.params)
    safetensors.torch.save_file({"h.weight": torch.zeros(4, 2, dtype=torch.bfloat16)}, tmp_path / "bf16.safetensors")
    with pytest.raises(
        DlcError, match=r"h.weight holds BF16 numbers, which dlc cannot read; save the tensors as float32"
    ):
        weights.load(tmp_path / "bf16.safetensors", model.params)
    with pytest.raises(DlcError, match="no weights file at"):
        weights.load(tmp_path / "none.safetensors", model.params)


def test_two_parameters_with_one_torch_name_are_refused():
    source = """def block(x: f32[B, n]) {
    param weight: f32[n, n] = glorot_uniform
    return dense(x @ weight, 3)
}
model m {
    input x: f32[B, 3]
    output y = block(x)
}"""
    model = load_text(source).build(None, training=False)
    with pytest.raises(DlcError, match="the parameters y.weight and y.W would both be 'y.weight' in torch.nn's names"):
        TorchLayout(model.params)


def test_a_scalar_parameter_keeps_its_shape_from_initialization_to_evaluation(tmp_path, capsys):
    """perceptron's b: f32[] was initialized as an array of one, so its checkpoint did not fit the model."""
    model = load(str(EXAMPLES / "perceptron.dl")).build(None, training=True)
    assert initial_parameters(model, 0)["b"].shape == ()
    assert main(["train", str(EXAMPLES / "perceptron.dl"), "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert main(["eval", str(EXAMPLES / "perceptron.dl"), "--weights", str(tmp_path / "last.npz")]) == 0
    assert "accuracy" in capsys.readouterr().out
