"""A prediction's first layers an example at a time (compiler/passes/examples.py): the layers
whose values an example holds a megabyte of run in a scan over the batch, their kernels'
epilogues fused in its body and its temporaries sharing the arena as a program's do; the
predictions are the batched program's bits, in float32 and bfloat16, at any batch; training
and a batch of one are left as they were."""

import numpy as np
import pytest

from dlc.compiler.frontend.loader import load_text
from dlc.compiler.native.kernels.scan import ScanKernel
from dlc.compiler.native.lower import lower
from dlc.compiler.native.memory import intervals
from dlc.compiler.passes import examples
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.engines.native import NO_KEY, Executable
from dlc.runtime.engines.reference import predict_graph
from dlc.runtime.training.trainer import initial_parameters

# an inverted residual block at 96 x 96 pixels (MobileNetV2's shape): the stem's, the depthwise
# convolution's and the expansion's values an example are 1.2-2.4 MB, the rest below 1 MB
SOURCE = """
model blocks {
    input  x: f32[B, 3, 96, 96]
    target y: i32[B]
    a = conv2d(x, 32, 3, padding = 1, act = relu6)
    d = conv2d(a, 32, 3, padding = 1, groups = 32, act = relu6)
    p = conv2d(d, 16, 1)
    e = conv2d(p, 64, 1, act = relu6)
    s = conv2d(e, 64, 3, stride = 2, padding = 1, groups = 64, act = relu6)
    q = conv2d(s, 24, 1)
    r = q + conv2d(q, 24, 1)
    logits = dense(dropout(global_avg_pool(maxpool2d(r, 2)), 0.2), 10)
    loss   sparse_cross_entropy(logits, y)
    output probs = softmax(logits)
}
"""


# the expansion's output weighted by squeeze-and-excitation (EfficientNet's): each example's
# mean over its pixels, two 1 x 1 convolutions, a sigmoid spread over the pixels
EXCITED = SOURCE.replace(
    "s = conv2d(e,",
    "g = sigmoid(conv2d(conv2d(reshape(global_avg_pool(e), B, 64, 1, 1), 8, 1, act = relu), 64, 1))\n"
    "    s = conv2d(e * g,",
)


def _model(training=False, source=SOURCE):
    return load_text(source, "blocks.dl").build(None, training=training)


def _scans(program) -> list:
    return [k for k in program.kernels if isinstance(k, ScanKernel)]


def _predictions(exe, x, params) -> bytes:
    arrays, sizes = exe.run({"x": x, "rng": NO_KEY}, exe.given(params))
    return b"".join(exe.output(name, arrays, sizes).tobytes() for name in sorted(exe.program.outputs))


def test_the_big_layers_run_an_example_at_a_time_with_their_epilogues_fused():
    program = lower(optimize(predict_graph(_model())), pack_weights="once")
    (scan,) = _scans(program)
    assert scan.independent and str(scan.length) == "B"
    body = "\n".join(line for k in scan.body for line in k.text())
    # every convolution up to the stride-2 depthwise one (whose input is the expansion's 2.4 MB),
    # and its bias and activation, then stored at its example's place of the stacked result
    assert body.count("direct conv [1, ") == 3 and body.count("gemm 1 x ") == 2, body
    assert "then in its store" in body and "$t0" in body
    assert all(type(k).__name__ != "MapKernel" or "$t0" in k.text()[0] for k in scan.body[1:]), body
    # the layers after it are batched: the projections of 24 channels read the whole batch
    after = "\n".join(line for k in program.kernels if k is not scan for line in k.text())
    assert "gemm B x [24 x 64]" in after, after


def test_the_bodys_temporaries_share_the_arena_as_a_programs_do():
    program = lower(optimize(predict_graph(_model())), pack_weights="once")
    (scan,) = _scans(program)
    live = intervals(program)
    inside = {b for k in scan.body for b in set().union(*k.accesses())} & live.keys()
    outside = {b for k in program.kernels if k is not scan for b in set().union(*k.accesses())}
    alone = inside - outside
    assert alone, "no temporary of the body alone"
    ends = sorted(live[b] for b in alone)
    assert len(set(ends)) == len(ends), "each lives from its first access to its last, not over the loop"
    assert any(b[0] > a[1] for a in ends for b in ends), "some are dead before others are made"


@pytest.mark.parametrize("source", [SOURCE, EXCITED], ids=["blocks", "excited"])
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_predictions_are_the_batched_programs_bits(monkeypatch, precision, source):
    model = _model(source=source)
    params = initial_parameters(model, 2)
    x = np.random.default_rng(1).standard_normal((3, 3, 96, 96), dtype=np.float32)
    in_turn = Executable(predict_graph(model), precision=precision, pack_weights="once")
    assert _scans(in_turn.program)
    monkeypatch.setattr(examples, "EXAMPLE_BYTES", 1 << 62)
    batched = Executable(predict_graph(model), precision=precision, pack_weights="once")
    assert not _scans(batched.program)
    assert _predictions(in_turn, x, params) == _predictions(batched, x, params)
    one = b"".join(_predictions(in_turn, x[i : i + 1], params) for i in range(3))
    rows = [_predictions(batched, x[i : i + 1], params) for i in range(3)]
    assert one == b"".join(rows)


