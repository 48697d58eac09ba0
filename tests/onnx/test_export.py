"""ONNX export (compiler/onnx/export.py): onnxruntime runs the exported file and gives
dlc's predictions.

Every example, every standard-library layer (the model cases of tests/helpers/native_cases.py,
plus the padding kinds and directions they leave out) and every primitive case of that
file (forward only) is exported once, passes `onnx.checker` with the full check, and is
run by onnxruntime at two sizes of its symbolic dims (batch and sequence lengths): one
file serves them all. The outputs must equal the reference's to 1e-5 of the output's
largest magnitude (integers and bools exactly).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from dlc.compiler.ir.dims import Dim, symbols  # noqa: E402
from dlc.compiler.errors import DlcError, Span  # noqa: E402
from dlc.compiler.ir.graph import Graph, Tensor, TensorType  # noqa: E402
from dlc.compiler.frontend.loader import load_text  # noqa: E402
from dlc.compiler.frontend.model import Model, ModelInput  # noqa: E402
from dlc.compiler.onnx.export import EXPORT_RULES, NOT_EXPORTABLE, save_onnx, to_onnx  # noqa: E402
from dlc.compiler.ir.primitives import PRIMITIVES  # noqa: E402
from dlc.runtime.interop import checkpoint  # noqa: E402
from dlc.runtime.engines import interpreter  # noqa: E402
from dlc.runtime.api import DlcModel  # noqa: E402
from dlc.runtime.cli import main  # noqa: E402
from dlc.runtime.engines.reference import predict_graph  # noqa: E402
from helpers.numeric import ops_in  # noqa: E402
from helpers.native_cases import (
    ACTIVATIONS,
    LAYERS,
    MODEL_INPUTS,
    PRIMS,
    SCAN_PARAMS,
    SCANS,
    SLOW_LAYERS,
    case_rng,
    primitive_feeds,
)
from helpers.onnx_runs import EXAMPLES, SIZES, assert_close, exported, float32_feeds, initial_params, run_onnx  # noqa: E402


# ---- the records ---------------------------------------------------------------------------------------------
def test_every_primitive_has_an_export_rule_or_a_reason():
    both = set(EXPORT_RULES) & set(NOT_EXPORTABLE)
    neither = set(PRIMITIVES) - set(EXPORT_RULES) - set(NOT_EXPORTABLE)
    assert not both, f"both an export rule and a reason not to export: {sorted(both)}"
    assert not neither, f"neither an export rule nor a reason not to export: {sorted(neither)}"
    assert set(EXPORT_RULES) | set(NOT_EXPORTABLE) <= set(PRIMITIVES)


# ---- the examples --------------------------------------------------------------------------------------------
def check_example(path: Path, backend: str):
    m = DlcModel(str(path), backend=backend)
    m.params = initial_params(m.train_model, m.eval_model)
    proto = exported(m.eval_model, m.params)
    assert all(node.doc_string for node in all_nodes(proto.graph)), "a node without its .dl place"
    for k, sizes in enumerate(SIZES):
        feeds = float32_feeds(m.eval_model, sizes, seed=k)
        ref = m.predict(feeds)
        got = run_onnx(proto, feeds)
        assert got.keys() == ref.keys()
        for name in ref:
            assert_close(got[name], ref[name], f"{path.stem} {name} at {sizes}")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_matches_the_reference_engine(path):
    check_example(path, "reference")


def test_an_evaluation_graph_that_draws_random_numbers_is_refused(tmp_path, capsys):
    example = Path(__file__).parents[2] / "examples" / "vae.dl"
    assert main(["export", str(example), "-o", str(tmp_path / "vae.onnx")]) == 1
    err = capsys.readouterr().err
    assert "vae.dl:" in err and "error: random cannot be exported to ONNX" in err and "Traceback" not in err
    assert not (tmp_path / "vae.onnx").exists()


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem in ("xor_mlp", "simple_rnn")], ids=lambda p: p.stem)
def test_example_matches_the_native_engine(path):
    check_example(path, "native")


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_matches_the_native_engine(path):
    check_example(path, "native")


# ---- the standard library ------------------------------------------------------------------------------------
# what the cases of tests/helpers/native_cases.py leave out: the other padding kinds and directions
MORE_LAYERS = {
    "conv2d_valid": "output y = conv2d(img, 4, 3)",
    "conv2d_same_even": "output y = conv2d(img, 3, 2, padding = \"same\")",
    "conv2d_pad_pair": "output y = conv2d(img, 3, 3, stride = 2, padding = (1, 0), bias = false)",
    "conv1d_same_even": "output y = conv1d(swapaxes(x, 1, 2), 4, 4, padding = \"same\")",
    "conv1d_valid_stride": "output y = conv1d(img[:, :, 0], 2, 3, stride = 2)",
    "lstm_reverse": "output y = lstm(x, 3, reverse = true)",
    "gru_state": "hs, h = gru(x, 4, state = (dense(v, 4),), return_state = true)\n output y = hs\n output h = h",
    "bidirectional_lstm_sum": "output y = bidirectional(x, lstm, 3, merge = \"sum\")",
    "batchnorm_then_pool": "output y = maxpool2d(relu(batchnorm(conv2d(img, 3, 1))), 2)",
    "mean_over_batch": "output y = v - mean(v, 0)",
    "broadcasts_only": "output y = broadcast_to(v[0], B, 129) * 2.0",
    "one_hot_argmax": "output y = one_hot(argmax(v, -1), 129)\n output k = argmax(v, -1)",
    "two_symbolic_dims": "output y = reshape(x, B * T, 13)\n output z = reshape(x, B, T * 13)",
    "scan_fixed_length": "output y = scan k in 3 carry p = x[:, 0] {\n p = p * 0.5 + 1\n }",
    "scan_integer_carry": SCAN_PARAMS
    + """
    h, k = scan t in T carry h = zeros[B, 13], k = int(zeros[B, 13]) {
        k = k + int(x[:, t] > 0)
        h = tanh(h @ U + x[:, t] @ W) + float(k)
    }
    output h
    output k""",
}

LAYER_CASES = {
    **{f"layer-{k}": v for k, v in {**LAYERS, **SLOW_LAYERS, **MORE_LAYERS}.items()},
    **{f"act-{a}": f"param s: f32[129] = ones\n output y = {a}(2 * v * s)" for a in ACTIVATIONS},
    **{f"scan-{k}": SCAN_PARAMS + v for k, v in SCANS.items()},
}
LAYER_SIZES = [{"B": 2, "T": 3}, {"B": 5, "T": 7}]


def with_running_statistics(params: dict, rng) -> dict:
    """Batchnorm's running statistics away from their initial 0 and 1."""
    out = dict(params)
    for name, v in params.items():
        if name.endswith("running_mean"):
            out[name] = rng.standard_normal(v.shape).astype(v.dtype)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
    return out


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_stdlib_layer_matches_the_reference(name):
    program = load_text(f"model m {{{MODEL_INPUTS}\n    {LAYER_CASES[name]}\n}}", f"{name}.dl")
    model = program.build(training=False)
    params = with_running_statistics(initial_params(program.build(training=True), model, seed=1), case_rng(name))
    proto = exported(model, params)
    graph = predict_graph(model)
    for k, sizes in enumerate(LAYER_SIZES):
        feeds = float32_feeds(model, sizes, seed=k)
        ref = {name[len("output:") :]: v for name, v in interpreter.run(graph, feeds, params).items()}
        got = run_onnx(proto, feeds)
        for out in ref:
            assert_close(got[out], ref[out], f"{name} {out} at {sizes}")


