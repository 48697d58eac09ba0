"""Fused attention, forward and backward: softmax(q kᵀ · scale, masked) @ v in blocks of
queries and keys, the [Tq, Tk] scores never in memory (docs/native.md, "Attention"); the
lowering rule of attention and attention_grad. The loops are in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.ir.graph import Tensor
from dlc.compiler.ir.primitives import mask_and_keys
from dlc.compiler.native.program import (
    Affine,
    Kernel,
    Load,
    contiguous,
    expr_reads,
    expr_renamed,
    operand_renamed,
    render,
    row_major,
)
from dlc.compiler.native.program.registry import register_lowering


BLOCK_Q = 128  # query rows a block of scores holds
BLOCK_K = 256  # keys a block of scores holds


@dataclass
class AttentionKernel(Kernel):
    """One (batch, head) matrix of q, k, v per index of `batch`, each contiguous [T, d]:
    the forward pass writes o and lse, the log-sum-exp of each row of scores; with
    `grad`, the backward pass reads o, lse and do and writes dq, dk, dv. `mask`: an
    expression over the scores' index [*batch, Tq, Tk] (bool, or float added to the
    score), None without. `scratch`: per batch index, the blocks of scores and products.
    `keys`: an expression over the batch index, how many keys its matrix has (None: all
    tk), so that the blocks of keys stop there: the keys past it are never read."""

    batch: tuple
    tq: object
    tk: object
    d: object
    dv: object
    scale: float
    mask: object
    reads: tuple  # q, k, v; with grad also o, lse, do: each (buffer, offset, batch coefficients, row stride)
    writes: tuple  # o, lse; with grad dq, dk, dv: the same
    scratch: int
    mask_bool: bool = False  # a bool mask picks the score or MASKED; a float one is added
    keys: object = None
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
        mask = f", mask {self.mask.text()}" if self.mask is not None else ""
        mask += f", keys {self.keys.text()}" if self.keys is not None else ""
        shape = f"{render.shape(self.batch)} x [{self.tq} x {self.tk}]"
        outs = ", ".join(f"b{x[0]}" for x in self.writes)
        what = (
            f"gradient of attention({q}, {k}, {v}) from b{self.reads[5][0]}"
            if self.grad
            else f"attention({q}, {k}, {v})"
        )
        return [
            f"attention{'_grad' if self.grad else ''} {shape}: {outs} = {what}{mask}, scale {self.scale:g}"
            f"{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        mask = set().union(*(expr_reads(e) for e in (self.mask, self.keys) if e is not None))
        return {x[0] for x in self.reads} | mask, {x[0] for x in self.writes} | {self.scratch}

    def renamed(self, names: dict) -> "AttentionKernel":
        return replace(
            self,
            reads=tuple(operand_renamed(x, names) for x in self.reads),
            writes=tuple(operand_renamed(x, names) for x in self.writes),
            scratch=names[self.scratch],
            mask=None if self.mask is None else expr_renamed(self.mask, names),
            keys=None if self.keys is None else expr_renamed(self.keys, names),
        )

    def emit(self, f):
        """The batch indices on a thread team, each on one thread; the block products are
        calls of the GEMM library (serial inside the team)."""
        from dlc.compiler.native.kernels.attention.loops import attention, attention_grad

        work = numel((*self.batch, self.tq, self.tk, self.d))
        loop = attention_grad if self.grad else attention
        return f.team(lambda kb, first: loop(kb, self, first, f.library), numel(self.batch), work)


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("attention", "attention_grad", floats=("f32",))
def _attention(lw, n, ins, attrs, typ):
    """One kernel over the (batch, head) matrices, each read and written in place: a
    head's columns of [B, T, heads, d] are strided rows, not a transposed copy. The
    mask, an expression over the scores' index, is computed where each score is
    (docs/native.md, "Attention")."""
    grad = lw.graph.op(n) == "attention_grad"
    operands = ins[:6] if grad else ins[:3]
    mask, keys = mask_and_keys(ins, len(operands), attrs.get("bounded", False))
    q, k, v = ins[:3]
    batch = q.shape[:-2]
    d, dv = q.shape[-1], v.shape[-1]
    writes = []
    for j, t in enumerate(lw.graph.types(n)):
        buf = lw.p.buffer(t.dtype, numel(t.shape), "temp").id
        load, operand = _rows_in_place(buf, t.shape) if t.rank == q.rank else _vector_rows(buf, t.shape)
        lw.set(n, load, out=j)
        writes.append(operand)
    scratch = lw.p.buffer("f32", numel(batch) * AttentionKernel.scratch_floats(d, dv), "temp")
    lw.emit(
        AttentionKernel(
            batch,
            q.shape[-2],
            k.shape[-2],
            d,
            dv,
            attrs["scale"],
            lw.use(mask) if mask is not None else None,
            tuple(_row_matrices(lw, t, t.rank < q.rank) for t in operands),
            tuple(writes),
            scratch.id,
            mask is not None and mask.dtype == "bool",
            lw.use(keys) if keys is not None else None,
            grad,
            node=n,
        )
    )


def _row_matrices(lw, t: Tensor, vector: bool) -> tuple:
    """(buffer, offset, batch coefficients, row stride) of an attention operand [..., T, d]
    whose rows are contiguous, in place when its view has them (q, k, v of a multi-head
    layer: transposed heads), else copied out contiguously; of a `vector` (the lse
    [..., T]), as matrices of one-element rows."""
    e = lw.use(t)
    if vector:
        e = e if isinstance(e, Load) else lw.materialize(t)
        return e.buffer, e.at.offset, e.at.coeffs[:-1], e.at.coeffs[-1]
    if not (isinstance(e, Load) and e.at.coeffs[-1] == 1 and e.at.coeffs[-2] != 0):
        e = lw.materialize(t)
    return e.buffer, e.at.offset, e.at.coeffs[:-2], e.at.coeffs[-2]


def _vector_rows(buf: int, shape) -> tuple:
    """An lse [..., T], contiguous, as matrices of one-element rows."""
    load = contiguous(buf, shape, "f32")
    return load, (buf, 0, load.at.coeffs[:-1], 1)


def _rows_in_place(buf: int, shape) -> tuple:
    """An output [..., heads, T, d] stored [..., T, heads, d]: the layout its reader, the
    layer's `reshape(transpose(o, 0, 2, 1, 3), B, T, D)`, takes without a copy. With one
    batch dim it is contiguous."""
    if len(shape) < 4:
        load = contiguous(buf, shape, "f32")
        return load, (buf, 0, load.at.coeffs[:-2], shape[-1])
    *outer, heads, rows, d = shape
    stored = row_major(tuple(outer) + (rows, heads, d))
    coeffs = stored[: len(outer)] + (d, heads * d, 1)
    return Load(buf, Affine(0, coeffs), "f32"), (buf, 0, coeffs[:-2], heads * d)
