"""The loop of an accumulation (kernels/accumulate), in LLVM IR."""

from __future__ import annotations

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.shared_loops import zero_examples
from dlc.compiler.native.program import contiguous_along


def accumulate(kb: KernelBuilder, k, first):
    """The examples `first` = (lo, hi)."""
    b = kb.b
    zero_examples(kb, k.out, k.shape[0], k.at.coeffs[0], first)

    def each(idx):
        # a branch, not a clamped address: LLVM vectorizes the conditional update (masked)
        with b.if_then(kb.inside(k.guards, idx)):
            at = kb.affine(k.at, idx)
            old = kb.disjoint(b.load(b.gep(kb.buffer(k.out, "f32"), [at])), k.out)
            kb.store(k.out, "f32", at, b.fadd(old, kb.expr(k.expr, idx)))

    last = len(k.shape) - 1
    kb.loops(
        k.shape,
        each,
        first=first,
        contiguous=contiguous_along([k.at, *k.expr.leaves()], last),
        scattered=not contiguous_along([k.at], last),
    )
