"""The graph passes (compiler/passes/optimize.py): every example's train step computes the same
values after optimize(), each rewrite fires where it should and not where it would
change a value, the pass manager and its command-line flags, and autodiff and the passes
linear in the depth of a model."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dlc.compiler.ir import ops, graph as G
from dlc.compiler.passes import optimize as passes, autodiff
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.ir.dims import Dim
from dlc.compiler.frontend.loader import load, load_text
from dlc.compiler.ir.graph import Graph, TensorType, nested_graphs, to_text
from dlc.runtime.engines import interpreter
from dlc.runtime.cli import main, parser
from dlc.runtime.training.gradcheck import sample_inputs
from dlc.compiler.passes.optimize import optimize

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
WORKLOADS = ROOT / "benchmarks" / "workloads"
B = Dim.sym("B")


def counts(graph: Graph) -> Counter:
    """Ops of the graph and of every scan body in it."""
    return Counter(g.op(n) for g in nested_graphs(graph) for n in g.nx.nodes)


def step_of(path) -> tuple:
    model = load(str(path)).build(training=True)
    return model, train_step(model.graph)


def random_params(model, seed=0) -> dict:
    """Parameters at a scale where nothing saturates (the initializers are slow in numpy)."""
    rng = np.random.default_rng(seed)
    return {p.name: 0.3 * rng.standard_normal(tuple(p.type.shape)) for p in model.params}


def scan_bodies(graph: Graph, reverse: bool) -> list:
    return [graph.attrs(n)["body"] for n in graph.nodes_with("scan") if graph.attrs(n)["reverse"] == reverse]


# ---- the same values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_computes_the_same_after_optimization(path):
    model, step = step_of(path)
    before = to_text(step)
    optimized = passes.optimize(step)
    assert to_text(step) == before, "optimize() changed its argument"
    assert sum(counts(optimized).values()) < sum(counts(step).values())
    assert {k: t.type for k, t in optimized.outputs.items()} == {k: t.type for k, t in step.outputs.items()}
    feeds = sample_inputs(model, {"B": 2, "T": 3, "S": 4, "K": 3}, seed=1)
    params = random_params(model)
    want = interpreter.run(step, feeds, params, "f64")
    got = interpreter.run(optimized, feeds, params, "f64")
    assert got.keys() == want.keys()
    for name in want:
        # hoisting sums a gradient in another order: rounding at the scale of the largest element
        scale = float(np.max(np.abs(want[name]), initial=0.0))
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14 * scale, err_msg=name)


# ---- folding ---------------------------------------------------------------------------------------------
def graph_with_input(shape=(B, 4), dtype="f32") -> tuple:
    g = Graph("t")
    x = g.add1("input", type=TensorType(dtype, shape), name="x")
    return g, x


def run(graph: Graph, **feeds) -> dict:
    return interpreter.run(graph, feeds, {}, "f64")


def test_fold_computes_constant_expressions():
    g, x = graph_with_input()
    c = ops.neg(ops.constant(g, 2.0, "f32")) * 3.0  # -6, a scalar
    one_minus = ops.full(g, (B, 4), 1.0) - ops.full(g, (B, 4), 0.25)  # 0.75 over a symbolic shape
    g.outputs["y"] = x * c + one_minus
    folded = passes.optimize(g, ("fold",))
    consts = [np.asarray(folded.attrs(n)["value"]).item() for n in folded.nodes_with("constant")]
    assert -6.0 in consts and 0.75 in consts
    assert not {"neg", "sub"} & set(counts(passes.optimize(g, ("fold", "dce"))))
    x0 = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(run(folded, x=x0)["y"], run(g, x=x0)["y"])


def test_fold_keeps_sources_and_large_tensors():
    g, x = graph_with_input((5000,))
    big = ops.constant(g, np.arange(5000.0), "f32")
    small = ops.constant(g, np.arange(100.0), "f32")
    key = ops.constant(g, np.array([1, 2]), "i32")
    noise = g.add1("random", [key], shape=(5000,), dist="uniform", stream=0)
    g.outputs["big"] = x + ops.neg(big) + noise
    g.outputs["small"] = ops.neg(small)
    folded = passes.optimize(g, ("fold", "dce"))
    assert counts(folded)["random"] == 1 and counts(folded)["neg"] == 1  # -arange(5000) is not baked in
    small_out = folded.outputs["small"]
    assert folded.op(small_out.node) == "constant"
    np.testing.assert_array_equal(folded.attrs(small_out.node)["value"], -np.arange(100.0))


# ---- simplification ------------------------------------------------------------------------------------
def test_identities_collapse_to_the_input():
    g, x = graph_with_input((B, 3, 4))
    y = ops.neg(ops.neg(x)) + 0.0
    y = (y - 0.0) * 1.0 / 1.0
    y = ops.transpose(ops.transpose(y, (1, 0, 2)), (1, 0, 2))
    y = ops.reshape(ops.reshape(y, (B, 12)), (B, 3, 4))
    y = g.add1("cast", [y], dtype="f32")
    y = 1.0 * g.add1("slice", [y], starts=(0, 0, 0), stops=(B, 3, 4), steps=(1, 1, 1))
    g.outputs["y"] = y
    simple = passes.optimize(g)
    assert simple.outputs["y"].key() == (x.node, 0) and set(counts(simple)) == {"input"}


def test_views_compose():
    g, x = graph_with_input((B, 3, 4))
    t = ops.transpose(ops.transpose(x, (1, 0, 2)), (0, 2, 1))  # one transpose (1, 2, 0)
    s = ops.constant(g, 2.0, "f32")
    b = ops.broadcast_to(ops.reshape(ops.broadcast_to(ops.reshape(s, (1,)), (B,)), (B, 1)), (B, 4))
    g.outputs["t"] = t
    g.outputs["b"] = b
    simple = passes.optimize(g)
    assert counts(simple)["transpose"] == 1 and simple.attrs(simple.outputs["t"].node)["perm"] == (1, 2, 0)
    assert counts(simple)["reshape"] == 0 and counts(simple)["broadcast"] == 1
    x0 = np.random.default_rng(0).standard_normal((2, 3, 4))
    want, got = run(g, x=x0), run(simple, x=x0)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_times_zero_is_not_simplified():
    g, x = graph_with_input((3,))
    g.outputs["y"] = x * 0.0 + 0.0 * x
    simple = passes.optimize(g)
    assert counts(simple)["mul"] == 1  # not rewritten; cse makes x * 0 and 0 * x one node
    y = run(simple, x=np.array([np.inf, np.nan, 2.0]))["y"]
    assert np.isnan(y[0]) and np.isnan(y[1]) and y[2] == 0.0


def padded(x, lo: int, hi: int):
    return ops.pad(x, (0, lo), (0, hi), (0, 0))


def test_disjoint_padded_pieces_become_a_concat():
    g = Graph("t")
    a, b, c = (g.add1("input", type=TensorType("f32", (B, w)), name=n) for n, w in (("a", 2), ("b", 3), ("c", 1)))
    g.outputs["tiles"] = padded(a, 4, 0) + padded(b, 1, 2) + padded(c, 0, 5)  # c | b | a
    g.outputs["gap"] = padded(a, 0, 6) + padded(b, 5, 0)  # a, 3 zeros, b
    g.outputs["overlap"] = padded(a, 0, 2) + padded(b, 1, 0)
    simple = passes.optimize(g)
    tiles, gap, overlap = (simple.outputs[k] for k in ("tiles", "gap", "overlap"))
    assert simple.op(tiles.node) == "concat" and [t.node for t in simple.inputs(tiles.node)] == [2, 1, 0]
    assert simple.op(gap.node) == "concat" and len(simple.inputs(gap.node)) == 3
    assert simple.op(overlap.node) == "add"
    feeds = {n: np.random.default_rng(1).standard_normal((2, w)) for n, w in (("a", 2), ("b", 3), ("c", 1))}
    want, got = run(g, **feeds), run(simple, **feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def stdlib_line(file: str, text: str) -> int:
    """The line of the standard library's `file` that holds `text`."""
    lines = (ROOT / "compiler" / "stdlib" / file).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_lstm_gate_gradients_are_one_concat_in_the_backward_scan():
    _, step = step_of(ROOT / "examples" / "char_lstm.dl")
    (before,) = scan_bodies(step, reverse=True)
    assert counts(before)["pad"] == 4 and counts(before)["concat"] == 0
    optimized = passes.optimize(step)
    (body,) = scan_bodies(optimized, reverse=True)
    assert counts(body)["pad"] == 0 and counts(body)["concat"] == 1
    (concat,) = body.nodes_with("concat")
    # the concat took the place (number and source line) of the sum it replaces
    assert before.op(concat) == "add" and body.nx.nodes[concat]["span"] == before.nx.nodes[concat]["span"]
    gates = "i, f, g, o = split(xw[:, t] + h @ Wh + bh, 4)"  # the first such line: lstm's
    assert body.nx.nodes[concat]["span"].line == stdlib_line("recurrent.dl", gates)


