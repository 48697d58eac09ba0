"""Random numbers drawn in a scan body are fresh at every step, the same on both engines
and reproducible from the key (language.md, section 8; architecture.md, Randomness); a
long draw is computed in chunks, and the initializers keep only the parameters."""

from __future__ import annotations

import numpy as np

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import Tensor
from dlc.compiler.ir.primitives import DRAW_CHUNK, PRIMITIVES, _draws
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
        steps = reference[name]  # [B, T, 64]
        for t in range(1, steps.shape[1]):
            assert not np.array_equal(steps[:, t], steps[:, 0]), f"{name}: step {t} repeats step 0"
        native = arrays[exe.program.outputs[name]][: steps.size].reshape(steps.shape)
        np.testing.assert_allclose(native, steps, rtol=1e-6)
    kept = reference["output:masks"] != 0
    assert 0.3 < kept.mean() < 0.7 and set(np.unique(reference["output:masks"])) <= {0.0, 2.0}
    again = interpreter.run(graph, feeds, {}, float_dtype="f32")
    np.testing.assert_array_equal(again["output:noise"], reference["output:noise"])


def test_a_draw_longer_than_a_chunk_is_the_draw_of_each_element_alone():
    n = 2 * DRAW_CHUNK + 3
    key = np.array([5, 2], np.int32)
    for dist in ("uniform", "normal"):
        chunked = PRIMITIVES["random"].impl(Eval(float_dtype="f32"), [key], (n,), dist, 3)[0]
        np.testing.assert_array_equal(chunked, _draws(key, 3, dist, 0, n).astype(np.float32))  # in one piece
        np.testing.assert_array_equal(chunked[-7:], _draws(key, 3, dist, n - 7, 7).astype(np.float32))


def test_the_initializers_keep_the_parameters_and_drop_their_draws():
    model = load_text("model m { input x: f32[B, 4]\n output y = dense(x, 3, init = normal_std(0.02)) }", "m.dl").build(
        training=False
    )
    values = Eval(feeds={"rng": np.array([0, 0], np.int32)}, float_dtype="f32").values(model.init)
    assert set(values) == {t.key() for t in model.init.outputs.values()}
    assert {name.split(".")[-1] for name in model.init.outputs} == {"W", "b"}
    draw = next(iter(model.init.nodes_with("random")))
    model.init.outputs["draw"] = Tensor(model.init, draw, 0)
    again = Eval(feeds={"rng": np.array([0, 0], np.int32)}, float_dtype="f32").values(model.init)
    assert (draw, 0) in again  # an output added after a run is kept: the plan follows the outputs
