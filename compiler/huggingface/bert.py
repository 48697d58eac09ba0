"""The BERT family of Hugging Face folders: BERT, RoBERTa and DistilBERT, each as a `.dl`
program of the standard library's layers (embedding, multi_head_attention, dense, layernorm,
dropout) and its parameters, and back.

The three are one post-norm encoder with different config keys and tensor names: RoBERTa
counts positions from its padding id + 1 over the tokens the attention mask keeps
(transformers counts the ids that are not the padding id: the same wherever the padding is
masked, as a tokenizer masks it; counting ids would make dlc's data checks take them for
positions, 514 values, not token ids) and classifies through a dense + tanh of the first
token; DistilBERT has no token types and no pooler, no dropout after its attention, and its
own names. A head is the folder's architecture: the base model (the last hidden state, and
BERT's pooler output), sequence classification, token classification, or masked LM.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface.folder import ACTIVATIONS, refuse, setting, take

MODEL_TYPES = ("bert", "roberta", "distilbert")
HEADS = {
    "BertModel": "base",
    "BertForSequenceClassification": "sequence",
    "BertForTokenClassification": "token",
    "BertForMaskedLM": "masked_lm",
    "RobertaModel": "base",
    "RobertaForSequenceClassification": "sequence",
    "RobertaForTokenClassification": "token",
    "RobertaForMaskedLM": "masked_lm",
    "DistilBertModel": "base",
    "DistilBertForSequenceClassification": "sequence",
    "DistilBertForTokenClassification": "token",
    "DistilBertForMaskedLM": "masked_lm",
}
IGNORED_LABEL = -100  # the label transformers' losses skip (padding, sub-word continuations)


@dataclass(frozen=True)
class Dims:
    """What a config says of the model, in one vocabulary for the three."""

    kind: str  # the model_type
    vocab: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    act: str  # the standard library's name
    rate: float  # dropout of the hidden states
    attention_rate: float  # dropout of the attention weights
    classifier_rate: float
    positions: int
    types: int  # token types (0: none, DistilBERT)
    eps: float
    pad: int
    labels: int
    tied: bool  # the masked LM's decoder is the word embeddings' table

    @property
    def prefix(self) -> str:
        """The base model's name in a head's tensor names."""
        return {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert."}[self.kind]


def dims(config) -> Dims:
    kind = config["model_type"]
    positive, rate = (lambda v: v > 0), (lambda v: 0 <= v < 1)
    if kind == "distilbert":
        names = dict(
            hidden="dim", layers="n_layers", heads="n_heads", ffn="hidden_dim", act="activation", rate="dropout"
        )
        if config.get("sinusoidal_pos_embds"):
            refuse(config, "sinusoidal_pos_embds", True, "fixed sinusoidal positions")
        attention_rate = setting(config, "attention_dropout", float, 0.1, rate, "a rate in [0, 1)")
        classifier_rate = setting(config, "seq_classif_dropout", float, 0.2, rate, "a rate in [0, 1)")
        types, eps, pad = 0, 1e-12, setting(config, "pad_token_id", int, 0)
    else:
        names = dict(
            hidden="hidden_size",
            layers="num_hidden_layers",
            heads="num_attention_heads",
            ffn="intermediate_size",
            act="hidden_act",
            rate="hidden_dropout_prob",
        )
        for key, allowed, what in (
            ("position_embedding_type", "absolute", "relative positions"),
            ("is_decoder", False, "a decoder"),
            ("add_cross_attention", False, "cross-attention"),
        ):
            if config.get(key, allowed) != allowed:
                refuse(config, key, config[key], what)
        attention_rate = setting(config, "attention_probs_dropout_prob", float, 0.1, rate, "a rate in [0, 1)")
        types = setting(config, "type_vocab_size", int, 2, positive, "a positive whole number")
        eps = setting(config, "layer_norm_eps", float, 1e-12, positive, "a positive number")
        pad = setting(config, "pad_token_id", int, 1 if kind == "roberta" else 0)
        classifier_rate = None
    get = {
        k: setting(config, key, int, None, positive, "a positive whole number")
        for k, key in names.items()
        if k in ("hidden", "layers", "heads", "ffn")
    }
    if get["hidden"] % get["heads"]:
        raise DlcError(
            f"{getattr(config, 'source', 'config.json')}: {names['hidden']} {get['hidden']} is not a multiple "
            f"of {names['heads']} {get['heads']}"
        )
    act = setting(config, names["act"], str, None)
    if act not in ACTIVATIONS:
        refuse(config, names["act"], act, f"dlc imports the activations {', '.join(ACTIVATIONS)}")
    hidden_rate = setting(config, names["rate"], float, 0.1, rate, "a rate in [0, 1)")
    if classifier_rate is None:
        classifier_rate = setting(config, "classifier_dropout", float, hidden_rate, rate, "a rate in [0, 1)")
    labels = config.get("id2label")
    return Dims(
        kind=kind,
        vocab=setting(config, "vocab_size", int, None, positive, "a positive whole number"),
        act=ACTIVATIONS[act],
        rate=hidden_rate,
        attention_rate=attention_rate,
        classifier_rate=classifier_rate,
        positions=setting(config, "max_position_embeddings", int, 512, positive, "a positive whole number"),
        types=types,
        eps=eps,
        pad=pad,
        labels=len(labels) if isinstance(labels, dict) and labels else 2,
        tied=bool(config.get("tie_word_embeddings", True)),
        **get,
    )


# ---- the program ---------------------------------------------------------------------------------------------
def _layer_def(d: Dims) -> list:
    """The def of one encoder layer: self-attention, a feed-forward network, each added to its
    input and normalized after (post-norm); DistilBERT drops out no attention output."""
    attended = "dropout(attention, rate)" if d.kind != "distilbert" else "attention"
    return [
        f"# one {_title(d)} layer: self-attention, then a feed-forward network, each added to its input and normalized",
        f"def {d.kind}_layer(x: f32[B, T, D], mask, heads: int, ffn: int, rate: float, attention_rate: float) {{",
        "    attention = multi_head_attention(x, x, heads, mask, attention_rate)",
        f"    attention_norm = layernorm(x + {attended}, eps = {d.eps!r})",
        f"    intermediate = dense(attention_norm, ffn, {d.act})",
        "    projected = dense(intermediate, D)",
        f"    output_norm = layernorm(attention_norm + dropout(projected, rate), eps = {d.eps!r})",
        "    return output_norm",
        "}",
    ]


def _title(d: Dims) -> str:
    return {"bert": "BERT", "roberta": "RoBERTa", "distilbert": "DistilBERT"}[d.kind]


def _inputs(d: Dims) -> list:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if d.types > 1 else [])


def _has_pooler(d: Dims, head: str) -> bool:
    return d.kind != "distilbert" and (head == "base" or head == "sequence" and d.kind == "bert")


def _encoder(d: Dims, head: str) -> list:
    """The lines from the inputs to the last hidden state `h` (and BERT's pooler output `pooler`)."""
    D = d.hidden
    lines = [f"words = embedding(input_ids, {d.vocab}, {D})"]
    if d.kind == "roberta":  # positions count the real tokens from pad + 1, as create_position_ids_from_input_ids
        lines += [
            "real = float(attention_mask != 0)  # the tokens that are not padding",
            "counted = real @ float(reshape(arange(T), T, 1) <= reshape(arange(T), 1, T))",
            f"positions = embedding(int(counted * real) + {d.pad}, {d.positions}, {D})",
        ]
    else:
        lines.append(f"positions = embedding(arange(T), {d.positions}, {D})  # T at most {d.positions}")
    summed = "words + positions"
    if d.types > 1:
        lines.append(f"token_types = embedding(token_type_ids, {d.types}, {D})")
        summed += " + token_types"
    elif d.types == 1:
        lines.append(f"token_types = embedding(arange(1), 1, {D})  # the one token type")
        summed += " + token_types"
    lines += [
        f"embeddings = layernorm({summed}, eps = {d.eps!r})",
        "mask = reshape(select(attention_mask == 0, -1e9, 0.0), B, 1, 1, T)  # -1e9 on the padding's keys",
        f"h = dropout(embeddings, {d.rate!r})",
        f"repeat i in 0..{d.layers} {{",
        f'    h = {d.kind}_layer(h, mask, {d.heads}, {d.ffn}, {d.rate!r}, {d.attention_rate!r}, name = "layer")',
        "}",
    ]
    if _has_pooler(d, head):
        lines.append(f"pooler = dense(h[:, 0], {D}, tanh)  # the first token's state")
    return lines


def _head(d: Dims, head: str, table: str = "words.W") -> tuple[list, list]:
    """(the target declarations, the lines of the head with its outputs, loss and metric);
    `table`: the word embeddings' table, which a tied masked-LM decoder reads."""
    r = d.classifier_rate
    if head == "base":
        return [], ["output hidden = h"] + (["output pooled = pooler"] if _has_pooler(d, head) else [])
    if head == "sequence":
        if d.kind == "bert":
            lines = [f"classifier = dense(dropout(pooler, {r!r}), {d.labels})"]
        elif d.kind == "roberta":
            lines = [
                f"classifier_dense = dense(dropout(h[:, 0], {r!r}), {d.hidden}, tanh)",
                f"classifier = dense(dropout(classifier_dense, {r!r}), {d.labels})",
            ]
        else:
            lines = [
                f"pre_classifier = dense(h[:, 0], {d.hidden}, relu)",
                f"classifier = dense(dropout(pre_classifier, {r!r}), {d.labels})",
            ]
        return ["target label: i32[B]"], lines + [
            "output logits = classifier",
            "loss sparse_cross_entropy(classifier, label)",
            "metric accuracy = accuracy(classifier, label)",
        ]
    ignore = f"ignore = {IGNORED_LABEL}"
    if head == "token":
        rate = d.rate if d.kind == "distilbert" else r
        return ["target labels: i32[B, T]"], [
            f"classifier = dense(dropout(h, {rate!r}), {d.labels})",
            "output logits = classifier",
            f"loss sparse_cross_entropy(classifier, labels, {ignore})",
            f"metric accuracy = accuracy(classifier, labels, {ignore})",
        ]
    act = "gelu_exact" if d.kind == "roberta" else d.act  # RobertaLMHead's gelu is fixed
    eps = 1e-12 if d.kind == "distilbert" else d.eps
    lines = [f"transform = dense(h, {d.hidden}, {act})", f"transform_norm = layernorm(transform, eps = {eps!r})"]
    if d.tied:
        lines += [
            f"param decoder_bias: f32[{d.vocab}] = zeros",
            f"decoder = transform_norm @ transpose({table}) + decoder_bias  # tied to the word embeddings",
        ]
    else:
        lines.append(f"decoder = dense(transform_norm, {d.vocab})")
    return ["target labels: i32[B, T]"], lines + [
        "output logits = decoder",
        f"loss sparse_cross_entropy(decoder, labels, {ignore})",
        f"metric accuracy = accuracy(decoder, labels, {ignore})",
    ]


def program(
    config,
    head: str,
    name: str = "model",
    as_def: bool = False,
    source: str = "model",
    weights: str | None = None,
    tokenizer: str | None = None,
) -> str:
    """The program of a folder's model: the layer's def, the model (its encoder inline, or with
    `as_def` a def `name` of the encoder that the model calls), and a train block to edit."""
    d = dims(config)
    inputs = _inputs(d)
    declared = [f"input {i}: i32[B, T]" for i in inputs]
    encoder = _encoder(d, head)
    comment = [
        f"# imported from {source} by dlc import (Hugging Face {d.kind}: {_architecture(d, head)})",
        f"# {d.layers} layers of {d.hidden} features, {d.heads} heads, {d.vocab} token ids, at most {d.positions} "
        "positions",
    ]
    text = comment + [""] + _layer_def(d) + [""]
    if as_def:  # the def returns the base model's results, and the word embeddings' table a tied decoder reads
        results = {"h": "h"} | ({"pooler": "pooler"} if _has_pooler(d, head) else {})
        if head == "masked_lm" and d.tied:
            results["words_table"] = "words.W"
        targets, head_lines = _head(d, head, "words_table")
        text += _block(
            f"def {name}({', '.join(f'{i}: i32[B, T]' for i in inputs)})",
            encoder + ["return " + ", ".join(results.values())],
        )
        call = f"{', '.join(results)} = {name}({', '.join(inputs)}, name = \"\")"
        text += [""] + _block(f"model {name}", declared + targets + [call] + head_lines)
    else:
        targets, head_lines = _head(d, head)
        text += _block(f"model {name}", declared + targets + encoder + head_lines)
    if head != "base":
        columns = ", ".join(inputs + [targets[0].split()[1].rstrip(":")])
        if tokenizer and head == "sequence":  # sentences and their labels, tokenized as the folder's tokenizer does
            data = [
                "# the data: a table of sentences (column text) and labels (column label), docs/training.md",
                f'data      = texts("train.csv", tokenizer = "{tokenizer}")',
            ]
        else:
            data = [f"# the data: {columns} (token ids, as the tokenizer makes them)"]
            data += [f"# the tokenizer: {tokenizer}"] if tokenizer else []
            data += ['data      = npz("train.npz")']
        text += [""] + _block(
            f"train {name}",
            data
            + [
                f'init_from = "{weights or name + ".npz"}"',
                "optimizer = adamw(lr = 2e-5, weight_decay = 0.01)",
                "batch     = 16",
                "epochs    = 3",
            ],
        )
    else:
        text += ["", "# add a head, a loss and a train block to fine-tune it (docs/interop.md, Hugging Face models)"]
    return "\n".join(text) + "\n"


def _architecture(d: Dims, head: str) -> str:
    return next(a for a, h in HEADS.items() if h == head and a.lower().startswith(d.kind))


def _block(head: str, lines: list) -> list:
    return [head + " {", *("    " + line for line in lines), "}"]


# ---- the parameters ------------------------------------------------------------------------------------------
def _table(d: Dims, head: str) -> list:
    """(dlc name, the name in the folder (the base model's without its prefix), transposed,
    the folder's shape) of every parameter; a head's own tensors are marked by a leading '/'."""
    D, F = d.hidden, d.ffn
    rows = []

    def linear(dlc, hf, n_in, n_out, bias="b"):
        rows.append((f"{dlc}.W", f"{hf}.weight", True, (n_out, n_in)))
        rows.append((f"{dlc}.{bias}", f"{hf}.bias", False, (n_out,)))

    def norm(dlc, hf):
        rows.append((f"{dlc}.gamma", f"{hf}.weight", False, (D,)))
        rows.append((f"{dlc}.beta", f"{hf}.bias", False, (D,)))

    rows.append(("words.W", "embeddings.word_embeddings.weight", False, (d.vocab, D)))
    rows.append(("positions.W", "embeddings.position_embeddings.weight", False, (d.positions, D)))
    if d.types:
        rows.append(("token_types.W", "embeddings.token_type_embeddings.weight", False, (d.types, D)))
    norm("embeddings", "embeddings.LayerNorm")
    for i in range(d.layers):
        dlc = f"layer.{i}"
        if d.kind == "distilbert":
            hf = f"transformer.layer.{i}"
            names = ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin")
            names += ("sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm")
        else:
            hf = f"encoder.layer.{i}"
            names = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
            names += ("attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
        for w, n in zip("qkvo", names[:4]):
            rows.append((f"{dlc}.attention.W{w}", f"{hf}.{n}.weight", True, (D, D)))
            rows.append((f"{dlc}.attention.b{w}", f"{hf}.{n}.bias", False, (D,)))
        norm(f"{dlc}.attention_norm", f"{hf}.{names[4]}")
        linear(f"{dlc}.intermediate", f"{hf}.{names[5]}", D, F)
        linear(f"{dlc}.projected", f"{hf}.{names[6]}", F, D)
        norm(f"{dlc}.output_norm", f"{hf}.{names[7]}")
    if _has_pooler(d, head):
        linear("pooler", "pooler.dense", D, D)
    L, V = d.labels, d.vocab
    if head == "sequence":
        if d.kind == "roberta":
            linear("classifier_dense", "/classifier.dense", D, D)
            linear("classifier", "/classifier.out_proj", D, L)
        else:
            if d.kind == "distilbert":
                linear("pre_classifier", "/pre_classifier", D, D)
            linear("classifier", "/classifier", D, L)
    elif head == "token":
        linear("classifier", "/classifier", D, L)
    elif head == "masked_lm":
        transform, transform_norm, bias, decoder = {
            "bert": (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
                "cls.predictions.decoder",
            ),
            "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder"),
            "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias", "vocab_projector"),
        }[d.kind]
        linear("transform", "/" + transform, D, D)
        norm("transform_norm", "/" + transform_norm)
        if d.tied:
            rows.append(("decoder_bias", "/" + bias, False, (V,)))
        else:
            rows.append(("decoder.W", f"/{decoder}.weight", True, (V, D)))
            rows.append(("decoder.b", "/" + bias, False, (V,)))
    return rows