def test_training_and_a_batch_of_one_are_left_alone_and_the_graph_is_copied():
    assert not _scans(lower(optimize(_model(training=True).graph)))  # a train step: no weights packed
    one = load_text(SOURCE.replace("f32[B,", "f32[1,").replace("i32[B]", "i32[1]"), "one.dl").build(
        None, training=False
    )
    assert not _scans(lower(optimize(predict_graph(one)), pack_weights="once"))
    graph = optimize(predict_graph(_model()))
    before = sorted(graph.op(n) for n in graph.nx.nodes)
    looped = examples.examples_in_turn(graph)
    assert looped.nodes_with("scan") and sorted(graph.op(n) for n in graph.nx.nodes) == before, "a copy"


def test_a_layer_that_mixes_examples_is_computed_before_the_loop():
    """A value read across the batch (the images' mean over the batch, subtracted from each)
    is not an example's alone: it is computed for the batch, and the loop slices it."""
    source = SOURCE.replace("a = conv2d(x,", "a = conv2d(x - mean(x, 0),")
    graph = examples.examples_in_turn(
        optimize(predict_graph(load_text(source, "mixed.dl").build(None, training=False)))
    )
    (scan,) = graph.nodes_with("scan")
    body = graph.attrs(scan)["body"]
    assert not {"reduce_mean", "reduce_sum"} & {body.op(n) for n in body.nx.nodes}
    images, mean = graph.inputs(scan)[: len(graph.attrs(scan)["xs_axes"])]
    assert graph.op(images.node) == "input" and graph.op(graph.inputs(mean.node)[0].node) == "div"
    assert sum(body.op(n) == "conv2d" for n in body.nx.nodes) == 5


def test_layers_after_one_that_reads_the_loop_outside_it_stay_out_of_it(monkeypatch):
    """A layer the loop does not take (a transpose) reads its results, and a convolution
    after it an example's megabyte again: one loop cannot compute both sides, so the layers
    from the transpose on stay batched, and the prediction keeps its bits."""
    source = SOURCE.replace("d = conv2d(a,", "d = conv2d(transpose(a, 0, 1, 3, 2),")
    model = load_text(source, "joined.dl").build(None, training=False)
    graph = examples.examples_in_turn(optimize(predict_graph(model)))
    (scan,) = graph.nodes_with("scan")
    body = graph.attrs(scan)["body"]
    assert sum(body.op(n) == "conv2d" for n in body.nx.nodes) == 1  # the stem alone
    params = initial_parameters(model, 2)
    x = np.random.default_rng(3).standard_normal((2, 3, 96, 96), dtype=np.float32)
    in_turn = Executable(predict_graph(model), pack_weights="once")
    monkeypatch.setattr(examples, "EXAMPLE_BYTES", 1 << 62)
    assert _predictions(in_turn, x, params) == _predictions(
        Executable(predict_graph(model), pack_weights="once"), x, params
    )


def test_an_inception_blocks_concat_along_the_channels_goes_with_the_loop():
    source = SOURCE.replace("d = conv2d(a,", "d = conv2d(concat(a, relu(a), axis = 1),")
    graph = examples.examples_in_turn(optimize(predict_graph(_model(source=source))))
    (scan,) = graph.nodes_with("scan")
    body = graph.attrs(scan)["body"]
    assert "concat" in {body.op(n) for n in body.nx.nodes} and "concat" not in {graph.op(n) for n in graph.nx.nodes}


def test_squeeze_and_excitation_is_computed_within_each_example():
    """An example's mean over its pixels, the products of its channel weights and their
    spread over its pixels read that example alone: the loop takes them."""
    graph = examples.examples_in_turn(optimize(predict_graph(_model(source=EXCITED))))
    (scan,) = graph.nodes_with("scan")
    body = graph.attrs(scan)["body"]
    ops = [body.op(n) for n in body.nx.nodes]
    assert "reduce_sum" in ops and ops.count("conv2d") == 7, ops


def test_an_evaluation_runs_an_example_at_a_time_with_the_batched_programs_loss_and_metrics(monkeypatch):
    """An evaluation (dlc eval, a run's validation: a forward pass alone, its loss and
    metrics over the batch) takes the loop too, and scores the same bits."""
    model = _model()
    params = initial_parameters(model, 4)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((3, 3, 96, 96), dtype=np.float32), "y": np.array([1, 7, 3], np.int32)}

    def scores(exe):
        arrays, sizes = exe.run({**feeds, "rng": NO_KEY}, exe.given(params))
        return [exe.output(name, arrays, sizes).tobytes() for name in sorted(exe.program.outputs)]

    in_turn = Executable(model.graph, forward=True)
    assert _scans(in_turn.program) and "loss" in in_turn.program.outputs
    monkeypatch.setattr(examples, "EXAMPLE_BYTES", 1 << 62)
    assert scores(in_turn) == scores(Executable(model.graph, forward=True))
