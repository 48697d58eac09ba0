"""`dlc import`: ONNX models as .dl programs and checkpoints (compiler/onnx/importer.py), checked
against onnxruntime; fine-tuning an imported model; the errors of a bad file or model."""

import re
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper as h, numpy_helper  # noqa: E402

from dlc.compiler.errors import DlcError  # noqa: E402
from dlc.compiler.frontend.loader import load  # noqa: E402
from dlc.compiler.onnx.importer import Unsupported, import_model, read_model  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def weight(name, *shape, scale=0.5):
    return numpy_helper.from_array((scale * RNG.standard_normal(shape)).astype(np.float32), name)


def save(tmp_path, name, nodes, inputs, outputs, initializers=(), opset=17):
    graph = h.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="dlc-tests")
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def dl_import(path):
    """`dlc import PATH -o PATH.dl`: the .dl file and its checkpoint."""
    out = path.with_suffix(".dl")
    assert main(["import", str(path), "-o", str(out)]) == 0
    return out, out.with_suffix(".npz")


def same_as_onnxruntime(path, feeds, backend):
    """`dlc predict` (DlcModel with the imported checkpoint) gives onnxruntime's outputs."""
    program, weights = dl_import(path)
    model = DlcModel(str(program), backend=backend).load_weights(weights)
    got = model.predict(feeds)
    session = ort.InferenceSession(str(path))
    expected = session.run(None, feeds)
    names = [o.name for o in session.get_outputs()]
    assert sorted(got) == sorted(names)
    for name, want in zip(names, expected):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    return program.read_text()


# ---- models -------------------------------------------------------------------------------------------------
def mlp(tmp_path):
    """torch.nn.Linear's export: Gemm with transB; a MatMul + Add; symbolic batch."""
    return save(
        tmp_path,
        "mlp",
        [
            h.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h1"], transB=1, name="/fc1/Gemm"),
            h.make_node("Relu", ["h1"], ["r1"], name="/act/Relu"),
            h.make_node("MatMul", ["r1", "fc2.weight"], ["m2"], name="/fc2/MatMul"),
            h.make_node("Add", ["m2", "fc2.bias"], ["logits"], name="/fc2/Add"),
        ],
        [h.make_tensor_value_info("x", F, ["batch", 4])],
        [h.make_tensor_value_info("logits", F, ["batch", 3])],
        [weight("fc1.weight", 8, 4), weight("fc1.bias", 8), weight("fc2.weight", 8, 3), weight("fc2.bias", 3)],
    )


def matmul_add(tmp_path):
    """MatMul + Add + Tanh on a sequence: dense on the last axis."""
    return save(
        tmp_path,
        "seq",
        [
            h.make_node("MatMul", ["x", "W"], ["m"]),
            h.make_node("Add", ["b", "m"], ["a"]),
            h.make_node("Tanh", ["a"], ["y"]),
        ],
        [h.make_tensor_value_info("x", F, ["N", "T", 5])],
        [h.make_tensor_value_info("y", F, ["N", "T", 6])],
        [weight("W", 5, 6), weight("b", 6)],
    )


def convnet(tmp_path):
    """Conv + bias + Relu, MaxPool, Conv + Add of a bias, BatchNormalization, pooling, Gemm."""
    stats = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in (
            ("bn.scale", 1 + 0.1 * RNG.standard_normal(6)),
            ("bn.bias", 0.1 * RNG.standard_normal(6)),
            ("bn.mean", 0.1 * RNG.standard_normal(6)),
            ("bn.var", 1 + RNG.random(6)),
        )
    ]
    return save(
        tmp_path,
        "convnet",
        [
            h.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["c1"], ["r1"]),
            h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            h.make_node("Conv", ["p1", "conv2.weight"], ["c2"], kernel_shape=[3, 3], strides=[2, 2]),
            h.make_node("Add", ["c2", "conv2.bias"], ["c2b"]),
            h.make_node(
                "BatchNormalization", ["c2b", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n2"], epsilon=1e-3
            ),
            h.make_node("Relu", ["n2"], ["r2"]),
            h.make_node("GlobalAveragePool", ["r2"], ["g"]),
            h.make_node("Flatten", ["g"], ["f"]),
            h.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
        ],
        [h.make_tensor_value_info("x", F, ["batch", 2, 12, 12])],
        [h.make_tensor_value_info("y", F, ["batch", 4])],
        [
            weight("conv1.weight", 5, 2, 3, 3),
            weight("conv1.bias", 5),
            weight("conv2.weight", 6, 5, 3, 3),
            weight("conv2.bias", 1, 6, 1, 1),
            *stats,
            weight("fc.weight", 4, 6),
            weight("fc.bias", 4),
        ],
    )


