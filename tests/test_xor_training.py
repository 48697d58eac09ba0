"""The reference interpreter trains the XOR MLP with plain SGD."""
from pathlib import Path

import numpy as np

from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.frontend.loader import load
from dlc.runtime.engines import interpreter

EXAMPLE = Path(__file__).parent.parent / "examples" / "xor_mlp.dl"


def test_xor_mlp_reaches_full_accuracy_with_sgd():
    model = load(str(EXAMPLE)).build(training=True)
    step = train_step(model.graph)
    params = interpreter.run(model.init, {"rng": np.array([0, 0], np.int32)}, {})
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    feeds = {"x": x, "y": y, "rng": np.array([0, 0], np.int32)}
    first = None
    for epoch in range(2000):
        out = interpreter.run(step, feeds, params)
        first = first if first is not None else float(out["loss"])
        for p in model.params:
            params[p.name] = params[p.name] - 0.5 * out[f"grad:{p.name}"]
    out = interpreter.run(step, feeds, params)
    assert float(out["metric:accuracy"]) == 1.0
    assert float(out["loss"]) < 0.1 * first
    probs = interpreter.run(load(str(EXAMPLE)).build(training=False).graph, feeds, params)["output:prob"]
    assert np.array_equal(probs > 0.5, y > 0.5)
