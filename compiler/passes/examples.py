"""A prediction's or an evaluation's first layers run one example at a time, graph -> graph.

A batch of images goes through a CNN's first layers as one value a layer: MobileNetV2's
expansion at 112 x 112 pixels writes 4.8 MB an example, 38 MB at a batch of 8, which leaves
every cache before the depthwise convolution reads it back. Run instead for each example
in turn, those layers keep an example's values in cache from one layer to the next; later
layers, whose values are small and whose weights are large, stay batched (one read of their
weights for the whole batch).

`examples_in_turn` moves the layers whose values an example holds at least
`EXAMPLE_BYTES` of (and the layers that read those values, and every layer before them)
into a `scan` over the batch: the body computes one example ([1, ...]) and the scan stacks
each result the rest of the graph reads. The layers moved are those whose example t is
made from example t of their operands and from weights alone (`_of_each_example`). Each
example's values are the bits the batched layers compute (a product's sums, a map's lanes
do not depend on the batch)."""

from __future__ import annotations

from dlc.compiler.ir.dims import numel
from dlc.compiler.ir.graph import ITEMSIZE, Graph, Pattern, TensorType
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.passes.autodiff import copy_graph

# an example's value from this size on is kept in cache by running its layers an example at a
# time: about a core's L2 (1-2 MB on the x86-64 cores dlc runs on)
EXAMPLE_BYTES = 1 << 20


def examples_in_turn(graph: Graph) -> Graph:
    """A copy of the graph with its first layers (module docstring) in a scan over the
    batch, its nodes numbered as the graph's; the graph itself where no layer holds
    EXAMPLE_BYTES an example, or its batch is 1."""
    batch = _batch(graph)
    if batch is None:
        return graph
    order = graph.order()
    per_example, invariant = _per_example(graph, order, batch)
    region = _region(graph, order, per_example, batch)
    if not region:
        return graph
    copy, _ = copy_graph(graph, keep_ids=True)
    _loop(copy, order, batch, region, invariant)
    return copy


def _batch(graph: Graph):
    """The leading dim of the graph's inputs of two axes or more (not the key of its random
    draws), when they all have one in common and it is not 1; else None."""
    leading = {graph.types(n)[0].shape[0] for n in graph.nodes_with("input") if graph.types(n)[0].rank >= 2}
    if len(leading) != 1:
        return None
    (batch,) = leading
    return None if batch == 1 else batch


def _batched(graph: Graph, n: int, batch) -> bool:
    """Whether node n's one result has the batch along axis 0: a scan may slice it by examples."""
    types = graph.types(n)
    return len(types) == 1 and types[0].rank >= 1 and types[0].shape[0] == batch


# the window ops whose attributes say nothing of the batch
_WINDOWS = ("conv2d", "maxpool2d", "avgpool2d")


def _per_example(graph: Graph, order: list, batch) -> tuple:
    """(the nodes whose example t is computed from example t of their batched operands and
    from weights alone, the nodes that depend on no input: weights and constants)."""
    per_example, invariant = set(), set()
    for n in order:
        op, ins = graph.op(n), graph.inputs(n)
        kind = PRIMITIVES[op].pattern
        batched = _batched(graph, n, batch)
        if op in ("input", "random"):  # the batch itself, and draws
            continue
        if kind == Pattern.BROADCAST and batched and all(t.node in invariant for t in ins):
            per_example.add(n)  # a weight or a constant spread over the batch: one example's share
        elif all(t.node in invariant for t in ins):
            invariant.add(n)
        elif not batched:
            continue
        elif _of_each_example(graph, n, ins, batch, invariant):
            per_example.add(n)
    return per_example, invariant


def _of_each_example(graph: Graph, n: int, ins: list, batch, invariant: set) -> bool:
    """Whether node n (its result batched) computes example t from example t of its batched
    operands and from weights alone: an elementwise map, a convolution or pool of a batch
    of images by weights, a sum or maximum within each example, a broadcast or reshape that
    keeps the batch axis apart (squeeze-and-excitation's channel weights, spread over each
    example's pixels), a padding of the other axes, a concat along another axis (an
    Inception block's branches)."""
    op, kind = graph.op(n), PRIMITIVES[graph.op(n)].pattern
    batched = [_batched(graph, t.node, batch) for t in ins]
    if kind == Pattern.ELEMENTWISE:
        return all(batched)
    if op in _WINDOWS:
        return batched[0] and all(t.node in invariant for t in ins[1:])
    if op in ("reduce_sum", "reduce_max"):
        return batched[0] and 0 not in graph.attrs(n)["axes"]
    if op == "broadcast":
        return batched[0] and ins[0].rank == graph.types(n)[0].rank
    if op == "reshape":
        return batched[0] and numel(ins[0].shape[1:]) == numel(graph.types(n)[0].shape[1:])
    if op == "pad":
        attrs = graph.attrs(n)
        return batched[0] and attrs["lo"][0] == attrs["hi"][0] == attrs["interior"][0] == 0
    if op == "concat":
        return all(batched) and graph.attrs(n)["axis"] % ins[0].rank != 0
    return False


