"""Activations that exporters write out as formulas, recognised from their nodes and
imported as the library's calls: GELU from Erf (PyTorch's exact GELU before opset 20, as
BERT exports it) and from Tanh (GPT-2's approximation). The rules of Erf and Tanh match
the formula around the node and absorb the nodes after it; where it does not match they
are the elementwise ops they were."""
from __future__ import annotations

import math

from dlc.compiler.onnx.node import Node, RULES, Rule
from dlc.compiler.onnx.rules.elementwise import _elementwise
from dlc.compiler.onnx.values import FLOAT


def _number(n: Node, name: str):
    """The one number a known value holds, else None."""
    v = n.imp.values.get(name)
    return float(v.const.reshape(-1)[0]) if v is not None and v.const is not None and v.const.size == 1 else None


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
        for k in ((0, 1) if op == "Mul" else (0,)):
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
    return _elementwise(n)


def _tanh(n: Node):
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) is gelu(x)."""
    inner = _scaled(n, n.proto.input[0], math.sqrt(2 / math.pi))
    total = _producer(n, inner, "Add") if inner is not None else None
    if total is not None:
        for x, cube in ((total.input[0], total.input[1]), (total.input[1], total.input[0])):
            power = _producer(n, _scaled(n, cube, 0.044715) or "", "Pow")
            if power is not None and power.input[0] == x and _is(n, power.input[1], 3.0) \
                    and n.imp.values[x].dtype in FLOAT and _half_times(n, x):
                return f"gelu({n.imp.operand(x)})"
    return _elementwise(n)


RULES["Erf"] = Rule(_erf)
RULES["Tanh"] = Rule(_tanh)
