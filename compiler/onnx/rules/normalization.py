"""The ONNX normalizations: BatchNormalization and LayerNormalization become batchnorm and
layernorm where their scales are constants; RMS, instance, group, mean-variance, Lp and
local response normalization are written out."""

from __future__ import annotations

import numpy as np

from dlc.compiler.onnx.rule_api.node import Node, rule
from dlc.compiler.onnx.rule_api.values import shape_tuple
from dlc.compiler.onnx.rule_api.writing import axes_text, flt, kw, reshaped, slice_text, weights_hint


def _per_channel(n: Node, i: int, rank: int, axis: int = 1) -> str:
    """Input i (one value per channel) shaped to broadcast along `axis` of a rank-`rank` tensor."""
    size = n.shape(i)[0]
    return reshaped(n.x(i), [size] + [1] * (rank - 1 - axis))


@rule("BatchNormalization", attrs=("epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"))
def _batchnorm(n: Node):
    """batchnorm for constant statistics; the formula otherwise, and in training mode (the
    batch's statistics, and the running ones updated as outputs)."""
    n.require_float()
    if n.attr("spatial", 1) != 1:
        n.refuse("spatial = 0")
    rank = n.rank(0)
    eps = n.attr("epsilon", 1e-5)
    if n.attr("training_mode", 0) or any(n.used(j) for j in range(1, len(n.results))):
        if n.version < 14:
            n.refuse("the statistics outputs of BatchNormalization before opset 14")
        axes = axes_text([0] + list(range(2, rank)))
        x = n.x(0)
        mu = n.let(f"mean({x}, {axes})", n.label + "_mean")
        var = n.let(f"mean(({x} - {reshaped(mu, [-1] + [1] * (rank - 2))}) ^ 2, {axes})", n.label + "_var")
        scale, bias = _per_channel(n, 1, rank), _per_channel(n, 2, rank)
        m = flt(n.attr("momentum", 0.9))
        return [
            f"({x} - {reshaped(mu, [-1] + [1] * (rank - 2))}) / sqrt({reshaped(var, [-1] + [1] * (rank - 2))}"
            f" + {flt(eps)}) * {scale} + {bias}",
            f"{n.x(3)} * {m} + {mu} * (1 - {m})",
            f"{n.x(4)} * {m} + {var} * (1 - {m})",
        ]
    consts = [n.const(i) for i in range(1, 5)]
    if rank >= 2 and all(c is not None for c in consts):
        name = n.binding(weights_hint(n, 1))
        for part, c in zip(("gamma", "beta", "running_mean", "running_var"), consts):
            n.weight(f"{name}.{part}", c)
        return f"batchnorm({n.x(0)}{kw(eps=flt(eps) if not np.isclose(eps, 1e-5) else None)})"
    scale, bias, mean, var = (_per_channel(n, i, rank) for i in range(1, 5))
    return f"({n.x(0)} - {mean}) / sqrt({var} + {flt(eps)}) * {scale} + {bias}"


@rule("LayerNormalization", attrs=("axis", "epsilon", "stash_type"))
def _layernorm(n: Node):
    n.require_float()
    if any(n.used(j) for j in (1, 2)):
        n.refuse("its mean and inverse standard deviation outputs")
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", -1), rank)
    eps = n.attr("epsilon", 1e-5)
    scale, bias = n.const(1), n.const(2)
    width = shape[-1]
    if (
        axis == rank - 1
        and scale is not None
        and scale.shape == (width,)
        and (not n.has(2) or (bias is not None and bias.shape == (width,)))
    ):
        name = n.binding(weights_hint(n, 1))
        n.weight(f"{name}.gamma", scale)
        n.weight(f"{name}.beta", bias if bias is not None else np.zeros(width, scale.dtype))
        return f"layernorm({n.x(0)}{kw(eps=flt(eps) if not np.isclose(eps, 1e-5) else None)})"
    axes = axes_text(range(axis, rank))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({x} - {mu}) ^ 2, {axes}, keepdims = true)", n.label + "_var")
    out = f"({x} - {mu}) / sqrt({var} + {flt(eps)}) * {n.x(1)}"
    return out + (f" + {n.x(2)}" if n.has(2) else "")


