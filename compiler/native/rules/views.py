"""The lowering rules of elementwise ops and views: an expression each, no kernel. An
elementwise op is an `Op` node, which code generation emits with its scalar rule
(scalar.py); a view (broadcast, transpose, slice, reshape of contiguous data) only changes
coefficients; a gather reads rows of its table at an index expression."""

from __future__ import annotations

from dlc.compiler.ir.graph import Pattern
from dlc.compiler.native.program import Affine, Gather, Load, Op, row_major
from dlc.compiler.native.program.registry import register_lowering


@register_lowering(pattern=Pattern.ELEMENTWISE)
def _elementwise(lw, n, ins, attrs, typ):
    lw.set(n, Op(lw.graph.op(n), tuple(lw.use(x) for x in ins), typ.dtype))


@register_lowering("stop_gradient")
def _stop_gradient(lw, n, ins, attrs, typ):
    lw.set(n, lw.use(ins[0]))


@register_lowering("broadcast")
def _broadcast(lw, n, ins, attrs, typ):
    x = ins[0]
    shape = attrs["shape"]
    lead = len(shape) - x.rank

    def bcast(a):
        coeffs = [0] * lead + [c if x.shape[i] != 1 or shape[lead + i] == 1 else 0 for i, c in enumerate(a.coeffs)]
        return Affine(a.offset, tuple(coeffs))

    lw.set(n, lw.use(x).remap(bcast))


@register_lowering("transpose")
def _transpose(lw, n, ins, attrs, typ):
    perm = attrs["perm"]
    lw.set(n, lw.use(ins[0]).remap(lambda a: Affine(a.offset, tuple(a.coeffs[p] for p in perm))))


@register_lowering("slice")
def _slice(lw, n, ins, attrs, typ):
    starts, steps = attrs["starts"], attrs["steps"]
    lw.set(
        n,
        lw.use(ins[0]).remap(
            lambda a: Affine(
                a.offset + sum((c * s for c, s in zip(a.coeffs, starts)), 0),
                tuple(c * st for c, st in zip(a.coeffs, steps)),
            )
        ),
    )


@register_lowering("reshape")
def _reshape(lw, n, ins, attrs, typ):
    x = ins[0]
    e = lw.use(x)
    if not (isinstance(e, Load) and e.at.coeffs == row_major(x.shape)):
        e = lw.materialize(x)
    lw.set(n, Load(e.buffer, Affine(e.at.offset, row_major(typ.shape)), typ.dtype))


@register_lowering("gather")
def _gather(lw, n, ins, attrs, typ):
    table, idx = ins
    t = lw.materialize(table)
    k = idx.rank
    row_coeffs = (0,) * k + row_major(table.shape)[1:]
    idx_e = lw.use(idx).remap(lambda a: Affine(a.offset, a.coeffs + (0,) * (typ.rank - k)))
    site = lw.p.fault("gather", table.shape[0], lw.graph.nx.nodes[n]["span"])
    lw.set(
        n, Gather(t.buffer, idx_e, Affine(0, row_coeffs), row_major(table.shape)[0], typ.dtype, table.shape[0], site)
    )