# ---- common subexpressions and dead code ---------------------------------------------------------------------
def test_cse_merges_a_repeated_subexpression():
    g, x = graph_with_input((B, 4))
    w = g.add1("param", type=TensorType("f32", (4, 4)), name="w", trainable=True)
    v = g.add1("param", type=TensorType("f32", (4, 4)), name="v", trainable=True)
    g.outputs["y"] = ops.matmul(x, w) + ops.matmul(x, w) + ops.matmul(x, v)
    key = ops.constant(g, np.array([3, 4]), "i32")
    draws = [g.add1("random", [key], shape=(B, 4), dist="uniform", stream=7) for _ in range(2)]
    g.outputs["r"] = draws[0] - draws[1]
    merged = passes.optimize(g, ("cse", "dce"))
    assert counts(merged)["matmul"] == 2 and counts(merged)["random"] == 1 and counts(merged)["param"] == 2


def test_cse_merges_copies_the_fusion_decides_what_is_recomputed():
    g, x = graph_with_input((B, 4))
    g.outputs["y"] = ops.unary("exp", x) + ops.unary("exp", x)
    assert counts(passes.optimize(g))["exp"] == 1  # tests/native/test_fusion_groups.py: it costs no memory


def test_scans_lose_the_results_and_arguments_nothing_reads():
    _, step = step_of(WORKLOADS / "lstm.dl")
    optimized = passes.optimize(step, ("fold", "simplify", "cse", "dce"))  # hoist makes a new scan node
    fwd, bwd = sorted(step.nodes_with("scan"))
    assert sorted(optimized.nodes_with("scan")) == [fwd, bwd]
    assert len(optimized.types(fwd)) == len(step.types(fwd)) - 1  # the stacked cell state: nothing reads it
    assert len(optimized.inputs(bwd)) == len(step.inputs(bwd)) - 2  # the gate inputs and a bias, unused
    body = optimized.attrs(bwd)["body"]
    assert [body.attrs(a.node)["index"] for a in body.args] == list(range(len(body.args)))
    assert len(optimized.attrs(bwd)["xs_axes"]) == len(step.attrs(bwd)["xs_axes"]) - 1


