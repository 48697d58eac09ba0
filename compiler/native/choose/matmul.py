"""How a matmul is computed: an ordered list of implementations (`MATMUL`), the first that
applies chosen (`chosen`). A matmul's gradients are matmuls (compiler/passes/autodiff.py),
chosen by the same list. Every entry is a call of dlc's GEMM library (a GemmKernel, kernel
"gemm": compiler/native/bf16.py rounds its operands in a bf16 program); they differ in
where op(B)'s panels come from, which the lowering knows and the GEMM cannot: made once for
many calls, once before a scan's loop, or by the GEMM at every call. The fused attention is
a primitive of its own (kernels/attention), written in the program, not chosen here; an int8
program's integer matmul has one implementation (kernels/int8), and no list.

Inside the library, at run time, each block of C takes the first of these paths that
applies (codegen/gemm/macro_loop.py `block`), by its rows M, columns N, and whether op(A)
is given packed (the `packed_a` routines': a built library's convolution filters):
1. K = 0: C = 0 (or unchanged);
2. few rows, B's panels: at most FEW_ROWS rows, op(B) given packed (the `packed`
   float32 routines, B transposed or not) and the block's columns from a panel's start:
   each row streams the K-long panels (few_rows.py);
3. few rows: at most FEW_ROWS rows (B not transposed, not a convolution's windows), op(A)
   not given packed: each row times B's rows as they lie (few_rows.py);
4. few columns: at most FEW_COLUMNS columns, float32, not windows: groups of op(A)'s
   rows as they lie, or one MR-tall panel of its pack a group where op(A) is given packed,
   times op(B)'s values broadcast (few_columns.py);
5. tiled: op(B) and op(A) packed into panels (or the packs given), the micro-kernel on
   each MR x NR tile — the AMX tiles' in a bf16 blocking on a host with AMX, the narrow
   one (one vector of columns) for a panel of at most a vector's width, else the full one
   (microkernel.py, amx_tiles.py).
Every path sums each element in the same order, so the choice changes no bit. These are
not an `Implementation` list: they are chosen in the generated code by sizes known only at
the call, and the code generator (a floor below this one) cannot read this module."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.choose import Implementation, first
from dlc.compiler.native.kernels.gemm import same_every_step, weight_packs_kept


@dataclass(frozen=True)
class Matmul:
    """A matmul as its list reads it: op(A) [m x k] @ op(B) [k x n], `batch` matrices;
    `a` and `b`, its operands as the lowering reads them (Lowering.matrix: buffer, offset,
    leading dim, batch stride, transposed storage), and `lowering`, the lowering it is in
    (how its program keeps weights, the scan it is the body of). All three None where no
    program is lowered (`of_graph`: bf16.py's rule, which reads only an entry's `kernel`,
    "gemm" in every one): nothing is then packed ahead."""

    m: object
    n: object
    k: object
    batch: object
    a: tuple | None = None
    b: tuple | None = None
    lowering: object = None

    @staticmethod
    def of_graph(graph, n: int) -> "Matmul":
        """Matmul node n of `graph`, no program lowered."""
        return Matmul.of(graph.inputs(n)[0], graph.attrs(n), graph.types(n)[0])

    @staticmethod
    def of(a, attrs: dict, typ) -> "Matmul":
        """The matmul of operand A `a` (a Tensor) into type `typ`, no program lowered."""
        shape = typ.shape
        k = a.shape[-2] if attrs["ta"] else a.shape[-1]
        return Matmul(shape[-2], shape[-1], k, numel(shape[:-2]))

    @staticmethod
    def lowered(lw, ins: tuple, attrs: dict, typ) -> "Matmul":
        """The matmul of operands `ins` into type `typ` in lowering lw, its operands read
        as matrices by it, A then B (which may copy one out: Lowering.matrix)."""
        a, b = ins
        la, lb = lw.matrix(a), lw.matrix(b)
        return dataclasses.replace(Matmul.of(a, attrs, typ), a=la, b=lb, lowering=lw)

    def one_b(self) -> bool:
        """Whether op(B) is one matrix for the whole batch (one product, or B broadcast)."""
        return self.b is not None and (self.b[3] == 0 or self.batch == 1)


def chosen(mm: Matmul) -> Implementation:
    """The implementation that computes matmul mm: the first of MATMUL that applies."""
    return first(MATMUL, mm)


MATMUL = (
    Implementation(
        "weights packed first",
        "gemm",
        lambda mm: mm.one_b() and weight_packs_kept(mm.lowering, mm.b, mm.k, mm.n),
        "a prediction's weight as B, its sizes known: packed by the program's first kernel for all its "
        "GEMMs, in a built library once until a weight changes (its one-row products read the panels too)",
    ),
    Implementation(
        "packed before the loop",
        "gemm",
        lambda mm: mm.one_b() and same_every_step(mm.lowering, mm.b),
        "a scan's B that is the same at every step (a recurrent weight): packed once before the outermost "
        "loop it is the same in, not at every step",
    ),
    Implementation(
        "packed by the GEMM",
        "gemm",
        lambda mm: True,
        "the GEMM packs what its path reads at each call (nothing for few rows or columns)",
    ),
)