@rule("RMSNormalization", attrs=("axis", "epsilon", "stash_type"))
def _rms_norm(n: Node):
    n.require_float()
    rank = n.rank(0)
    axis = n.axis(n.attr("axis", -1), rank)
    x = n.x(0)
    ms = n.let(f"mean({x} ^ 2, {axes_text(range(axis, rank))}, keepdims = true)", n.label + "_square")
    return f"{x} / sqrt({ms} + {flt(n.attr('epsilon', 1e-5))}) * {n.x(1)}"


@rule("InstanceNormalization", attrs=("epsilon",))
def _instance_norm(n: Node):
    n.require_float()
    rank = n.rank(0)
    axes = axes_text(range(2, rank))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({x} - {mu}) ^ 2, {axes}, keepdims = true)", n.label + "_var")
    return (
        f"({x} - {mu}) / sqrt({var} + {flt(n.attr('epsilon', 1e-5))}) * {_per_channel(n, 1, rank)}"
        f" + {_per_channel(n, 2, rank)}"
    )


@rule("GroupNormalization", attrs=("epsilon", "num_groups", "stash_type"))
def _group_norm(n: Node):
    n.require_float()
    shape = n.shape(0)
    rank = len(shape)
    groups = n.attr("num_groups")
    x = n.x(0)
    g = n.let(reshaped(x, [shape[0], groups, -1]), n.label + "_groups")
    mu = n.let(f"mean({g}, 2, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({g} - {mu}) ^ 2, 2, keepdims = true)", n.label + "_var")
    normal = n.let(f"({g} - {mu}) / sqrt({var} + {flt(n.attr('epsilon', 1e-5))})", n.label + "_normal")
    if n.shape(1)[0] == groups and groups != shape[1]:  # opset 18: a scale and bias per group
        normal = n.let(
            f"{normal} * {reshaped(n.x(1), [groups, 1])} + {reshaped(n.x(2), [groups, 1])}", n.label + "_scaled"
        )
        return reshaped(normal, shape)
    back = n.let(reshaped(normal, shape), n.label + "_normal")
    return f"{back} * {_per_channel(n, 1, rank)} + {_per_channel(n, 2, rank)}"


@rule("MeanVarianceNormalization", attrs=("axes",))
def _mvn(n: Node):
    n.require_float()
    rank = n.rank(0)
    axes = axes_text(sorted(n.axis(a, rank) for a in n.attr("axes", [0, 2, 3])))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean({x} ^ 2, {axes}, keepdims = true) - {mu} ^ 2", n.label + "_var")
    return f"({x} - {mu}) / (sqrt({var}) + 1e-09)"


@rule("LpNormalization", attrs=("axis", "p"))
def _lp_norm(n: Node):
    n.require_float()
    axis = n.axis(n.attr("axis", -1), n.rank(0))
    x = n.x(0)
    p = n.attr("p", 2)
    if p not in (1, 2):
        n.refuse(f"p = {p}")
    norm = n.let(
        f"sum(abs({x}), {axis}, keepdims = true)" if p == 1 else f"sqrt(sum({x} ^ 2, {axis}, keepdims = true))",
        n.label + "_norm",
    )
    return f"{x} / select({norm} == 0, 1.0, {norm})"  # 0 where the norm is 0


@rule("LRN", attrs=("alpha", "beta", "bias", "size"))
def _lrn(n: Node):
    """x / (bias + alpha / size * (sum of squares over `size` neighbouring channels)) ^ beta."""
    n.require_float()
    shape = n.shape(0)
    size = n.attr("size")
    channels = shape[1]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    x = n.x(0)
    before, after = [0] * len(shape), [0] * len(shape)
    before[1], after[1] = lo, hi
    sq = n.let(f"pad({x} ^ 2, {shape_tuple(before)}, {shape_tuple(after)})", n.label + "_squares")
    window = " + ".join(slice_text(sq, 1, k, k + channels) for k in range(size))
    total = n.let(window, n.label + "_sums")
    return (
        f"{x} / ({flt(n.attr('bias', 1.0))} + {flt(n.attr('alpha', 1e-4) / size)} * {total})"
        f" ^ {flt(n.attr('beta', 0.75))}"
    )
