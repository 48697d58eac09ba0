"""Accumulation: sums into windows of a zeroed output (col2im, average-pool gradients)."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native import render
from dlc.compiler.native.program import Affine, Kernel, expr_reads


@dataclass
class AccumulateKernel(Kernel):
    """out[at(i)] += expr(i) for every i in shape whose guards hold (out zeroed first):
    the adjoint of reading windows (col2im, average-pool gradients). Axis 0 is the batch:
    iteration n touches only example n of out, at.coeffs[0] elements from n * at.coeffs[0]."""
    shape: tuple
    out: int
    at: Affine
    guards: tuple
    expr: object

    def text(self) -> list:
        return [f"accumulate {render.shape(self.shape)}: b{self.out}[{render.affine(self.at)}] += "
                f"{render.expr(self.expr)}{render.located(self)}"]

    def accesses(self) -> tuple:
        return expr_reads(self.expr), {self.out}

    def emit(self, f):
        """The examples on a thread team."""
        from dlc.compiler.native.loops import accumulate
        return f.team(lambda kb, first: accumulate(kb, self, first), self.shape[0], numel(self.shape))
