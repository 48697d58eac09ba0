"""Rematerialized recurrences: a scan's `checkpoint = k` and a train block's `remat = k`
keep every k-th carry and recompute the steps between in the backward pass. The
gradients are those of the plain scan bit for bit (the same operations in the same
order), on both engines, the native one compiled; only the memory changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.numeric import build, engine_gradients

B, D, H = 3, 3, 4
LENGTHS = np.array([7, 2, 5], np.int32)


def model_source(call: str, remat: int | None, given: str = "") -> str:
    """A model running `call` on x: f32[B, T, D]; its loss sums the outputs times a random
    input r; `remat` adds the train block's setting."""
    lines = [
        "def bilstm(xs, units: int, lengths = none) = bidirectional(xs, lstm, units, lengths = lengths)",
        "model m {",
        f"    input x: f32[B, T, {D}]",
        "    input L: i32[B]",
        "    input m: f32[B, T]",
        f"    input r: f32[B, T, {2 * H}]",
        f"    y = {call.format(given=given)}",
        "    loss sum(y * r[:, :, 0:y.shape[2]])",
        "}",
    ]
    if remat is not None:
        lines += ["train m {", f"    remat = {remat}", "}"]
    return "\n".join(lines)


def gradients(source: str, backend: str, params: dict, feeds: dict):
    """Loss and flat gradients of one engine (float32); `native` must compile the model."""
    _, scalars, flat = engine_gradients(source, backend, params, feeds)
    return scalars["loss"], flat


def case_inputs(source: str, T: int):
    model = build(source)
    rng = np.random.default_rng(0)
    params = {p.name: (rng.standard_normal(p.type.shape) * 0.7).astype(np.float32) for p in model.params}
    lengths = np.minimum(LENGTHS, T).astype(np.int32)
    feeds = {
        "x": rng.standard_normal((B, T, D)).astype(np.float32),
        "L": lengths,
        "m": (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32),
        "r": rng.standard_normal((B, T, 2 * H)).astype(np.float32),
    }
    return params, feeds


CALLS = {
    "rnn": "rnn(x, %d{given})" % H,
    "lstm": "lstm(x, %d{given})" % H,
    "gru": "gru(x, %d{given})" % H,
    "bidirectional": "bidirectional(x, gru, %d{given})" % H,
    "stacked": "stacked(x, bilstm, %d, 2{given})" % H,
}


CASES = [
    ("rnn", 7, 3, ""),
    ("lstm", 7, 3, ""),
    ("gru", 7, 3, ""),  # T not a multiple of k
    ("lstm", 6, 1, ""),
    ("lstm", 6, 6, ""),
    ("gru", 5, 8, ""),  # k = 1, k = T, k > T
    ("lstm", 8, 4, ""),  # no padding
    ("reverse_lstm", 7, 3, ""),
    ("bidirectional", 7, 2, ""),
    ("lstm", 7, 3, ", mask = m"),
    ("rnn", 7, 3, ", lengths = L"),
    ("stacked", 7, 3, ", lengths = L"),
]
CALLS["reverse_lstm"] = "lstm(x, %d, reverse = true{given})" % H


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("call, T, k, given", CASES)
def test_gradients_are_the_plain_scans_bits(call, T, k, given, backend):
    plain = model_source(CALLS[call], None, given)
    remat = model_source(CALLS[call], k, given)
    params, feeds = case_inputs(plain, T)
    loss, grads = gradients(plain, backend, params, feeds)
    r_loss, r_grads = gradients(remat, backend, params, feeds)
    assert r_loss == loss
    assert np.array_equal(r_grads, grads), f"max difference {np.max(np.abs(r_grads - grads))}"


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("call", ["gru", "bidirectional"])
def test_gru_with_lengths(call, backend):
    """A GRU given lengths, checkpointed: its multiply-adds are fused differently in the
    segment's kernels than in the plain scan's, and still round alike, as no float
    operation may be contracted into an FMA by LLVM (docs/native.md, same bits)."""
    plain = model_source(CALLS[call], None, ", lengths = L")
    remat = model_source(CALLS[call], 3, ", lengths = L")
    params, feeds = case_inputs(plain, 7)
    loss, grads = gradients(plain, backend, params, feeds)
    r_loss, r_grads = gradients(remat, backend, params, feeds)
    assert r_loss == loss
    assert np.array_equal(r_grads, grads), f"max difference {np.max(np.abs(r_grads - grads))}"


SCAN = """
model m {{
    input x: f32[B, {T}, 3]
    param W: f32[3, 4] = glorot_uniform
    param U: f32[4, 4] = orthogonal
    hs = scan t in {T} {options} carry h = zeros[B, 4] {{
        h = {step}
        yield h
    }}
    loss {loss}
}}
"""