# names older checkpoints (converted from TensorFlow) give LayerNorm's two parameters
_OLD_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def _renamed(name: str) -> str:
    for old, new in _OLD_NAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def _name(hf: str, prefix: str) -> str:
    return hf[1:] if hf.startswith("/") else prefix + hf


def weights(config, tensors: dict, head: str) -> dict:
    """The folder's tensors as the program's parameters (dlc names, dense weights transposed).
    The base model's tensors are read with the head's prefix (`bert.`) or without it, as the
    folder has them; a tensor missing or of a shape the config does not make is an error."""
    d = dims(config)
    names = {_renamed(k): k for k in tensors}  # today's name -> the folder's
    prefix = d.prefix if d.prefix + "embeddings.word_embeddings.weight" in names else ""
    if d.kind != "distilbert":  # RoBERTa's and BERT's MLM bias may be saved as the decoder's
        bias = "lm_head.bias" if d.kind == "roberta" else "cls.predictions.bias"
        decoder_bias = bias.rsplit(".", 1)[0] + ".decoder.bias"
        if bias not in names and decoder_bias in names:
            names[bias] = names[decoder_bias]
    params = {}
    for dlc, hf, transposed, shape in _table(d, head):
        name = _name(hf, prefix)
        array = take(tensors, names.get(name, name), shape)
        params[dlc] = (array.T if transposed else array).astype("float32", order="C")
    return params


def tensors(config, params: dict, head: str) -> dict:
    """The program's parameters under the folder's names, in transformers' layouts: the inverse
    of `weights` (a head's base model under its prefix, as save_pretrained writes it)."""
    d = dims(config)
    prefix = "" if head == "base" else d.prefix
    table = _table(d, head)
    extra = sorted(set(params) - {row[0] for row in table})
    if extra:
        raise DlcError(
            f"the program has parameters that {_architecture(d, head)} has no place for: {', '.join(extra[:8])}"
            + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
            + "; a model of its own layers is exported as safetensors or ONNX"
        )
    out = {}
    for dlc, hf, transposed, shape in table:
        dlc_shape = tuple(reversed(shape)) if transposed else shape
        array = take(params, dlc, dlc_shape, "the weights")
        out[_name(hf, prefix)] = (array.T if transposed else array).astype("float32", order="C")
    return out
