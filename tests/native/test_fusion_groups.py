"""The fusion pass (compiler/native/fusion.py): which nodes share a kernel, decided by pattern
kind before lowering, and the reason of every boundary."""

from __future__ import annotations

import random
import time
from pathlib import Path

from dlc.compiler.ir import ops
from dlc.compiler.ir.dims import Dim
from dlc.compiler.ir.graph import Graph, TensorType
from dlc.compiler.native.fusion import Boundary, Fusion, Reason, disjoint
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.cli import main

B = Dim.sym("B")
LSTM = str(Path(__file__).parents[2] / "benchmarks" / "workloads" / "lstm.dl")


def inputs(*shapes) -> tuple:
    g = Graph("f")
    return g, [g.add1("input", type=TensorType("f32", s), name=f"x{i}") for i, s in enumerate(shapes)]


def inside(f: Fusion) -> dict:
    """The values stored that are not graph outputs (a computed output is always stored)."""
    return {key: why for key, why in f.stored.items() if key not in f.outputs}


def ops_of(f: Fusion, n: int) -> set:
    return {f.graph.op(m) for m in f.group(n)}


def from_node(f: Fusion, n: int) -> set:
    return {(f.graph.op(b.consumer), b.reason) for b in f.boundaries if b.producer == n}


def test_an_elementwise_chain_is_computed_in_its_reduction():
    g, (x,) = inputs((B, 8))
    e = ops.unary("exp", x * 2.0)
    g.outputs["s"] = ops.sum_(e, 1)
    f = Fusion(g)
    assert f.stored == {}  # the reduction writes the output
    assert {"reduce_sum", "exp", "mul"} <= ops_of(f, g.outputs["s"].node)


def test_a_value_read_by_several_kernels_is_stored_and_each_reader_is_a_boundary():
    g, (x,) = inputs((B, 8))
    h = ops.unary("tanh", x)
    g.outputs["s"] = ops.sum_(h, 1)
    g.outputs["y"] = ops.unary("exp", h)
    f = Fusion(g)
    assert inside(f) == {h.key(): Reason.READERS}
    assert from_node(f, h.node) == {("reduce_sum", Reason.READERS), ("exp", Reason.READERS)}
    assert "tanh" not in ops_of(f, g.outputs["y"].node) and ops_of(f, h.node) == {"tanh"}


def test_one_cheap_operation_is_redone_by_each_reader():
    """`recompute` in the record: x + y read twice is computed in both kernels, not stored."""
    g, (x, y) = inputs((B, 8), (B, 8))
    a = x + y
    g.outputs["s"] = ops.sum_(a, 1)
    g.outputs["e"] = ops.unary("exp", a)
    f = Fusion(g)
    assert inside(f) == {} and f.boundaries == []
    assert "add" in ops_of(f, g.outputs["s"].node) and "add" in ops_of(f, g.outputs["e"].node)
    g.outputs["t"] = ops.unary("tanh", a + x)  # two operations deep: read once, fused
    deeper = a + x
    g.outputs["u"] = ops.unary("exp", deeper) + deeper
    assert inside(Fusion(g)) == {deeper.key(): Reason.READERS}


