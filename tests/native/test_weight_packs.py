"""A prediction's weights packed once (kernels/gemm: WeightPacksKernel, docs/native.md):
a change of layout only — the same bits as the program that packs B inside every GEMM,
in float32 and bfloat16, packed for the JIT ("each call": products of one row read B)
and as a built library packs them ("once": they stream the packed panels too), at batches
of one and more; and a prediction after a weight changed in place is that of the new
weight."""

from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load
from dlc.compiler.native import PACK_WEIGHTS
from dlc.runtime.engines.native import NO_KEY, Executable
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.training.trainer import initial_parameters
from helpers.c_api import inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def predictions(exe: Executable, feeds: dict, params: dict) -> bytes:
    arrays, sizes = exe.run(feeds, exe.given(params))
    return b"".join(exe.output(name, arrays, sizes).tobytes() for name in sorted(exe.program.outputs))


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("model", ["char_lstm", "transformer_classifier"])
def test_weights_packed_once_change_no_bit(model, precision, mode):
    eval_model = load(EXAMPLES / f"{model}.dl").build(None, training=False)
    params = initial_parameters(eval_model, 3)
    packing, plain = (
        Executable(predict_graph(eval_model), precision=precision, pack_weights=pack) for pack in (mode, None)
    )
    assert packing.program.weights_ready is not None and plain.program.weights_ready is None
    feeds = lambda batch: {eval_model.inputs[0].name: inputs(model, batch, seed=batch), "rng": NO_KEY}
    for batch in (1, 5, 1):
        assert predictions(packing, feeds(batch), params) == predictions(plain, feeds(batch), params), batch
    before = predictions(packing, feeds(5), params)
    name = next(n for n in params if n.endswith(("Wx", "Wq")))
    params[name][...] = np.random.default_rng(0).normal(0, 0.5, params[name].shape)  # in place
    after = predictions(packing, feeds(5), params)
    assert after == predictions(plain, feeds(5), params) and after != before


@pytest.mark.parametrize("mode", PACK_WEIGHTS)
@pytest.mark.parametrize("model", ["alexnet_cnn", "resnet", "inception_cnn", "digits_cnn"])
def test_each_weight_flag_guards_a_copy(model, mode):
    """A flag is made only for a copy of weights that a kernel makes while it is clear:
    a pack of the WeightPacksKernel, or a copy of weights in another form (a Winograd
    convolution's transformed filters, a convolution's filters by channels)."""
    program = Executable(
        predict_graph(load(EXAMPLES / f"{model}.dl").build(None, training=False)), pack_weights=mode
    ).program
    guarded = [flag for k in program.kernels if type(k).__name__ == "WeightPacksKernel" for flag in k.flags]
    guarded += [k.ready[1] for k in program.kernels if type(k).__name__ == "WeightTransformKernel" and k.ready]
    assert sorted(guarded) == list(range(program.buffers[program.weights_ready].size))