# ---- autodiff and the passes: cost linear in the number of layers ------------------------------------
def mlp(layers: int) -> str:
    return (
        f"model mlp {{\n    input x: f32[B, 8]\n    target y: i32[B]\n    h = x\n"
        f"    repeat i in 0..{layers} {{ h = dense(h, 8, relu) }}\n"
        f"    loss sparse_cross_entropy(h, y)\n}}\n"
    )


def _optimize_seconds(layers: int) -> float:
    step = autodiff.train_step(load_text(mlp(layers)).build().graph)
    best = float("inf")
    for _ in range(2):
        started = time.thread_time()
        optimize(step)
        best = min(best, time.thread_time() - started)
    return best


@pytest.mark.slow  # at 40 and 320 layers: test_compile_scaling.py's test of the Python compile stages
def test_graph_passes_are_linear_in_depth():
    # 4x the layers: linear is 4x; a scan of every output (two per layer) at every rewrite
    # and every use count made it 20x
    small, large = _optimize_seconds(300), _optimize_seconds(1200)
    assert large / small < 9, (small, large)


@pytest.mark.slow  # at 40 and 320 layers: test_compile_scaling.py's test of the Python compile stages
def test_gradient_graph_is_linear_in_depth():
    """The train step of a 3,000-layer MLP (33,000 forward nodes): with one graph walk per
    parameter (quadratic) this took minutes."""
    model = load_text(mlp(3000)).build()
    started = time.perf_counter()
    step = autodiff.train_step(model.graph)
    assert time.perf_counter() - started < 30
    assert len([k for k in step.outputs if k.startswith("grad:")]) == 6000


