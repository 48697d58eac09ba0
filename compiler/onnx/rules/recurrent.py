"""ONNX's recurrent ops LSTM, GRU and RNN as dlc's lstm, gru and rnn layers."""

from __future__ import annotations

import numpy as np

from dlc.compiler.onnx.rule_api.node import Expr, Node, rule
from dlc.compiler.onnx.rule_api.values import Value
from dlc.compiler.onnx.rule_api.writing import ACTIVATIONS, module_name, transposed


# ONNX's gate blocks, in the order of dlc's layers (lstm: i, f, g, o; gru: r, z, n)
GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
LAYERS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}


@rule(
    "LSTM",
    "GRU",
    "RNN",
    static=(1, 2, 3, 4, 7),
    attrs=(
        "activation_alpha",
        "activation_beta",
        "activations",
        "clip",
        "direction",
        "hidden_size",
        "input_forget",
        "layout",
        "linear_before_reset",
    ),
)
def _recurrent(n: Node):
    """ONNX's recurrent ops as dlc's layers: X is time-major (layout 0) or batch-first; W, R
    and B hold each direction's gate blocks, which become the layer's Wx, Wh, bx, bh."""
    n.require_float(0)
    op = n.op
    default = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}[op]
    directions = 2 if n.attr("direction", "forward") == "bidirectional" else 1
    acts = n.attr("activations", default * directions)
    if "clip" in n.attrs:
        n.refuse("clip")
    if n.attr("input_forget", 0):
        n.refuse("input_forget = 1")
    if (
        op != "RNN"
        and acts != default * directions
        or op == "RNN"
        and (len(set(acts)) != 1 or acts[0] not in ACTIVATIONS)
    ):
        n.refuse(f"the activations {acts}")
    if n.has(4):
        lens = n.static(4, "sequence_lens")
        steps = n.shape(0)[1 if n.attr("layout", 0) else 0]
        if not (lens == steps).all():
            n.refuse("sequences of different lengths (sequence_lens)", "input")
    if op == "LSTM" and n.has(7) and np.any(n.static(7, "P")):
        n.refuse("peephole weights (P)")
    w, r = n.static(1, "W"), n.static(2, "R")
    units = n.attr("hidden_size", r.shape[-1])
    bias = n.static(3, "B") if n.has(3) else np.zeros((directions, 2 * w.shape[1]), w.dtype)
    batch_first = n.attr("layout", 0) == 1
    if batch_first:
        x = n.x(0)
    else:
        x = transposed(n, 0, (1, 0, 2))
        x = x.expr if isinstance(x, Value) else n.let(x, n.label + "_batch_first")
    states = [i for i in ((5, 6) if op == "LSTM" else (5,)) if n.has(i)]
    if states and len(states) != (2 if op == "LSTM" else 1):
        n.refuse("an initial hidden state without the initial cell state, or the reverse", "input")
    hint = module_name(n) or n.results[0] or op.lower()
    runs = []
    for d in range(directions):
        reverse = n.attr("direction", "forward") == "reverse" or d == 1
        name = n.imp.names(hint if directions == 1 else f"{hint}_{'bwd' if d else 'fwd'}", "h")
        order = np.concatenate([np.arange(units) + g * units for g in GATES[op]])
        n.weight(f"{name}.Wx", w[d][order].T)
        n.weight(f"{name}.Wh", r[d][order].T)
        n.weight(f"{name}.bx", bias[d][: len(order)][order])
        n.weight(f"{name}.bh", bias[d][len(order) :][order])
        state = ""
        if states and not all(_zeros(n, i) for i in states):  # zeros are the layers' own start
            picked = [f"{n.x(i)}[:, {d}]" if batch_first else f"{n.x(i)}[{d}]" for i in states]
            state = f", state = ({', '.join(picked)}{',' if len(picked) == 1 else ''})"
        act = f", act = {ACTIVATIONS[acts[d]]}" if op == "RNN" and acts[d] != "Tanh" else ""
        if op == "GRU" and not n.attr("linear_before_reset", 0):
            act = ", reset_after = false"
        call = f"{LAYERS[op]}({x}, {units}{act}{', reverse = true' if reverse else ''}{state}"
        if n.used(1) or n.used(2):
            finals = [n.imp.names(f"{name}_{s}") for s in ("h", "c")[: 2 if op == "LSTM" else 1]]
            n.imp.assign([name] + finals, f"{call}, return_state = true)")
        else:
            n.imp.assign([name], f"{call})")
            finals = []
        runs.append((name, finals))
    # Y: [T, D, B, U] (layout 0) or [B, T, D, U]; Y_h and Y_c: [D, B, U] or [B, D, U]
    ys = f"stack({', '.join(name for name, _ in runs)}, axis = {2 if batch_first else 1})"
    outputs = [None] * len(n.results)
    squeeze = n.absorb(("Squeeze",)) if directions == 1 and n.used(0) else None
    if squeeze is not None and list(squeeze.setting("axes", 1, [])) in ([1], [-3]) and not batch_first:
        n.take(squeeze)  # Y without its direction axis: [T, B, U], the layer's steps transposed
        back = n.absorb(("Transpose",))
        if back is not None and list(back.attr("perm", [])) == [1, 0, 2]:
            n.take(back)  # and batch-first again: the layer's own result
            outputs[0] = Value(n.out_dtype(), None, expr=runs[0][0])
        else:
            outputs[0] = Expr(f"transpose({runs[0][0]}, 1, 0, 2)")
    elif n.used(0):
        outputs[0] = ys if batch_first else f"transpose({n.let(ys, n.label + '_steps')}, 2, 1, 0, 3)"
    for j in (1, 2)[: len(n.results) - 1]:
        if n.used(j):
            outputs[j] = f"stack({', '.join(f[j - 1] for _, f in runs)}, axis = {1 if batch_first else 0})"
    return outputs


def _zeros(n: Node, i: int) -> bool:
    """Input i is known to be all zeros."""
    v = n.value(i)
    return v.fill == 0 or (v.const is not None and v.const.dtype != object and not v.const.any())
