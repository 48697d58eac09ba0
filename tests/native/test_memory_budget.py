"""Memory budget (runtime/engines/budget.py): a model or batch that cannot fit in memory is
refused with the numbers before anything is allocated, and the native engine holds only the
memory training needs."""

import os
import re
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.api import DlcModel
from dlc.runtime.engines import budget
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call
from helpers.cli import failure


ENGINES = ["reference", "native"]

# 100 -> 2000 -> 10: 222,010 parameters, 867.2 KiB; Adam keeps two more of each trained one
WIDE = """
model wide {
    input  x: f32[B, 100]
    target y: i32[B]
    h = dense(x, 2000, relu)
    logits = dense(h, 10)
    loss   sparse_cross_entropy(logits, y)
    output scores = logits
}
train wide { data = "d.npz"  epochs = 1  optimizer = adam(lr = 0.01) }
"""

HUGE = """
model huge {
    input  x: f32[B, 250000]
    target y: i32[B]
    param W: f32[100000, 250000]
    loss   sparse_cross_entropy(x @ transpose(W), y)
}
train huge { data = "d.npz"  epochs = 1  batch = 4 }
"""


def quiet(msg):
    pass


def wide_model(tmp_path, backend) -> DlcModel:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x=rng.standard_normal((256, 100)).astype(np.float32),
        y=rng.integers(0, 10, 256).astype(np.int32),
    )
    (tmp_path / "wide.dl").write_text(WIDE)
    return DlcModel(str(tmp_path / "wide.dl"), backend=backend)


# ---- memory: refused before allocation ---------------------------------------------------------------
@pytest.mark.parametrize("backend", ENGINES)
def test_a_batch_that_does_not_fit_the_memory_limit_is_refused_with_the_numbers(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("DLC_MEMORY_LIMIT", "4.5M")
    model = wide_model(tmp_path, backend)
    with pytest.raises(DlcError) as e:
        model.train(out=str(tmp_path / "run"), log=quiet, batch=64)
    msg = e.value.message
    assert re.match(
        r"the train step needs [\d.]+ MiB for batch 64 \(parameters 867\.2 KiB, "
        r"gradients 867\.2 KiB, optimizer state 1\.7 MiB, activations [\d.]+ (KiB|MiB)\); "
        r"4\.5 MiB is available: try batch <= \d+$",
        msg,
    ), msg
    # at the model's declaration, with its layers by the bytes of their values: h's 2000 per example first
    assert (e.value.span.line, e.value.span.col) == (2, 1)
    layers = [
        (re.match(r"layer (\w+): \d+% of the values the step computes$", note)[1], span.text())
        for note, span in e.value.notes
    ]
    assert layers[0] == ("h", "h = dense(x, 2000, relu)"), e.value.notes
    assert sorted(layers[1:]) == [("logits", "logits = dense(h, 10)"), ("loss", "sparse_cross_entropy(logits, y)")]
    fits = int(msg.rsplit(" ", 1)[1])
    assert 1 <= fits < 64
    # the batch named fits, the next one does not
    model.train(out=str(tmp_path / "run"), log=quiet, batch=fits)
    with pytest.raises(DlcError, match=f"for batch {fits + 1} "):
        wide_model(tmp_path, backend).train(out=str(tmp_path / "run"), log=quiet, batch=fits + 1, overwrite=True)


@pytest.mark.parametrize("backend", ENGINES)
def test_evaluation_and_prediction_are_refused_too(tmp_path, monkeypatch, backend):
    model = wide_model(tmp_path, backend)
    model.train(out=str(tmp_path / "run"), log=quiet, batch=16)
    # room for the parameters and, in a prediction, their copies packed for the GEMMs
    monkeypatch.setenv("DLC_MEMORY_LIMIT", "2000K")
    x = np.zeros((256, 100), np.float32)
    for use in (lambda: model.evaluate(batch=256, log=quiet), lambda: model.predict(x, batch=256)):
        with pytest.raises(
            DlcError,
            match=r"^a forward pass needs [\d.]+ MiB for batch 256 "
            r"\(parameters 867\.2 KiB, activations .*\); 2\.0 MiB is available: "
            r"try batch <= \d+$",
        ):
            use()


def test_dlc_bench_refuses_a_random_batch_that_cannot_fit_before_making_it(tmp_path, monkeypatch, capsys):
    # its inputs are made before the engine checks the step: sampled in 8 bytes a value, then narrowed
    monkeypatch.setenv("DLC_MEMORY_LIMIT", "4.5M")
    (tmp_path / "wide.dl").write_text(WIDE)
    err = failure(["bench", str(tmp_path / "wide.dl"), "--batch", "100000"], capsys)
    m = re.search(
        r"wide\.dl:2:1: error: dlc bench's random batch needs ([\d.]+) MiB for batch 100000 \(inputs \1 MiB\); "
        r"4\.5 MiB is available: try batch <= (\d+)$",
        err.splitlines()[0],
    )
    assert m, err
    assert int(m[2]) == int(4.5 * 2**20) // (12 * 101)  # x's 100 floats and y's index a row, 12 bytes each


def test_the_memory_limit_must_be_a_size(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_MEMORY_LIMIT", "lots")
    with pytest.raises(DlcError, match="DLC_MEMORY_LIMIT must be a size such as 512M or 20G, got 'lots'"):
        wide_model(tmp_path, "reference").train(out=str(tmp_path / "run"), log=quiet, batch=8)


def _at_most_16_gib():
    # a guard: a check that did not happen must not take this machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))


@pytest.mark.parametrize("backend", ENGINES)
def test_a_huge_parameter_is_refused_by_dlc_train_before_its_initializer(tmp_path, backend):
    (tmp_path / "huge.dl").write_text(HUGE)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 250000), np.float32), y=np.zeros(4, np.int32))
    env = {k: v for k, v in os.environ.items() if k != "DLC_MEMORY_LIMIT"}
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "train", str(tmp_path / "huge.dl"), "--backend", backend],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_at_most_16_gib,
    )
    assert r.returncode == 1, r.stderr
    assert time.perf_counter() - start < 60
    assert "MemoryError" not in r.stderr and "internal error" not in r.stderr
    # at the parameter's declaration, with what training it needs
    assert re.search(
        r"huge\.dl:5:\d+: error: training model huge needs 372\.5 GiB before its first batch "
        r"\(parameters 93\.1 GiB, gradients 93\.1 GiB, optimizer state 186\.3 GiB\); [\d.]+ GiB is "
        r"available: its largest parameter, W: f32\[100000, 250000\], alone takes 93\.1 GiB",
        r.stderr,
    ), r.stderr


