"""Hoisting accumulations out of scans, graph -> graph.

Backpropagation through time accumulates the gradient of every weight the loop body
reads in a carry: `dW = dW + h_tᵀ @ dg_t` at every step. Each step is then a skinny GEMM
(K = the batch) plus a pass over the whole accumulator. The sum over steps is one
contraction over (steps × batch), so the scan instead stacks the step operands it
would have multiplied (usually already stacked: the saved forward values and the
per-step gradient of an input sequence) and one GEMM after the loop does the sum:

    carry acc = acc + op(P_t) @ op(Q_t)   ->   acc_final = acc_0 + op(P̂) @ op(Q̂)
    carry acc = acc + sum(V_t, axes)      ->   acc_final = acc_0 + sum(V̂, axes + steps)

where P̂ stacks P_t along an axis beside its contracted one, so the reshape that merges
(steps, K) is free.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import prune
from dlc.compiler.ir.dims import concrete, numel, symbols
from dlc.compiler.ir.graph import Graph, Tensor


def hoist_accumulators(graph: Graph) -> Graph:
    for n in graph.order():
        if graph.op(n) == "scan":
            hoist_accumulators(graph.attrs(n)["body"])
            _hoist_scan(graph, n)
    return graph


@dataclass
class _Stacked:
    """How one step operand reaches the code after the loop, stacked along `axis`."""

    value: Tensor  # in the body
    axis: int
    source: tuple | None  # ("y", result index) or ("seq", operand index) when already stacked
    k: int = 0  # the contracted axis of the matmul operand
    shape: tuple = ()  # the matmul operand's shape: the value's, or that of its reshape


def _hoist_scan(graph: Graph, n: int):
    attrs, body = graph.attrs(n), graph.attrs(n)["body"]
    nc = attrs["n_carry"]
    found = {i: plan for i in range(nc) if (plan := _accumulation(graph, n, i)) is not None}
    if not found:
        return
    ins, outs = graph.inputs(n), graph.outputs_of(n)
    ys_axes = list(attrs["ys_axes"])
    results = list(body.outputs.items())
    # stack what is not stacked yet: new per-step outputs of the body, one per value and axis
    added: dict = {}
    for _, _, operands in found.values():
        for s in operands:
            if s.source is None:
                if (s.value.key(), s.axis) not in added:
                    added[s.value.key(), s.axis] = ("y", len(results) - nc)
                    results.append((f"hoisted{len(results)}", s.value))
                    ys_axes.append(s.axis)
                s.source = added[s.value.key(), s.axis]
    # the body loses the accumulating carries, and the arguments they came in by
    keep = [i for i in range(nc) if i not in found]
    dropped_args = [body.args[i] for i in found]
    body.outputs = {f"carry{j}": results[i][1] for j, i in enumerate(keep)} | dict(results[nc:])
    body.set_args([a for a in body.args if a not in dropped_args])
    body.nx.remove_nodes_from([a.node for a in dropped_args] + [add for add, _, _ in found.values()])
    prune(body)
    with graph.at(graph.nx.nodes[n]["span"]):
        new = graph.add(
            "scan",
            [x for i, x in enumerate(ins) if i not in found],
            **{
                **attrs,
                "n_carry": len(keep),
                "ys_axes": tuple(ys_axes),
                **({"history": tuple(j - len(found) for j in attrs["history"])} if "history" in attrs else {}),
            },
        )
        replace = {outs[i].key(): new[j] for j, i in enumerate(keep)}
        replace |= {outs[j].key(): new[j - len(found)] for j in range(nc, len(outs))}
        for i, (_, kind, operands) in found.items():
            stacked = [new[len(keep) + s.source[1]] if s.source[0] == "y" else ins[s.source[1]] for s in operands]
            replace[outs[i].key()] = ins[i] + _after_loop(kind, operands, stacked)
    graph.redirect(n, [replace[t.key()] for t in outs])
    graph.nx.remove_node(n)


def _accumulation(graph: Graph, n: int, i: int):
    """(the add node, the kind of step, its stacked operands) if carry i is
    `acc + matmul/sum(...)` of step values and the body reads acc nowhere else."""
    attrs, body = graph.attrs(n), graph.attrs(n)["body"]
    length = attrs["length"]
    acc, new = body.args[i], body.outputs[f"carry{i}"]
    if body.op(new.node) != "add" or body.uses(acc) != 1:
        return None
    a, b = body.inputs(new.node)
    step = b if a.key() == acc.key() else a if b.key() == acc.key() else None
    if step is None or step.type != acc.type or body.uses(step) != 1:
        return None
    op, at = body.op(step.node), body.attrs(step.node)
    if op == "matmul" and all(x.rank == 2 for x in body.inputs(step.node)):
        p, q = body.inputs(step.node)
        # stack each operand beside its contracted axis K, both the same way round, so
        # merging (steps, K) — or (K, steps) — is a free reshape
        k_axes = (0 if at["ta"] else 1, 1 if at["tb"] else 0)
        options = [[_stacked(graph, n, x, (k + after,), k) for x, k in zip((p, q), k_axes)] for after in (0, 1)]
        options += _within_merged(graph, n, (p, q), k_axes)
        cost = lambda option: sum(0 if s.source else _size(s.value) for s in option)
        return new.node, ("matmul", at["ta"], at["tb"], length), min(options, key=cost)
    if op == "reduce_sum":
        v = body.inputs(step.node)[0]
        return new.node, ("sum", at["axes"]), [_stacked(graph, n, v, tuple(range(v.rank + 1)))]
    return None


def _within_merged(graph: Graph, n: int, operands: tuple, k_axes: tuple) -> list:
    """More ways to stack two matmul operands that are reshapes merging the same axes
    into their contracted axis K (a segment's steps and the batch, in a checkpointed
    scan's backward pass): stack what they reshape along one of those axes, so the steps
    of all iterations fall in the order a scan over all of them would have put them."""
    merged = [_merged_into(graph.attrs(n)["body"], x, k) for x, k in zip(operands, k_axes)]
    if None in merged or merged[0][1] != merged[1][1]:
        return []
    factors = merged[0][1]
    return [
        [_stacked(graph, n, y, (k + at,), k, x.shape) for (y, _), x, k in zip(merged, operands, k_axes)]
        for at in range(1, len(factors))
    ]


def _merged_into(body: Graph, x: Tensor, k: int):
    """(y, the sizes of y's axes merged into x's axis k) when x is a reshape of y that only merges them."""
    if body.op(x.node) != "reshape":
        return None
    y = body.inputs(x.node)[0]
    extra = y.rank - x.rank + 1
    if extra < 2 or y.shape[:k] != x.shape[:k] or y.shape[k + extra :] != x.shape[k + 1 :]:
        return None
    return y, y.shape[k : k + extra]


def _stacked(graph: Graph, n: int, x: Tensor, axes: tuple, k: int = 0, shape: tuple | None = None) -> _Stacked:
    """x stacked along the first of `axes` that the scan already stacks it on (a result,
    or a sequence operand), else to be stacked along axes[0]."""
    attrs, body = graph.attrs(n), graph.attrs(n)["body"]
    nc, n_seq = attrs["n_carry"], len(attrs["xs_axes"])
    for axis in axes:
        for j, (t, ax) in enumerate(zip(list(body.outputs.values())[nc:], attrs["ys_axes"])):
            if t.key() == x.key() and ax == axis:
                return _Stacked(x, axis, ("y", j), k, shape or x.shape)
        for j, (a, ax) in enumerate(zip(body.args[nc : nc + n_seq], attrs["xs_axes"])):
            if a.key() == x.key() and ax == axis:
                return _Stacked(x, axis, ("seq", nc + j), k, shape or x.shape)
    return _Stacked(x, axes[0], None, k, shape or x.shape)


def _after_loop(kind: tuple, operands: list, stacked: list) -> Tensor:
    """The accumulation over all steps, from the stacked operands."""
    if kind[0] == "sum":
        axis = operands[0].axis
        axes = tuple(a + (a >= axis) for a in kind[1]) + (axis,)
        return ops.reduce("reduce_sum", stacked[0], tuple(sorted(axes)))
    _, ta, tb, length = kind
    merged = []
    for s, x in zip(operands, stacked):
        shape = list(s.shape)
        shape[s.k] = shape[s.k] * length
        merged.append(ops.reshape(x, tuple(shape)))
    return ops.matmul_raw(merged[0], merged[1], ta, tb)


def _size(t: Tensor) -> int:
    """Elements, symbolic dims counted as 32: only comparisons use it."""
    return concrete(numel(t.shape), {sym: 32 for sym in symbols(t.shape)})