def test_gemm_and_window_operands_are_stored_though_read_once():
    g, (x, w) = inputs((B, 8), (8, 4))
    h = ops.unary("tanh", x)
    cheap = x + x
    g.outputs["y"] = ops.matmul(h, w) + ops.matmul(cheap, w)
    f = Fusion(g)
    assert f.stored[h.key()] is Reason.GEMM_OPERAND and f.stored[cheap.key()] is Reason.GEMM_OPERAND
    g, (x, k) = inputs((B, 3, 8, 8), (4, 3, 3, 3))
    r = ops.unary("tanh", x)
    g.outputs["c"] = g.add1("conv2d", [r, k], stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    f = Fusion(g)
    assert inside(f) == {r.key(): Reason.WINDOW_OPERAND}
    assert from_node(f, r.node) == {("conv2d", Reason.WINDOW_OPERAND)}


def test_results_of_reductions_and_gemms_are_boundaries_by_their_kind():
    g, (x, w) = inputs((B, 8), (8, 8))
    s = ops.sum_(x, 1)
    m = ops.matmul(x, w)
    g.outputs["y"] = ops.unary("exp", s)
    g.outputs["z"] = ops.unary("tanh", m)
    f = Fusion(g)
    assert from_node(f, s.node) == {("exp", Reason.REDUCTION)}
    assert from_node(f, m.node) == {("tanh", Reason.KERNEL)}
    assert inside(f) == {}  # a reduction's or a GEMM's kernel writes it: no map of its own


def test_a_graph_output_read_again_is_stored_once():
    g, (x,) = inputs((B, 8))
    h = ops.unary("exp", x)
    g.outputs["h"] = h
    g.outputs["y"] = ops.unary("tanh", h)
    f = Fusion(g)
    assert f.stored == {h.key(): Reason.OUTPUT, g.outputs["y"].key(): Reason.OUTPUT}
    assert f.boundaries == [Boundary(h.node, g.outputs["y"].node, Reason.OUTPUT, 1)]


def test_a_value_read_by_disjoint_slices_is_computed_where_read():
    g, (x,) = inputs((B, 8))
    v = ops.unary("exp", x)
    g.outputs["a"] = ops.unary("tanh", ops.slice_(v, (0, 0), (B, 4), (1, 1)))
    g.outputs["b"] = ops.unary("tanh", ops.slice_(v, (0, 4), (B, 8), (1, 1)))
    f = Fusion(g)
    assert inside(f) == {}
    assert "exp" in ops_of(f, g.outputs["a"].node) and "exp" in ops_of(f, g.outputs["b"].node)
    g.outputs["c"] = ops.slice_(v, (0, 3), (B, 5), (1, 1)) * 2.0  # overlaps both
    assert inside(Fusion(g)) == {v.key(): Reason.READERS}


def test_disjoint_boxes():
    quadrants = [((0, 1), (0, 1)), ((0, 1), (2, 3)), ((2, 3), (0, 1)), ((2, 3), (2, 3))]
    assert disjoint(quadrants)  # no one axis keeps them all apart
    assert not disjoint(quadrants + [((1, 2), (1, 2))])
    # a and c are apart along axis 0 only; b joins them into one run there
    a, b, c = ((0, 1), (0, 5)), ((1, 2), (6, 9)), ((2, 3), (0, 5))
    assert disjoint([a, b, c]) and not disjoint([a, b, c, ((0, 3), (5, 5))])
    assert disjoint([((0, B - 1), (0, 3)), ((0, B - 1), (4, 7))])  # apart where the bounds are known
    assert not disjoint([((0, 3), (0, B)), ((0, 3), (4, 7))])
    assert disjoint([((0, 3), (0, 0))]) and disjoint([])


def test_many_slices_are_compared_in_n_log_n_not_pair_by_pair():
    """20,000 boxes (200 million pairs) in well under a second on any machine."""
    boxes = [((0, B - 1), (i, i)) for i in range(20_000)]
    random.Random(0).shuffle(boxes)
    start = time.process_time()
    assert disjoint(boxes)
    assert not disjoint(boxes + [((0, B - 1), (7, 8))])
    assert time.process_time() - start < 5


def test_a_tensor_read_by_two_thousand_slices_compiles_without_storing_it():
    n = 2000
    g, (x,) = inputs((B, n))
    v = ops.unary("exp", x)
    parts = [ops.slice_(v, (0, i), (B, i + 1), (1, 1)) for i in reversed(range(n))]
    g.outputs["y"] = ops.concat(parts, 1)
    start = time.process_time()
    f = Fusion(g)
    program = lower(g)
    assert time.process_time() - start < 30
    assert f.stored == {}
    [loop] = program.kernels  # the pieces, each computing its part of exp(x), in one loop
    assert len(loop.maps) == n and all("exp" in repr(m.expr) for m in loop.maps)


def test_copies_merged_by_cse_cost_no_memory():
    """CSE merges exp(x) + exp(x) into one exp read twice: its map and the sum's share one
    loop, and the exp stays in a register."""
    g, (x,) = inputs((B, 8))
    g.outputs["y"] = ops.unary("exp", x) + ops.unary("exp", x)
    program = lower(optimize(g))
    [loop] = program.kernels
    assert len(loop.maps) == 2 and len(loop.registers) == 1


def test_scan_bodies_have_their_own_fusion_with_their_results_as_boundaries():
    from dlc.compiler.frontend.loader import load
    from dlc.compiler.passes.autodiff import train_step

    g = optimize(train_step(load(LSTM).build(training=True).graph))
    f = Fusion(g)
    scans = g.nodes_with("scan")
    assert set(f.bodies) == set(scans)
    body = f.bodies[scans[0]]
    assert Reason.STEP in body.stored.values()
    assert {b.reason for b in f.boundaries if b.producer in scans} == {Reason.SCAN}
    program = lower(g)  # the lowering's kernels are the groups: each kernel's nodes, its root's group
    assert all(
        k.nodes == f.group(k.node) for k in program.kernels if k.node in g.nx.nodes and not hasattr(k, "maps")
    )  # a fused map's: its members' together


def test_emit_fused_shows_the_groups(capsys):
    assert main(["compile", LSTM, "--emit", "fused"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("group 0: matmul (contraction)")
    assert "scan in 32  @recurrent.dl:" in out and "stored: a result of a scan's step" in out
    assert "stored: a GEMM operand" in out
