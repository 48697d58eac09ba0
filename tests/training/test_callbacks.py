"""Callbacks of a training run (runtime/training/callbacks.py): every event with its logs, a
callback that stops the run after an epoch or a step (and the stopped run resumed to the same
parameters), duck-typed objects, errors; and the built-in behaviours as callbacks."""

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.runtime.api import DlcModel
from dlc.runtime.interop import checkpoint
from dlc.runtime.training.callbacks import Callback, Checkpoints, StopTraining
from dlc.runtime.training.early_stop import EarlyStop
from dlc.runtime.training.progress import EpochLines, Step
from dlc.runtime.training.tensorboard import EventLog

from helpers.programs import CLASSIFIER, write

# 48 examples of 3 classes; batch 8: 6 batches an epoch
TRAIN = "train clf { batch = 8 epochs = 3 optimizer = sgd(lr = 0.1) }"


def arrays(n=48, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return {"x": x, "y": (np.arctan2(x[:, 1], x[:, 0]) > 0).astype(np.int32) + (x[:, 0] > 1)}


def model(tmp_path, train=TRAIN) -> DlcModel:
    return DlcModel(write(tmp_path, CLASSIFIER, train), backend="reference")


class Recorder(Callback):
    """Every event, in order, with a copy of its logs."""

    def __init__(self):
        self.events = []

    def on_train_begin(self, logs):
        self.events.append(("train_begin", dict(logs)))

    def on_epoch_begin(self, epoch, logs):
        self.events.append(("epoch_begin", epoch, dict(logs)))

    def on_batch_end(self, step, logs):
        self.events.append(("batch_end", step, dict(logs)))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs):
        self.events.append(("train_end", dict(logs)))

    def of(self, kind):
        return [e[1:] for e in self.events if e[0] == kind]


def train(m, tmp_path, out="run", **kw):
    return m.train(out=str(tmp_path / out), data=arrays(), progress="none", **kw)


# ---- the events ---------------------------------------------------------------------------------------------
def test_a_callback_sees_every_event_with_its_logs(tmp_path):
    rec = Recorder()
    result = train(model(tmp_path), tmp_path, validation=0.25, callbacks=[rec])
    assert rec.events[0] == (
        "train_begin",
        {"epochs": 3, "batches": 5, "examples": 36, "initial_epoch": 0, "initial_step": 0, "steps": 15},
    )
    assert rec.events[-1] == ("train_end", {"stopped": "done", "epochs": 3})
    assert rec.of("epoch_begin") == [(e, {"batch": 0}) for e in range(3)]
    steps = rec.of("batch_end")
    assert [s for s, _ in steps] == list(range(1, 16))
    assert all(
        set(logs) == {"loss", "accuracy", "lr"} and all(isinstance(v, float) for v in logs.values())
        for _, logs in steps
    )
    assert steps[0][1]["lr"] == 0.1
    # each epoch's logs are its row of the history, validation values included
    assert rec.of("epoch_end") == [(e, row) for e, row in enumerate(result.history)]
    assert {"val_loss", "val_accuracy"} <= set(rec.of("epoch_end")[0][1])
    # the last batch's running means are the epoch's means
    assert steps[4][1]["loss"] == pytest.approx(result.history[0]["loss"])
    kinds = [e[0] for e in rec.events]
    assert kinds[:8] == ["train_begin", "epoch_begin"] + ["batch_end"] * 5 + ["epoch_end"]


def test_callbacks_are_objects_with_any_of_the_methods(tmp_path):
    class Losses:  # no base class, one method
        def __init__(self):
            self.losses = []

        def on_epoch_end(self, epoch, logs):
            self.losses.append(logs["loss"])

    losses = Losses()
    result = train(model(tmp_path), tmp_path, callbacks=[losses])
    assert losses.losses == result.history["loss"] and len(losses.losses) == 3


def test_an_object_with_no_hook_is_refused_before_the_run(tmp_path):
    with pytest.raises(
        DlcError, match="a callback has one or more of the methods on_train_begin, .*; Sequential has none"
    ):
        train(model(tmp_path), tmp_path, callbacks=[type("Sequential", (), {})()])
    assert not (tmp_path / "run").exists()


# ---- stopping -----------------------------------------------------------------------------------------------
class StopAfterEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise StopTraining("loss is low enough")


def test_a_callback_stops_the_run_after_an_epoch(tmp_path):
    said, rec = [], Recorder()
    result = model(tmp_path).train(
        out=str(tmp_path / "run"), data=arrays(), log=said.append, progress="epochs", callbacks=[StopAfterEpoch(1), rec]
    )
    assert result.stopped == "stopped" and len(result.history) == 2
    assert "stopped by StopAfterEpoch: loss is low enough" in said
    assert len(rec.of("epoch_end")) == 2  # the callbacks after it saw the epoch that stopped the run
    assert rec.events[-1] == ("train_end", {"stopped": "stopped", "epochs": 2})
    meta = checkpoint.load(tmp_path / "run" / "last.npz")[2]
    assert (meta["epoch"], meta["batch"]) == (2, 0)


class StopAtStep(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, step, logs):
        if step == self.step:
            raise StopTraining()


