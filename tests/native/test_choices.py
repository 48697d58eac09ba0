"""The choice lists of conv2d and its gradients (compiler/native/choose/conv.py), of
matmul (choose/matmul.py) and of pooling (choose/pooling.py; which pooling takes each entry:
tests/native/test_pool_rows.py): every entry an implementation a kind of kernels/ registers, and
every registered one listed; each list ending in an entry that always applies; which
implementation each convolution's shape gets in a train step and a prediction, in float32
and bf16, and which one the lowering calls for each matmul of a train step, a prediction
and a scan — every entry of every list taken by one of them."""

from __future__ import annotations

import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.choose import matmul, pooling
from dlc.compiler.native.choose.conv import LISTS, Conv, chosen
from dlc.compiler.native.lower import lower
from dlc.compiler.native.program.registry import IMPLEMENTATIONS
from dlc.compiler.native.rules import load
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines.reference import predict_graph


EVERY_LIST = {**LISTS, "matmul": matmul.MATMUL, "maxpool2d": pooling.POOLING, "avgpool2d": pooling.POOLING}


def test_every_entry_is_a_registered_implementation_and_every_one_is_listed():
    load()
    listed = {(op, i.name) for op, implementations in EVERY_LIST.items() for i in implementations}
    registered = {key for key in IMPLEMENTATIONS if key[0] in EVERY_LIST}
    assert listed == registered


@pytest.mark.parametrize("op", list(EVERY_LIST))
def test_each_list_names_each_implementation_once_and_ends_in_one_that_always_applies(op):
    names = [i.name for i in EVERY_LIST[op]]
    assert len(set(names)) == len(names)
    assert EVERY_LIST[op][-1].applies(None)
    assert all(i.why and i.kernel for i in EVERY_LIST[op])


# image [C, H, W], the layers (x in, h out), then what each product of the train step takes in
# float32 and bf16 and a prediction's convolutions in float32, each as {op: sorted names}
CASES = {
    "pointwise": (
        (16, 8, 8),
        "h = conv2d(x, 32, 1)",
        {"conv2d": ["pointwise over the batch"], "conv2d_weight_grad": ["pointwise"]},
        None,
        ["pointwise per example"],
    ),
    "pointwise-few-pixels": ((16, 2, 2), "h = conv2d(x, 64, 1)", None, None, ["pointwise over the batch"]),
    "direct": (
        (3, 10, 10),
        "a = conv2d(x, 6, 3, padding = 1, act = relu)\n    h = conv2d(a, 6, 3, padding = 1)",
        {"conv2d": ["direct", "direct"], "conv2d_input_grad": ["direct"], "conv2d_weight_grad": ["direct", "direct"]},
        None,
        ["direct", "direct"],
    ),
    "stem": (
        (3, 32, 32),
        "h = conv2d(x, 16, 3, stride = 2, padding = 1)",
        {"conv2d": ["direct by channels"], "conv2d_weight_grad": ["direct"]},
        None,
        ["direct by channels"],
    ),
    "depthwise-small-planes": (
        (16, 4, 4),
        "h = conv2d(x, 16, 3, padding = 1, groups = 16)",
        {"conv2d": ["direct by channels"], "conv2d_weight_grad": ["few pixels"]},
        None,
        ["direct by channels"],
    ),
    # 64 filters on 3 channels: a GEMM of the image's windows in float32; in bf16 a GEMM of
    # im2col's columns, which its weight gradient's small GEMM reads too
    "many-filters": (
        (3, 30, 30),
        "h = conv2d(x, 64, 3, padding = 1)",
        {"conv2d": ["windows over the batch"], "conv2d_weight_grad": ["direct"]},
        {"conv2d": ["im2col"], "conv2d_weight_grad": ["small filters"]},
        ["windows per example"],
    ),
    # ... on 16 channels after a layer: its input gradient direct in float32, in bf16 a GEMM
    # of g's windows; 8 filters stay direct in bf16
    "many-filters-inner": (
        (8, 12, 12),
        "a = conv2d(x, 16, 3, padding = 1, act = relu)\n    h = conv2d(a, 64, 3, padding = 1)",
        {
            "conv2d": ["direct", "windows over the batch"],
            "conv2d_input_grad": ["direct"],
            "conv2d_weight_grad": ["direct", "direct"],
        },
        {
            "conv2d": ["direct", "windows over the batch"],
            "conv2d_input_grad": ["windows"],
            "conv2d_weight_grad": ["direct", "windows"],
        },
        ["direct", "windows over the batch"],
    ),
    # a ResNet projection (1 x 1, stride 2) of many filters: in a train step direct in float32
    # (its weight gradient, over 4 x 4 pixels, a GEMM of im2col's columns), a GEMM in bf16; in a
    # prediction a GEMM of its pixels gathered
    "projection-many-filters": (
        (64, 8, 8),
        "h = conv2d(x, 128, 1, stride = 2)",
        {"conv2d": ["direct"], "conv2d_weight_grad": ["im2col"]},
        {"conv2d": ["im2col"], "conv2d_weight_grad": ["im2col"]},
        ["pointwise of the strided pixels"],
    ),
    "grouped-dilated": (
        (3, 12, 12),
        "a = conv2d(x, 8, 1)\n    h = conv2d(a, 8, 3, padding = 2, dilation = 2, groups = 2)",
        {
            "conv2d": ["grouped taps", "pointwise over the batch"],
            "conv2d_input_grad": ["grouped accumulation"],
            "conv2d_weight_grad": ["pointwise", "windows"],
        },
        None,
        ["grouped taps", "pointwise per example"],
    ),
    "depthwise-separable": (
        (8, 9, 9),
        "a = conv2d(x, 16, 1)\n    b = conv2d(a, 16, 3, padding = 1, groups = 16)\n"
        "    c = conv2d(b, 16, 3, stride = 2, padding = 1, groups = 16)\n"
        "    h = conv2d(c, 8, 1)",
        {
            "conv2d": ["direct", "direct", "pointwise over the batch", "pointwise over the batch"],
            "conv2d_input_grad": ["depthwise upsampling", "grouped direct", "pointwise"],
            "conv2d_weight_grad": ["direct", "few pixels", "pointwise", "pointwise"],
        },
        None,
        ["direct", "direct", "pointwise per example", "pointwise per example"],
    ),
    "many-taps": (
        (3, 12, 12),
        "a = conv2d(x, 29, 1)\n    h = conv2d(a, 16, 3, padding = 1)",
        {
            "conv2d": ["pointwise over the batch", "windows over the batch"],
            "conv2d_input_grad": ["windows"],
            "conv2d_weight_grad": ["pointwise", "windows"],
        },
        None,
        ["pointwise per example", "windows over the batch"],
    ),
    # ... strided: its input gradient, not a stride-1 convolution of g, by col2im
    "strided-many-taps": (
        (3, 12, 12),
        "a = conv2d(x, 29, 1)\n    h = conv2d(a, 16, 3, stride = 2, padding = 1)",
        {
            "conv2d": ["pointwise over the batch", "windows over the batch"],
            "conv2d_input_grad": ["col2im"],
            "conv2d_weight_grad": ["pointwise", "windows"],
        },
        None,
        ["pointwise per example", "windows over the batch"],
    ),
    "winograd": (
        (32, 16, 16),
        "a = conv2d(x, 32, 3, padding = 1)\n    h = conv2d(a, 32, 3, padding = 1)",
        {
            "conv2d": ["winograd", "winograd"],
            "conv2d_input_grad": ["winograd"],
            "conv2d_weight_grad": ["windows", "windows"],
        },
        {
            "conv2d": ["windows over the batch", "windows over the batch"],
            "conv2d_input_grad": ["windows"],
            "conv2d_weight_grad": ["windows", "windows"],
        },
        ["winograd", "winograd"],
    ),
    "winograd-few-tiles": (
        (32, 4, 4),
        "h = conv2d(x, 32, 3, padding = 1)",
        {"conv2d": ["im2col"], "conv2d_weight_grad": ["im2col"]},
        None,
        ["im2col"],
    ),
    "projection": (
        (16, 8, 8),
        "h = conv2d(x, 16, 1, stride = 2)",
        {"conv2d": ["direct"], "conv2d_weight_grad": ["small filters"]},
        None,
        ["direct"],
    ),
}


