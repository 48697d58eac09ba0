"""The convolutions' GEMMs (compiler/native/kernels/conv): every GEMM of a convolution,
forward and both gradients, runs over the whole batch — never one GEMM per example — but
the forward product of a pointwise convolution of many pixels per example, and the
gradients it gives are the reference engine's."""
import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.settings import Call
from dlc.compiler.native.kernels.gemm import GemmKernel
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.engines.optim import make_optimizer
from dlc.runtime.training.gradcheck import init_params

# im2col convolutions (32·3·3 = 288 taps: not direct), strided and padded, a pointwise one
# (1 x 1, stride 1: no columns), a strided 1 x 1 projection, each with both gradients
SOURCE = """
model convs {
    input  x: f32[B, 32, 7, 7]
    target y: i32[B]
    a = conv2d(x, 32, 3, padding = 1, bias = false) |> relu
    b = conv2d(a, 48, 3, stride = 2, padding = 1) |> relu
    c = conv2d(b, 40, 1, bias = false) |> relu
    d = conv2d(c, 24, 1, stride = 2) + conv2d(c, 24, 3, stride = 2, padding = 1)
    logits = dense(global_avg_pool(d), 5)
    loss   sparse_cross_entropy(logits, y)
}
"""


def models():
    prog = load_text(SOURCE, "convs.dl")
    return prog.build(training=True), prog.build(training=False)


def test_every_convolution_gemm_is_over_the_whole_batch():
    train, _ = models()
    program = lower(optimize(train_step(train.graph)))
    # the convolutions' GEMMs (the dense layer's three are over the batch as any matmul)
    gemms = [k for k in program.kernels if isinstance(k, GemmKernel)]
    assert len(gemms) >= 9 + 3, [k.text() for k in gemms]        # 5 convolutions, most with 3 GEMMs
    per_example = [k.text()[0] for k in gemms if k.batch != 1]
    assert not per_example, per_example
    # each one's rows, columns or sums run over every example: a multiple of the batch size B
    assert all("B" in str(k.n) or "B" in str(k.m) or "B" in str(k.k) for k in gemms), [k.text()[0] for k in gemms]


def test_a_pointwise_convolution_of_many_pixels_multiplies_each_example_as_it_lies():
    """Their forward products: one GEMM per example (H·W = 64 columns of 96 and 16 filters),
    where one over the batch would first copy x channels first; the second's input gradient
    over the batch (the weight gradients, of 64 and 96 taps, are direct convolutions)."""
    prog = load_text("""
model wide {
    input  x: f32[B, 64, 8, 8]
    target y: f32[B, 16, 8, 8]
    h = conv2d(x, 96, 1) |> relu
    loss   mse(conv2d(h, 16, 1), y)
}
""", "wide.dl")
    program = lower(optimize(train_step(prog.build(training=True).graph)))
    gemms = [k for k in program.kernels if isinstance(k, GemmKernel)]
    assert sorted(str(k.batch) for k in gemms) == ["1", "B", "B"], [k.text() for k in gemms]


@pytest.mark.parametrize("batch", [1, 3])
def test_convolution_gradients_over_the_batch_are_the_reference_engines(batch):
    train, ev = models()
    trainable = [p.name for p in train.params if p.trainable]
    init = {k: np.asarray(v, np.float32) for k, v in init_params(train, 0).items()}
    rng = np.random.default_rng(batch)
    feeds = {"x": rng.standard_normal((batch, 32, 7, 7)).astype(np.float32),
             "y": rng.integers(0, 5, batch).astype(np.int32)}
    results = {}
    for kind in ("reference", "native"):
        eng = make_engine(kind, train, ev, make_optimizer(Call("sgd", [], {"lr": 1.0})), trainable, split=True)
        params = {k: v.copy() for k, v in init.items()}
        out, grads = eng.gradients(params, eng.optimizer.init({n: params[n] for n in trainable}), feeds,
                                   np.array([0, 1], np.int32))
        results[kind] = (float(out["loss"]), np.array(grads, copy=True))
    (ref_loss, ref), (loss, native) = results["reference"], results["native"]
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert np.linalg.norm(native - ref) <= 1e-5 * np.linalg.norm(ref)
