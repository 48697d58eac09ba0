"""Hugging Face ResNet (model_type "resnet": ResNetModel, ResNetForImageClassification) as a .dl program:
a stem of a 7x7 convolution and max pooling, stages of bottleneck (or basic) blocks written with the
standard library's conv2d and batchnorm, global average pooling and a linear classifier, as
examples/resnet.dl is written; the batchnorms' running statistics are imported with the weights."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import vision
from dlc.compiler.huggingface.vision import conv_bn, dense, key

MODEL_TYPES = ("resnet",)
HEADS = {"ResNetModel": "base", "ResNetForImageClassification": "image"}
PREFIX = "resnet."  # the base model's tensors in a classifier's folder

CONV_BN = """\
# a convolution without bias, then batchnorm (its running statistics imported) and `act`
def conv_bn(x, filters: int, kernel: int = 3, stride: int = 1, act = {act}) {{
    conv = conv2d(x, filters, kernel, stride, kernel // 2, bias = false)
    norm = batchnorm(conv)
    return act(norm)
}}
"""

BOTTLENECK = """\
# a bottleneck block: a 1x1 convolution to filters / 4 channels, a 3x3 one, a 1x1 one back to `filters`
# ({where} has the stride), added to the input or, when the shape changes, to its 1x1 projection
def bottleneck(x: f32[N, C, height, width], filters: int, stride: int = 1) {{
    a = conv_bn(x, filters // 4, 1{a_stride})
    b = conv_bn(a, filters // 4, 3{b_stride})
    c = conv_bn(b, filters, 1, act = identity)
    if stride == 1 and filters == C {{
        return {act}(c + x)
    }}
    shortcut = conv_bn(x, filters, 1, stride, act = identity)
    return {act}(c + shortcut)
}}
"""

BASIC = """\
# a basic block: two 3x3 convolutions (the first with the stride), added to the input or, when the
# shape changes, to its 1x1 projection
def basic(x: f32[N, C, height, width], filters: int, stride: int = 1) {{
    a = conv_bn(x, filters, 3, stride)
    b = conv_bn(a, filters, 3, act = identity)
    if stride == 1 and filters == C {{
        return {act}(b + x)
    }}
    shortcut = conv_bn(x, filters, 1, stride, act = identity)
    return {act}(b + shortcut)
}}
"""


class ResNetDims:
    """The facts of a config the program and the tensors' names follow."""

    def __init__(self, config: dict):
        self.channels = key(config, "num_channels", 3, low=1)
        self.stem = key(config, "embedding_size", 64, low=1)
        self.sizes = vision.ints(config, "hidden_sizes", [256, 512, 1024, 2048])
        self.depths = vision.ints(config, "depths", [3, 4, 6, 3])
        if len(self.sizes) != len(self.depths):
            raise DlcError(
                f"config.json: hidden_sizes has {len(self.sizes)} stages and depths {len(self.depths)}: "
                "each stage needs its size and its depth"
            )
        self.block = key(config, "layer_type", "bottleneck", str)
        if self.block not in ("bottleneck", "basic"):
            raise DlcError(f'config.json: layer_type must be "bottleneck" or "basic", got "{self.block}"')
        self.act = vision.activation(config, "hidden_act", "relu")
        self.first_stride = 2 if key(config, "downsample_in_first_stage", False, bool) else 1
        self.stride_in_1x1 = key(config, "downsample_in_bottleneck", False, bool)

    def stages(self):
        """(the stage's number from 1, its blocks' output channels, depth, first stride)."""
        for s, (size, depth) in enumerate(zip(self.sizes, self.depths)):
            yield s + 1, size, depth, self.first_stride if s == 0 else 2

    @staticmethod
    def block_name(stage: int, j: int, depth: int) -> str:
        """The dlc name of block j of a stage piped as `stageS = x |> block(...) |> ...` (numbered if several)."""
        return f"stage{stage}.{j}" if depth > 1 else f"stage{stage}"


def program(
    config: dict,
    head: str,
    name: str = "resnet",
    preprocessor: dict | None = None,
    weights: str | None = None,
    as_def: bool = False,
) -> str:
    """The .dl program: the defs of the blocks, the model, and for a classifier a train block that
    fine-tunes it on a folder of photos; `as_def`: the base model as a def `name` too, which returns
    the last stage and its global average (the base model's outputs)."""
    shape = ResNetDims(config)
    size = image_size(config, preprocessor)
    stride_where = "the first 1x1" if shape.stride_in_1x1 else "the 3x3"
    defs = [CONV_BN.format(act=shape.act)]
    if shape.block == "bottleneck":
        defs.append(
            BOTTLENECK.format(
                act=shape.act,
                where=stride_where,
                a_stride=", stride" if shape.stride_in_1x1 else "",
                b_stride="" if shape.stride_in_1x1 else ", stride",
            )
        )
    else:
        defs.append(BASIC.format(act=shape.act))
    blocks = ", ".join(str(d) for d in shape.depths)
    head_text = "a linear classifier" if head == "image" else "no head (the features)"
    lines = [
        f'# ResNet imported from a Hugging Face folder (model_type "resnet", {_architecture(head)}):',
        f"# a {shape.stem}-channel 7x7 stem, {len(shape.depths)} stages of {shape.block} blocks ({blocks}), "
        f"global average pooling, {head_text}.",
        "",
        *defs,
    ]
    body = [f"    stem = conv_bn(x, {shape.stem}, 7, 2) |> maxpool2d(3, 2, 1)"]
    previous = "stem"
    for s, channels, depth, stride in shape.stages():
        calls = [f"{shape.block}({channels}{', 2' if stride == 2 else ''})"] + [f"{shape.block}({channels})"] * (
            depth - 1
        )
        body.append(f"    stage{s} = {previous} |> " + " |> ".join(calls))
        previous = f"stage{s}"
    body.append(f"    features = global_avg_pool({previous})")
    x_type = f"f32[B, {shape.channels}, {size}, {size}]"
    lines = vision.model_start(lines, name, x_type, head, body, [previous, "features"], as_def)
    if head == "image":
        lines += vision.classifier_end("features", config, name, preprocessor, size, weights)
    else:
        lines += [f"    output last_hidden_state = {previous}", "    output pooler_output = features", "}"]
    return vision.laid_out(lines)


def image_size(config: dict, preprocessor: dict | None) -> int:
    """The side of the photos the model reads: the preprocessor's, else config.json's image_size, else 224."""
    return vision.image_size(preprocessor, key(config, "image_size", 224, low=1))


def image(config: dict, preprocessor: dict | None) -> dict:
    """The photos' settings the checkpoint keeps, which `dlc predict` reads photos with."""
    return vision.image_settings(preprocessor, image_size(config, preprocessor))


def _architecture(head: str) -> str:
    return next(a for a, h in HEADS.items() if h == head)


def names(config: dict, head: str) -> list:
    """(dlc name, Hugging Face name, how) of every tensor (vision.py)."""
    shape = ResNetDims(config)
    out = conv_bn("stem", "embedder.embedder")
    layers = ("a", "b", "c") if shape.block == "bottleneck" else ("a", "b")
    previous = shape.stem
    for s, channels, depth, stride in shape.stages():
        for j in range(depth):
            dlc, hf = ResNetDims.block_name(s, j, depth), f"encoder.stages.{s - 1}.layers.{j}"
            for k, layer in enumerate(layers):
                out += conv_bn(f"{dlc}.{layer}", f"{hf}.layer.{k}")
            if j == 0 and (previous != channels or stride != 1):
                out += conv_bn(f"{dlc}.shortcut", f"{hf}.shortcut")
        previous = channels
    if head == "image":
        return vision.prefixed(out, PREFIX) + dense("logits", "classifier.1")
    return out


def weights(config: dict, tensors: dict, head: str) -> dict:
    return vision.to_dlc(names(config, head), tensors, PREFIX)


def tensors(config: dict, params: dict, head: str) -> dict:
    return vision.from_dlc(names(config, head), params)