def plain_and_checkpointed(options: str, backend: str, seed: int, **model) -> tuple:
    """Loss and gradients of SCAN (T, step, loss as `model` says) with `options` and of the
    same scan plain (reverse as well when the options say so)."""
    plain = SCAN.format(options="(reverse = true)" if "reverse" in options else "", **model)
    rng = np.random.default_rng(seed)
    params = {p.name: (rng.standard_normal(p.type.shape) * 0.7).astype(np.float32) for p in build(plain).params}
    feeds = {"x": rng.standard_normal((B, model["T"], D)).astype(np.float32)}
    return gradients(plain, backend, params, feeds) + gradients(
        SCAN.format(options=options, **model), backend, params, feeds
    )


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("options", ["(checkpoint = 2)", "(reverse = true, checkpoint = 3)", "(checkpoint = 5)"])
def test_a_scan_of_the_language_checkpointed(options, backend):
    """`scan ... (checkpoint = k)` of a static length: the plain scan's gradients, the final
    carry's (exp(hs[:, -1])) included, bit for bit on both engines."""
    loss, grads, r_loss, r_grads = plain_and_checkpointed(
        options,
        backend,
        1,
        T=5,
        step="tanh(x[:, t] @ W + h @ U) * 0.9 + h * 0.1",
        loss="sum(hs * hs) + sum(exp(hs[:, -1]))",
    )
    assert r_loss == loss
    assert np.array_equal(r_grads, grads), f"max difference {np.max(np.abs(r_grads - grads))}"


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("options", ["(checkpoint = 3)", "(reverse = true, checkpoint = 3)", "(checkpoint = 7)"])
def test_random_draws_inside_a_checkpointed_scan(options, backend):
    """Dropout inside the body: a segment's step t draws as step k·s + t − padding of the
    plain scan (scan.py, `segment_of`), in the forward and in the recomputation, so the
    loss and the gradients are the plain scan's bits, padding (7 = 3 + 3 + 1) included."""
    step = "tanh(x[:, t] @ W + h @ U)"
    loss, grads, r_loss, r_grads = plain_and_checkpointed(
        options, backend, 2, T=7, step=f"dropout({step}, 0.4)", loss="sum(hs * hs)"
    )
    undropped = plain_and_checkpointed(options, backend, 2, T=7, step=step, loss="sum(hs * hs)")[0]
    assert undropped != loss  # the draws drop something
    assert r_loss == loss
    assert np.array_equal(r_grads, grads), f"max difference {np.max(np.abs(r_grads - grads))}"


def test_the_backward_pass_keeps_every_kth_carry():
    """The train-step graph of a checkpointed LSTM: no scan stacks a value per step of T;
    the forward stacks ceil(T/k) carries, and the steps' values live only within a segment."""
    from dlc.compiler.ir.dims import Dim
    from dlc.compiler.passes.autodiff import train_step

    graph = train_step(build(model_source(CALLS["lstm"], 4)).graph)
    scans = [n for n in graph.nx.nodes if graph.op(n) == "scan"]
    assert [graph.attrs(n)["length"] for n in scans] == [Dim.sym("ceil(T/4)")] * 2
    forward = next(n for n in scans if "history" in graph.attrs(n))
    history = [graph.types(forward)[j] for j in graph.attrs(forward)["history"]]
    assert [t.shape for t in history] == [(Dim.sym("ceil(T/4)"), Dim.sym("B"), H)] * 2  # h and c


def test_the_remat_benchmark_runs_and_saves_memory():
    """benchmarks/remat.py at T = 256, B = 4: a row per run, the same loss, less memory with
    remat (below T = 128 or so the checkpointed step needs more: docs/native.md)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "remat.py"
    out = subprocess.run(
        [sys.executable, str(script), "--seq", "256", "--batch", "4", "--k", "16", "--rounds", "1", "--seconds", "0.2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["-", "16"]
    plain, remat = rows
    assert plain[6] == remat[6]  # the loss
    assert float(remat[2]) < float(plain[2])  # the activations
    assert float(remat[4]) == pytest.approx(float(remat[3]), rel=0.1)  # predicted vs accounted


def test_remat_is_refused_as_an_override(tmp_path):
    """The model is built from the train block's `remat`: as a keyword of train() it would
    change nothing, so it is refused, saying where it goes."""
    from dlc.compiler.errors import DlcError
    from dlc.runtime.api import load

    path = tmp_path / "m.dl"
    path.write_text(model_source(CALLS["lstm"], None))
    with pytest.raises(DlcError, match=r"remat is set in the train block.*write `remat = 4` there"):
        load(str(path)).train(remat=4, data={"x": np.zeros((2, 5, D), np.float32)})
