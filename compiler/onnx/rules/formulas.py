"""Layers and activations that exporters write out as formulas, recognised from their
nodes and imported as the library's calls: GELU from Erf (PyTorch's exact GELU before
opset 20, as BERT exports it) and from Tanh (GPT-2's approximation), SiLU from Sigmoid
(x * sigmoid(x)), ReLU6 from Clip(x, 0, 6), and layernorm from the ReduceMean of
PyTorch's LayerNorm before opset 17. Each rule matches the formula around its node and
absorbs the nodes after it; where the formula does not match (None), the rule its family's module
registered for the op writes the node as the op it is: this package imports this module
after the families (rules/__init__.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlc.compiler.onnx.rule_api.node import Node, RULES
from dlc.compiler.onnx.rule_api.values import FLOAT
from dlc.compiler.onnx.rule_api.writing import flt, kw, weights_hint


def _number(n: Node, name: str):
    """The one number a known value holds, else None (also for a dim, known only at binding)."""
    v = n.imp.values.get(name)
    if v is None or v.const is None or v.const.size != 1 or v.const.dtype == object:
        return None
    return float(v.const.reshape(-1)[0])


def _is(n: Node, name: str, number: float) -> bool:
    value = _number(n, name)
    return value is not None and math.isclose(value, number, rel_tol=1e-5)


def _producer(n: Node, name: str, op: str):
    """The node of type `op` that makes `name`, else None."""
    node = n.imp.producers.get(name)
    return node if node is not None and node.op_type == op and node.domain in ("", "ai.onnx") else None


def _other(node: Node, name: str) -> str:
    """The input of a binary node that is not `name` ('' when both or neither are)."""
    ins = list(node.proto.input)
    if name in ins:
        ins.remove(name)
    return ins[0] if len(ins) == 1 else ""


def _scaled(n: Node, name: str, scale: float):
    """x where `name` is made by Mul(x, scale), or by Div(x, 1 / scale); else None."""
    for op, factor in (("Mul", scale), ("Div", 1 / scale)):
        node = _producer(n, name, op)
        if node is None:
            continue
        for k in (0, 1) if op == "Mul" else (0,):
            if _is(n, node.input[1 - k], factor):
                return node.input[k]
    return None


def _half_times(n: Node, x: str) -> bool:
    """Absorb the nodes after `n` that compute 0.5 * x * (1 + n's output), in the orders
    PyTorch's exporters write: (x * t) * 0.5, x * (0.5 * t), (x * 0.5) * t; whether they did."""
    one = n.absorb(("Add",))
    if one is None or not _is(n, _other(one, n.results[0]), 1.0):
        return False
    first = n.absorb(("Mul",), after=one.results[0])
    if first is None:
        return False
    other = _other(first, one.results[0])
    if _scaled(n, other, 0.5) == x:
        taken = [one, first]
    else:
        second = n.absorb(("Mul",), after=first.results[0])
        want = 0.5 if other == x else x if _is(n, other, 0.5) else None
        rest = _other(second, first.results[0]) if second is not None else None
        if want is None or rest is None or (rest != x if want == x else not _is(n, rest, 0.5)):
            return False
        taken = [one, first, second]
    for node in taken:
        n.take(node)
    return True


def _erf(n: Node):
    """0.5 * x * (1 + erf(x / sqrt(2))) is gelu_exact(x)."""
    x = _scaled(n, n.proto.input[0], 1 / math.sqrt(2))
    if x is not None and n.imp.values[x].dtype in FLOAT and _half_times(n, x):
        return f"gelu_exact({n.imp.operand(x)})"
    return None


def _tanh(n: Node):
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) is gelu(x)."""
    inner = _scaled(n, n.proto.input[0], math.sqrt(2 / math.pi))
    total = _producer(n, inner, "Add") if inner is not None else None
    if total is not None:
        for x, cube in ((total.input[0], total.input[1]), (total.input[1], total.input[0])):
            if (
                _is_cube(n, _scaled(n, cube, 0.044715) or "", x)
                and n.imp.values[x].dtype in FLOAT
                and _half_times(n, x)
            ):
                return f"gelu({n.imp.operand(x)})"
    return None


def _is_cube(n: Node, name: str, x: str) -> bool:
    """Whether `name` is x ^ 3: Pow(x, 3), or x * (x * x) as the TorchScript exporter writes it."""
    power = _producer(n, name, "Pow")
    if power is not None:
        return power.input[0] == x and _is(n, power.input[1], 3.0)
    product = _producer(n, name, "Mul")
    if product is None or x not in product.input:
        return False
    square = _producer(n, product.input[1] if product.input[0] == x else product.input[0], "Mul")
    return square is not None and list(square.input) == [x, x]


def _sigmoid(n: Node):
    """x * sigmoid(x) is silu(x)."""
    x = n.proto.input[0]
    product = n.absorb(("Mul",))
    if product is not None and _other(product, n.results[0]) == x and n.dtype(0) in FLOAT:
        n.take(product)
        return f"silu({n.x(0)})"
    return None


def _relu6(n: Node):
    """Clip(x, 0, 6) is relu6(x) (MobileNet's activation)."""
    low = n.attr("min") if "min" in n.attrs else _number(n, n.proto.input[1]) if n.has(1) else None
    high = n.attr("max") if "max" in n.attrs else _number(n, n.proto.input[2]) if n.has(2) else None
    if low == 0 and high == 6 and n.dtype(0) in FLOAT:
        return f"relu6({n.x(0)})"
    return None


def _layernorm(n: Node):
    """PyTorch's LayerNorm before opset 17, over the last axis: m = mean(x), d = x - m,
    d / sqrt(mean(d ^ 2) + eps) * gamma + beta is layernorm(x, eps) (gamma and beta known)."""
    found = _layernorm_nodes(n)
    if found is None:
        return None
    nodes, eps, gamma, beta = found
    name = n.binding(weights_hint(nodes[-2], 1 if nodes[-2].proto.input[0] == nodes[-3].results[0] else 0))
    n.weight(f"{name}.gamma", gamma)
    n.weight(f"{name}.beta", beta)
    for node in nodes:
        n.take(node)
    return f"layernorm({n.x(0)}{kw(eps=flt(eps) if not np.isclose(eps, 1e-5) else None)})"


def _last_axis_mean(n: Node, rank: int) -> bool:
    """Whether the ReduceMean `n` of a rank-`rank` tensor is over its last axis, kept."""
    return n.attr("keepdims", 1) == 1 and [a % rank for a in n.setting("axes", 1, [])] == [rank - 1]


def _layernorm_nodes(n: Node):
    """The nodes after n (a ReduceMean) that make a layer norm, its eps, gamma and beta; or None."""
    x = n.proto.input[0]
    if n.imp.values[x].dtype not in FLOAT or not _last_axis_mean(n, n.rank(0)):
        return None
    width = n.shape(0)[-1]
    centre = n.absorb(("Sub",))
    if centre is None or centre.proto.input[0] != x:
        return None
    d = centre.results[0]
    readers = n.imp.consumers.get(d, [])
    square = next(
        (
            r
            for r in readers
            if r.op_type == "Pow"
            and r.input[0] == d
            and _is(n, r.input[1], 2.0)
            or r.op_type == "Mul"
            and list(r.input) == [d, d]
        ),
        None,
    )
    if len(readers) != 2 or square is None or d in n.imp.graph_outputs:
        return None
    variance = n.absorb(("ReduceMean",), after=square.output[0])
    if variance is None or not _last_axis_mean(variance, n.rank(0)):
        return None
    shifted = n.absorb(("Add",), after=variance.results[0])
    eps = _number(n, _other(shifted, variance.results[0])) if shifted is not None else None
    root = n.absorb(("Sqrt",), after=shifted.results[0]) if eps is not None else None
    divide = n.absorb(("Div",), after=root.results[0], pending=(d,)) if root is not None else None
    if divide is None or list(divide.proto.input) != [d, root.results[0]]:
        return None
    scale = n.absorb(("Mul",), after=divide.results[0])
    shift = n.absorb(("Add",), after=scale.results[0]) if scale is not None else None
    if shift is None:
        return None
    gamma, beta = (
        n.imp.values[_other(node, before)].const
        for node, before in ((scale, divide.results[0]), (shift, scale.results[0]))
    )
    if gamma is None or beta is None or gamma.shape != (width,) or beta.shape != (width,):
        return None
    return [centre, Node(n.imp, square), variance, shifted, root, divide, scale, shift], eps, gamma, beta


def _before_the_plain_rule(op: str, formula):
    """`formula` first; where it does not match, the rule the op had."""
    plain = RULES[op]
    RULES[op] = dataclasses.replace(plain, emit=lambda n: formula(n) or plain.emit(n))


for op, formula in (
    ("Erf", _erf),
    ("Tanh", _tanh),
    ("Sigmoid", _sigmoid),
    ("Clip", _relu6),
    ("ReduceMean", _layernorm),
):
    _before_the_plain_rule(op, formula)