def _bytes(t: TensorType) -> int:
    """An example's bytes of a batched value (0 where its size is not known)."""
    rest = numel(t.shape[1:])
    return rest * ITEMSIZE[t.dtype] if isinstance(rest, int) else 0


def _region(graph: Graph, order: list, per_example: set, batch) -> set:
    """The per-example nodes to loop over: those whose result, or an operand's, holds
    EXAMPLE_BYTES an example, every per-example node before them (a value of the batch
    made otherwise is sliced by the scan: an input, a layer that mixes examples), and the
    maps after them that read nothing else (a bias and an activation, computed in the
    store of the kernel before them), but those after a layer outside that reads the region."""
    big = lambda n: _batched(graph, n, batch) and _bytes(graph.types(n)[0]) >= EXAMPLE_BYTES
    region = set()
    stack = [n for n in order if n in per_example and (big(n) or any(big(t.node) for t in graph.inputs(n)))]
    while stack:
        n = stack.pop()
        if n not in region:
            region.add(n)
            stack += [t.node for t in graph.inputs(n) if t.node in per_example]
    spread = lambda v: v in per_example and PRIMITIVES[graph.op(v)].pattern == Pattern.BROADCAST
    for n in order:
        if n in per_example and n not in region and PRIMITIVES[graph.op(n)].pattern == Pattern.ELEMENTWISE:
            operands = [t.node for t in graph.inputs(n)]
            if any(v in region for v in operands) and all(v in region or spread(v) for v in operands):
                region.update([n, *operands])
    # one loop computes the region: none of it may read what is made from the region outside
    # it (a transpose of its results read by a convolution after), so those layers leave it
    region -= _after(graph, {v for n in region for v in graph.nx.successors(n) if v not in region})
    # a broadcast of weights that no node of the region reads stays outside
    return {n for n in region if PRIMITIVES[graph.op(n)].pattern != Pattern.BROADCAST or _read_by(graph, n, region)}


def _after(graph: Graph, nodes: set) -> set:
    """The nodes and every node that reads them, directly or not."""
    seen, stack = set(), list(nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack += graph.nx.successors(n)
    return seen


def _read_by(graph: Graph, n: int, nodes: set) -> bool:
    return any(v in nodes for v in graph.nx.successors(n))


def _loop(graph: Graph, order: list, batch, region: set, invariant: set):
    """Replace the region by a scan over the batch whose body computes one example: its
    sequences are the batched values it reads (sliced, then seen as a batch of one), its
    invariants the weights, and its results what the rest of the graph reads of it."""
    body = Graph("examples", parent=graph)
    mapped: dict = {}  # outer (node, out) -> body tensor
    inner = [n for n in order if n in region]
    read = dict.fromkeys(t for n in inner for t in graph.inputs(n) if t.node not in region)
    sequences = [t for t in read if t.node not in invariant]
    invariants = [t for t in read if t.node in invariant]
    for t in sequences + invariants:  # the scan's operand order: carries (none), sequences, invariants
        sliced = t.node not in invariant
        with body.at(graph.nx.nodes[t.node]["span"]):
            a = body.add1("arg", type=TensorType(t.dtype, t.shape[1:]) if sliced else t.type, index=len(body.args))
            body.args.append(a)
            body.nx.nodes[a.node]["role"] = ("sequence" if sliced else "invariant",)
            mapped[t.key()] = body.add1("reshape", [a], shape=(1, *t.shape[1:])) if sliced else a
    for n in inner:
        attrs = dict(graph.attrs(n))
        if graph.op(n) in ("broadcast", "reshape"):  # shaped as one example
            attrs["shape"] = (1, *attrs["shape"][1:])
        with body.at(graph.nx.nodes[n]["span"]):
            mapped[(n, 0)] = body.add1(graph.op(n), [mapped[t.key()] for t in graph.inputs(n)], **attrs)
    # each result is stacked as [batch, 1, ...], where its last kernel writes its example's
    # place, then seen as [batch, ...]
    frontier = [
        n for n in inner if any(v not in region for v in graph.nx.successors(n)) or graph.outputs.readers((n, 0))
    ]
    body.outputs = {f"y{i}": mapped[(n, 0)] for i, n in enumerate(frontier)}
    with graph.at(graph.nx.nodes[inner[0]]["span"]):
        stacked = graph.add(
            "scan",
            sequences + invariants,
            body=body,
            length=batch,
            reverse=False,
            n_carry=0,
            xs_axes=(0,) * len(sequences),
            ys_axes=(0,) * len(frontier),
        )
    for n, y in zip(frontier, stacked):
        with graph.at(graph.nx.nodes[n]["span"]):
            graph.redirect(n, [graph.add1("reshape", [y], shape=graph.types(n)[0].shape)])
    graph.nx.remove_nodes_from(inner)