def test_graph_outputs_count_what_they_read():
    """Graph.uses and Graph.redirect look outputs up by the values they read (a scan of
    every output at each rewrite made the graph passes quadratic in the depth)."""
    g = G.Graph()
    a, b = (g.add1("constant", value=np.asarray(v), dtype="f32") for v in (1.0, 2.0))
    c = g.add1("add", [a, b])
    g.outputs = {"p": a, "q": a}
    assert (g.uses(a), g.uses(b)) == (3, 1)  # two outputs and the add
    g.outputs["q"] = b
    del g.outputs["p"]
    g.outputs.update(r=c, s=c)
    assert (g.uses(a), g.uses(b), g.uses(c)) == (1, 2, 2)
    g.redirect(c.node, [b])
    assert list(g.outputs) == ["q", "r", "s"]  # in their order, as a dict keeps them
    assert [t.key() for t in g.outputs.values()] == [b.key()] * 3
    assert (g.uses(b), g.uses(c)) == (4, 0)
    assert g.outputs.pop("q").key() == b.key() and g.uses(b) == 3
    g.outputs.setdefault("t", a)
    g.outputs["r"] = a
    assert list(g.outputs) == ["r", "s", "t"] and (g.uses(a), g.uses(b)) == (3, 2)


# ---- the pass manager ------------------------------------------------------------------------------------------
def test_dump_after_each_pass():
    _, step = step_of(ROOT / "examples" / "perceptron.dl")
    texts = []
    passes.optimize(step, dump="all", dump_to=texts.append)
    assert [t.splitlines()[0] for t in texts[: len(passes.PIPELINE)]] == [
        f"// train_step after {p} (round 1)" for p in passes.PIPELINE
    ]
    only = []
    passes.optimize(step, dump="cse", dump_to=only.append)
    assert len(only) >= 1 and all("after cse" in t.splitlines()[0] for t in only)
    with pytest.raises(ValueError, match="no graph pass 'fuse'"):
        passes.optimize(step, ("fold", "fuse"))


# ---- the command line ----------------------------------------------------------------------------------------------
LSTM = str(ROOT / "examples" / "char_lstm.dl")
XOR = str(ROOT / "examples" / "xor_mlp.dl")


def test_compile_shows_the_optimized_graph(capsys):
    assert main(["compile", LSTM, "--emit", "grad"]) == 0
    plain = capsys.readouterr().out
    assert main(["compile", LSTM, "--emit", "grad", "-O"]) == 0
    optimized = capsys.readouterr().out
    assert "concat(" not in plain and "concat(" in optimized and len(optimized) < len(plain)
    assert main(["compile", LSTM, "--emit", "grad", "--passes", "simplify,dce", "--dump-after", "simplify"]) == 0
    out, err = capsys.readouterr()
    assert "concat(" in out and err.startswith("// train_step after simplify (round 1)\n%0 = input")
    assert "after dce" not in err


def test_compile_pass_flags_are_checked(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compile", LSTM, "--emit", "grad", "--passes", "fold,fuse"])
    assert e.value.code == 2 and "no graph pass 'fuse'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compile", LSTM, "--emit", "grad", "--dump-after", "fuse"])
    assert e.value.code == 2
    assert main(["compile", LSTM, "--emit", "grad", "--passes", "fold", "--dump-after", "cse"]) == 1
    assert "does not run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["eval", "--weights", "w.npz"],
        ["predict", "--weights", "w.npz", "--input", "x.npz"],
        ["generate", "--weights", "w.npz"],
        ["bench"],
    ],
)
def test_every_running_command_takes_threads(command, capsys):
    args = parser().parse_args([command[0], XOR, *command[1:], "--threads", "3"])
    assert args.threads == 3
    for bad in ("0", "-1", "two", "1025"):
        with pytest.raises(SystemExit) as e:
            main([command[0], XOR, *command[1:], "--threads", bad])
        assert e.value.code == 2 and "from 1 to 1024" in capsys.readouterr().err


def test_threads_sets_the_native_thread_count(tmp_path, monkeypatch, capsys):
    from dlc.runtime.engines.cores import threads

    monkeypatch.setenv("DLC_NUM_THREADS", "2")  # restored after the test
    assert main(["train", XOR, "--epochs", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert os.environ["DLC_NUM_THREADS"] == "1" and threads() == 1
    assert "trained xor_mlp for 1 epoch " in capsys.readouterr().out
