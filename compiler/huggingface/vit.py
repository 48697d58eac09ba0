"""Hugging Face ViT (model_type "vit": ViTModel, ViTForImageClassification) as a .dl program: the
patches embedded by a strided conv2d, a class token and learned positions, pre-norm encoder blocks of
the standard library's layernorm, multi_head_attention and dense (dropout where transformers has it),
a final layernorm, and a linear classifier of the class token (the base model: its tanh pooler)."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import vision
from dlc.compiler.huggingface.folder import refuse
from dlc.compiler.huggingface.vision import dense, key

MODEL_TYPES = ("vit",)
HEADS = {"ViTModel": "base", "ViTForImageClassification": "image"}
PREFIX = "vit."  # the base model's tensors in a classifier's folder

DEFS = """\
# the photo as a sequence: its patches embedded by a convolution of stride `patch` ([N, patches, hidden]),
# after a learned class token, with a learned position added to each
def vit_embeddings(x: f32[N, C, height, width], hidden: int, patch: int, rate) {{
    projection = conv2d(x, hidden, patch, patch)
    patches = transpose(reshape(projection, N, hidden, -1), 0, 2, 1)
    param cls_token: f32[1, 1, hidden] = normal_std(0.02)
    param positions: f32[1, {positions}, hidden] = normal_std(0.02)
    tokens = concat(broadcast_to(cls_token, N, 1, hidden), patches, axis = 1)
    return dropout(tokens + positions, rate)
}}