def refused_in_a_gib(text: str):
    """The refusal of model cls of `text` (as cls.dl) by a budget of 1 GiB for its parameters."""
    model = load_text(text, "cls.dl").build(None, training=True)
    with budget.capped(1 << 30, None), pytest.raises(DlcError) as e:
        budget.require_model(model, [p.name for p in model.params], 2)
    return e


def test_a_huge_parameter_of_a_library_layer_is_refused_at_the_users_call(monkeypatch):
    """The parameter is declared in the standard library: the refusal points at the user's call of the
    layer, the library's declaration a note."""
    monkeypatch.delenv("DLC_MEMORY_LIMIT", raising=False)
    e = refused_in_a_gib(
        "model cls {\n    input x: f32[B, 250000]\n    target y: i32[B]\n    p = dense(x, 250000)\n"
        "    loss sparse_cross_entropy(p, y)\n}\n"
    )
    assert (e.value.span.file, e.value.span.line, e.value.span.text()) == ("cls.dl", 4, "dense(x, 250000)")
    assert "its largest parameter, p.W: f32[250000, 250000]" in e.value.message
    assert [(note, span.file, span.line) for note, span in e.value.notes] == [
        ("inside the standard library here", "<stdlib>/layers.dl", 5)
    ]


def test_a_huge_parameter_deep_inside_the_library_has_a_note_at_each_call_back_to_the_users(monkeypatch):
    """bidirectional calls lstm, which declares the parameter: after the declaration, a note at
    bidirectional's call of lstm, the way back to the user's call the error is at."""
    monkeypatch.delenv("DLC_MEMORY_LIMIT", raising=False)
    e = refused_in_a_gib(
        "model cls {\n    input x: f32[B, T, 8]\n    target y: f32[B, T, 200000]\n"
        "    p = bidirectional(x, lstm, 100000)\n    loss mse(p, y)\n}\n"
    )
    assert (e.value.span.file, e.value.span.line) == ("cls.dl", 4)
    notes = [(note, span.file, span.text()) for note, span in e.value.notes]
    assert notes[0][:2] == ("inside the standard library here", "<stdlib>/recurrent.dl")
    assert notes[0][2].startswith("param Wh: ")
    assert notes[1:] == [("called from here", "<stdlib>/recurrent.dl", "padded(xs, units)")]


def test_the_native_engine_refuses_before_allocating_its_flat_arrays(monkeypatch):
    program = load_text(HUGE)
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    monkeypatch.setattr(np, "zeros", None)  # any allocation would fail otherwise
    with pytest.raises(DlcError, match=r"^training model huge needs 372\.5 GiB before its first batch"):
        NativeEngine(train, evaluation, make_optimizer(Call("adam", [], {"lr": 0.01})), ["W"])


@pytest.mark.parametrize("optimizer, slots", [("sgd", 0), ("rmsprop", 1), ("adam", 2)])
def test_the_native_engine_keeps_only_the_optimizer_state_it_uses(optimizer, slots):
    program = load_text(WIDE)
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    engine = NativeEngine(
        train, evaluation, make_optimizer(Call(optimizer, [], {"lr": 0.01})), [p.name for p in train.params]
    )
    assert [a.size for a in engine.state.values()] == [222_010] * slots


