"""The convolutions' GEMMs (compiler/native/kernels/conv): every GEMM of a convolution,
forward and both gradients, runs over the whole batch in training — never one GEMM per
example; in prediction, a pointwise convolution of many pixels per example multiplies each
as it lies, and a GEMM of an example's many windows is one per example, in place — and the
gradients it gives are the reference engine's."""

import os
import subprocess
import sys

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.settings import Call
from dlc.compiler.native.choose import conv
from dlc.compiler.native.kernels.gemm import GemmKernel
from dlc.compiler.native.kernels.small_gemm import SmallGemmKernel
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.engines.native import Executable
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.training.gradcheck import init_params
from helpers.native_cases import run_native, step_graph

# pointwise convolutions (1 x 1, stride 1: no columns) of many pixels (49, 24 filters) and of
# few (16, 40 filters), im2col ones (32·3·3 = 288 taps: not direct), strided and padded, a
# strided 1 x 1 projection, each with both gradients (but the first's input gradient); a
# depthwise one of 4 x 4 pixels, whose weight gradient is a reduction
SOURCE = """
model convs {
    input  x: f32[B, 32, 7, 7]
    target y: i32[B]
    p = conv2d(x, 24, 1) |> relu
    a = conv2d(p, 32, 3, padding = 1, bias = false) |> relu
    b = conv2d(a, 48, 3, stride = 2, padding = 1) |> relu
    c = conv2d(b, 40, 1, bias = false) |> relu |> conv2d(40, 3, padding = 1, groups = 40)
    d = conv2d(c, 24, 1, stride = 2) + conv2d(c, 24, 3, stride = 2, padding = 1)
    logits = dense(global_avg_pool(d), 5)
    loss   sparse_cross_entropy(logits, y)
}
"""


def test_every_convolution_gemm_is_over_the_whole_batch():
    train = load_text(SOURCE, "convs.dl").build(training=True)
    program = lower(optimize(train_step(train.graph)))
    # the convolutions' GEMMs (the dense layer's three are over the batch as any matmul)
    gemms = [k for k in program.kernels if isinstance(k, GemmKernel)]
    assert len(gemms) >= 9 + 3, [k.text() for k in gemms]  # 5 convolutions, most with 3 GEMMs
    per_example = [k.text()[0] for k in gemms if k.batch != 1]
    assert not per_example, per_example
    # each one's rows, columns or sums run over every example: a multiple of the batch size B
    assert all("B" in str(k.n) or "B" in str(k.m) or "B" in str(k.k) for k in gemms), [k.text()[0] for k in gemms]


def test_a_pointwise_convolution_of_many_pixels_is_over_the_batch_in_training_only():
    """In training, its three products are GEMMs over the batch (H·W = 64 columns of 96 and
    16 filters): the forward product and the weight gradient (K: every example's pixels)
    read the same copy of x channels first, which the weight gradient needs anyway (and a
    value only they read is stored so). In prediction, one GEMM per example as x lies, where
    one over the batch would first copy x."""
    prog = load_text(
        """
model wide {
    input  x: f32[B, 64, 8, 8]
    target y: f32[B, 16, 8, 8]
    h = conv2d(x, 96, 1) |> relu
    loss   mse(conv2d(h, 16, 1), y)
}
""",
        "wide.dl",
    )
    program = lower(optimize(train_step(prog.build(training=True).graph)))
    gemms = [k for k in program.kernels if isinstance(k, GemmKernel)]
    assert [str(k.batch) for k in gemms] == ["1"] * 5, [k.text() for k in gemms]  # 2 forward, 2 + 1 gradients
    weight_grads = [k for k in gemms if k.trans_b]
    assert len(weight_grads) == 2 and all("B" in str(k.k) for k in weight_grads), [k.text() for k in gemms]
    first = next(k for k in gemms if k.m == 96 and not k.trans_a and not k.trans_b)
    assert first.b[0] == next(k for k in weight_grads if k.m == 96).b[0]  # x's one copy, channels first
    # h, which only the second convolution and its weight gradient read, is stored channels
    # first where it is made (in the first GEMM's store): no copy
    second = next(k for k in gemms if k.m == 16 and not k.trans_a and not k.trans_b)
    assert second.b[0] == next(k for k in weight_grads if k.m == 16).b[0]
    writers = [k for k in program.kernels if second.b[0] in k.accesses()[1]]
    assert writers == [first] and first.epilogue is not None, [k.text() for k in writers]
    predict = lower(optimize(prog.build(training=False).graph))
    assert [str(k.batch) for k in predict.kernels if isinstance(k, GemmKernel)] == ["B", "B"]


