"""Fused attention, forward and backward: softmax(q kᵀ · scale, masked) @ v in blocks of
queries and keys, the [Tq, Tk] scores never in memory (docs/native.md, "Attention")."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel, expr_reads

BLOCK_Q = 128        # query rows a block of scores holds
BLOCK_K = 256        # keys a block of scores holds


@dataclass
class AttentionKernel(Kernel):
    """One (batch, head) matrix of q, k, v per index of `batch`, each contiguous [T, d]:
    the forward pass writes o and lse, the log-sum-exp of each row of scores; with
    `grad`, the backward pass reads o, lse and do and writes dq, dk, dv. `mask`: an
    expression over the scores' index [*batch, Tq, Tk] (bool, or float added to the
    score), None without. `scratch`: per batch index, the blocks of scores and products."""
    batch: tuple
    tq: object
    tk: object
    d: object
    dv: object
    scale: float
    mask: object
    reads: tuple          # q, k, v; with grad also o, lse, do: each (buffer, offset, batch coefficients, row stride)
    writes: tuple         # o, lse; with grad dq, dk, dv: the same
    scratch: int
    mask_bool: bool = False     # a bool mask picks the score or MASKED; a float one is added
    grad: bool = False
    block_q: int = BLOCK_Q
    block_k: int = BLOCK_K

    @staticmethod
    def scratch_floats(d, dv):
        """What one thread needs: two blocks of scores, a block of products, two rows."""
        return 2 * BLOCK_Q * BLOCK_K + max(BLOCK_Q, BLOCK_K) * (d + dv) + 2 * BLOCK_Q

    def flops(self, sizes: dict) -> int:
        d, dv = (concrete(x, sizes) for x in (self.d, self.dv))
        per_score = 2 * (3 * d + 2 * dv) if self.grad else 2 * (d + dv)
        return numel([concrete(x, sizes) for x in (*self.batch, self.tq, self.tk)]) * per_score

    def text(self) -> list:
        q, k, v = (f"b{x[0]}" for x in self.reads[:3])
        mask = f", mask {render.expr(self.mask)}" if self.mask is not None else ""
        shape = f"{render.shape(self.batch)} x [{self.tq} x {self.tk}]"
        outs = ", ".join(f"b{x[0]}" for x in self.writes)
        what = f"gradient of attention({q}, {k}, {v}) from b{self.reads[5][0]}" if self.grad else \
            f"attention({q}, {k}, {v})"
        return [f"attention{'_grad' if self.grad else ''} {shape}: {outs} = {what}{mask}, scale {self.scale:g}"
                f"{render.located(self)}"]

    def accesses(self) -> tuple:
        mask = expr_reads(self.mask) if self.mask is not None else set()
        return {x[0] for x in self.reads} | mask, {x[0] for x in self.writes} | {self.scratch}

    def emit(self, f):
        """The batch indices on a thread team, each on one thread; the block products are
        calls of the GEMM library (serial inside the team)."""
        from dlc.compiler.native.loops import attention, attention_grad
        work = numel((*self.batch, self.tq, self.tk, self.d))
        loop = attention_grad if self.grad else attention
        return f.team(lambda kb, first: loop(kb, self, first, f.library), numel(self.batch), work)
