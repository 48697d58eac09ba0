"""Hugging Face MobileNetV2 (model_type "mobilenet_v2": MobileNetV2Model, MobileNetV2ForImageClassification)
as a .dl program: a stem and 16 inverted residual blocks of 1x1 and depthwise 3x3 convolutions (the
standard library's conv2d with groups) with batchnorm and relu6, a 1x1 convolution, global average pooling,
dropout and a linear classifier. The config's channel arithmetic (depth_multiplier, depth_divisible_by,
min_depth, expand_ratio, finegrained_output), output_stride (dilated blocks) and tf_padding (TensorFlow's
asymmetric "same" padding, written in the program) are honoured."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.huggingface import vision
from dlc.compiler.huggingface.vision import conv_bn, dense, key

MODEL_TYPES = ("mobilenet_v2",)
HEADS = {"MobileNetV2Model": "base", "MobileNetV2ForImageClassification": "image"}
PREFIX = "mobilenet_v2."  # the base model's tensors in a classifier's folder

# transformers' MobileNetV2Model: the blocks' output channels (before the depth multiplier) and strides
CHANNELS = (16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320)
STRIDES = (2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)

TF_PAD = """\
# TensorFlow's "same" padding (tf_padding): kernel - stride zeros along an axis that the stride divides,
# kernel - (size % stride) along one it does not, the odd one after; times the dilation
def tf_pad(x: f32[N, C, height, width], kernel: int, stride: int, dilation: int) {
    along_h = kernel - (if height % stride == 0 then stride else height % stride)
    along_w = kernel - (if width % stride == 0 then stride else width % stride)
    ph = if along_h > 0 then along_h else 0
    pw = if along_w > 0 then along_w else 0
    return pad(x, (0, 0, ph // 2 * dilation, pw // 2 * dilation),
               (0, 0, (ph - ph // 2) * dilation, (pw - pw // 2) * dilation))
}

"""

CONV_BN = """\
# a convolution without bias ({padding}), then batchnorm (its running statistics imported; momentum
# 0.997 as transformers', the batch's share) and `act`
def conv_bn(x, filters: int, kernel: int = 1, stride: int = 1, groups: int = 1, dilation: int = 1, act = {act}) {{
    conv = conv2d({padded}, filters, kernel, stride, {amount}bias = false, dilation = dilation, groups = groups)
    norm = batchnorm(conv, 0.997, {eps!r})
    return act(norm)
}}

# an inverted residual block: a 1x1 expansion to `expanded` channels, a depthwise 3x3 convolution (with
# the stride), a linear 1x1 projection to `filters`; added to the input when the shape is kept
def inverted_residual(x: f32[N, C, height, width], filters: int, expanded: int, stride: int = 1,
                      dilation: int = 1) {{
    expand = conv_bn(x, expanded)
    depthwise = conv_bn(expand, expanded, 3, stride, expanded, dilation)
    project = conv_bn(depthwise, filters, act = identity)
    if stride == 1 and filters == C {{
        return x + project
    }}
    return project
}}

# the stem: a 3x3 convolution of stride 2,{expansion} a depthwise 3x3 one and a linear 1x1 projection
def stem(x, expanded: int, filters: int) {{
    first = conv_bn(x, expanded, 3, 2)
{expand}    depthwise = conv_bn({first}, expanded, 3, 1, expanded)
    return conv_bn(depthwise, filters, act = identity, name = "project")
}}
"""


def make_divisible(value: float, divisor: int, min_value: int) -> int:
    """transformers' (and TensorFlow's) channel count: `value` rounded to a multiple of `divisor`, at
    least `min_value`, not below 90% of `value`."""
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * value else new)


class MobileNetV2Dims:
    """The facts of a config the program and the tensors' names follow."""

    def __init__(self, config: dict):
        self.channels = key(config, "num_channels", 3, low=1)
        self.size = key(config, "image_size", 224, low=1)
        multiplier = key(config, "depth_multiplier", 1.0, float)
        if multiplier <= 0:
            raise DlcError(f"config.json: depth_multiplier must be above 0, got {multiplier}")
        self.divisor = key(config, "depth_divisible_by", 8, low=1)
        self.min_depth = key(config, "min_depth", 8, low=1)
        self.expand_ratio = key(config, "expand_ratio", 6.0, float)
        if self.expand_ratio <= 0:
            raise DlcError(f"config.json: expand_ratio must be above 0, got {self.expand_ratio}")
        output_stride = key(config, "output_stride", 32, low=1)
        self.first_is_expansion = key(config, "first_layer_is_expansion", True, bool)
        finegrained = key(config, "finegrained_output", True, bool)
        self.act = vision.activation(config, "hidden_act", "relu6")
        self.tf_padding = key(config, "tf_padding", True, bool)
        self.eps = key(config, "layer_norm_eps", 0.001, float, low=0)
        self.dropout = key(config, "classifier_dropout_prob", 0.2, float, low=0)
        if self.dropout >= 1:
            raise DlcError(f"config.json: classifier_dropout_prob must be below 1, got {self.dropout}")

        def scaled(c: int) -> int:
            return make_divisible(int(round(c * multiplier)), self.divisor, self.min_depth)

        self.widths = [scaled(c) for c in CHANNELS]
        self.stem = scaled(32)
        self.blocks = []  # (filters, expanded, stride, dilation), as MobileNetV2Model places them
        current, dilation = 2, 1
        for i in range(16):
            if current == output_stride:
                stride, block_dilation = 1, dilation
                dilation *= STRIDES[i]
            else:
                stride, block_dilation = STRIDES[i], 1
                current *= stride
            expanded = make_divisible(int(round(self.widths[i] * self.expand_ratio)), self.divisor, self.min_depth)
            self.blocks.append((self.widths[i + 1], expanded, stride, block_dilation))
        self.last = 1280 if finegrained and multiplier < 1.0 else scaled(1280)


def program(
    config: dict,
    head: str,
    name: str = "mobilenet_v2",
    preprocessor: dict | None = None,
    weights: str | None = None,
    as_def: bool = False,
) -> str:
    """The .dl program: the layers as defs, the model, and for a classifier a train block that
    fine-tunes it on a folder of photos; `as_def`: the base model as a def `name` too, which returns
    the last 1x1 convolution's features and their global average (the base model's outputs)."""
    s = MobileNetV2Dims(config)
    size = vision.image_size(preprocessor, s.size)
    defs = CONV_BN.format(
        padding='TensorFlow\'s "same" padding' if s.tf_padding else "padded by (kernel - 1) / 2 times the dilation",
        act=s.act,
        padded="tf_pad(x, kernel, stride, dilation)" if s.tf_padding else "x",
        amount="" if s.tf_padding else "(kernel - 1) // 2 * dilation, ",
        eps=s.eps,
        expansion="" if s.first_is_expansion else " a 1x1 one,",
        expand="" if s.first_is_expansion else "    expand = conv_bn(first, expanded)\n",
        first="first" if s.first_is_expansion else "expand",
    )
    architecture = next(a for a, h in HEADS.items() if h == head)
    head_text = "dropout and a linear classifier" if head == "image" else "no head (the features)"
    lines = [
        f'# MobileNetV2 imported from a Hugging Face folder (model_type "mobilenet_v2", {architecture}):',
        f"# a stem, 16 inverted residual blocks, a 1x1 convolution to {s.last} channels, global average pooling,",
        f"# {head_text}.",
        "",
        (TF_PAD if s.tf_padding else "") + defs,
    ]
    body = [f"    h0 = stem(x, {s.stem}, {s.widths[0]})"]
    for i, (filters, expanded, stride, dilation) in enumerate(s.blocks):
        args = [str(filters), str(expanded)] + ([str(stride)] if stride != 1 or dilation != 1 else [])
        args += [str(dilation)] if dilation != 1 else []
        body.append(f"    h{i + 1} = inverted_residual(h{i}, {', '.join(args)})")
    body += [f"    last = conv_bn(h16, {s.last})", "    features = global_avg_pool(last)"]
    x_type = f"f32[B, {s.channels}, {size}, {size}]"
    lines = vision.model_start(lines, name, x_type, head, body, ["last", "features"], as_def)
    if head == "image":
        lines += vision.classifier_end(f"dropout(features, {s.dropout!r})", config, name, preprocessor, size, weights)
    else:
        lines += ["    output last_hidden_state = last", "    output pooler_output = features", "}"]
    return vision.laid_out(lines)


def image(config: dict, preprocessor: dict | None) -> dict:
    """The photos' settings the checkpoint keeps, which `dlc predict` reads photos with."""
    return vision.image_settings(preprocessor, vision.image_size(preprocessor, MobileNetV2Dims(config).size))


def names(config: dict, head: str) -> list:
    """(dlc name, Hugging Face name, how) of every tensor (vision.py)."""
    s = MobileNetV2Dims(config)
    out = conv_bn("h0.first", "conv_stem.first_conv")
    if not s.first_is_expansion:
        out += conv_bn("h0.expand", "conv_stem.expand_1x1")
    out += conv_bn("h0.depthwise", "conv_stem.conv_3x3") + conv_bn("h0.project", "conv_stem.reduce_1x1")
    for i in range(16):
        for dlc, hf in (("expand", "expand_1x1"), ("depthwise", "conv_3x3"), ("project", "reduce_1x1")):
            out += conv_bn(f"h{i + 1}.{dlc}", f"layer.{i}.{hf}")
    out += conv_bn("last", "conv_1x1")
    if head == "image":
        return vision.prefixed(out, PREFIX) + dense("logits", "classifier")
    return out


def weights(config: dict, tensors: dict, head: str) -> dict:
    return vision.to_dlc(names(config, head), tensors, PREFIX)


def tensors(config: dict, params: dict, head: str) -> dict:
    return vision.from_dlc(names(config, head), params)
