"""PyTorch's ONNX exports of small models with a dynamic batch (torch.onnx: the TorchScript
and the dynamo exporter), the models themselves, and the sequences they are fed."""

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402


HIDDEN, HEADS, VOCAB, POSITIONS = 32, 4, 50, 64


# ---- the models: what BERT and GPT-2 compute, small and with random weights ----------------------------------
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(HIDDEN, 3 * HIDDEN), nn.Linear(HIDDEN, HIDDEN)

    def heads(self, x):  # (B, T, H) -> (B, heads, T, H / heads) by the input's own sizes
        return x.view(*x.size()[:-1], HEADS, HIDDEN // HEADS).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = (self.heads(t) for t in self.qkv(x).split(HIDDEN, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + mask
        context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).contiguous()
        return self.out(context.view(*context.size()[:-2], -1))


class Block(nn.Module):
    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal
        self.attention, self.norm1, self.norm2 = Attention(), nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.ff = nn.Sequential(
            nn.Linear(HIDDEN, 2 * HIDDEN),
            nn.GELU(approximate="tanh" if causal else "none"),
            nn.Linear(2 * HIDDEN, HIDDEN),
        )

    def forward(self, x, mask):
        if self.causal:  # GPT-2: the norms first
            x = x + self.attention(self.norm1(x), mask)
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.ff(x))


class Bert(nn.Module):
    """BERT's embeddings (position and token type ids sliced from buffers by the sequence's
    length, the types expanded to the batch), its attention mask expanded to (B, 1, T, T),
    and the hidden state of each sequence's last token (an index per batch row)."""

    def __init__(self):
        super().__init__()
        self.words, self.positions = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(POSITIONS, HIDDEN)
        self.types, self.norm = nn.Embedding(2, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(POSITIONS).expand((1, -1)), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, POSITIONS, dtype=torch.long), persistent=False)
        self.blocks = nn.ModuleList([Block(causal=False) for _ in range(2)])
        self.pool = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, ids, attention_mask):
        batch, length = ids.size()
        types = self.token_type_ids[:, :length].expand(batch, length)
        x = self.norm(self.words(ids) + self.positions(self.position_ids[:, :length]) + self.types(types))
        mask = attention_mask[:, None, None, :].expand(batch, 1, length, length).to(x.dtype)
        mask = (1.0 - mask) * torch.finfo(x.dtype).min
        for block in self.blocks:
            x = block(x, mask)
        last = x[torch.arange(batch), attention_mask.sum(-1) - 1]
        return x, torch.tanh(self.pool(last))


class Gpt(nn.Module):
    """GPT-2's position ids from a range over the sequence, its causal mask by triu, gelu
    by tanh, and the logits of each sequence's last token."""

    def __init__(self):
        super().__init__()
        self.words, self.positions = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(POSITIONS, HIDDEN)
        self.blocks = nn.ModuleList([Block(causal=True) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids):
        batch, length = ids.shape
        positions = torch.arange(0, length, dtype=torch.long).unsqueeze(0)
        x = self.words(ids) + self.positions(positions)
        mask = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        for block in self.blocks:
            x = block(x, mask)
        logits = self.head(self.norm(x))
        return logits, logits[torch.arange(batch), (ids != 0).sum(-1) - 1]


class Masks(nn.Module):
    """What Hugging Face's mask functions compute for attention: a causal mask from
    positions compared on a grid, the padding mask read at (batch, key) index tensors, and
    RoBERTa's position ids, the running count of the mask."""

    def forward(self, x, attention_mask):
        batch, length = attention_mask.shape
        queries = torch.arange(length)[None, None, :, None]
        keys = torch.arange(length)[None, None, None, :]
        allowed = (keys <= queries) & attention_mask.bool()[torch.arange(batch)[:, None, None, None], keys]
        mask = torch.where(allowed, torch.tensor(0.0), torch.tensor(torch.finfo(torch.float32).min))
        scores = x[:, None, :, None] * x[:, None, None, :] + mask
        return scores.softmax(-1), (attention_mask.cumsum(-1) - 1).clamp(min=0)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: the channels divided into groups by the size of x."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(116, 116, 1)

    def forward(self, x):
        x = self.conv(x)
        batch, channels, height, width = x.size()
        x = x.view(batch, 2, channels // 2, height, width).transpose(1, 2).contiguous().view(batch, -1, height, width)
        a, b = x.chunk(2, dim=1)
        return torch.cat((a, torch.relu(b)), 1)


def sequences(batch, length, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[0, length // 2 :] = 0  # a padded sequence
    return {"ids": ids, "attention_mask": mask}


MODELS = {  # name: (the module, its inputs' names, its outputs' names, the inputs to export with)
    "bert": (Bert, ["ids", "attention_mask"], ["hidden", "pooled"], lambda: sequences(2, 7, 0)),
    "gpt": (Gpt, ["ids"], ["logits", "last"], lambda: {"ids": sequences(2, 7, 0)["ids"]}),
    "masks": (
        Masks,
        ["x", "attention_mask"],
        ["probabilities", "positions"],
        lambda: {"x": np.zeros((2, 7), np.float32), "attention_mask": sequences(2, 7, 0)["attention_mask"]},
    ),
    "shuffle": (ChannelShuffle, ["x"], ["y"], lambda: {"x": np.zeros((2, 116, 7, 7), np.float32)}),
}


def export(tmp_path, name: str, exporter: str):
    """The model of MODELS exported with a dynamic batch (and sequence) by `exporter`."""
    module, inputs, outputs, example = MODELS[name]
    torch.manual_seed(0)
    return export_module(tmp_path, name, exporter, module().eval(), inputs, outputs, example())


def export_module(tmp_path, name: str, exporter: str, model, inputs, outputs, example: dict):
    """`model` exported by `exporter`: "torchscript" (opset 17, dynamic_axes) or "dynamo"
    (opset 18, dynamic_shapes), with axis 0 of its inputs the batch and axis 1 the length
    (images: the batch alone)."""
    args = tuple(torch.from_numpy(a) for a in example.values())
    dynamic = {0: "batch"} if args[0].dim() == 4 else {0: "batch", 1: "length"}
    path = tmp_path / f"{name}_{exporter}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                opset_version=17,
                dynamic_axes={i: dynamic for i in inputs},
                dynamo=False,
            )
        else:
            pytest.importorskip("onnxscript")
            dims = {
                k: torch.export.Dim(v, max=POSITIONS) if v == "length" else torch.export.Dim(v)
                for k, v in dynamic.items()
            }
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                opset_version=18,
                dynamic_shapes={i: dims for i in inputs},
                dynamo=True,
                verbose=False,
            )
    return path