def test_batchnorm_uses_the_running_statistics():
    """A regression guard for the case above: the statistics given change the output."""
    program = load_text(f"model m {{{MODEL_INPUTS}\n    output y = batchnorm(img)\n}}", "bn.dl")
    model = program.build(training=False)
    params = initial_params(program.build(training=True), model)
    feeds = float32_feeds(model, {"B": 2, "T": 3})
    plain = run_onnx(exported(model, params), feeds)["y"]
    moved = run_onnx(exported(model, with_running_statistics(params, np.random.default_rng(0))), feeds)["y"]
    assert np.abs(plain - moved).max() > 0.1


# ---- every primitive, forward ---------------------------------------------------------------------------------
def graph_model(graph: Graph, inputs: dict, outputs: dict) -> Model:
    """A Model around a graph built by hand: `inputs` name -> Tensor, `outputs` name -> Tensor."""
    span = Span(f"{graph.name}.dl", 1, 1)
    graph.outputs = {f"output:{k}": t for k, t in outputs.items()}
    model_inputs = [ModelInput(k, t.type, span, False) for k, t in inputs.items()]
    return Model(graph.name, graph, Graph("init"), model_inputs, [], False, None, span)


def primitive_model(name: str) -> Model:
    """The forward graph of a primitive case; a size no operand has (a broadcast's B) is
    the axis of an input of its own, as a model declares it."""
    case = PRIMS[name]
    g = Graph(name)
    t = {n: g.add1("input", type=TensorType(dtype, shape), name=n) for n, (dtype, shape, _) in case.inputs.items()}
    built = case.build(g, t)
    outputs = {"y": built} if isinstance(built, Tensor) else dict(built)
    for s in sorted(
        set().union(*(symbols(typ.shape) for n in g.nx.nodes for typ in g.types(n)))
        - set().union(*(symbols(x.shape) for x in t.values()))
    ):
        t[f"{s}_axis"] = g.add1("input", type=TensorType("f32", (Dim.sym(s),)), name=f"{s}_axis")
    return graph_model(g, t, outputs)


