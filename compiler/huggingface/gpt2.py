"""GPT-2 from a Hugging Face folder: the config as a .dl program, the weights under its names.

The program holds two models over one set of parameters, so one checkpoint serves both:
- `NAME`, the whole model (the last in the file, which the commands take): ids [B, T] in, logits
  [B, T, vocab] out (the causal LM head), or the hidden states [B, T, width] (the base model);
  with the LM head a loss against the next tokens and a train block to edit, for fine-tuning;
- `NAME_step`, one new token given the keys and values of the positions before it (the cache
  `dlc generate` keeps, [layers, B, heads, S, head width] each, the first `length` of the S
  positions of each row filled): the new token's logits and its own keys and values, which the
  runtime writes at position `length` of the cache. Each generated token costs one position.
Both are written with the standard library's layers (`embedding`, `layernorm`, `dense`,
`scaled_dot_product_attention`, `dropout`) and a GPT-2 block the program defines.

GPT-2's `Conv1D` layers keep their weights [in, out], as dlc's `dense` does: no transposes. The
LM head is the token table transposed (tied, as `transformers` ties it) unless the config says
`tie_word_embeddings: false`, when it is a table of its own (`lm_head`, [vocab, width]).
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError

MODEL_TYPES = ("gpt2",)
HEADS = {"GPT2Model": "base", "GPT2LMHeadModel": "causal_lm"}

# the activations `transformers` names in `activation_function`, as the library's
ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# config keys whose other values change the computation in ways the program does not write
UNSUPPORTED = {
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "scale_attn_weights": True,
}

# the Hugging Face name of each parameter of a block, by its dlc name (under h.{i}.)
BLOCK = {
    "ln_1.gamma": "ln_1.weight",
    "ln_1.beta": "ln_1.bias",
    "attn.c_attn.W": "attn.c_attn.weight",
    "attn.c_attn.b": "attn.c_attn.bias",
    "attn.c_proj.W": "attn.c_proj.weight",
    "attn.c_proj.b": "attn.c_proj.bias",
    "ln_2.gamma": "ln_2.weight",
    "ln_2.beta": "ln_2.bias",
    "mlp.c_fc.W": "mlp.c_fc.weight",
    "mlp.c_fc.b": "mlp.c_fc.bias",
    "mlp.c_proj.W": "mlp.c_proj.weight",
    "mlp.c_proj.b": "mlp.c_proj.bias",
}


class Shape:
    """The numbers of a GPT-2 config the program is written with, checked."""

    def __init__(self, config: dict):
        def number(key, default=None, kind=int):
            value = config.get(key, default)
            if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise DlcError(f"config.json: '{key}' must be a whole number of at least 1, got {value!r}")
            if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                raise DlcError(f"config.json: '{key}' must be a number of at least 0, got {value!r}")
            return value

        self.vocab = number("vocab_size")
        self.positions = number("n_positions")
        self.width = number("n_embd")
        self.layers = number("n_layer")
        self.heads = number("n_head")
        inner = config.get("n_inner")
        self.inner = 4 * self.width if inner is None else number("n_inner")
        if self.width % self.heads:
            raise DlcError(f"config.json: 'n_embd' ({self.width}) must be a multiple of 'n_head' ({self.heads})")
        self.eps = number("layer_norm_epsilon", 1e-5, float)
        self.rates = {key: number(key, 0.1, float) for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop")}
        for key, rate in self.rates.items():
            if rate >= 1:
                raise DlcError(f"config.json: '{key}' is a dropout rate, below 1, got {rate!r}")
        act = config.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise DlcError(
                f"config.json: 'activation_function' {act!r} is not one dlc writes: {', '.join(ACTIVATIONS)}"
            )
        self.act = ACTIVATIONS[act]
        for key, value in UNSUPPORTED.items():
            if config.get(key, value) != value:
                raise DlcError(f"config.json: '{key}': {config[key]!r} is not supported (only {value!r})")
        self.tied = config.get("tie_word_embeddings", True) is not False
        self.head_width = self.width // self.heads


def program(config: dict, head: str, name: str = "gpt2") -> str:
    """The .dl program of a GPT-2 config: the block, the step model and the whole model."""
    s = Shape(config)
    lm = head == "causal_lm"
    if head not in HEADS.values():
        raise DlcError(f"GPT-2 has no head '{head}': {', '.join(sorted(set(HEADS.values())))}")
    untied = lm and not s.tied
    out_table = "lm_head" if untied else "wte.W"
    lines = [
        f"# GPT-2 ({'causal language model' if lm else 'base model'}), imported from a Hugging Face folder.",
        f"# {name}_step computes one new token given the cached keys and values of the positions before it;",
        f"# `dlc generate` uses it. {name}, the last model, is the whole model, which the commands take.",
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
        "",
        "# causal self-attention: queries, keys and values by one dense (c_attn), heads, then c_proj;",
        "# with a cache, the keys and values [B, HEADS, S, HEAD_WIDTH] of earlier positions come first.",
        "# Returns the output and this call's keys and values",
        "def gpt2_attention(x: f32[B, T, D], mask, past_k = none, past_v = none) {",
        "    qkv = dense(x, 3 * D, name = \"c_attn\")",
        "    q, k, v = split(qkv, 3, axis = -1)",
        "    q = transpose(reshape(q, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)",
        "    k = transpose(reshape(k, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)",
        "    v = transpose(reshape(v, B, T, HEADS, HEAD_WIDTH), 0, 2, 1, 3)",
        "    keys = k",
        "    values = v",
        "    if not is_none(past_k) {",
        "        keys = concat(past_k, k, axis = 2)",
        "        values = concat(past_v, v, axis = 2)",
        "    }",
        "    o = scaled_dot_product_attention(q, keys, values, mask, ATTENTION_DROPOUT)",
        "    o = dense(reshape(transpose(o, 0, 2, 1, 3), B, T, D), D, name = \"c_proj\")",
        "    return dropout(o, RESIDUAL_DROPOUT), k, v",
        "}",
        "",
        "def gpt2_mlp(x: f32[B, T, D]) {",
        f"    inner = dense(x, INNER, {s.act}, name = \"c_fc\")",
        "    return dense(inner, D, name = \"c_proj\")",
        "}",
        "",
        "# a pre-norm block: attention and the MLP, each added to the residual",
        "def gpt2_block(x: f32[B, T, D], mask, past_k = none, past_v = none) {",
        "    a, k, v = gpt2_attention(layernorm(x, EPS, name = \"ln_1\"), mask, past_k, past_v, name = \"attn\")",
        "    x = x + a",
        "    m = gpt2_mlp(layernorm(x, EPS, name = \"ln_2\"), name = \"mlp\")",
        "    return x + dropout(m, RESIDUAL_DROPOUT), k, v",
        "}",
        "",
        "# the new token of each row at position `length`, after the `length` cached positions of the S",
        f"model {name}_step {{",
        "    input ids: i32[B, 1]",
        "    input length: i32[B]",
        "    input past_k: f32[LAYERS, B, HEADS, S, HEAD_WIDTH]",
        "    input past_v: f32[LAYERS, B, HEADS, S, HEAD_WIDTH]",
        "    wte = embedding(ids, VOCAB, WIDTH, init = normal_std(0.02))",
        "    param wpe: f32[POSITIONS, WIDTH] = normal_std(0.02)",
        "    h = wte + gather(wpe, reshape(length, B, 1))",
        "    cached = select(reshape(arange(S), 1, S) < reshape(length, B, 1), 0.0, -1e9)",
        "    mask = reshape(concat(cached, zeros[B, 1], axis = 1), B, 1, 1, S + 1)",
        "    keys = ()",
        "    values = ()",
        "    repeat i in 0..LAYERS {",
        "        h, k, v = gpt2_block(h, mask, past_k[i], past_v[i], name = \"h\")",
        "        keys = keys + (expand_dims(k, 0),)",
        "        values = values + (expand_dims(v, 0),)",
        "    }",
        "    h = layernorm(h, EPS, name = \"ln_f\")",
    ]
    if untied:
        lines.append("    param lm_head: f32[VOCAB, WIDTH] = normal_std(0.02)")
    lines += [
        f"    output {'logits' if lm else 'hidden'} = {f'h[:, 0] @ transpose({out_table})' if lm else 'h[:, 0]'}",
        "    output keys = concat(keys, axis = 0)",
        "    output values = concat(values, axis = 0)",
        "}",
        "",
        f"model {name} {{",
        "    input  ids: i32[B, T]",
    ]
    if lm:
        lines.append("    target next: i32[B, T]")
    lines += [
        "    wte = embedding(ids, VOCAB, WIDTH, init = normal_std(0.02))",
        "    param wpe: f32[POSITIONS, WIDTH] = normal_std(0.02)",
        "    h = dropout(wte + wpe[0:T], EMBEDDING_DROPOUT)",
        "    mask = causal_mask(T)",
        "    repeat i in 0..LAYERS {",
        "        h, k, v = gpt2_block(h, mask, name = \"h\")",
        "    }",
        "    h = layernorm(h, EPS, name = \"ln_f\")",
    ]
    if lm:
        if untied:
            lines.append("    param lm_head: f32[VOCAB, WIDTH] = normal_std(0.02)")
        lines += [
            f"    output logits = h @ transpose({out_table})",
            "    loss sparse_cross_entropy(logits, next)",
            "    metric accuracy = accuracy(logits, next)",
        ]
    else:
        lines.append("    output hidden = h")
    lines += ["}", ""]
    if lm:
        lines += [
            f"train {name} {{",
            f"    data      = text(\"corpus.txt\", seq = {min(s.positions, 128)})  # TODO: your text, and its tokenizer",
            "    batch     = 8",
            "    epochs    = 1",
            "    optimizer = adamw(lr = 5e-5, weight_decay = 0.01)",
            "}",
            "",
        ]
    return "\n".join(lines)


def _hf_names(config: dict, head: str) -> dict:
    """dlc name -> Hugging Face name (without the `transformer.` prefix of the LM head's)."""
    s = Shape(config)
    names = {"wte.W": "wte.weight", "wpe": "wpe.weight", "ln_f.gamma": "ln_f.weight", "ln_f.beta": "ln_f.bias"}
    for i in range(s.layers):
        names.update({f"h.{i}.{dlc}": f"h.{i}.{hf}" for dlc, hf in BLOCK.items()})
    return names


def weights(config: dict, tensors: dict, head: str) -> dict:
    """The folder's tensors (Hugging Face names) as the program's parameters."""
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    out = {}
    for dlc, hf in _hf_names(config, head).items():
        if prefix + hf not in tensors:
            raise DlcError(f"the weights have no tensor '{prefix + hf}', which a GPT-2 of this config has")
        out[dlc] = np.asarray(tensors[prefix + hf], np.float32)
    if head == "causal_lm" and not Shape(config).tied:
        if "lm_head.weight" not in tensors:
            raise DlcError("the weights have no tensor 'lm_head.weight', which an untied GPT-2 LM head has")
        out["lm_head"] = np.asarray(tensors["lm_head.weight"], np.float32)
    return out


def tensors(config: dict, params: dict, head: str) -> dict:
    """The program's parameters under the Hugging Face names of `head`'s model (the inverse of `weights`)."""
    prefix = "transformer." if head == "causal_lm" else ""
    out = {prefix + hf: np.asarray(params[dlc], np.float32) for dlc, hf in _hf_names(config, head).items()}
    if head == "causal_lm" and not Shape(config).tied:  # a tied head is the token table, which is not saved twice
        out["lm_head.weight"] = np.asarray(params["lm_head"], np.float32)
    return out
