"""Which products of a graph run in int8, and why each other one stays float32: the rules of
docs/quantization.md ("Which products are integer"). A product is named by its weights'
parameter; the calibration, the quantized checkpoint, the engines and `dlc summary --int8`
all read this one list."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.errors import Span
from dlc.compiler.ir.graph import Graph, nested_graphs
from dlc.compiler.ir.int8 import LONGEST_SUM

PRODUCTS = ("matmul", "conv2d")
# The shortest sums that gain from integer dot products (docs/quantization.md, measured on an
# AMX Xeon, docs/native.md#int8): a matmul's K; a convolution's channels a tap (C / groups),
# below which its kernel spends its time gathering windows, not summing them (a first layer
# of 1 or 3 channels, a small grouped convolution), whatever the taps; but a depthwise
# convolution, whose kernel sums a tap's channels side by side, and one of a single group read
# by kernel rows, whose K must then be as long as a matmul's (kernels/int8)
FEWEST_TERMS = 24
FEWEST_CHANNELS = 16
# a convolution of one group and fewer channels than this reads its windows a kernel row at a
# time (choose/int8.py): a tap of them would be a step or two of four, each tested at the edges
ROW_CHANNELS = 16


def depthwise(weight_shape: tuple, groups: int) -> bool:
    """Whether a convolution of weights [O, C / groups, kh, kw] in `groups` groups is depthwise:
    one input channel and one filter a group."""
    return weight_shape[1] == 1 and weight_shape[0] == groups


def by_kernel_rows(weight_shape: tuple, attrs: dict) -> bool:
    """Whether a convolution of weights [O, C / groups, kh, kw] reads its windows a kernel row
    at a time: one group of fewer than ROW_CHANNELS channels, undilated along the rows, so
    that a kernel row of a window is a run of kw · C bytes of the channels-last image."""
    return attrs["groups"] == 1 and weight_shape[1] < ROW_CHANNELS and attrs["dilation"][1] == 1


@dataclass
class Product:
    """A matmul or conv2d of the graph: node `node` reads its activation at operand 0 and its
    weights (operand 1) from the parameter `weight`, whose output channels lie along
    `channel_axis` of the parameter, as `weight_shape` (the parameter's, or conv1d's reshape
    of it); `reason` is why it stays float32 ("" when integer)."""

    node: int
    op: str
    weight: str | None
    channel_axis: int
    weight_shape: tuple
    terms: int
    span: Span | None
    reason: str = ""

    @property
    def integer(self) -> bool:
        return not self.reason


def products(graph: Graph, whole: Graph | None = None) -> list[Product]:
    """Every matmul and conv2d of the graph's top level, in graph order, integer or not.
    Weights are shared as they are in `whole` (the model's evaluation graph, of which `graph`
    may be a part: the prediction graph), so both choose the same products."""
    found = [_product(graph, n) for n in graph.order() if graph.op(n) in PRODUCTS]
    readers: dict = {}
    for p in found if whole is None else products(whole):
        if p.weight is not None:
            readers[p.weight] = readers.get(p.weight, 0) + 1
    for p in found:
        if not p.reason and readers[p.weight] > 1:
            p.reason = f"its weights {p.weight} are shared by {readers[p.weight]} products"
    return found


def integer_products(graph: Graph, whole: Graph | None = None) -> dict:
    """The integer products by name."""
    return {p.weight: p for p in products(graph, whole) if p.integer}


def scanned_products(graph: Graph) -> int:
    """How many matmuls and convolutions lie inside scans (recurrences): they stay float32."""
    return sum(1 for g in nested_graphs(graph)[1:] for n in g.nx.nodes if g.op(n) in PRODUCTS)


def _product(graph: Graph, n: int) -> Product:
    op, attrs, span = graph.op(n), graph.attrs(n), graph.nx.nodes[n]["span"]
    x, w = graph.inputs(n)
    source, axis = _weights(graph, w, op, attrs)
    p = Product(n, op, None, 0, tuple(w.shape), 0, span)
    if source is None:
        p.reason = "its weights are not a parameter (two activations are multiplied)"
        return p
    p.weight, p.channel_axis = graph.attrs(source)["name"], axis
    shape = w.shape
    if not all(isinstance(d, int) for d in shape):
        p.reason = "its weights' shape is not fixed"
    elif w.dtype != "f32" or x.dtype != "f32":
        p.reason = f"it multiplies {x.dtype} by {w.dtype} (int8 takes f32 models)"
    elif op == "matmul" and w.rank != 2:
        p.reason = "a batched matmul"
    else:
        p.terms = (shape[1] if attrs["tb"] else shape[0]) if op == "matmul" else shape[1] * shape[2] * shape[3]
        # a convolution of few channels a tap: integer only read by kernel rows, then its K as a matmul's
        few = op == "conv2d" and shape[1] < FEWEST_CHANNELS and not depthwise(shape, attrs["groups"])
        if op == "matmul" and attrs["ta"]:
            p.reason = "its activation operand is transposed"
        elif p.terms > LONGEST_SUM:
            p.reason = f"its {p.terms} terms could overflow int32 sums (at most {LONGEST_SUM})"
        elif few and not by_kernel_rows(shape, attrs):
            p.reason = (
                f"its taps hold {shape[1]} channel{'s' * (shape[1] != 1)} (C / groups): too few to gain from "
                f"int8 (at least {FEWEST_CHANNELS}) "
                + (f"in {attrs['groups']} groups" if attrs["groups"] > 1 else "with its kernel rows dilated")
            )
        elif (op == "matmul" or few) and p.terms < FEWEST_TERMS:
            p.reason = f"its sums of {p.terms} terms are too short to gain from int8 (at least {FEWEST_TERMS})"
    return p


def _weights(graph: Graph, w, op: str, attrs: dict) -> tuple:
    """(the parameter node the weights are, the parameter's output-channel axis), or (None, 0):
    a matmul's right operand itself; a convolution's weights or their reshape that keeps the
    output channels first (conv1d's)."""
    node = w.node
    if op == "conv2d" and graph.op(node) == "reshape":
        (inner,) = graph.inputs(node)
        if inner.shape[:1] == w.shape[:1]:
            node = inner.node
    if graph.op(node) != "param":
        return None, 0
    if op == "matmul":
        return node, 0 if attrs["tb"] else 1
    return node, 0
