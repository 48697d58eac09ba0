"""The native engine never touches memory outside its buffers and never computes with
the wrong weights: out-of-range indices through every route (a prompt, an index computed
from the data, a table as long as the batch), weight files of any dtype and layout, the
weights the engine is given at every call, sizes too small for a window, NaN semantics.

Commands that could crash the process run in a subprocess, so a segfault is a failing
test, not a lost test run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime.training import gradcheck as gc
from dlc.runtime.api import DlcModel
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call

ENGINES = ["native", "reference"]


def dlc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | {"DLC_NUM_THREADS": "2"},
        timeout=300,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def initial_weights(path: Path, out: Path, dtype=np.float64, order="C") -> Path:
    """The model's initial parameters as a plain .npz (float64 by default, numpy's own)."""
    model = DlcModel(str(path)).train_model
    params = gc.init_params(model, seed=0)
    np.savez(out, **{k: np.asarray(v, dtype, order=order) for k, v in params.items()})
    return out


# ---- item 1: gather indices out of range -----------------------------------------------------------------
ENC_DEC = """const VOCAB = 9
model m {
    input  src: i32[B, S]
    input  dec_in: i32[B, T]
    target dec_out: i32[B, T]
    enc, h = rnn(embedding(src, VOCAB, 8), 16, return_state = true)
    dec = rnn(embedding(dec_in, VOCAB, 8), 16, state = (h,))
    logits = dense(dec, VOCAB)
    loss   sparse_cross_entropy(logits, dec_out)
    output probs = softmax(logits)
}
"""


@pytest.mark.parametrize("prompt", ["3 4 100000000", "3 -100000000 4", "3 9 4", "3 99999999999 4"])
def test_generate_refuses_source_ids_outside_the_vocabulary(tmp_path, prompt):
    src = write(tmp_path, "encdec.dl", ENC_DEC)
    weights = initial_weights(src, tmp_path / "w.npz")
    r = dlc("generate", src, "--weights", weights, "--prompt", prompt, "--length", "3")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "src has values from" in r.stderr and "0 to 8" in r.stderr and "internal error" not in r.stderr


def test_generate_with_ids_in_range_runs(tmp_path):
    src = write(tmp_path, "encdec.dl", ENC_DEC)
    weights = initial_weights(src, tmp_path / "w.npz")
    r = dlc("generate", src, "--weights", weights, "--prompt", "3 8 0", "--length", "3")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) >= 1


COMPUTED_INDEX = """model m {
    input  src: i32[B]
    target y: f32[B, 3]
    param W: f32[5, 3] = glorot_uniform
    h = gather(W, src * 1000000)
    loss mean((h - y) ^ 2)
    output out = h
}
"""


def _engine_error(model: DlcModel, run) -> DlcError:
    with pytest.raises(DlcError) as e:
        run(model)
    return e.value


@pytest.mark.parametrize("backend", ENGINES)
def test_an_index_computed_from_the_data_is_checked_in_the_kernel(tmp_path, backend):
    """The data check bounds `src` (0..4 would fit W), but src * 1000000 does not."""
    path = write(tmp_path, "computed.dl", COMPUTED_INDEX)
    model = DlcModel(str(path), backend=backend)
    model.params = {k: np.asarray(v, np.float32) for k, v in gc.init_params(model.train_model).items()}
    before = {k: v.copy() for k, v in model.params.items()}
    err = _engine_error(model, lambda m: m.predict({"src": np.array([0, 1, 2], np.int32)}))
    assert "gather: index out of range [0, 5)" in err.message
    assert err.span is not None and err.span.file.endswith("computed.dl") and err.span.line == 5
    # the train step: the error stops it before the optimizer touches the weights
    engine = _train_engine(model)
    params = {k: v.copy() for k, v in model.params.items()}
    opt = make_optimizer(Call("adam", [], {"lr": 0.1}))
    state = opt.init(params)
    batch = {"src": np.array([0, 1, 2], np.int32), "y": np.zeros((3, 3), np.float32)}
    with pytest.raises(DlcError, match="gather: index out of range"):
        engine.train_step(params, state, batch, 0.1, 1, np.array([0, 1], np.int32))
    for k in before:
        np.testing.assert_array_equal(params[k], before[k])


def _train_engine(model: DlcModel):
    from dlc.runtime.engines.backends import make_engine

    opt = make_optimizer(Call("adam", [], {"lr": 0.1}))
    return make_engine(
        model.backend, model.train_model, model.eval_model, opt, [p.name for p in model.train_model.params]
    )


BATCH_TABLE = """model m {
    input  x: f32[B, 3]
    input  idx: i32[B]
    target y: f32[B, 3]
    h = gather(tanh(x), idx)
    loss mean((h - y) ^ 2) + 0.0 * sum(dense(x, 3))
    output out = h
}
"""


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("bad", [1000000, -5, 4])
def test_a_table_as_long_as_the_batch_is_checked_forward_and_backward(tmp_path, backend, bad):
    """The table's row count is the batch size, known only at run time; the backward pass
    (scatter_add) would write before or after the gradient buffer."""
    path = write(tmp_path, "batch_table.dl", BATCH_TABLE)
    model = DlcModel(str(path), backend=backend)
    model.params = {k: np.asarray(v, np.float32) for k, v in gc.init_params(model.train_model).items()}
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    idx = np.array([0, 3, bad, 1], np.int32)
    err = _engine_error(model, lambda m: m.engine.predict(m.params, {"x": x, "idx": idx}))
    assert "gather: index out of range [0, 4)" in err.message and err.span.line == 5
    engine = _train_engine(model)
    params = {k: v.copy() for k, v in model.params.items()}
    state = make_optimizer(Call("adam", [], {"lr": 0.1})).init(params)
    batch = {"x": x, "idx": idx, "y": np.zeros((4, 3), np.float32)}
    with pytest.raises(DlcError, match="gather: index out of range"):
        engine.train_step(params, state, batch, 0.1, 1, np.array([0, 1], np.int32))
    for k, v in model.params.items():
        np.testing.assert_array_equal(params[k], v)
    # and after the error the same engine runs good data correctly
    good = {"x": x, "idx": np.array([0, 3, 2, 1], np.int32)}
    np.testing.assert_allclose(model.engine.predict(model.params, good)["out"], np.tanh(x)[[0, 3, 2, 1]], rtol=1e-6)


def test_out_of_range_indices_do_not_crash_the_process(tmp_path):
    """The same three routes as one subprocess each way: never a signal."""
    path = write(tmp_path, "batch_table.dl", BATCH_TABLE)
    weights = initial_weights(path, tmp_path / "w.npz")
    for bad in (10**6, -5):
        np.savez(tmp_path / "in.npz", x=np.ones((4, 3), np.float32), idx=np.array([0, bad, 1, 2], np.int32))
        r = dlc(
            "predict",
            path,
            "--weights",
            weights,
            "--input",
            tmp_path / "in.npz",
            "--output",
            tmp_path / "out.npz",
            "--backend",
            "native",
        )
        assert r.returncode == 1 and "gather: index out of range" in r.stderr, (r.returncode, r.stderr)


# ---- item 2: weight files of any dtype and layout --------------------------------------------------------
MLP = """model m {
    input  x: f32[B, 6]
    target y: i32[B]
    logits = x |> dense(16, relu) |> dense(3)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
    output probs = softmax(logits)
}
"""


def _mlp_data(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "data.npz", x=rng.normal(size=(50, 6)).astype(np.float32), y=rng.integers(0, 3, 50).astype(np.int32)
    )
    return tmp_path / "data.npz"


@pytest.mark.parametrize(
    "dtype,order", [(np.float64, "C"), (np.float32, "F"), (np.float64, "F"), (np.float16, "C"), (np.int8, "C")]
)
def test_plain_weight_files_of_any_numeric_dtype_and_order_evaluate_as_the_reference(tmp_path, dtype, order):
    path = write(tmp_path, "mlp.dl", MLP)
    weights = initial_weights(path, tmp_path / "w.npz", dtype, order)
    data = _mlp_data(tmp_path)
    got = {b: DlcModel(str(path), backend=b).load_weights(weights).evaluate(str(data)) for b in ENGINES}
    assert np.isfinite(got["native"]["loss"])
    assert got["native"]["loss"] == pytest.approx(got["reference"]["loss"], rel=1e-5)
    assert got["native"]["accuracy"] == got["reference"]["accuracy"]
    # and a dtype-exact float32 copy gives the same numbers
    as32 = {k: np.asarray(v, np.float32) for k, v in np.load(weights).items()}
    np.savez(tmp_path / "w32.npz", **as32)
    exact = DlcModel(str(path), backend="native").load_weights(tmp_path / "w32.npz").evaluate(str(data))
    assert exact["loss"] == pytest.approx(got["native"]["loss"], rel=1e-6)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.zeros(3, complex)])
def test_weights_that_are_not_numbers_are_refused(tmp_path, bad):
    path = write(tmp_path, "mlp.dl", MLP)
    weights = initial_weights(path, tmp_path / "w.npz")
    arrays = dict(np.load(weights))
    name = sorted(arrays)[-1]
    arrays[name] = np.resize(bad, arrays[name].shape)
    np.savez(weights, **arrays)
    r = dlc("eval", path, "--weights", weights, "--data", _mlp_data(tmp_path))
    assert r.returncode == 1 and f"{name} holds" in r.stderr, r.stderr


# ---- item 4: the engine uses the weights it is given ------------------------------------------------------
@pytest.mark.parametrize("backend", ENGINES)
def test_loading_other_weights_changes_what_evaluate_returns(tmp_path, backend):
    path = write(tmp_path, "mlp.dl", MLP)
    data = str(_mlp_data(tmp_path))
    a = initial_weights(path, tmp_path / "a.npz")
    arrays = {k: v * 3.0 for k, v in np.load(a).items()}
    np.savez(tmp_path / "b.npz", **arrays)
    model = DlcModel(str(path), backend=backend)
    loss_a = model.load_weights(a).evaluate(data)["loss"]
    loss_b = model.load_weights(tmp_path / "b.npz").evaluate(data)["loss"]
    fresh_b = DlcModel(str(path), backend=backend).load_weights(tmp_path / "b.npz").evaluate(data)["loss"]
    assert loss_a != pytest.approx(loss_b)
    assert loss_b == pytest.approx(fresh_b, rel=1e-6)
    # predict too, and weights changed in place between calls
    x = np.load(data)["x"][:7]
    first = model.predict({"x": x})["probs"]
    name = sorted(model.params)[-1]
    model.params[name] = model.params[name] + np.arange(3, dtype=np.float32)
    assert not np.allclose(model.predict({"x": x})["probs"], first)


def test_every_call_checks_the_arrays_it_binds_and_reads_values_changed_in_place(tmp_path):
    """A layout keeps the address of an array bound again (runtime/engines/native.py
    `Layout`): values changed in place are read, and an array of the wrong dtype, too
    short or not contiguous is refused before native code runs, after good calls too."""
    model = DlcModel(str(write(tmp_path, "mlp.dl", MLP)), backend="native")
    exe = model.engine.predict_exe
    params = {
        p.name: np.random.default_rng(0).normal(size=p.type.shape).astype(np.float32) for p in model.eval_model.params
    }
    fixed = exe.given(params)
    assert all(fixed[bid] is params[name] for name, bid in exe.program.params.items())  # no copies
    feeds = {"x": np.load(_mlp_data(tmp_path))["x"][:5], "rng": np.zeros(2, np.int32)}
    probs = lambda: exe.output("output:probs", *exe.run(feeds, fixed))
    first = probs()
    np.testing.assert_array_equal(probs(), first)
    weight = next(a for a in fixed.values() if a.ndim == 2)
    weight *= 2.0  # the same array, the same address: its new values
    assert not np.allclose(probs(), first)
    bid = next(b for b, a in fixed.items() if a is weight)
    for bad in (weight.astype(np.float64), weight.ravel()[:-1], np.asfortranarray(weight)):
        with pytest.raises(TypeError, match="needs"):
            exe.run(feeds, {**fixed, bid: bad})
    weight /= 2.0
    np.testing.assert_array_equal(probs(), first)


def test_the_same_parameters_are_bound_once_and_another_array_at_the_next_call(tmp_path, monkeypatch):
    """`Executable.given` gives the same read-only mapping while the model's params hold the
    same arrays, which the layout binds without looking at each, and an input of its dtype
    is bound as it is; an array put in a parameter's place is checked and bound at the next
    call, and a bad one is still refused."""
    path = write(tmp_path, "mlp.dl", MLP)
    model = DlcModel(str(path), backend="native").load_weights(
        str(initial_weights(path, tmp_path / "w.npz", np.float32))
    )
    x = np.load(_mlp_data(tmp_path))["x"][:5]
    first = model.predict({"x": x})["probs"]
    exe = model.engine.predict_exe
    assert exe.given(model.params) is exe.given(model.params)
    lay = next(iter(exe.layouts.values()))
    assert lay.held[exe.program.inputs["x"]] is x  # not copied
    bound = []
    monkeypatch.setattr(
        type(lay), "bind", lambda self, slot, a, bind=type(lay).bind: bound.append(slot) or bind(self, slot, a)
    )
    np.testing.assert_array_equal(model.predict({"x": x})["probs"], first)
    assert not set(bound) & set(exe.program.params.values())
    name = next(n for n, a in model.params.items() if a.ndim == 2)
    model.params[name] = model.params[name] * np.float32(2)
    assert not np.allclose(model.predict({"x": x})["probs"], first)
    assert exe.program.params[name] in bound
    model.params[name] = model.params[name][:-1]
    with pytest.raises(DlcError, match=rf"^model.params does not match the model: {re.escape(name)} is \[5, 16\]"):
        model.predict({"x": x})
    with pytest.raises(TypeError, match="needs"):  # the engine, called without the model, still refuses it
        model.engine.predict(model.params, {"x": x})


# ---- item 8: sizes too small for a window -----------------------------------------------------------------
CONV = """model m {
    input  x: f32[B, 3, T]
    target y: i32[B]
    h = conv1d(x, 4, 5)
    logits = dense(max(h, 2), 2)
    loss   sparse_cross_entropy(logits, y)
    output p = softmax(logits)
}
"""


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("length", [2, 3, 4])
def test_a_sequence_shorter_than_the_window_is_a_located_error(tmp_path, backend, length):
    path = write(tmp_path, "conv.dl", CONV)
    weights = initial_weights(path, tmp_path / "w.npz")
    np.savez(tmp_path / "short.npz", x=np.ones((2, 3, length), np.float32))
    r = dlc(
        "predict",
        path,
        "--weights",
        weights,
        "--input",
        tmp_path / "short.npz",
        "--output",
        tmp_path / "o.npz",
        "--backend",
        backend,
    )
    assert r.returncode == 1, r.stderr
    where = "conv.dl:4:9" if length < 4 else "conv.dl:5:20"  # the convolution, or the max over nothing
    assert f"{where}: error: the inputs are too small" in r.stderr and f"T = {length}" in r.stderr
    np.savez(tmp_path / "long.npz", x=np.ones((2, 3, 5), np.float32))
    r = dlc(
        "predict",
        path,
        "--weights",
        weights,
        "--input",
        tmp_path / "long.npz",
        "--output",
        tmp_path / "o.npz",
        "--backend",
        backend,
    )
    assert r.returncode == 0, r.stderr


def test_gradcheck_picks_sizes_the_window_fits(tmp_path):
    path = write(tmp_path, "conv.dl", CONV)
    r = dlc("gradcheck", path)
    assert r.returncode == 0, r.stderr
    assert "T=5" in r.stdout and "all 4 parameters pass" in r.stdout


# ---- item 11: NaN propagates as in numpy -------------------------------------------------------------------
NAN_OPS = """model m {
    input x: f32[B, 4]
    input z: f32[B, 4]
    output mx = maximum(x, z)
    output mn = minimum(x, z)
    output relu_x = relu(x)
    output rowmax = max(x, 1)
    output arg = argmax(x, 1)
    output bce = binary_cross_entropy(sigmoid(x), sigmoid(z))
}
"""


def test_nan_propagates_through_maximum_minimum_and_max_reductions(tmp_path):
    path = write(tmp_path, "nan.dl", NAN_OPS)
    x = np.array([[1, np.nan, 3, 0], [np.nan, 2, 5, 1], [1, 2, 3, 4]], np.float32)
    z = np.array([[np.nan, 1, 1, 1], [0, 0, 9, 9], [0, 5, 0, 5]], np.float32)
    out = {}
    for b in ENGINES:
        model = DlcModel(str(path), backend=b)
        # the engines themselves: the API refuses data that is not finite (as it refuses such files)
        out[b] = model.engine.predict({}, {"x": x, "z": z})
    for name, ref in out["reference"].items():
        np.testing.assert_array_equal(out["native"][name], ref, err_msg=name)
    assert np.isnan(out["native"]["mx"][0, :2]).all() and np.isnan(out["native"]["rowmax"][:2]).all()
    assert list(out["native"]["arg"]) == [1, 0, 3]
    assert np.isnan(out["native"]["bce"]).all() or np.isnan(out["native"]["bce"][:2]).all()


# ---- item 13: random_normal is compiled; a fallback is a warning; --backend native never falls back ------------
NORMAL_NOISE = """model m {
    input  x: f32[B, 4]
    target y: f32[B, 4]
    out = dense(x + 0.1 * random_normal(B, 4), 4)
    loss  mean((out - y) ^ 2)
}
train m { data = "data.npz"  epochs = 1  batch = 8 }
"""

ORTHOGONAL = """model m {
    input  x: f32[B, 4]
    target y: f32[B, 4]
    out = dense(x @ random_orthogonal(4, 4), 4)
    loss  mean((out - y) ^ 2)
}
train m { data = "data.npz"  epochs = 1  batch = 8 }
"""


def _regression_data(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz",
        x=rng.normal(size=(16, 4)).astype(np.float32),
        y=rng.normal(size=(16, 4)).astype(np.float32),
    )


def test_a_denoising_model_trains_natively(tmp_path):
    _regression_data(tmp_path)
    path = write(tmp_path, "noise.dl", NORMAL_NOISE)
    r = dlc("train", path, "--backend", "native", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "reference" not in r.stderr


def test_a_fallback_warns_with_the_operation_and_line_and_native_refuses(tmp_path):
    _regression_data(tmp_path)
    path = write(tmp_path, "ortho.dl", ORTHOGONAL)
    r = dlc("train", path, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "ortho.dl:4:21: warning: the native backend does not compile random orthogonal" in r.stderr
    assert "running on the slow reference engine" in r.stderr
    r = dlc("train", path, "--backend", "native", "--out", tmp_path / "run2")
    assert r.returncode == 1 and "ortho.dl:4:" in r.stderr and "random orthogonal" in r.stderr, r.stderr
    assert "warning" not in r.stderr


# ---- integer reductions and f64 comparisons compile (they built float IR on integers) ----------------------
INT_REDUCTIONS = """model m {
    input  x: f32[B, 6]
    target y: i32[B]
    logits = dense(x, 3)
    loss   sparse_cross_entropy(logits, y)
    metric correct = sum(argmax(logits, 1) == y)
    metric top = max(argmax(logits, 1), 0)
    output f = cast(x > 0.0, "f64") * 2.0
    output g = maximum(cast(x, "f64"), 0.5) > 0.7
}
"""


def test_integer_reductions_and_f64_comparisons_match_the_reference(tmp_path):
    path = write(tmp_path, "ints.dl", INT_REDUCTIONS)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 6)).astype(np.float32), rng.integers(0, 3, 20).astype(np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got = {}
    for b in ENGINES:
        model = DlcModel(str(path), backend=b)
        model.params = {k: np.asarray(v, np.float32) for k, v in gc.init_params(model.train_model).items()}
        got[b] = model.evaluate(str(tmp_path / "d.npz"), batch=7), model.predict({"x": x})
    assert got["native"][0] == pytest.approx(got["reference"][0], rel=1e-6)
    for name in ("f", "g"):
        np.testing.assert_array_equal(got["native"][1][name], got["reference"][1][name])


# ---- item 4 through the trainer: the printed test figures are the restored checkpoint's -------------------
RESTORE = (
    MLP
    + """
