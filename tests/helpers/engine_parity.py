"""The native engine trained against the reference engine: five steps each, the same losses and parameters."""

import numpy as np

from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.gradcheck import init_params, sample_inputs


def five_steps(program, engine_class, optimizer, sizes, before_step=None, **kw):
    """Five steps of `program` on a new engine (`kw` its options); `before_step(engine, step)`
    is called before each."""
    train, evaluation = program.build(training=True), program.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    opt = make_optimizer(optimizer)
    engine = engine_class(train, evaluation, opt, trainable, **kw)
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    state = opt.init({n: params[n] for n in trainable})
    losses = []
    for step in range(1, 6):
        feeds = sample_inputs(train, sizes, seed=step)
        feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
        if before_step is not None:
            before_step(engine, step)
        losses.append(
            engine.train_step(params, state, feeds, optimizer.kwargs["lr"], step, np.array([0, step], np.int32))["loss"]
        )
    return params, losses, engine, feeds


def assert_same_training(program, optimizer, sizes, **kw):
    ref, ref_losses, _, _ = five_steps(program, ReferenceEngine, optimizer, sizes, **kw)
    nat, nat_losses, engine, feeds = five_steps(program, NativeEngine, optimizer, sizes, **kw)
    np.testing.assert_allclose(nat_losses, ref_losses, rtol=1e-4)
    for name in ref:
        # parameters the loss does not depend on (an attention key bias: softmax cancels it)
        # drift by rounding noise alone; below 1e-4 they are compared absolutely
        scale = max(np.abs(ref[name]).max(), 1e-4)
        assert np.abs(nat[name] - ref[name]).max() / scale < 1e-4, name
    return engine, nat, feeds
