"""Shared by the test files: the session's compile cache; the programs and runs of `dlc` that the
tests of the command line, checkpoints, data and progress check; the native engine trained
against the reference engine. Test files import the helpers by name (`from conftest import
write`); the float64 gradient oracle is numeric_helpers.py."""
import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

from dlc.runtime.cli import main
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.reference import ReferenceEngine
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.engines.optim import make_optimizer
from dlc.tools.real_models import without_torchvision_ops

# compiled native code goes to a cache of this test session, not the user's; removed at its end
if "DLC_CACHE_DIR" not in os.environ:
    os.environ["DLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlc-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DLC_CACHE_DIR"], ignore_errors=True)

# the torchvision that CI installs may be a CUDA build that does not load: the tests (and
# transformers, which imports it) take its model definitions without its compiled ops
without_torchvision_ops()


# ---- programs and runs of dlc ------------------------------------------------------------------
XOR = """
model xor {
    input  x: f32[B, 2]
    target y: f32[B, 1]
    h = dense(x, 4, tanh)
    p = dense(h, 1, sigmoid)
    loss   binary_cross_entropy(p, y)
    metric accuracy = binary_accuracy(p, y)
    output prob = p
}
"""


def write(tmp_path, text, train="train xor { data = xor() batch = 4 epochs = 2 optimizer = sgd(lr = 0.5) }",
          name="m.dl"):
    path = tmp_path / name
    path.write_text(text + train + "\n")
    return str(path)


def usage_error(argv, capsys) -> str:
    """The message of an argparse usage error (exit 2) for argv."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: dlc" in err, err
    return err.splitlines()[-1]


def failure(argv, capsys) -> str:
    """The message of a clear error (exit 1) for argv."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and "Traceback" not in err, err
    return err


# a three-class model
# an encoder-decoder: a source and the decoder's input and target
ENC_DEC = """
model m {
    input  src: i32[B, S]
    input  dec_in: i32[B, T]
    target dec_out: i32[B, T]
    enc, h = rnn(embedding(src, 4, 5), 8, return_state = true)
    dec = rnn(embedding(dec_in, 4, 5), 8, state = (h,))
    logits = dense(dec, 4)
    loss   sparse_cross_entropy(logits, dec_out)
    output probs = softmax(logits)
}
"""

CLASSIFIER = """
model clf {
    input  x: f32[B, 2]
    target y: i32[B]
    logits = dense(dense(x, 16, tanh), 3)
    loss   sparse_cross_entropy(logits, y)
    metric accuracy = accuracy(logits, y)
}
"""


# ---- the native engine against the reference engine ----------------------------------------------
def five_steps(program, engine_class, optimizer, sizes, **kw):
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
        losses.append(engine.train_step(params, state, feeds, optimizer.kwargs["lr"], step,
                                        np.array([0, step], np.int32))["loss"])
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
