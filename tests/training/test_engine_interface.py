"""The engines and their interface (runtime/engines/protocol.py `Engine`): every engine class
defines every method of the protocol itself, with the protocol's signature (nothing comes
through forwarding), and every engine has its attributes; a data-parallel engine of one
rank steps, evaluates and predicts as the engine it wraps."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines.distributed import DataParallel, ReplicaMean, World
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.protocol import Engine
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.config import batch_statistics
from dlc.runtime.training.gradcheck import init_params
from dlc.runtime.training.interrupt import Interrupt
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call
from dlc.runtime.training.trainer import initial_parameters

from helpers.programs import XOR

ENGINES = (ReferenceEngine, NativeEngine, DataParallel)
METHODS = sorted(
    name for name, member in vars(Engine).items() if inspect.isfunction(member) and not name.startswith("_")
)
ATTRIBUTES = sorted(Engine.__annotations__)

MODEL = """model tiny {
    input  x: f32[B, 4]
    target y: i32[B]
    logits = x |> dense(8) |> batchnorm |> relu |> dense(3)
    output probs = softmax(logits)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
}
"""


def test_the_protocol_names_the_steps_and_the_attributes_callers_read():
    assert METHODS == ["apply_update", "evaluate", "gradients", "predict", "train_step"]
    assert ATTRIBUTES == ["name", "optimizer", "replicas", "trainable", "world"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("engine_class", ENGINES, ids=lambda c: c.__name__)
def test_each_engine_defines_each_method_with_the_protocols_signature(engine_class, method):
    own = vars(engine_class).get(method)
    assert inspect.isfunction(own), f"{engine_class.__name__} does not define {method}"
    assert inspect.signature(own) == inspect.signature(getattr(Engine, method))


@pytest.mark.parametrize("engine_class", ENGINES, ids=lambda c: c.__name__)
def test_no_engine_forwards_what_it_does_not_define(engine_class):
    assert "__getattr__" not in vars(engine_class) and "__getattribute__" not in vars(engine_class)


class Done:
    """A collective that finished at once."""

    def Test(self) -> bool:
        return True


class OneProcess:
    """An MPI communicator of one process, as World uses it (every collective leaves the
    arrays as they are), and the constants of mpi4py's MPI it reads."""

    rank, size = 0, 1
    IN_PLACE = SUM = COMM_TYPE_SHARED = None

    def Split_type(self, kind):
        return self

    def Iallreduce(self, send, receive, op):
        return Done()

    def Ibarrier(self):
        return Done()


def setup(engine_class, split: bool, buckets: int = 0):
    """An engine of `engine_class` (the native one, `split` into gradients and update or, with
    `buckets`, one call handing its gradients over in buckets; or the reference one) for
    MODEL, Adam, and the parameters and optimizer state it starts from."""
    train, ev = (load_text(MODEL, "tiny.dl").build(training=training) for training in (True, False))
    trainable = [p.name for p in train.params if p.trainable]
    optimizer = make_optimizer(Call("adam", [], {"lr": 1e-2}))
    engine = (
        NativeEngine(train, ev, optimizer, trainable, split=split, buckets=buckets)
        if engine_class is NativeEngine
        else ReferenceEngine(train, ev, optimizer, trainable)
    )
    params = initial_parameters(train, 0)
    return (
        engine,
        optimizer,
        trainable,
        params,
        optimizer.init({n: params[n] for n in trainable}),
        batch_statistics(train),
    )


def one_rank(engine, statistics: list, monkeypatch) -> DataParallel:
    monkeypatch.setenv("DLC_NUM_THREADS", "1")  # World gives each rank its share of the cores
    comm = OneProcess()
    return DataParallel(engine, World(comm, comm), Interrupt(), statistics)


@pytest.mark.parametrize("engine_class", ENGINES, ids=lambda c: c.__name__)
def test_each_engine_has_the_attributes(engine_class, monkeypatch):
    wrapped = engine_class is DataParallel
    engine, optimizer, trainable, _, _, statistics = setup(NativeEngine if wrapped else engine_class, split=wrapped)
    inner = engine
    if wrapped:
        engine = one_rank(engine, statistics, monkeypatch)
    assert isinstance(engine, Engine)
    assert engine.name == inner.name and engine.name in ("reference", "native")
    assert engine.trainable == trainable and engine.optimizer is optimizer
    if engine_class is DataParallel:
        assert isinstance(engine.world, World) and isinstance(engine.replicas, ReplicaMean)
        assert inner.replicas is engine.replicas  # the wrapped engine's replica_mean reduces over the ranks
    else:
        assert engine.world is None and engine.replicas is None


@pytest.mark.parametrize(
    "backend, buckets",
    [(ReferenceEngine, 0), (NativeEngine, 0), (NativeEngine, 64)],
    ids=["reference", "native", "native-buckets"],
)
def test_a_data_parallel_engine_of_one_rank_is_its_engine(backend, buckets, monkeypatch):
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((8, 4), dtype=np.float32), "y": rng.integers(0, 3, 8).astype(np.int32)}
    runs = []
    for wrapped in (False, True):
        engine, _, _, params, state, statistics = setup(backend, split=wrapped, buckets=buckets if wrapped else 0)
        if buckets and wrapped:
            assert len(engine.train_exe.buckets) > 1
        if wrapped:
            engine = one_rank(engine, statistics, monkeypatch)
        losses = [
            engine.train_step(params, state, batch, 1e-2, step, np.array([0, step], np.int32))["loss"]
            for step in (1, 2, 3)
        ]
        runs.append(
            (
                losses,
                engine.evaluate(params, batch),
                engine.predict(params, {"x": batch["x"]})["probs"],
                {k: np.array(v) for k, v in params.items()},
            )
        )
    (losses, metrics, probs, params), (dp_losses, dp_metrics, dp_probs, dp_params) = runs
    assert dp_losses == pytest.approx(losses, rel=1e-6) and dp_metrics == pytest.approx(metrics, rel=1e-6)
    np.testing.assert_allclose(dp_probs, probs, rtol=1e-6)
    for name, value in params.items():
        np.testing.assert_allclose(dp_params[name], value, rtol=1e-6, err_msg=name)


def test_gradients_of_an_engine_whose_step_applies_the_update_is_refused():
    program = load_text(XOR)
    train, evaluation = program.build(training=True), program.build(training=False)
    opt = make_optimizer(Call("sgd", [], {"lr": 0.1}))
    engine = NativeEngine(train, evaluation, opt, [p.name for p in train.params])
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    batch = {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.int32)}
    with pytest.raises(DlcError, match="split=True"):
        engine.gradients(params, opt.init(params), batch, np.zeros(2, np.int32))