def _choices(case: str, training: bool, bf16: bool) -> dict:
    (c, h, w), body = CASES[case][:2]
    last = "loss mean(h * h)" if training else "output y = h"
    model = load_text(f"model m {{\n    input x: f32[B, {c}, {h}, {w}]\n    {body}\n    {last}\n}}\n", "c.dl").build(
        training=training
    )
    graph = train_step(model.graph) if training else predict_graph(model)
    found: dict = {}
    for n in graph.order():
        if graph.op(n) in LISTS:
            found.setdefault(graph.op(n), []).append(chosen(Conv.node(graph, n, bf16)).name)
    return {op: sorted(names) for op, names in found.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_which_implementation_each_shape_gets(case):
    train, train_bf16, prediction = CASES[case][2:]
    if train is not None:
        assert _choices(case, True, False) == train
        assert _choices(case, True, True) == (train_bf16 or train)
    assert _choices(case, False, False) == {"conv2d": prediction}


def test_every_implementation_is_taken_by_a_case():
    taken = {
        (op, name)
        for case in CASES
        for training in (True, False)
        for bf16 in (False, True)
        for op, names in _choices(case, training, bf16).items()
        for name in names
    }
    assert taken == {(op, i.name) for op, implementations in LISTS.items() for i in implementations}


# a dense layer into a recurrent one: the train step's and the prediction's matmuls, and
# those of the scan's body, whose recurrent weight is the same at every step
RECURRENT = """model m {
    input x: f32[B, 5, 3]
    hs = rnn(dense(x, 4), 6)
    output y = dense(hs[:, -1], 2)
    loss mean(y * y)
}
"""


def _matmul_choices(monkeypatch, training: bool, pack_weights: str | None) -> set:
    """The names of the matmul implementations the lowering calls for RECURRENT's train step
    or prediction (its list's choice, seen where the rule is called)."""
    load()
    called = set()
    for i in matmul.MATMUL:
        rule = IMPLEMENTATIONS["matmul", i.name]
        monkeypatch.setitem(
            IMPLEMENTATIONS, ("matmul", i.name), lambda *a, name=i.name, rule=rule: (called.add(name), rule(*a))
        )
    model = load_text(RECURRENT, "m.dl").build(training=training)
    lower(optimize(train_step(model.graph) if training else predict_graph(model)), pack_weights=pack_weights)
    return called


def test_which_implementation_each_matmul_gets(monkeypatch):
    assert _matmul_choices(monkeypatch, True, None) == {"packed before the loop", "packed by the GEMM"}
    for pack_weights in ("once", "each call"):
        assert _matmul_choices(monkeypatch, False, pack_weights) == {"weights packed first"}
    assert _matmul_choices(monkeypatch, False, None) == {"packed before the loop", "packed by the GEMM"}


def test_a_matmul_as_a_graph_says_it_is_a_gemm():
    """bf16.py's view of a matmul, no program lowered: nothing packed ahead, a GEMM."""
    model = load_text(RECURRENT, "m.dl").build(training=True)
    graph = train_step(model.graph)
    for n in graph.nodes_with("matmul"):
        assert matmul.chosen(matmul.Matmul.of_graph(graph, n)).name == "packed by the GEMM"