def gradients(prog, feeds: dict, precision: str = "f32") -> dict:
    """kind -> (loss, gradients) of a step of `prog` on the reference and the native engine."""
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    init = {k: np.asarray(v, np.float32) for k, v in init_params(train, 0).items()}
    results = {}
    for kind in ("reference", "native"):
        eng = make_engine(
            kind, train, ev, make_optimizer(Call("sgd", [], {"lr": 1.0})), trainable, split=True, precision=precision
        )
        params = {k: v.copy() for k, v in init.items()}
        out, grads = eng.gradients(
            params, eng.optimizer.init({n: params[n] for n in trainable}), feeds, np.array([0, 1], np.int32)
        )
        results[kind] = (float(out["loss"]), np.array(grads, copy=True))
    return results


@pytest.mark.parametrize("batch, precision", [(1, "f32"), (3, "f32"), (3, "bf16")])
def test_convolution_gradients_over_the_batch_are_the_reference_engines(batch, precision):
    """bf16: the reference engine's emulation (operands rounded, sums in float32)."""
    rng = np.random.default_rng(batch)
    feeds = {
        "x": rng.standard_normal((batch, 32, 7, 7)).astype(np.float32),
        "y": rng.integers(0, 5, batch).astype(np.int32),
    }
    results = gradients(load_text(SOURCE, "convs.dl"), feeds, precision)
    (ref_loss, ref), (loss, native) = results["reference"], results["native"]
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert np.linalg.norm(native - ref) <= 1e-5 * np.linalg.norm(ref)


# the gradients of SOURCE at batch 3 on 1, 2 and 3 threads, in a process of the target's own
# (the target is read once a process)
GRADIENTS = """
import os, sys, numpy as np
from dlc.compiler.frontend.loader import load_text
from dlc.compiler.frontend.settings import Call
from dlc.runtime.engines.backends import make_engine
from dlc.runtime.optim.optimizers import make_optimizer
from dlc.runtime.training.gradcheck import init_params
prog = load_text(sys.argv[2], "convs.dl")
train, ev = prog.build(training=True), prog.build(training=False)
trainable = [p.name for p in train.params if p.trainable]
eng = make_engine("native", train, ev, make_optimizer(Call("sgd", [], {"lr": 1.0})), trainable, split=True)
rng = np.random.default_rng(0)
feeds = {"x": rng.standard_normal((3, 32, 7, 7)).astype(np.float32), "y": rng.integers(0, 5, 3).astype(np.int32)}
params = {k: np.asarray(v, np.float32) for k, v in init_params(train, 0).items()}
state = eng.optimizer.init({n: params[n] for n in trainable})
runs = {}
for threads in (1, 2, 3):
    os.environ["DLC_NUM_THREADS"] = str(threads)
    runs[str(threads)] = np.array(eng.gradients(params, state, feeds, np.array([0, 1], np.int32))[1], copy=True)
np.savez(sys.argv[1], **runs)
"""