def test_the_native_engine_reports_the_memory_training_holds():
    program = load_text(WIDE)
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    opt = make_optimizer(Call("adam", [], {"lr": 0.01}))
    names = [p.name for p in train.params]
    engine = NativeEngine(train, evaluation, opt, names)
    params = {p.name: np.zeros(p.type.shape, np.float32) for p in train.params}
    state = opt.init(params)
    activations = {}
    for batch in (8, 64):
        feeds = {"x": np.ones((batch, 100), np.float32), "y": np.zeros(batch, np.int32)}
        engine.train_step(params, state, feeds, 0.01, 1, np.array([0, 1], np.int32))
        parts = engine.train_memory()
        assert {k: parts[k] for k in ("parameters", "gradients", "optimizer state")} == {
            "parameters": 222_010 * 4,
            "gradients": 222_010 * 4,
            "optimizer state": 2 * 222_010 * 4,
        }
        activations[batch] = parts["activations"]
        # the arena of the temporaries (the hidden layer among them) and the buffers of the
        # inputs; a few scalars besides (the loss)
        arena = list(engine.train_exe.plans.values())[-1].arena
        assert batch * 2000 * 4 < arena <= activations[batch] <= arena + feeds["x"].nbytes + feeds["y"].nbytes + 256
    assert activations[64] > activations[8]


# ---- the train block's memory = ... ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ENGINES)
def test_memory_in_the_train_block_refuses_a_batch_that_does_not_fit_naming_the_largest_that_does(
    tmp_path, monkeypatch, backend
):
    monkeypatch.delenv("DLC_MEMORY_LIMIT", raising=False)
    wide_model(tmp_path, backend)  # its data
    (tmp_path / "wide.dl").write_text(WIDE.replace("epochs = 1", "epochs = 1  memory = 4.5MB"))
    with pytest.raises(DlcError) as e:
        DlcModel(str(tmp_path / "wide.dl"), backend=backend).train(out=str(tmp_path / "run"), log=quiet, batch=64)
    msg = e.value.message
    assert re.match(
        r"the train step needs [\d.]+ MiB for batch 64 \(.*\); memory = 4\.5 MiB: try batch <= \d+$", msg
    ), msg
    assert e.value.span.text() == "memory = 4.5MB"  # the error points at the setting
    fits = int(msg.rsplit(" ", 1)[1])
    assert 1 <= fits < 64
    trained = DlcModel(str(tmp_path / "wide.dl"), backend=backend)
    trained.train(out=str(tmp_path / "run"), log=quiet, batch=fits)
    with pytest.raises(DlcError, match=f"for batch {fits + 1} "):
        DlcModel(str(tmp_path / "wide.dl"), backend=backend).train(
            out=str(tmp_path / "run"), log=quiet, batch=fits + 1, overwrite=True
        )
    # outside the run the setting holds no more: the trained model predicts a larger batch
    assert trained.predict(np.zeros((256, 100), np.float32), batch=256)["scores"].shape == (256, 10)


def test_memory_is_given_as_a_size_in_the_block_in_quotes_or_as_a_flag(tmp_path, monkeypatch, capsys):
    from dlc.runtime.cli import main
    from dlc.runtime.training.config import make_config

    monkeypatch.delenv("DLC_MEMORY_LIMIT", raising=False)
    wide_model(tmp_path, "native")  # its data and its file
    for written, nbytes in (("2GB", 2 << 30), ('"512M"', 512 << 20), ("1.5KiB", 1536), ("4096", 4096)):
        program = load_text(WIDE.replace("epochs = 1", f"epochs = 1  memory = {written}"))
        assert make_config(program, "wide", {}, require_data=False).memory == nbytes
    program = load_text(WIDE)
    assert make_config(program, "wide", {"memory": "3G"}, require_data=False).memory == 3 << 30
    with pytest.raises(DlcError, match=r"memory must be a size such as 2GB or 512MB, got 'lots'"):
        make_config(program, "wide", {"memory": "lots"}, require_data=False)
    with pytest.raises(DlcError, match=r"; memory = 4\.5 MiB: try batch <= \d+$"):
        DlcModel(str(tmp_path / "wide.dl"), backend="reference").train(
            out=str(tmp_path / "run"), log=quiet, batch=64, memory="4.5M"
        )
    assert (
        main(
            [
                "train",
                str(tmp_path / "wide.dl"),
                "--out",
                str(tmp_path / "run"),
                "--memory",
                "4.5M",
                "--batch",
                "64",
                "--quiet",
            ]
        )
        == 2
    )  # located at the flag: a usage error
    assert "memory = 4.5 MiB: try batch <=" in capsys.readouterr().err
