"""Training to the same bits on any thread count and target: a few native Adam steps of
examples in each configuration (1, 2, 3, 7 threads; the host's target and DLC_TARGET=avx2), each
in its own process, since the target is chosen once per process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = [("host", 1), ("host", 2), ("host", 3), ("host", 7), ("avx2", 2)]

STEPS = """
import sys, numpy as np
from dlc.compiler.frontend.loader import load
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.compiler.frontend.settings import Call
out, names = sys.argv[1], sys.argv[2:]
saved = {}
for name in names:
    program = load(name)
    train, evaluation = program.build(training=True), program.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    optimizer = make_optimizer(Call("adam", [], {"lr": 1e-3}))
    engine = NativeEngine(train, evaluation, optimizer, trainable)
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    state = optimizer.init({n: params[n] for n in trainable})
    for step in range(1, 4):
        feeds = sample_inputs(train, {"B": 4, "T": 12, "S": 10, "K": 3}, seed=step)
        feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
        engine.train_step(params, state, feeds, 1e-3, step, np.array([0, step], np.int32))
    saved.update({name + "/" + k: v for k, v in params.items()})
np.savez(out, **saved)
"""


def trained(names: list, target: str, threads: int, folder: Path) -> dict:
    out = folder / f"{target}-{threads}.npz"
    env = {**os.environ, "DLC_TARGET": target, "DLC_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", STEPS, str(out), *[str(EXAMPLES / f"{n}.dl") for n in names]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(np.load(out))


def assert_bit_identical(names: list, folder: Path):
    first, *others = [(config, trained(names, *config, folder)) for config in CONFIGS]
    for config, params in others:
        differ = [k for k in first[1] if not np.array_equal(first[1][k], params[k])]
        assert not differ, f"{json.dumps(config)} differs from {first[0]} in {differ[:5]}"