EXPORTABLE_PRIMS = [k for k in PRIMS if not ops_in(primitive_model(k).graph) & set(NOT_EXPORTABLE)]


@pytest.mark.parametrize("name", EXPORTABLE_PRIMS)
def test_primitive_matches_the_reference(name):
    """Each op in the dtype the graph gives it (f64 stays f64), against the interpreter."""
    model = primitive_model(name)
    proto = exported(model, {})
    for sizes, feeds in primitive_feeds(name, model.graph):
        ref = interpreter.run(model.graph, feeds, {}, float_dtype=None)
        got = run_onnx(proto, feeds)
        for out, value in ref.items():
            assert_close(got[out[len("output:") :]], value, f"{name} {out} at {sizes}")


def test_the_primitive_cases_leave_out_only_what_is_not_exportable():
    refused = set(PRIMS) - set(EXPORTABLE_PRIMS)
    assert refused == {"random-uniform", "scatter_add", "replica_mean", "maxpool2d_gather"}
    covered = set().union(*(ops_in(primitive_model(k).graph) for k in EXPORTABLE_PRIMS))
    assert set(EXPORT_RULES) - covered <= {"param", "scan", "arg"}  # the layer cases have those


def test_expm1_and_log1p_keep_the_digits_of_small_numbers():
    g = Graph("small")
    x = g.add1("input", type=TensorType("f32", (5,)), name="x")
    model = graph_model(g, {"x": x}, {"e": g.add1("expm1", [x]), "l": g.add1("log1p", [x])})
    feeds = {"x": np.array([1e-9, -3e-7, 2e-5, 0.0, np.inf], np.float32)}
    got = run_onnx(exported(model, {}), feeds)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got["e"], np.expm1(feeds["x"]), rtol=1e-6)
        np.testing.assert_allclose(got["l"], np.log1p(feeds["x"]), rtol=1e-6)