def test_a_callback_stops_the_run_after_a_step_and_resume_continues_it(tmp_path):
    m = model(tmp_path)
    straight = train(m, tmp_path, out="a")
    said = []
    stopped = m.train(
        out=str(tmp_path / "b"), data=arrays(), log=said.append, progress="none", callbacks=[StopAtStep(8)]
    )
    assert stopped.stopped == "stopped" and len(stopped.history) == 1
    assert any(line.startswith("stopped by StopAtStep: saved ") and "(epoch 2, batch 2)" in line for line in said), said
    meta = checkpoint.load(tmp_path / "b" / "last.npz")[2]
    assert (meta["step"], meta["epoch"], meta["batch"]) == (8, 1, 2)

    rec = Recorder()
    resumed = train(m, tmp_path, out="b", resume=True, callbacks=[rec])
    assert resumed.stopped == "done" and resumed.history["loss"] == straight.history["loss"]
    assert rec.events[0][1]["initial_epoch"] == 1 and rec.events[0][1]["initial_step"] == 8
    assert rec.of("epoch_begin") == [(1, {"batch": 2}), (2, {"batch": 0})]
    assert [s for s, _ in rec.of("batch_end")][0] == 9
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_stop_training_outside_an_epoch_or_a_step_is_an_error(tmp_path):
    class Early:
        def on_train_begin(self, logs):
            raise StopTraining("now")

    with pytest.raises(
        DlcError,
        match="Early.on_train_begin raised StopTraining: a callback stops a run from on_batch_end or on_epoch_end",
    ):
        train(model(tmp_path), tmp_path, callbacks=[Early()])


def test_an_error_in_a_callback_fails_the_run_and_the_others_are_told(tmp_path):
    class Broken:
        def on_epoch_end(self, epoch, logs):
            raise ValueError("broken callback")

    rec = Recorder()
    with pytest.raises(ValueError, match="broken callback"):
        train(model(tmp_path), tmp_path, callbacks=[rec, Broken()])
    assert rec.events[-1] == ("train_end", {"stopped": "error", "epochs": 0})


# ---- the built-in behaviours are callbacks ----------------------------------------------------------------
def test_early_stopping_is_a_callback_that_stops_the_run(tmp_path):
    stop = EarlyStop(None, None, has_validation=False)
    stop.patience = 1
    assert isinstance(stop, Callback)
    stop.on_epoch_end(0, {"loss": 0.5})
    assert stop.improved
    with pytest.raises(StopTraining, match="early stop: loss did not improve for 1 epoch") as e:
        stop.on_epoch_end(1, {"loss": 0.6})
    assert e.value.reason == "early stop" and not stop.improved

    said = []
    m = model(
        tmp_path,
        "train clf { batch = 8 epochs = 50 optimizer = sgd(lr = 5.0) early_stop = patience(1, monitor = loss) }",
    )
    result = m.train(out=str(tmp_path / "run"), data=arrays(), log=said.append, progress="epochs")
    assert result.stopped == "early stop" and len(result.history) < 50
    assert "early stop: loss did not improve for 1 epoch" in said


def test_checkpoints_are_a_callback_that_writes_last_and_best(tmp_path):
    stop = EarlyStop(None, None, has_validation=False)
    params, history = {"w": np.zeros(2, np.float32)}, []
    writer = Checkpoints(tmp_path, params, {}, history, stop, {"model": "m"}, writes=True)
    assert isinstance(writer, Callback)
    writer.on_train_begin({"initial_step": 0})
    for epoch, loss in enumerate([0.5, 0.7]):
        params["w"] += 1  # a step updates the run's parameters in place
        writer.on_batch_end(epoch + 1, {})
        history.append({"epoch": epoch + 1, "loss": loss})
        stop.on_epoch_end(epoch, history[-1])
        writer.on_epoch_end(epoch, history[-1])
    last, _, meta = checkpoint.load(tmp_path / "last.npz")
    best, _, best_meta = checkpoint.load(tmp_path / "best.npz")
    assert last["w"].tolist() == [2, 2] and best["w"].tolist() == [1, 1]  # the second epoch did not improve
    assert (meta["epoch"], meta["step"], meta["batch"], meta["model"]) == (2, 2, 0, "m")
    assert best_meta["history"] == history[:1] and meta["early_stop"] == {"best": 0.5, "bad": 1}
    assert writer.written == ["last.npz", "best.npz"]
    Checkpoints(tmp_path / "other", params, {}, history, stop, {}, writes=False).on_epoch_end(2, {})
    assert not (tmp_path / "other").exists()  # a process that does not write (rank 1 and after)


def test_the_displays_and_the_event_log_are_callbacks():
    assert issubclass(EpochLines, Callback) and issubclass(EventLog, Callback)
    lines = []
    display = EpochLines(lines.append)
    display.on_train_begin({"epochs": 2})
    step = Step(
        step=4,
        steps=8,
        epoch=0,
        epochs=2,
        first=0,
        done=4,
        total=4,
        per_epoch=4,
        totals={"loss": 8.0, "grad_norm": 1.0},
        seen=16,
        fresh=16,
        started=0.0,
        lr=0.01,
    )
    assert dict(step) == {"loss": 0.5, "lr": 0.01}  # a step is the logs of on_batch_end
    display.on_batch_end(4, step)
    display.on_epoch_end(0, {"epoch": 1, "lr": 0.01, "time": 0.2, "loss": 0.5})
    assert lines == ["epoch 1/2  loss 0.5000  0.20 s  50 ms/step"]
