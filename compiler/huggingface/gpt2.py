"""GPT-2 from a Hugging Face folder: the config as a .dl program, the weights under its names.

The program holds two models over one set of parameters, so one checkpoint serves both:
- `NAME`, the whole model (the last in the file, which the commands take): ids [B, T] in, logits
  [B, T, vocab] out (the causal LM head), or the hidden states [B, T, width] (the base model);
  with the LM head a loss against the next tokens and a train block to edit, for fine-tuning;
- `NAME_step` (with the LM head), new tokens given the keys and values of the positions before them (the cache
  `dlc generate` keeps, [layers, B, heads, S, head width] each, the first `length` of the S
  positions of each row filled): the last new token's logits and the new tokens' own keys and
  values, which the runtime writes from position `length` on (runtime/kv_cache.py). The prompt
  takes one call, and each generated token one position.
Both are written with the standard library's layers (`embedding`, `layernorm`, `dense`,
`scaled_dot_product_attention`, the step's `cached_attention`, which reads the cache's written
positions where they lie, `dropout`) and a GPT-2 block the program defines.

GPT-2's `Conv1D` layers keep their weights [in, out], as dlc's `dense` does: no transposes. The
LM head is the token table transposed (tied, as `transformers` ties it) unless the config says
`tie_word_embeddings: false`, when it is a table of its own (`lm_head`, [vocab, width]).
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface.folder import ACTIVATIONS, refuse, setting, take

MODEL_TYPES = ("gpt2",)
HEADS = {"GPT2Model": "base", "GPT2LMHeadModel": "causal_lm"}

# config keys whose other values change the computation in ways the program does not write, and what they mean
FIXED = {
    "scale_attn_weights": (True, "attention scores not scaled by 1 / sqrt(head width)"),
    "scale_attn_by_inverse_layer_idx": (False, "attention scores scaled by 1 / (layer + 1) too"),
    "reorder_and_upcast_attn": (False, "the attention computed in another order"),
    "add_cross_attention": (False, "cross-attention over an encoder's states"),
}

# the Hugging Face name of each parameter of a block (under h.{i}.), by its dlc name, and its shape
BLOCK = {
    "ln_1.gamma": ("ln_1.weight", lambda s: (s.width,)),
    "ln_1.beta": ("ln_1.bias", lambda s: (s.width,)),
    "attn.c_attn.W": ("attn.c_attn.weight", lambda s: (s.width, 3 * s.width)),
    "attn.c_attn.b": ("attn.c_attn.bias", lambda s: (3 * s.width,)),
    "attn.c_proj.W": ("attn.c_proj.weight", lambda s: (s.width, s.width)),
    "attn.c_proj.b": ("attn.c_proj.bias", lambda s: (s.width,)),
    "ln_2.gamma": ("ln_2.weight", lambda s: (s.width,)),
    "ln_2.beta": ("ln_2.bias", lambda s: (s.width,)),
    "mlp.c_fc.W": ("mlp.c_fc.weight", lambda s: (s.width, s.inner)),
    "mlp.c_fc.b": ("mlp.c_fc.bias", lambda s: (s.inner,)),
    "mlp.c_proj.W": ("mlp.c_proj.weight", lambda s: (s.inner, s.width)),
    "mlp.c_proj.b": ("mlp.c_proj.bias", lambda s: (s.width,)),
}


class Shape:
    """The numbers of a GPT-2 config the program is written with, checked."""

    def __init__(self, config):
        positive, rate = (lambda v: v > 0), (lambda v: 0 <= v < 1)
        whole = dict(check=positive, why="a whole number of at least 1")
        self.vocab = setting(config, "vocab_size", **whole)
        self.positions = setting(config, "n_positions", **whole)
        self.width = setting(config, "n_embd", **whole)
        self.layers = setting(config, "n_layer", **whole)
        self.heads = setting(config, "n_head", **whole)
        self.inner = setting(config, "n_inner", default=4 * self.width, **whole)
        if self.width % self.heads:
            refuse(config, "n_embd", self.width, f"not a multiple of n_head, {self.heads}")
        self.eps = setting(config, "layer_norm_epsilon", float, 1e-5, positive, "a number above 0")
        self.rates = {
            key: setting(config, key, float, 0.1, rate, "a dropout rate, from 0 to below 1")
            for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop")
        }
        act = setting(config, "activation_function", str, "gelu_new")
        if act not in ACTIVATIONS:
            refuse(config, "activation_function", act, f"dlc imports the activations {', '.join(ACTIVATIONS)}")
        self.act = ACTIVATIONS[act]
        for key, (value, meaning) in FIXED.items():
            if config.get(key, value) != value:
                refuse(config, key, config[key], meaning)
        self.tied = setting(config, "tie_word_embeddings", bool, True)
        self.head_width = self.width // self.heads


# the blocks both models are made of; ACT is the config's activation
BLOCKS = """
# causal self-attention: queries, keys and values by one dense (c_attn), the heads, c_proj; with a
# cache, the keys and values [B, HEADS, S, HEAD_WIDTH] of the positions before come first (read
# where they lie, the first past_length [B, 1] of each row's S). Returns the output and this
# call's keys and values
def gpt2_attention(x: f32[B, T, D], mask, past_k = none, past_v = none, past_length = none) {
    q, k, v = split(dense(x, 3 * D, name = "c_attn"), 3, axis = -1)
    q = transpose(reshape(q, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)
    k = transpose(reshape(k, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)
    v = transpose(reshape(v, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)
    if is_none(past_k) {
        o = scaled_dot_product_attention(q, k, v, mask, ATTENTION_DROPOUT)
    } else {
        o = cached_attention(q, past_k, past_v, k, v, none, mask, past_length)
    }
    o = dense(reshape(transpose(o, 0, 2, 1, 3), B, T, D), D, name = "c_proj")
    return dropout(o, RESIDUAL_DROPOUT), k, v
}

def gpt2_mlp(x: f32[B, T, D]) {
    inner = dense(x, INNER, ACT, name = "c_fc")
    return dense(inner, D, name = "c_proj")
}

# a pre-norm block: the attention and the MLP, each added to the residual stream
def gpt2_block(x: f32[B, T, D], mask, past_k = none, past_v = none, past_length = none) {
    a, k, v = gpt2_attention(layernorm(x, EPS, name = "ln_1"), mask, past_k, past_v, past_length, name = "attn")
    x = x + a
    m = gpt2_mlp(layernorm(x, EPS, name = "ln_2"), name = "mlp")
    return x + dropout(m, RESIDUAL_DROPOUT), k, v
}
"""

# the T new tokens of each row at positions `length`, length + 1, ..., given the keys and values of
# the `length` positions before them in a cache of S (runtime/kv_cache.py); LOGITS is the head's
# projection of h, the last new token's hidden state
STEP = """
# T new tokens per row (the prompt at once, then one a step): the last one's logits, and their keys
# and values, which the cache takes at positions `length` to `length + T - 1`
model NAME_step {
    input  ids: i32[B, T]
    input  length: i32[B]
    input  past_k: f32[LAYERS, B, HEADS, S, HEAD_WIDTH]
    input  past_v: f32[LAYERS, B, HEADS, S, HEAD_WIDTH]
    wte = embedding(ids, VOCAB, WIDTH, init = normal_std(0.02))
    param  wpe: f32[POSITIONS, WIDTH] = normal_std(0.02)
    h = wte + gather(wpe, reshape(length, B, 1) + reshape(arange(T), 1, T))
    cached = reshape(length, B, 1)
    keys = ()
    values = ()
    repeat i in 0..LAYERS {
        h, k, v = gpt2_block(h, causal_mask(T), past_k[i], past_v[i], cached, name = "h")
        keys = keys + (expand_dims(k, 0),)
        values = values + (expand_dims(v, 0),)
    }
    h = layernorm(h, EPS, name = "ln_f")[:, T - 1]
HEAD_TABLE    output logits = LOGITS
    output keys = concat(keys, axis = 0)
    output values = concat(values, axis = 0)
}
"""


def program(
    config,
    head: str,
    name: str = "gpt2",
    source: str = "model",
    weights: str | None = None,
    tokenizer: str | None = None,
) -> str:
    """The .dl program of a GPT-2 config: the blocks, with the LM head the step model, the whole
    model (last: the commands take it) and a train block to edit."""
    s = Shape(config)
    if head not in HEADS.values():
        raise DlcError(f"GPT-2 has no head '{head}': {', '.join(sorted(set(HEADS.values())))}")
    lm = head == "causal_lm"
    table = "lm_head" if lm and not s.tied else "wte.W"  # the tied head is the token table, as transformers ties it
    head_table = "    param  lm_head: f32[VOCAB, WIDTH] = normal_std(0.02)\n" if table == "lm_head" else ""
    text = [
        f"# imported from {source} by dlc import (Hugging Face GPT-2: {next(a for a, h in HEADS.items() if h == head)})",
        f"# {s.layers} layers of {s.width} features, {s.heads} heads, {s.vocab} token ids, at most {s.positions} "
        "positions",
        *(
            [f"# {name}_step, a token at a time from a cache of keys and values, is what dlc generate runs"]
            if lm
            else []
        ),
        f"const VOCAB = {s.vocab}",
        f"const POSITIONS = {s.positions}",
        f"const WIDTH = {s.width}",
        f"const LAYERS = {s.layers}",
        f"const HEADS = {s.heads}",
        f"const HEAD_WIDTH = {s.head_width}",
        f"const INNER = {s.inner}",
        f"const EPS = {s.eps!r}",
        f"const EMBEDDING_DROPOUT = {s.rates['embd_pdrop']!r}",
        f"const ATTENTION_DROPOUT = {s.rates['attn_pdrop']!r}",
        f"const RESIDUAL_DROPOUT = {s.rates['resid_pdrop']!r}",
        BLOCKS.replace("ACT", s.act).rstrip("\n"),
    ]
    if lm:
        step = STEP.replace("NAME", name).replace("HEAD_TABLE", head_table)
        text.append(step.replace("LOGITS", f"h @ transpose({table})").rstrip("\n"))
    text += [
        "",
        f"model {name} {{",
        "    input  ids: i32[B, T]",
        *(["    target next: i32[B, T]"] if lm else []),
        "    wte = embedding(ids, VOCAB, WIDTH, init = normal_std(0.02))",
        "    param  wpe: f32[POSITIONS, WIDTH] = normal_std(0.02)",
        "    h = dropout(wte + wpe[0:T], EMBEDDING_DROPOUT)",
        "    mask = causal_mask(T)",
        "    repeat i in 0..LAYERS {",
        '        h, k, v = gpt2_block(h, mask, name = "h")',
        "    }",
        '    h = layernorm(h, EPS, name = "ln_f")',
    ]
    if lm:
        text += [
            *([head_table.rstrip("\n")] if head_table else []),
            f"    output logits = h @ transpose({table})",
            "    loss   sparse_cross_entropy(logits, next)",
            "    metric accuracy = accuracy(logits, next)",
            "}",
            "",
            f"train {name} {{",
            "    # the data: ids, next (token ids, as the tokenizer makes them; next is ids a token later)",
            *([f"    # the tokenizer: {tokenizer}"] if tokenizer else []),
            '    data      = npz("train.npz")',
            f'    init_from = "{weights or name + ".npz"}"',
            "    optimizer = adamw(lr = 5e-5, weight_decay = 0.01)",
            "    batch     = 8",
            "    epochs    = 1",
            "}",
        ]
    else:
        text += ["    output hidden = h", "}", "", "# add a head, a loss and a train block to fine-tune it"]
    return "\n".join(text) + "\n"


def _table(config, head: str) -> list:
    """(dlc name, Hugging Face name (the base model's without the LM head's `transformer.`), shape)
    of every parameter; the LM head's own table, when untied, is marked by a leading '/'."""
    s = Shape(config)
    rows = [
        ("wte.W", "wte.weight", (s.vocab, s.width)),
        ("wpe", "wpe.weight", (s.positions, s.width)),
        ("ln_f.gamma", "ln_f.weight", (s.width,)),
        ("ln_f.beta", "ln_f.bias", (s.width,)),
    ]
    for i in range(s.layers):
        rows += [(f"h.{i}.{dlc}", f"h.{i}.{hf}", shape(s)) for dlc, (hf, shape) in BLOCK.items()]
    if head == "causal_lm" and not s.tied:
        rows.append(("lm_head", "/lm_head.weight", (s.vocab, s.width)))
    return rows


def _name(hf: str, prefix: str) -> str:
    return hf[1:] if hf.startswith("/") else prefix + hf


def weights(config, tensors: dict, head: str) -> dict:
    """The folder's tensors as the program's parameters (the same layouts: GPT-2's Conv1D keeps
    [in, out], as `dense` does). The base model's tensors are read with the LM head's prefix
    (`transformer.`) or without it, as the folder has them; a tensor missing or of a shape the
    config does not make is an error."""
    prefix = "transformer." if "transformer.wte.weight" in tensors else ""
    return {
        dlc: np.asarray(take(tensors, _name(hf, prefix), shape), np.float32) for dlc, hf, shape in _table(config, head)
    }


def tensors(config, params: dict, head: str) -> dict:
    """The program's parameters under the folder's names (the inverse of `weights`; a tied LM
    head is the token table, which save_pretrained does not write twice)."""
    prefix = "transformer." if head == "causal_lm" else ""
    return {
        _name(hf, prefix): np.asarray(take(params, dlc, shape, "the weights"), np.float32)
        for dlc, hf, shape in _table(config, head)
    }