def test_float64_models_export_as_double():
    program = load_text(
        """
model m {
    input x: f64[B, 3]
    param W: f64[3, 2] = glorot_uniform
    param b: f64[2] = zeros
    output y = tanh(x @ W + b) * float(3)
}""",
        "f64.dl",
    )
    model = program.build(training=False)
    params = initial_params(program.build(training=True), model)
    proto = exported(model, params)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert proto.graph.initializer[0].data_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(0).standard_normal((4, 3))
    got = run_onnx(proto, {"x": x})["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.tanh(x @ params["W"] + params["b"]) * 3, rtol=1e-12)


# ---- the structure of the exported graph ------------------------------------------------------------------------
RNN = """
model m {{
    input x: f32[B, {T}, 3]
    hs = rnn(x, 4)
    output y = dense(hs[:, -1], 1)
}}"""


def all_nodes(graph: onnx.GraphProto) -> list:
    out = []
    for node in graph.node:
        out.append(node)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += all_nodes(a.g)
    return out


def rnn_export(length) -> onnx.ModelProto:
    program = load_text(RNN.format(T=length), "rnn.dl")
    model = program.build(training=False)
    return exported(model, initial_params(program.build(training=True), model))


def test_a_scan_is_one_scan_node_whatever_its_length():
    counts = []
    for length in (3, 30):
        proto = rnn_export(length)
        scans = [n for n in proto.graph.node if n.op_type == "Scan"]
        assert len(scans) == 1
        body = onnx.helper.get_attribute_value(next(a for a in scans[0].attribute if a.name == "body"))
        assert [n.op_type for n in body.node if n.op_type in ("Gemm", "Tanh")] == ["Gemm", "Tanh"]
        assert "hs.Wh" not in [i.name for i in body.input]  # an invariant: read from the outer graph
        counts.append(len(all_nodes(proto.graph)))
    assert counts[0] == counts[1]


def test_symbolic_dims_are_dim_params():
    proto = rnn_export("T")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["B", "T", 3]
    out = proto.graph.output[0]
    assert out.name == "y" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["B", 1]
    sess_feeds = {"x": np.ones((2, 9, 3), np.float32)}
    assert run_onnx(proto, sess_feeds)["y"].shape == (2, 1)


def test_doc_strings_name_the_source_and_initializers_the_parameters():
    proto = rnn_export("T")
    docs = [n.doc_string for n in all_nodes(proto.graph)]
    assert all(docs), "a node without its .dl place"
    # the dense layer: rnn.dl, line 5 (the user's file), through the standard library
    assert any(re.fullmatch(r"<stdlib>/layers\.dl:\d+:\d+, called from rnn\.dl:5:\d+", d) for d in docs)
    assert any(re.fullmatch(r"<stdlib>/recurrent\.dl:\d+:\d+, called from rnn\.dl:4:\d+", d) for d in docs)
    assert any(re.fullmatch(r"rnn\.dl:5:\d+", d) for d in docs)  # hs[:, -1]
    assert sorted(i.name for i in proto.graph.initializer) == ["hs.Wh", "hs.Wx", "hs.bh", "hs.bx", "y.W", "y.b"]


def test_outputs_of_one_value_and_of_an_input_get_their_own_names():
    program = load_text(
        """
model m {
    input x: f32[B, 4]
    h = x * 2
    output a = h
    output b = h
    output same = x
}""",
        "outs.dl",
    )
    proto = exported(program.build(training=False), {})
    assert [o.name for o in proto.graph.output] == ["a", "b", "same"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = run_onnx(proto, {"x": x})
    assert np.array_equal(got["a"], 2 * x) and np.array_equal(got["b"], 2 * x) and np.array_equal(got["same"], x)


def test_a_bias_is_added_without_an_expand():
    """ONNX's Add broadcasts: a dense layer is Gemm and Add."""
    program = load_text("model m {\n input x: f32[B, 4]\n output y = dense(x, 3)\n}", "dense.dl")
    model = program.build(training=False)
    proto = exported(model, initial_params(program.build(training=True), model))
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Add"]


def test_a_checkpoint_exports_with_its_scalar_parameters(tmp_path):
    """load_weights kept a scalar parameter (the perceptron's bias) as an array of one."""
    path = Path(__file__).parents[2] / "examples" / "perceptron.dl"
    m = DlcModel(str(path), backend="reference")
    checkpoint.save(tmp_path / "w.npz", initial_params(m.train_model, m.eval_model), {}, {})
    m.load_weights(tmp_path / "w.npz")
    assert m.params["b"].shape == ()
    feeds = float32_feeds(m.eval_model, {"B": 3})
    assert_close(run_onnx(exported(m.eval_model, m.params), feeds)["label"], m.predict(feeds)["label"], "label")


def test_save_onnx_writes_a_file_onnxruntime_reads(tmp_path):
    program = load_text(RNN.format(T="T"), "rnn.dl")
    model = program.build(training=False)
    path = tmp_path / "rnn.onnx"
    save_onnx(model, initial_params(program.build(training=True), model), path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert run_onnx(proto, {"x": np.ones((3, 4, 3), np.float32)})["y"].shape == (3, 1)


@pytest.mark.parametrize("example", ["digits_cnn", "transformer_classifier"])
def test_onnxruntimes_quantization_preprocessing_reads_the_export(example, tmp_path, monkeypatch):
    """onnxruntime's quant_pre_process (its symbolic shape inference, then its graph optimizer
    and ONNX's shape inference), which its quantize_static asks for first, takes the export of a
    CNN (a softmax's maximum) and of a transformer (positions cut to T, attention): every value
    gets a shape, its dims B and T kept as the inputs name them, and the processed model gives
    dlc's predictions at two sizes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.tools.symbolic_shape_infer import get_shape_from_value_info

    monkeypatch.chdir(tmp_path)  # where onnxruntime leaves the temporary file of a failed inference
    m = DlcModel(str(Path(__file__).parents[2] / "examples" / f"{example}.dl"), backend="reference")
    m.params = initial_params(m.train_model, m.eval_model)
    save_onnx(m.eval_model, m.params, tmp_path / "model.onnx")
    quant_pre_process(str(tmp_path / "model.onnx"), str(tmp_path / "pre.onnx"), skip_optimization=True)
    graph = onnx.load(str(tmp_path / "pre.onnx")).graph
    shapes = {v.name: get_shape_from_value_info(v) for v in list(graph.value_info) + list(graph.output)}
    made = [o for node in graph.node for o in node.output]
    assert made and all(shapes.get(o) is not None for o in made), [o for o in made if shapes.get(o) is None]
    dims = {d for o in made for d in shapes[o] if isinstance(d, str)}
    # polynomials of B and T (B*T), none that onnxruntime had to make up (unk__0) or bound (Min(64, T))
    assert {"B", "T"} & dims and all(re.fullmatch(r"[BT0-9*+ -]+", d) for d in dims), dims
    quant_pre_process(str(tmp_path / "model.onnx"), str(tmp_path / "optimized.onnx"))  # with the optimizer
    for k, sizes in enumerate(SIZES):
        feeds = float32_feeds(m.eval_model, sizes, seed=k)
        ref = m.predict(feeds)
        for processed in ("pre.onnx", "optimized.onnx"):
            got = run_onnx(onnx.load(str(tmp_path / processed)), feeds)
            for name in ref:
                assert_close(got[name], ref[name], f"{example} {name} at {sizes}, {processed}")


# ---- errors -----------------------------------------------------------------------------------------------------
def test_a_random_draw_is_refused_at_its_line():
    program = load_text(
        """model m {
    input x: f32[B, 4]
    h = x * 2
    output y = h + random_uniform(B, 4)
}""",
        "rand.dl",
    )
    with pytest.raises(DlcError) as e:
        to_onnx(program.build(training=False), {})
    assert e.value.span.file == "rand.dl" and e.value.span.line == 4
    assert "random cannot be exported to ONNX" in e.value.render()


def test_attention_bounded_by_key_counts_is_refused_at_the_users_call():
    """A softmax over no keys is 0 in dlc and NaN in ONNX: cached_attention's length is refused."""
    program = load_text(
        """model m {
    input q: f32[B, 2, 1, 8]
    input cache: f32[B, 2, 16, 8]
    input length: i32[B, 1]
    output y = cached_attention(q, cache, cache, q, q, none, none, length)
}""",
        "step.dl",
    )
    with pytest.raises(DlcError) as e:
        to_onnx(program.build(training=False), {})
    assert (e.value.span.file, e.value.span.line) == ("step.dl", 5)
    assert "bounded by key counts" in e.value.render()


def test_a_refused_op_inside_the_standard_library_points_at_the_users_call():
    program = load_text(
        """
def noisy(x) = x + random_normal(shape(x))
model m {
    input x: f32[B, 4]
    output y = noisy(x)
}""",
        "noisy.dl",
    )
    with pytest.raises(DlcError) as e:
        to_onnx(program.build(training=False), {})
    assert (e.value.span.file, e.value.span.line) == ("noisy.dl", 2)


@pytest.mark.parametrize(
    "source, params, phrase",
    [
        ("input x: f32[B, 4]\n param W: f32[4, 2] = zeros\n output y = x @ W", {}, "no value given for parameter W"),
        (
            "input x: f32[B, 4]\n param W: f32[4, 2] = zeros\n output y = x @ W",
            {"W": np.zeros((2, 4))},
            "parameter W is f32[4, 2]",
        ),
        ("input x: f32[B, 4]\n target t: f32[B, 4]\n output y = x + t", {}, "depends on the target t"),
        ("input x: f32[B, 4]\n output x2 = x\n output x = x * 2", {}, "output x has the name of an input"),
        ("input x: f32[B, 4]\n loss mean(x)", {}, "declares no outputs"),
        (
            "input x: f32[B, 4]\n target t: f32[N]\n output y = x * float(size(t, 0))",
            {},
            "the size N is not an axis of any input",
        ),
    ],
)
def test_export_errors(source, params, phrase):
    program = load_text(f"model m {{\n {source}\n}}", "bad.dl")
    with pytest.raises(DlcError) as e:
        to_onnx(program.build(training=False), params)
    assert phrase in e.value.message


def test_every_model_of_a_file_exports():
    program = load_text(
        """
model encoder {
    input x: f32[B, T, 3]
    output h = lstm(x, 4)
}
model classifier {
    input x: f32[B, 3]
    output p = softmax(dense(x, 5))
}""",
        "two.dl",
    )
    for name, out, shape in [("encoder", "h", (2, 6, 4)), ("classifier", "p", (2, 5))]:
        model = program.build(name, training=False)
        proto = exported(model, initial_params(program.build(name, training=True), model))
        assert proto.graph.name == name
        x = np.ones((2, 6, 3) if name == "encoder" else (2, 3), np.float32)
        assert run_onnx(proto, {"x": x})[out].shape == shape


def test_the_module_imports_without_onnx():
    code = "import sys, dlc.compiler.onnx.export; assert 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_the_onnx_package_the_error_says_what_to_install(monkeypatch):
    program = load_text("model m {\n input x: f32[B, 4]\n output y = x * 2\n}", "m.dl")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(DlcError, match=r'pip install "dlc\[onnx\]"'):
        to_onnx(program.build(training=False), {})


def test_a_training_mode_model_is_refused():
    program = load_text("model m {\n input x: f32[B, 4]\n output y = dropout(x, 0.5)\n}", "train.dl")
    with pytest.raises(DlcError, match="evaluation-mode"):
        to_onnx(program.build(training=True), {})
