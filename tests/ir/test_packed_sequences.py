"""Variable-length batches: the recurrent layers given `lengths = L` or `mask = m` match
PyTorch's packed sequences (pack_padded_sequence) within 1e-5, forward and gradients, on
both engines, the native one compiled (make_engine("native") never falls back).

Each model differentiates sum(y * r) (plus the final states', when returned) for fixed
random r; the input sequence is a parameter, so its gradient is compared too. The padded
steps of y are zero on both sides, and the gradient never reaches the padded inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests skipped")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from helpers.numeric import assert_close, build, engine_gradients  # noqa: E402
from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.frontend.loader import load_text  # noqa: E402

B, T, D, H = 3, 5, 3, 4
LENGTHS = np.array([5, 2, 3], np.int32)  # unsorted, one full and two padded
RTOL = 1e-5
TORCH_CELLS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_TENSORS = {
    "Wx": ("weight_ih", True),
    "Wh": ("weight_hh", True),
    "bx": ("bias_ih", False),
    "bh": ("bias_hh", False),
}


def torch_name(dlc_name: str) -> tuple[str, bool]:
    """(torch.nn name, transposed) of a dlc recurrent parameter: y.layer.1.bwd.Wx is
    weight_ih_l1_reverse, transposed."""
    parts = dlc_name.split(".")
    layer = parts[parts.index("layer") + 1] if "layer" in parts else "0"
    kind, transposed = TORCH_TENSORS[parts[-1]]
    return f"{kind}_l{layer}{'_reverse' if 'bwd' in parts else ''}", transposed


# a bidirectional layer as a cell of stacked (2 layers of it are torch's num_layers = 2, bidirectional)
BIDIRECTIONAL_CELLS = """
def bilstm(xs, units: int, mask = none, lengths = none) = bidirectional(xs, lstm, units, mask = mask, lengths = lengths)
def bigru(xs, units: int, mask = none, lengths = none) = bidirectional(xs, gru, units, mask = mask, lengths = lengths)
"""


def model_source(call: str, outputs: tuple, how: str, width: int) -> str:
    """A model running `call` on the parameter x with `how` ("lengths" or "mask"); its loss
    sums every output (of `width` features) times a random input r_<output>."""
    given = "lengths = L" if how == "lengths" else "mask = m"
    widths = {"y": f"{T}, {width}", "h": f"{width}", "c": f"{width}"}
    lines = [
        BIDIRECTIONAL_CELLS,
        "model m {",
        f"    param x: f32[{B}, {T}, {D}] = zeros",
        f"    input L: i32[{B}]",
        f"    input m: f32[{B}, {T}]",
        f"    {', '.join(outputs)} = {call.format(given=given)}",
        *(f"    output {o}" for o in outputs),
        *(f"    input r_{o}: f32[{B}, {widths[o]}]" for o in outputs),
        "    loss " + " + ".join(f"sum({o} * r_{o})" for o in outputs),
        "}",
    ]
    return "\n".join(lines)


def run_torch(cell: str, params: dict, x: np.ndarray, feeds: dict, outputs: tuple, layers: int, both: bool):
    """The outputs, loss and gradients (by dlc name) of torch.nn's cell on the packed batch."""
    module = TORCH_CELLS[cell](D, H, num_layers=layers, bidirectional=both, batch_first=True, dtype=torch.float64)
    leaves = {name: torch.tensor(v, dtype=torch.float64, requires_grad=True) for name, v in params.items()}
    weights = {}
    for name, leaf in leaves.items():
        if name != "x":
            tname, transposed = torch_name(name)
            weights[tname] = leaf.T if transposed else leaf
    assert set(weights) == {n for n, _ in module.named_parameters()}
    packed = pack_padded_sequence(leaves["x"], torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    out, state = torch.func.functional_call(module, weights, (packed,))
    y = pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    h, c = state if cell == "lstm" else (state, None)
    results = {"y": y, "h": h[-1] if h is not None else None, "c": c[-1] if c is not None else None}
    loss = sum((results[o] * torch.tensor(feeds[f"r_{o}"], dtype=torch.float64)).sum() for o in outputs)
    loss.backward()
    return (
        {o: results[o].detach().numpy() for o in outputs},
        loss.item(),
        {name: leaf.grad.numpy() for name, leaf in leaves.items()},
    )


def run_dlc(source: str, backend: str, params: dict, feeds: dict):
    """Outputs, loss and gradients of one engine (float32); `native` must compile the model."""
    engine, scalars, flat = engine_gradients(source, backend, params, feeds)
    outputs = engine.predict({k: v.astype(np.float32) for k, v in params.items()}, feeds)
    grads, at = {}, 0
    for name in [p.name for p in build(source).params]:
        size = params[name].size
        grads[name] = flat[at : at + size].reshape(params[name].shape)
        at += size
    return outputs, scalars["loss"], grads


CASES = {  # name: (call, cell, outputs, layers, bidirectional)
    "lstm": ("lstm(x, %d, return_state = true, {given})" % H, "lstm", ("y", "h", "c"), 1, False),
    "gru": ("gru(x, %d, return_state = true, {given})" % H, "gru", ("y", "h"), 1, False),
    "bidirectional_lstm": ("bidirectional(x, lstm, %d, {given})" % H, "lstm", ("y",), 1, True),
    "bidirectional_gru": ("bidirectional(x, gru, %d, {given})" % H, "gru", ("y",), 1, True),
    "stacked_lstm": ("stacked(x, lstm, %d, 2, {given})" % H, "lstm", ("y",), 2, False),
    "stacked_gru": ("stacked(x, gru, %d, 2, {given})" % H, "gru", ("y",), 2, False),
    "stacked_bidirectional_lstm": ("stacked(x, bilstm, %d, 2, {given})" % H, "lstm", ("y",), 2, True),
    "stacked_bidirectional_gru": ("stacked(x, bigru, %d, 2, {given})" % H, "gru", ("y",), 2, True),
}


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("how", ["lengths", "mask"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pack_padded_sequence(case, how, backend):
    call, cell, outputs, layers, both = CASES[case]
    width = H * (2 if both else 1)
    source = model_source(call, outputs, how, width)
    model = build(source)
    rng = np.random.default_rng(0)
    params = {p.name: rng.standard_normal(p.type.shape) * 0.7 for p in model.params}
    feeds = {"L": LENGTHS, "m": (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float32)}
    feeds.update(
        {f"r_{o}": rng.standard_normal((B, T, width) if o == "y" else (B, width)).astype(np.float32) for o in outputs}
    )
    t_out, t_loss, t_grads = run_torch(cell, params, params["x"], feeds, outputs, layers, both)
    out, loss, grads = run_dlc(source, backend, params, feeds)
    for o in outputs:
        assert_close(out[o], t_out[o], RTOL, f"output {o}")
    assert np.all(out["y"][np.arange(T)[None, :] >= LENGTHS[:, None]] == 0), "padded steps output zeros"
    assert_close(loss, t_loss, RTOL, "loss")
    for name, g in t_grads.items():
        assert_close(grads[name], g, RTOL, f"grad:{name}")
    assert np.all(grads["x"][np.arange(T)[None, :] >= LENGTHS[:, None]] == 0), "padded inputs get no gradient"


@pytest.mark.parametrize(
    "call, message",
    [
        (
            "lstm(x, 4, lengths = m)",
            "lengths are i32[B] (the real steps of each sequence) for inputs f32[B, T, 3], got f32[B, T]",
        ),
        (
            "gru(x, 4, mask = L)",
            "the mask of a recurrent layer is [B, T] (nonzero at the real steps) for inputs f32[B, T, 3], got i32[B]",
        ),
        ("rnn(x, 4, mask = m, lengths = L)", "give mask = or lengths =, not both"),
        ("bidirectional(x, lstm, 4, lengths = m)", "lengths are i32[B]"),
    ],
)
def test_a_mask_or_lengths_of_the_wrong_kind_is_an_error_at_the_call(call, message):
    src = f"""model m {{
    input x: f32[B, T, 3]
    input L: i32[B]
    input m: f32[B, T]
    output y = {call}
}}"""
    with pytest.raises(DlcError) as e:
        load_text(src, "m.dl").build(training=False)
    assert e.value.span.file == "m.dl" and e.value.span.line == 5, e.value.render()
    assert message in e.value.message
