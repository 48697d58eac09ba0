"""Random numbers drawn in a scan body are fresh at every step, the same on both engines
and reproducible from the key (language.md, section 8; architecture.md, Randomness)."""
from __future__ import annotations

import numpy as np

from dlc.compiler.frontend.loader import load_text
from dlc.runtime.engines import interpreter
from dlc.runtime.engines.native import Executable

SOURCE = """
model m {
    input x: f32[B, T, 64]
    output noise = scan t in T carry h = zeros[B, 64] {
        h = random_uniform(B, 64)
        yield h
    }
    output masks = scan t in T carry h = zeros[B, 64] {
        h = dropout(x[:, t], 0.5)
        yield h
    }
}
"""


def test_every_step_of_a_scan_draws_fresh_numbers_on_both_engines():
    graph = load_text(SOURCE, "m.dl").build(training=True).graph
    feeds = {"x": np.ones((2, 5, 64), np.float32), "rng": np.array([7, 3], np.int32)}
    reference = interpreter.run(graph, feeds, {}, float_dtype="f32")
    exe = Executable(graph)
    arrays, _ = exe.run(feeds, {})
    for name in ("output:noise", "output:masks"):
        steps = reference[name]                                 # [B, T, 64]
        for t in range(1, steps.shape[1]):
            assert not np.array_equal(steps[:, t], steps[:, 0]), f"{name}: step {t} repeats step 0"
        native = arrays[exe.program.outputs[name]][:steps.size].reshape(steps.shape)
        np.testing.assert_allclose(native, steps, rtol=1e-6)
    kept = reference["output:masks"] != 0
    assert 0.3 < kept.mean() < 0.7 and set(np.unique(reference["output:masks"])) <= {0.0, 2.0}
    again = interpreter.run(graph, feeds, {}, float_dtype="f32")
    np.testing.assert_array_equal(again["output:noise"], reference["output:noise"])