train m {
    data       = "data.npz"
    test       = split(0.3)
    validation = split(0.3)
    batch      = 8
    epochs     = 12
    optimizer  = adam(lr = 0.05)
    early_stop = patience(2, monitor = val_loss, restore_best = true)
}
"""
)


@pytest.mark.parametrize("backend", ENGINES)
def test_printed_test_metrics_are_those_of_the_checkpoint_restored(tmp_path, backend):
    """lr 0.05 on random labels overfits: validation loss rises, early stopping restores
    best.npz, and the test line printed must be `dlc eval` of best.npz, not of last.npz."""
    _mlp_data(tmp_path)
    path = write(tmp_path, "restore.dl", RESTORE)
    r = dlc("train", path, "--out", tmp_path / "run", "--backend", backend)
    assert r.returncode == 0, r.stderr
    printed = [line for line in r.stdout.splitlines() if line.startswith("test: ")][-1]
    best = dlc("eval", path, "--weights", tmp_path / "run" / "best.npz", "--backend", backend)
    last = dlc("eval", path, "--weights", tmp_path / "run" / "last.npz", "--backend", backend)
    assert best.returncode == 0, best.stderr
    assert printed == "test: " + best.stdout.strip()
    assert best.stdout != last.stdout, "the run should have stopped after its best epoch"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_thread_count_from_the_environment_is_a_clear_error_in_the_api(tmp_path, monkeypatch, value):
    path = write(tmp_path, "mlp.dl", MLP)
    model = DlcModel(str(path), backend="native").load_weights(initial_weights(path, tmp_path / "w.npz"))
    monkeypatch.setenv("DLC_NUM_THREADS", value)
    with pytest.raises(DlcError, match="DLC_NUM_THREADS needs a whole number"):
        model.predict({"x": np.ones((2, 6), np.float32)})


F64_WINDOWS = """model m {
    input  x: f32[B, 4]
    param  w: f32[4, 3] = glorot_uniform
    output y = cast(cast(x, "f64") @ cast(w, "f64"), "f32")
    output z = cast(max_pool(cast(reshape(x, B, 1, 2, 2), "f64"), 2), "f32")
}
"""


def test_a_contraction_or_window_on_f64_is_refused_natively_and_runs_on_the_reference(tmp_path, capsys):
    """The GEMM and the window kernels compute in f32: on f64 they were an internal error
    of LLVM's IR builder; now the op and its line, and `auto` falls back with a warning."""
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.native.lower import NotLowerable
    from dlc.runtime.engines.backends import make_engine

    model = load(write(tmp_path, "f64.dl", F64_WINDOWS)).build(None, training=False)
    with pytest.raises(NotLowerable) as e:
        make_engine("native", model, model)
    assert "matmul in f32 only, not f64" in e.value.message and e.value.span.line == 4
    engine = make_engine("auto", model, model)
    assert "running on the slow reference engine" in capsys.readouterr().err
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    out = engine.predict({"w": w}, {"x": x})
    np.testing.assert_allclose(out["y"], x.astype(np.float64) @ w, rtol=1e-6)
    np.testing.assert_allclose(out["z"].reshape(3), x.max(axis=1), rtol=1e-6)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_a_sequence_longer_than_the_learned_positions_is_refused(backend):
    """P[0:T] of 64 learned positions read past P at T = 100 (the native engine gave NaN from
    whatever lay there): the stop of a slice must lie within its operand."""
    from dlc.runtime.training.trainer import initial_parameters

    root = Path(__file__).resolve().parents[2]
    model = DlcModel(str(root / "examples" / "transformer_classifier.dl"), backend=backend)
    model.params = initial_parameters(model.eval_model, 1)
    with pytest.raises(DlcError) as e:
        model.engine.predict(model.params, {"tokens": np.zeros((1, 100), np.int32)})
    assert e.value.message == "the inputs are too large for this slice: it needs T <= 64, but T = 100"
    assert model.engine.predict(model.params, {"tokens": np.zeros((1, 64), np.int32)})["probs"].shape == (1, 10)