# a pre-norm encoder block as ViT's: self-attention (dropout `attention_rate` on its weights) and an MLP,
# each after a layernorm, its output dropped out at `rate` and added back
def vit_block(x: f32[B, T, D], heads: int, mlp: int, rate, attention_rate, eps) {{
    before = layernorm(x, eps)
    attention = multi_head_attention(before, before, heads, rate = attention_rate)
    h = x + dropout(attention, rate)
    after = layernorm(h, eps)
    intermediate = dense(after, mlp, {act})
    projected = dense(intermediate, D)
    return h + dropout(projected, rate)
}}
"""


class ViTDims:
    """The facts of a config the program and the tensors' names follow."""

    def __init__(self, config: dict):
        self.size = key(config, "image_size", 224, low=1)
        self.patch = key(config, "patch_size", 16, low=1)
        if self.patch > self.size:
            raise DlcError(f"config.json: patch_size {self.patch} is larger than image_size {self.size}")
        self.channels = key(config, "num_channels", 3, low=1)
        self.hidden = key(config, "hidden_size", 768, low=1)
        self.layers = key(config, "num_hidden_layers", 12, low=0)
        self.heads = key(config, "num_attention_heads", 12, low=1)
        if self.hidden % self.heads:
            raise DlcError(
                f"config.json: hidden_size {self.hidden} is not a multiple of num_attention_heads {self.heads}"
            )
        self.mlp = key(config, "intermediate_size", 3072, low=1)
        self.act = vision.activation(config, "hidden_act", "gelu")
        self.rate = key(config, "hidden_dropout_prob", 0.0, float, low=0)
        self.attention_rate = key(config, "attention_probs_dropout_prob", 0.0, float, low=0)
        self.eps = key(config, "layer_norm_eps", 1e-12, float, low=0)
        if config.get("qkv_bias", True) is not True:  # multi_head_attention has biases on every projection or none
            refuse(config, "qkv_bias", config["qkv_bias"], "no biases on the query, key and value projections")
        given = config.get("pooler_output_size") is not None  # none: the hidden size
        self.pooler = key(config, "pooler_output_size", 0, low=1) if given else self.hidden
        self.pooler_act = vision.activation(config, "pooler_act", "tanh")
        self.positions = (self.size // self.patch) ** 2 + 1


def program(
    config: dict,
    head: str,
    name: str = "vit",
    preprocessor: dict | None = None,
    weights: str | None = None,
    as_def: bool = False,
) -> str:
    """The .dl program: the embeddings and the block as defs, the model, and for a classifier a train
    block that fine-tunes it on a folder of photos; `as_def`: the base model as a def `name` too, which
    returns the final layernorm's sequence (and the base model's pooler output)."""
    s = ViTDims(config)
    image_size(config, preprocessor)
    architecture = next(a for a, h in HEADS.items() if h == head)
    head_text = "a linear classifier of the class token" if head == "image" else "a tanh pooler of the class token"
    lines = [
        f'# ViT imported from a Hugging Face folder (model_type "vit", {architecture}): {s.patch}x{s.patch} patches,',
        f"# {s.layers} encoder blocks of {s.heads} heads ({s.hidden} wide, MLP {s.mlp}), layernorm, {head_text}.",
        "",
        DEFS.format(positions=s.positions, act=s.act),
    ]
    body = [
        f"    h = vit_embeddings(x, {s.hidden}, {s.patch}, {s.rate!r}, name = \"embeddings\")",
        f"    repeat i in 0..{s.layers} {{",
        f'        h = vit_block(h, {s.heads}, {s.mlp}, {s.rate!r}, {s.attention_rate!r}, {s.eps!r}, name = "layer")',
        "    }",
        f"    sequence = layernorm(h, {s.eps!r})",
    ]
    results = ["sequence"]
    if head != "image":  # the base model's pooler (a classifier's base model has none)
        body.append(f"    pooler = dense(sequence[:, 0], {s.pooler}, {s.pooler_act})")
        results.append("pooler")
    lines = vision.model_start(lines, name, f"f32[B, {s.channels}, {s.size}, {s.size}]", head, body, results, as_def)
    if head == "image":
        lines += vision.classifier_end("sequence[:, 0]", config, name, preprocessor, s.size, weights)
    else:
        lines += ["    output last_hidden_state = sequence", "    output pooler_output = pooler", "}"]
    return vision.laid_out(lines)


def image_size(config: dict, preprocessor: dict | None) -> int:
    """config.json's image_size, which the position embeddings are for; the preprocessor must agree."""
    size = key(config, "image_size", 224, low=1)
    given = vision.image_size(preprocessor, size)
    if given != size:
        raise DlcError(
            f"preprocessor_config.json reads photos of {given} x {given}, but config.json's image_size is "
            f"{size}, which the position embeddings are for"
        )
    return size


def image(config: dict, preprocessor: dict | None) -> dict:
    """The photos' settings the checkpoint keeps, which `dlc predict` reads photos with."""
    return vision.image_settings(preprocessor, image_size(config, preprocessor))


def names(config: dict, head: str) -> list:
    """(dlc name, Hugging Face name, how) of every tensor (vision.py)."""
    s = ViTDims(config)
    out = [
        ("embeddings.projection.W", "embeddings.patch_embeddings.projection.weight", "same"),
        ("embeddings.projection.b", "embeddings.patch_embeddings.projection.bias", "same"),
        ("embeddings.cls_token", "embeddings.cls_token", "same"),
        ("embeddings.positions", "embeddings.position_embeddings", "same"),
    ]
    for i in range(s.layers):
        dlc, hf = f"layer.{i}", f"encoder.layer.{i}"
        out += layernorm(f"{dlc}.before", f"{hf}.layernorm_before")
        for proj, part in (("q", "query"), ("k", "key"), ("v", "value")):
            out += [
                (f"{dlc}.attention.W{proj}", f"{hf}.attention.attention.{part}.weight", "linear"),
                (f"{dlc}.attention.b{proj}", f"{hf}.attention.attention.{part}.bias", "same"),
            ]
        out += [
            (f"{dlc}.attention.Wo", f"{hf}.attention.output.dense.weight", "linear"),
            (f"{dlc}.attention.bo", f"{hf}.attention.output.dense.bias", "same"),
        ]
        out += layernorm(f"{dlc}.after", f"{hf}.layernorm_after")
        out += dense(f"{dlc}.intermediate", f"{hf}.intermediate.dense") + dense(
            f"{dlc}.projected", f"{hf}.output.dense"
        )
    out += layernorm("sequence", "layernorm")
    if head == "image":
        return vision.prefixed(out, PREFIX) + dense("logits", "classifier")
    return out + dense("pooler", "pooler.dense")


def layernorm(dlc: str, hf: str) -> list:
    return [(f"{dlc}.gamma", f"{hf}.weight", "same"), (f"{dlc}.beta", f"{hf}.bias", "same")]


def weights(config: dict, tensors: dict, head: str) -> dict:
    return vision.to_dlc(names(config, head), tensors, PREFIX)


def tensors(config: dict, params: dict, head: str) -> dict:
    return vision.from_dlc(names(config, head), params)