def test_convolution_gradients_are_the_same_bits_on_any_thread_count_and_target(tmp_path):
    """Every GEMM sums over K in the same order on any team and at either vector width —
    the weight gradients' K the whole batch's pixels."""
    runs = {}
    for target in ("host", "avx512", "avx2"):
        out = tmp_path / f"{target}.npz"
        env = dict(os.environ, **({} if target == "host" else {"DLC_TARGET": target}))
        done = subprocess.run(
            [sys.executable, "-c", GRADIENTS, str(out), SOURCE], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.update({(target, threads): g for threads, g in np.load(out).items()})
    (first, reference), *others = runs.items()
    assert np.isfinite(reference).all() and np.abs(reference).max() > 0
    for config, g in others:
        assert np.array_equal(g, reference), f"{config} differs from {first}"


# a stem of many filters (7 x 7 on 3 channels, 64 filters), 3 x 3 convolutions at stride 1
# and 2, a dilated grouped one and a dilated one: each a GEMM packing its columns from the
# image
WINDOWED = """
model windowed {
    input  x: f32[B, 3, 29, 29]
    target y: i32[B]
    s = conv2d(x, 64, 7, stride = 2, padding = 3) |> relu
    a = conv2d(s, 32, 3, padding = 1) |> relu
    b = conv2d(a, 24, 3, stride = 2, padding = 1) |> relu
    c = conv2d(b, 24, 3, padding = 2, dilation = 2, groups = 2) |> relu
    d = conv2d(c, 24, 3, padding = 2, dilation = 2) |> relu
    output logits = dense(global_avg_pool(d), 5)
    loss   sparse_cross_entropy(logits, y)
}
"""


def _gemm_sources(program) -> list:
    """Each convolution GEMM's B: 'windows' (packed from the image) or 'buffer'."""
    return [
        "windows" if k.windows else "buffer"
        for k in program.kernels
        if isinstance(k, GemmKernel) and k.trans_b and not k.trans_a and k.m != 5
    ]


def test_convolution_gemms_read_their_columns_from_the_image(monkeypatch):
    """In float32 every non-pointwise convolution's GEMMs — the product and the weight
    gradient, in prediction and in training, and the input gradient of a stride-1 one with
    one group (a convolution of g) — pack their columns from the image: no im2col map
    kernel, no col2im (and the 64-filter stem's product is such a GEMM, not a direct
    convolution; its weight gradient stays direct); but for a weight gradient of small
    filters (a SmallGemmKernel), which reads the buffer, shared with the product. A bf16
    program's GEMMs pack them from the image too, as bf16 GEMMs."""
    monkeypatch.setattr(conv, "WINOGRAD_CHANNELS", 1 << 30)  # not Winograd's (test_winograd.py)
    monkeypatch.setattr(conv, "IMAGE_CHANNELS", 0)  # the stem not by channels (test_conv_by_channels.py)
    prog = load_text(WINDOWED, "windowed.dl")
    predict = lower(optimize(prog.build(training=False).graph))
    assert _gemm_sources(predict) == ["windows"] * 5, [k.text() for k in predict.kernels]
    assert not [k for k in predict.kernels if "conv" in k.text()[0]], [k.text() for k in predict.kernels]
    train = lower(optimize(train_step(prog.build(training=True).graph)))
    windows = [k for k in train.kernels if isinstance(k, GemmKernel) and k.windows]
    # 5 products, 4 weight gradients (not the stem's), the input gradients of a and d
    assert len([k for k in windows if k.trans_b]) == 5 + 2 and len([k for k in windows if not k.trans_b]) == 4, [
        k.text() for k in train.kernels
    ]
    # col2im's accumulations: b's (stride 2) and c's (grouped) input gradients only
    assert len([k for k in train.kernels if k.text()[0].startswith("accumulate")]) == 2, [
        k.text()[0] for k in train.kernels
    ]
    direct = [k.text()[0] for k in train.kernels if k.text()[0].startswith("direct conv")]
    assert len(direct) == 1 and "weight gradient" in direct[0], direct
    bf16 = lower(optimize(prog.build(training=False).graph), precision="bf16")
    assert _gemm_sources(bf16) == ["windows"] * 5, [k.text() for k in bf16.kernels]
    assert all(k.bf16 for k in bf16.kernels if isinstance(k, GemmKernel))
    small = load_text(
        """
model small {
    input  x: f32[B, 32, 9, 9]
    target y: f32[B, 4, 9, 9]
    loss   mse(conv2d(x, 4, 3, padding = 1), y)
}
""",
        "small.dl",
    )
    train = lower(optimize(train_step(small.build(training=True).graph)))
    product = next(k for k in train.kernels if isinstance(k, GemmKernel) and k.trans_b and k.m == 4)
    weight_grad = next(k for k in train.kernels if isinstance(k, SmallGemmKernel))
    assert product.windows is None and product.b[0] == weight_grad.b[0]


@pytest.mark.parametrize("batch", [1, 3])
def test_predictions_from_the_images_windows_are_the_reference_engines(batch):
    prog = load_text(WINDOWED, "windowed.dl")
    train, ev = prog.build(training=True), prog.build(training=False)
    params = {k: np.asarray(v, np.float32) for k, v in init_params(train, 0).items()}
    x = np.random.default_rng(batch).standard_normal((batch, 3, 29, 29)).astype(np.float32)
    got, ref = (
        make_engine(kind, train, ev, make_optimizer(Call("sgd", [], {"lr": 1.0})), list(params)).predict(
            params, {"x": x}
        )["logits"]
        for kind in ("native", "reference")
    )
    assert np.linalg.norm(got - ref) <= 1e-5 * np.linalg.norm(ref)


PER_EXAMPLE = """
model stems {
    input x: f32[B, 3, 58, 57]
    s = conv2d(x, 64, 7, stride = 2, padding = 3) |> relu
    output y = conv2d(s, 64, 3, stride = 2, padding = 1) + conv2d(s, 64, 1, stride = 2)
}
"""


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_a_predictions_gemm_of_an_examples_many_windows_is_per_example_with_the_bits_over_the_batch(batch, monkeypatch):
    """The stem (29 x 29 pixels an example: EXAMPLE_PIXELS or more) is a batch of GEMMs, one
    an example, y stored as it lies and its relu in place; the stride-2 convolutions (15 x 15)
    stay one GEMM over the batch. The outputs are those of GEMMs over the batch, bit for
    bit, on 1, 2 and 3 threads; in training every one is over the batch."""
    model = load_text(PER_EXAMPLE, "stems.dl")
    params = {k: np.asarray(v, np.float32) for k, v in init_params(model.build(training=False), 0).items()}
    x = np.random.default_rng(batch).standard_normal((batch, 3, 58, 57)).astype(np.float32)

    def predict(threads: int) -> tuple:
        """The program on `threads` threads, and y."""
        monkeypatch.setenv("DLC_NUM_THREADS", str(threads))
        exe = Executable(predict_graph(model.build(training=False)))
        return exe, run_native(exe, {"x": x}, params)["output:y"]

    per_example, y = predict(2)
    gemms = [k for k in per_example.program.kernels if isinstance(k, GemmKernel) and k.windows]
    assert [str(k.batch) for k in gemms] == ["B", "1", "1"], [k.text()[0] for k in gemms]
    assert gemms[0].epilogue is not None and gemms[0].epilogue.out == gemms[0].c[0]  # in place
    assert all(np.array_equal(predict(t)[1], y) for t in (1, 3))
    monkeypatch.setattr(conv, "EXAMPLE_PIXELS", 1 << 30)
    over_the_batch, y_batch = predict(2)
    assert all(str(k.batch) == "1" for k in over_the_batch.program.kernels if isinstance(k, GemmKernel))
    assert np.array_equal(y, y_batch)
    monkeypatch.undo()
    train = lower(optimize(step_graph(model.build(training=True))))
    windows = [k for k in train.kernels if isinstance(k, GemmKernel) and k.windows]
    assert windows and all(str(k.batch) == "1" for k in windows), [k.text()[0] for k in windows]


def test_training_with_the_stem_from_the_images_windows_is_the_reference_engines():
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 29, 29)).astype(np.float32), "y": rng.integers(0, 5, 2).astype(np.int32)}
    results = gradients(load_text(WINDOWED, "windowed.dl"), feeds)
    (_, ref), (_, native) = results["reference"], results["native"]
    assert np.linalg.norm(native - ref) <= 1e-5 * np.linalg.norm(ref)
