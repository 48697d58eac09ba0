"""The optimizer update in the step module: the update graph (compiler/ir/update.py) lowered
with lower.py, its last kernel rewritten to update the flat arrays in place.

The update graph's last kernel is a fused map over the flat arrays that computes every
output ("param" and each state slot). `in_place` makes it store each output over the input
of the same name, in one pass and without a copy. That is safe because every member reads
and writes index i only, and reads an old value only at or before the member that stores
its new one (checked): later members read the new value, from the register that member
stored. The output and its input become one buffer, so one slot and one alias scope: no
metadata claims that memory which is the same does not alias. Values the loop computes
once and reads in several members (temporaries) stay in registers: they are inlined into
their readers, which LLVM computes once.

codegen/driver.py compiles these kernels after the step's, under the fault-flag check.
"""

from __future__ import annotations

from dlc.compiler.ir.graph import Graph
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel
from dlc.compiler.native.lower import lower
from dlc.compiler.native.memory import linearize
from dlc.compiler.native.program import Affine, KernelProgram, Load, Op

ELEMENT = Affine(0, (1,))  # index i of a flat array


def lower_update(graph: Graph) -> KernelProgram:
    """The kernels of an update graph, its outputs written over the inputs of their names."""
    prog = lower(graph)
    in_place(prog)
    return prog


def in_place(prog: KernelProgram):
    last = prog.kernels[-1]
    into = {prog.outputs[name]: prog.inputs[name] for name in prog.outputs}
    assert isinstance(last, (MapKernel, FusedMapKernel)) and len(last.shape) == 1, "the update ends with a flat map"
    temps: dict = {}  # buffer -> the expression that a temporary of the loop holds
    kept = []
    for m in last.maps:
        assert m.out_at == ELEMENT, "the update's loop writes index i"
        e = _rewrite(m.expr, lambda x: temps.get(x.buffer, x))
        if m.out in into:
            kept.append(MapKernel(m.shape, m.out, m.out_at, e, node=m.node, nodes=m.nodes, origin=m.origin))
        else:
            temps[m.out] = e
    assert {m.out for m in kept} == set(into), "the update's loop writes every output"
    for j, m in enumerate(kept):
        old = into[m.out]
        for later in kept[j + 1 :]:
            assert all(x.read_buffer != old for x in later.expr.leaves()), (
                f"the update reads the old {prog.buffers[old].name} after storing its new value"
            )
    for m in kept:
        for x in m.expr.leaves():
            assert isinstance(x, Load) and (x.at == ELEMENT or x.read_buffer not in into.values() | into.keys()), (
                "the update's loop reads a flat array at index i only"
            )
    for m in kept:
        m.expr = _rewrite(m.expr, lambda x: Load(into[x.buffer], x.at, x.dtype) if x.buffer in into else x)
        m.out = into[m.out]
    prog.kernels[-1] = (
        kept[0]
        if len(kept) == 1
        else FusedMapKernel(last.shape, kept, node=last.node, nodes=last.nodes, origin=last.origin)
    )
    prog.outputs = {name: into[bid] for name, bid in prog.outputs.items()}


def _rewrite(e, load):
    """e with each Load x replaced by load(x)."""
    if isinstance(e, Op):
        return Op(e.name, tuple(_rewrite(a, load) for a in e.args), e.dtype)
    return load(e) if isinstance(e, Load) else e


def touched(prog: KernelProgram) -> set:
    """The buffers the update's kernels read or write: the others need no memory."""
    out = set()
    for _, k, _ in linearize(prog.kernels):
        reads, writes = k.accesses()
        out |= reads | writes
    return out