def recurrent(tmp_path, op="LSTM", **attrs):
    """A time-major LSTM or GRU (ONNX's gate order and layouts) with its final state as a
    second output; Y squeezed and made batch-first, as PyTorch exports batch_first layers."""
    gates = {"LSTM": 4, "GRU": 3}[op]
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    units, width = 6, 5
    nodes = [
        h.make_node(op, ["xt", "W", "R", "B"], ["Y", "Y_h"], hidden_size=units, **attrs),
        h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
    ]
    nodes = nodes[1:] + nodes[:1]
    if directions == 1:
        nodes += [h.make_node("Squeeze", ["Y", "one"], ["Ys"]), h.make_node("Transpose", ["Ys"], ["y"], perm=[1, 0, 2])]
        y_shape = ["batch", "T", units]
    else:
        nodes += [h.make_node("Identity", ["Y"], ["y"])]
        y_shape = ["T", 2, "batch", units]
    return save(
        tmp_path,
        op.lower(),
        nodes,
        [h.make_tensor_value_info("x", F, ["batch", "T", width])],
        [h.make_tensor_value_info("y", F, y_shape), h.make_tensor_value_info("Y_h", F, [directions, "batch", units])],
        [
            weight("W", directions, gates * units, width),
            weight("R", directions, gates * units, units),
            weight("B", directions, 2 * gates * units),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )


BACKENDS = ["reference", "native"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_is_dense_layers(tmp_path, backend):
    path = mlp(tmp_path)
    x = RNG.standard_normal((7, 4)).astype(np.float32)
    text = same_as_onnxruntime(path, {"x": x}, backend)
    assert "input x: f32[batch, 4]" in text
    assert "fc1 = dense(x, 8, relu)" in text and "fc2 = dense(fc1, 3)" in text and "output logits = fc2" in text
    program, weights = path.with_suffix(".dl"), path.with_suffix(".npz")
    model = DlcModel(str(program), backend=backend).load_weights(weights)
    np.testing.assert_array_equal(model.params["fc1.W"], numpy_helper.to_array(onnx.load(path).graph.initializer[0]).T)
    assert model.predict({"x": x[:1]})["logits"].shape == (1, 3)  # any batch size: batch is a dim symbol


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_add_is_dense_on_the_last_axis(tmp_path, backend):
    x = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    text = same_as_onnxruntime(matmul_add(tmp_path), {"x": x}, backend)
    assert "dense(x, 6, tanh)" in text and "input x: f32[N, T, 5]" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_convnet_is_conv2d_and_batchnorm(tmp_path, backend):
    x = RNG.standard_normal((3, 2, 12, 12)).astype(np.float32)
    text = same_as_onnxruntime(convnet(tmp_path), {"x": x}, backend)
    assert "conv2d(x, 5, 3, padding = 1, act = relu)" in text
    assert "conv2d(" in text.split("max_pool(")[1] and "stride = 2" in text and "batchnorm(" in text
    assert "eps = 0.001" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_is_the_lstm_layer(tmp_path, backend):
    x = RNG.standard_normal((3, 7, 5)).astype(np.float32)
    text = same_as_onnxruntime(recurrent(tmp_path, "LSTM"), {"x": x}, backend)
    assert "lstm(x, 6, return_state = true)" in text and "transpose" not in text
    assert "output y" in text and "output Y_h" in text


@pytest.mark.parametrize(
    "attrs",
    [dict(linear_before_reset=1), dict(linear_before_reset=0), dict(linear_before_reset=1, direction="bidirectional")],
)
def test_gru_is_the_gru_layer(tmp_path, attrs):
    x = RNG.standard_normal((3, 7, 5)).astype(np.float32)
    text = same_as_onnxruntime(recurrent(tmp_path, "GRU", **attrs), {"x": x}, "reference")
    assert text.count("gru(x, 6") == (2 if "direction" in attrs else 1)
    assert ("reset_after = false" in text) == (attrs["linear_before_reset"] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_is_a_scan(tmp_path, backend):
    """ONNX's Scan (a running sum and a running maximum over axis 1, read backwards) is dlc's
    scan: the states its carries, the scan outputs its yields."""
    body = h.make_graph(
        [
            h.make_node("Add", ["sum_in", "x_t"], ["sum_out"]),
            h.make_node("Max", ["max_in", "x_t"], ["max_out"]),
            h.make_node("Mul", ["sum_out", "two"], ["y_t"]),
        ],
        "body",
        [h.make_tensor_value_info(n, F, [2, 3]) for n in ("sum_in", "max_in", "x_t")],
        [h.make_tensor_value_info(n, F, [2, 3]) for n in ("sum_out", "max_out", "y_t")],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    path = save(
        tmp_path,
        "running",
        [
            h.make_node(
                "Scan",
                ["s0", "m0", "x"],
                ["total", "largest", "ys"],
                body=body,
                num_scan_inputs=1,
                scan_input_axes=[1],
                scan_input_directions=[1],
                scan_output_directions=[1],
            ),
        ],
        [
            h.make_tensor_value_info("s0", F, [2, 3]),
            h.make_tensor_value_info("m0", F, [2, 3]),
            h.make_tensor_value_info("x", F, [2, 5, 3]),
        ],
        [
            h.make_tensor_value_info("total", F, [2, 3]),
            h.make_tensor_value_info("largest", F, [2, 3]),
            h.make_tensor_value_info("ys", F, [5, 2, 3]),
        ],
    )
    feeds = {
        "s0": RNG.standard_normal((2, 3)).astype(np.float32),
        "m0": np.full((2, 3), -9, np.float32),
        "x": RNG.standard_normal((2, 5, 3)).astype(np.float32),
    }
    text = same_as_onnxruntime(path, feeds, backend)
    assert "scan t in 5 (axis = 0, reverse = true) carry" in text and "x[:, t]" in text


def same_as_onnx_reference(path, feeds, backend):
    """The imported program gives what onnx's reference evaluator computes."""
    from onnx.reference import ReferenceEvaluator

    program, weights = dl_import(path)
    got = DlcModel(str(program), backend=backend).load_weights(weights).predict(feeds)
    model = onnx.load(path)
    for name, want in zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    return program.read_text()


def loop_model(tmp_path, trips, cond_out="Identity"):
    """Loop(trips): h = h * 0.5 + x + i (the iteration number) carried, h * 2 stacked."""
    nodes = [
        h.make_node("Cast", ["i"], ["i_f"], to=F),
        h.make_node("Mul", ["h_in", "half"], ["halved"]),
        h.make_node("Add", ["halved", "x"], ["plus_x"]),
        h.make_node("Add", ["plus_x", "i_f"], ["h_out"]),
        h.make_node("Mul", ["h_out", "two"], ["y_t"]),
    ]
    nodes.append(
        h.make_node("Identity", ["cond_in"], ["cond_out"])
        if cond_out == "Identity"
        else h.make_node("Less", ["i", "three"], ["cond_out"])
    )
    body = h.make_graph(
        nodes,
        "body",
        [
            h.make_tensor_value_info("i", TensorProto.INT64, []),
            h.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            h.make_tensor_value_info("h_in", F, [2, 3]),
        ],
        [
            h.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            h.make_tensor_value_info("h_out", F, [2, 3]),
            h.make_tensor_value_info("y_t", F, [2, 3]),
        ],
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("half", 0.5), ("two", 2.0))]
        + [numpy_helper.from_array(np.array(3, np.int64), "three")],
    )
    # the condition given as true: onnx's reference evaluator runs no iteration without one
    return save(
        tmp_path,
        "loop",
        [h.make_node("Loop", ["trips", "keep", "h0"], ["h", "ys"], body=body)],
        [h.make_tensor_value_info("x", F, [2, 3]), h.make_tensor_value_info("h0", F, [2, 3])],
        [h.make_tensor_value_info("h", F, [2, 3]), h.make_tensor_value_info("ys", F, [None, 2, 3])],
        [numpy_helper.from_array(np.array(trips, np.int64), "trips"), numpy_helper.from_array(np.array(True), "keep")],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loop_with_a_trip_count_is_a_scan(tmp_path, backend):
    """A Loop of 4 iterations whose condition stays true: a scan of 4 steps, the iteration
    number a counter carried beside the loop's values. (onnxruntime is the oracle: onnx's
    reference evaluator concatenates a Loop's scan outputs, where the spec stacks them.)"""
    feeds = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "h0": RNG.standard_normal((2, 3)).astype(np.float32)}
    text = same_as_onnxruntime(loop_model(tmp_path, 4), feeds, backend)
    assert "scan t in 4 (axis = 0) carry" in text and '= cast(0, "i64")' in text


def test_a_loop_that_stops_on_a_condition_is_refused_by_name(tmp_path):
    path = loop_model(tmp_path, 10, cond_out="Less")
    with pytest.raises(
        Unsupported,
        match=r"node '.*' \(Loop, opset 17\): dlc cannot import a Loop whose "
        r"condition is computed in its body",
    ):
        import_model(read_model(path), source=path.name)


def if_model(tmp_path, condition):
    """If(condition): relu(x) * 2 or x - 1 (the branches read x from the graph)."""
    then_branch = h.make_graph(
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("Mul", ["r", "two"], ["then_y"])],
        "then",
        [],
        [h.make_tensor_value_info("then_y", F, [2, 3])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    else_branch = h.make_graph(
        [h.make_node("Sub", ["x", "one"], ["else_y"])],
        "else",
        [],
        [h.make_tensor_value_info("else_y", F, [2, 3])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    nodes = [h.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    inputs = [h.make_tensor_value_info("x", F, [2, 3])]
    if condition is None:  # computed at run time
        nodes.insert(0, h.make_node("ReduceSum", ["x"], ["total"], keepdims=0))
        nodes.insert(1, h.make_node("Greater", ["total", "zero"], ["cond"]))
        constants = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    else:
        constants = [numpy_helper.from_array(np.array(condition), "cond")]
    return save(tmp_path, "branch", nodes, inputs, [h.make_tensor_value_info("y", F, [2, 3])], constants)


@pytest.mark.parametrize("condition", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_if_with_a_condition_known_at_import_is_its_branch(tmp_path, backend, condition):
    text = same_as_onnx_reference(
        if_model(tmp_path, condition), {"x": RNG.standard_normal((2, 3)).astype(np.float32)}, backend
    )
    assert ("relu(x)" in text) == condition and "select" not in text


def test_an_if_on_a_condition_computed_at_run_time_is_refused_by_name(tmp_path):
    path = if_model(tmp_path, None)
    with pytest.raises(Unsupported, match="an If whose condition is computed at run time"):
        import_model(read_model(path), source=path.name)


def sequence_length(x="x"):
    """The nodes of T, the size of axis 1 of x, as int64[1] ("T1") and as a scalar ("T")."""
    return [
        h.make_node("Shape", [x], ["shape"]),
        h.make_node("Slice", ["shape", "one", "two"], ["T1"]),
        h.make_node("Squeeze", ["T1"], ["T"]),
    ]


def int64s(**arrays):
    return [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in arrays.items()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_weight_sliced_and_indexed_by_a_symbolic_length(tmp_path, backend):
    """P[0:T] and P[T - 1] of a longer weight (a learned position embedding) slice and index
    by the dim: the shape arithmetic that gives T does not fold them."""
    path = save(
        tmp_path,
        "positions",
        [
            *sequence_length(),
            h.make_node("Slice", ["P", "zero", "T1", "zero"], ["rows"]),
            h.make_node("Sub", ["T", "one_scalar"], ["last"]),
            h.make_node("Gather", ["P", "last"], ["row"]),
            h.make_node("Add", ["x", "rows"], ["a"]),
            h.make_node("Add", ["a", "row"], ["y"]),
        ],
        [h.make_tensor_value_info("x", F, ["B", "T", 4])],
        [h.make_tensor_value_info("y", F, ["B", "T", 4])],
        [weight("P", 16, 4), *int64s(zero=[0], one=[1], two=[2], one_scalar=1)],
    )
    x = RNG.standard_normal((2, 5, 4)).astype(np.float32)
    text = same_as_onnxruntime(path, {"x": x}, backend)
    assert "P[:T]" in text


def test_a_range_to_a_symbolic_length_and_a_dim_as_a_number(tmp_path):
    """Range(2, T + 2) is an arange over T; a dim cast to float (the divisor of a mean) is
    its run-time value."""
    path = save(
        tmp_path,
        "ranges",
        [
            *sequence_length(),
            h.make_node("Add", ["T", "two_scalar"], ["limit"]),
            h.make_node("Range", ["two_scalar", "limit", "one_scalar"], ["steps"]),
            h.make_node("Cast", ["steps"], ["steps_f"], to=F),
            h.make_node("Unsqueeze", ["steps_f", "one"], ["column"]),
            h.make_node("Mul", ["x", "column"], ["scaled"]),
            h.make_node("Cast", ["T"], ["T_f"], to=F),
            h.make_node("Div", ["scaled", "T_f"], ["y"]),
        ],
        [h.make_tensor_value_info("x", F, ["B", "T", 4])],
        [h.make_tensor_value_info("y", F, ["B", "T", 4])],
        int64s(one=[1], two=[2], one_scalar=1, two_scalar=2),
    )
    for steps in (3, 6):
        x = RNG.standard_normal((2, steps, 4)).astype(np.float32)
        text = same_as_onnxruntime(path, {"x": x}, "reference")
    assert "arange(T)" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scan_body_reshapes_to_dims_onnx_cannot_tell(tmp_path, backend):
    """A scan body (Bahdanau attention) that flattens an outer value with -1, multiplies it
    and reshapes it back to computed dims: ONNX's inference does not know the shapes in
    between; the importer infers them again from what it knows."""
    body = h.make_graph(
        [
            h.make_node("Reshape", ["keys", "flat"], ["rows"]),
            h.make_node("MatMul", ["rows", "Wk"], ["projected"]),
            h.make_node("Reshape", ["projected", "keys_shape"], ["k"]),
            h.make_node("Unsqueeze", ["h_in", "one"], ["q"]),
            h.make_node("Add", ["k", "q"], ["scores"]),
            h.make_node("Tanh", ["scores"], ["e"]),
            h.make_node("Reshape", ["e", "flat"], ["e_rows"]),
            h.make_node("MatMul", ["e_rows", "Wk"], ["e_projected"]),
            h.make_node("Reshape", ["e_projected", "keys_shape"], ["e_k"]),
            h.make_node("ReduceSum", ["e_k", "one"], ["context"], keepdims=0),
            h.make_node("Add", ["context", "x_t"], ["h_out"]),
            h.make_node("Identity", ["h_out"], ["y_t"]),
        ],
        "body",
        [h.make_tensor_value_info("h_in", F, ["B", 4]), h.make_tensor_value_info("x_t", F, ["B", 4])],
        [h.make_tensor_value_info("h_out", F, ["B", 4]), h.make_tensor_value_info("y_t", F, ["B", 4])],
    )
    path = save(
        tmp_path,
        "attention",
        [
            h.make_node("Shape", ["keys"], ["keys_shape"]),
            h.make_node(
                "Scan",
                ["h0", "x"],
                ["h", "ys"],
                body=body,
                num_scan_inputs=1,
                scan_input_axes=[1],
                scan_output_axes=[1],
            ),
        ],
        [
            h.make_tensor_value_info("h0", F, ["B", 4]),
            h.make_tensor_value_info("x", F, ["B", "T", 4]),
            h.make_tensor_value_info("keys", F, ["B", "S", 4]),
        ],
        [h.make_tensor_value_info("ys", F, ["B", "T", 4])],
        [weight("Wk", 4, 4), *int64s(flat=[-1, 4], one=[1])],
    )
    feeds = {
        "h0": RNG.standard_normal((2, 4)).astype(np.float32),
        "x": RNG.standard_normal((2, 3, 4)).astype(np.float32),
        "keys": RNG.standard_normal((2, 5, 4)).astype(np.float32),
    }
    text = same_as_onnxruntime(path, feeds, backend)
    assert "scan t in T" in text


def test_unnamed_dynamic_dims_get_names(tmp_path):
    path = save(
        tmp_path,
        "dyn",
        [h.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [h.make_tensor_value_info("x", F, [None, 3])],
        [h.make_tensor_value_info("y", F, [None, 3])],
    )
    program, _ = dl_import(path)
    assert "input x: f32[D0, 3]" in program.read_text()
    for n in (1, 4):
        x = RNG.standard_normal((n, 3)).astype(np.float32)
        same_as_onnxruntime(path, {"x": x}, "reference")


def test_the_program_reads_back(tmp_path):
    """The text builds with dlc's loader, in training and evaluation mode, and its
    parameters are exactly the checkpoint's."""
    program, weights = dl_import(convnet(tmp_path))
    p = load(str(program))
    for training in (True, False):
        model = p.build(None, training=training)
    saved, _, meta = checkpoint.load(weights)
    assert {q.name for q in model.params} == set(saved) and meta["model"] == "convnet"


# ---- fine-tuning ----------------------------------------------------------------------------------------------
def test_an_imported_model_fine_tunes(tmp_path):
    """A train block with init_from (the imported weights) and freeze: the loss falls and
    the frozen layer keeps its weights."""
    program, weights = dl_import(mlp(tmp_path))
    x = RNG.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    text = program.read_text().rstrip().rstrip("}")
    text += (
        "    target y: i32[batch]\n    loss sparse_cross_entropy(fc2, y)\n}\n\n"
        f"train mlp {{\n    data = \"data.npz\"\n    init_from = \"{weights.name}\"\n    freeze = [fc1]\n"
        "    optimizer = sgd(lr = 0.1)\n    batch = 16\n    epochs = 4\n}\n"
    )
    program.write_text(text)
    model = DlcModel(str(program), backend="reference")
    result = model.train(out=str(tmp_path / "runs"), log=lambda *a: None)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    before, _, _ = checkpoint.load(weights)
    np.testing.assert_array_equal(result.params["fc1.W"], before["fc1.W"])
    assert not np.allclose(result.params["fc2.W"], before["fc2.W"])


# ---- errors ---------------------------------------------------------------------------------------------------
def test_a_truncated_file_is_a_clear_error(tmp_path):
    data = mlp(tmp_path).read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlcError, match="cut.onnx is not an ONNX model") as e:
        read_model(bad)
    assert "truncated" in e.value.message


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("model m {\n    input x: f32[B, 3]\n}\n")
    with pytest.raises(DlcError, match="notes.onnx is not an ONNX model"):
        read_model(bad)
    with pytest.raises(DlcError, match="no such file"):
        read_model(tmp_path / "missing.onnx")


def test_an_unsupported_op_names_the_node_the_op_and_the_opset(tmp_path):
    path = save(
        tmp_path,
        "nonzero",
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("NonZero", ["r"], ["i"], name="positives")],
        [h.make_tensor_value_info("x", F, [2, 5])],
        [h.make_tensor_value_info("i", TensorProto.INT64, [2, None])],
    )
    with pytest.raises(Unsupported) as e:
        import_model(read_model(path), source=path.name)
    assert "nonzero.onnx: node 'positives' (NonZero, opset 17)" in e.value.message and e.value.kind == "op"


def test_a_node_whose_values_a_rule_cannot_read_is_refused_where_it_is(tmp_path, monkeypatch):
    """A rule that meets values it does not handle (a TypeError, say, from symbolic dims in
    an input it reads as numbers) refuses the node with its name, op and opset: never an
    internal error."""
    from dlc.compiler.onnx.rule_api.node import Rule
    from dlc.compiler.onnx.rules import RULES

    def confused(node):
        raise TypeError("slice indices must be integers")

    monkeypatch.setitem(RULES, "Relu", Rule(confused))
    monkeypatch.delenv("DLC_DEBUG", raising=False)
    path = save(
        tmp_path,
        "relu",
        [h.make_node("Relu", ["x"], ["y"], name="act")],
        [h.make_tensor_value_info("x", F, [2, 5])],
        [h.make_tensor_value_info("y", F, [2, 5])],
    )
    with pytest.raises(Unsupported) as e:
        import_model(read_model(path), source=path.name)
    assert (
        "relu.onnx: node 'act' (Relu, opset 17): dlc cannot import this node's inputs: its rule does not "
        "handle their values" in e.value.message
    )
    assert "TypeError" not in e.value.message  # a message never shows a Python exception


def test_an_attribute_dlc_cannot_express_is_refused(tmp_path):
    path = save(
        tmp_path,
        "pad",
        [h.make_node("Pad", ["x", "pads"], ["y"], mode="reflect", name="mirror")],
        [h.make_tensor_value_info("x", F, [2, 5])],
        [h.make_tensor_value_info("y", F, [2, 7])],
        [numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")],
    )
    with pytest.raises(
        Unsupported, match="node 'mirror' \\(Pad, opset 17\\): dlc cannot import the padding mode 'reflect'"
    ):
        import_model(read_model(path))


@pytest.mark.parametrize("opset", [5, 29])
def test_an_opset_outside_the_range_is_refused(tmp_path, opset):
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"])],
        "old",
        [h.make_tensor_value_info("x", F, [2])],
        [h.make_tensor_value_info("y", F, [2])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    with pytest.raises(DlcError, match=f"uses ONNX opset {opset}; dlc imports opsets 7 to 28"):
        import_model(model)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    program, _ = dl_import(mlp(tmp_path))
    _, other = dl_import(matmul_add(tmp_path))
    with pytest.raises(DlcError, match="does not match the model: missing fc1.W"):
        DlcModel(str(program), backend="reference").load_weights(other)


# ---- the command line ------------------------------------------------------------------------------------------
def dlc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dlc.runtime.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_import_writes_the_program_and_the_checkpoint(tmp_path):
    path = convnet(tmp_path)
    r = dlc("import", path.name, "-o", "net.dl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote net.dl" in r.stdout and "wrote net.npz" in r.stdout
    np.savez(tmp_path / "in.npz", x=RNG.standard_normal((2, 2, 12, 12)).astype(np.float32))
    r = dlc(
        "predict",
        "net.dl",
        "--weights",
        "net.npz",
        "--input",
        "in.npz",
        "--output",
        "out.npz",
        "--backend",
        "reference",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    expected = ort.InferenceSession(str(path)).run(None, {"x": np.load(tmp_path / "in.npz")["x"]})[0]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], expected, rtol=1e-5, atol=1e-6)
    r = dlc("import", path.name, "-o", "other.dl", "--weights", "w/other.npz", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "w" / "other.npz").is_file() and "wrote w/other.npz" in r.stdout


def test_cli_import_errors_exit_1_without_a_traceback(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07\x12\x04junk" * 3)
    r = dlc("import", "bad.onnx", "-o", "bad.dl", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "bad.onnx is not an ONNX model" in r.stderr
    assert not (tmp_path / "bad.dl").exists()
    path = mlp(tmp_path)
    r = dlc("import", path.name, "-o", "mlp.txt", cwd=tmp_path)  # a flag's error: a usage error, status 2
    assert r.returncode == 2 and r.stderr.startswith("--output: error: -o takes the .dl file to write")
    save(
        tmp_path,
        "perm",
        [h.make_node("Transpose", ["x"], ["y"], perm=[0, 0])],
        [h.make_tensor_value_info("x", F, [2, 3])],
        [h.make_tensor_value_info("y", F, [2, 2])],
    )
    r = dlc("import", "perm.onnx", "-o", "perm.dl", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not a permutation" in r.stderr
    assert "in the program imported from perm.onnx; nothing was written" in r.stderr
    assert not (tmp_path / "perm.dl").exists() and not (tmp_path / "perm.npz").exists()


def test_the_docs_list_the_ops_with_a_rule():
    from pathlib import Path
    from dlc.compiler.onnx.rules import RULES

    doc = (Path(__file__).parents[2] / "docs" / "interop.md").read_text()
    listed = doc.split("The ops with a rule")[1].split(".\n")[0]
    assert sorted(re.findall(r"\b[A-Z][A-Za-z0-9]+\b", listed.split(":", 1)[1])) == sorted(RULES)


# ---- the ONNX backend ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["reference", "native"])
def test_the_backend_runs_nodes_and_models(engine):
    from onnx.backend.base import Backend
    from dlc.runtime.interop.onnx_backend import DlcBackend

    assert issubclass(DlcBackend, Backend)
    assert DlcBackend.supports_device("CPU") and not DlcBackend.supports_device("CUDA")
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    (y,) = DlcBackend.run_node(h.make_node("Softmax", ["x"], ["y"], axis=1), [x], engine=engine)
    np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-6)
    # a Reshape's target shape fed at run time: the model is imported for each value of it
    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "shape"], ["r"]), h.make_node("Relu", ["r"], ["y"])],
        "rs",
        [h.make_tensor_value_info("x", F, [2, 6]), h.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [h.make_tensor_value_info("y", F, [None, None])],
    )
    rep = DlcBackend.prepare(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), engine=engine)
    assert rep.static == ["shape"]
    for target in ([3, 4], [12, 1]):
        out = rep.run([x, np.array(target, np.int64)])
        np.testing.assert_array_equal(out.y, np.maximum(x.reshape(target), 0))
    assert len(rep.programs) == 2
