"""Loop pieces that the loops of several kernel kinds share, in LLVM IR: row-major strides,
sums in SUM_LANES partial sums added pairwise (reductions, attention, the direct
convolution's weight gradient), a bf16 operand, the sum of a weight gradient's parts
(the small GEMM, the direct convolution), an example's output zeroed (accumulation, the
max-pool gradient)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.intrinsics import round_bf16
from dlc.compiler.native.codegen.jit import vector_width
from dlc.compiler.native.codegen.lanes import Lanes, element_align, vectorizes
from dlc.compiler.native.program import Affine, Load, contiguous_along
from dlc.compiler.native.codegen.types import f32, i32, i64


def strides(shape) -> list:
    acc, out = 1, []
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return list(reversed(out))


# A float sum over the trailing axes adds element i of the last axis into partial sum
# i mod SUM_LANES, then adds the partial sums pairwise. The order is the program's, not
# the vector width's (fast-math reassociation let LLVM pick it by target: AVX2 and
# AVX-512 gave different bits), and the independent partial sums still vectorize.
SUM_LANES = 16


def add_lanes(b: ir.IRBuilder, vectors: list, combine=None) -> ir.Value:
    """The SUM_LANES lanes of `vectors` (lane l of the whole at vector l // vw) added (or
    combined) pairwise, as halves: lane j and lane j + L/2, then again. Whole vectors are
    halves while there are several, then a vector's halves, taken by shuffles: each step one
    vector operation, the same operations in the same order as lane by lane (whose 16
    extracts and 15 scalar additions would be a fifth of a batch norm's reduction kernel)."""
    combine = combine or b.fadd
    while len(vectors) > 1:
        half = len(vectors) // 2
        vectors = [combine(vectors[j], vectors[j + half]) for j in range(half)]
    v = vectors[0]
    while v.type.count > 1:
        half = v.type.count // 2
        lo, hi = (
            b.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, half), list(lanes)))
            for lanes in (range(half), range(half, 2 * half))
        )
        v = combine(lo, hi)
    return b.extract_element(v, ir.Constant(i32, 0))


def lane_sum(kb: KernelBuilder, expr, t, prefix: list, tail: tuple, combine=None, init=0.0) -> ir.Value:
    """The sum of expr over the `tail` axes at the leading indices `prefix`, in SUM_LANES
    partial sums (docs/native.md, "The same bits on any machine"); or their fold by
    `combine` from `init` (a maximum from -inf)."""
    return lane_sums(kb, [expr], t, prefix, tail, combine, init)[0]


def lane_sums(kb: KernelBuilder, exprs: list, t, prefix: list, tail: tuple, combine=None, init=0.0) -> list:
    """lane_sum of each of `exprs` in one pass over the tail (several sums of one space, as
    batchnorm's gradient takes): each in partial sums of its own, so each has the bits it
    has alone. The partial sums are an array that each chunk of SUM_LANES elements adds to:
    in vectors (codegen/lanes.py) where the expressions compute in them along the last axis,
    else in a loop over the lanes; the last n mod SUM_LANES elements in that loop."""
    b = kb.b
    combine = combine or b.fadd
    lanes = ir.ArrayType(t, SUM_LANES)
    sums = [kb.alloca(lanes) for _ in exprs]
    zero = ir.Constant(i32, 0)
    lane = lambda s, j: b.gep(s, [zero, j], inbounds=True)
    for s in sums:
        b.store(ir.Constant(lanes, [init] * SUM_LANES), s)
    n = kb.dim(tail[-1])
    whole = b.sdiv(n, ir.Constant(i64, SUM_LANES))
    axis = len(prefix) + len(tail) - 1
    contiguous = contiguous_along([leaf for e in exprs for leaf in e.leaves()], axis)
    width = vector_width()
    in_vectors = SUM_LANES % width == 0 and all(vectorizes(e, axis) for e in exprs)

    def add(j: ir.Value, i: ir.Value, row: list):
        for expr, s in zip(exprs, sums):
            b.store(combine(b.load(lane(s, j)), kb.expr(expr, prefix + row + [i])), lane(s, j))

    # in vectors, the partial sums of a row's chunks are slots of a whole vector each, which
    # SROA keeps in registers at every level; the array (whose lanes the last elements' loop
    # indexes) takes them after the chunks
    vty = ir.VectorType(t, width)
    parts = [[kb.alloca(vty) for _ in range(0, SUM_LANES, width)] for _ in exprs] if in_vectors else []
    align = element_align(t)
    array_part = lambda s, p: b.bitcast(lane(s, ir.Constant(i32, p * width)), vty.as_pointer())

    def add_vectors(base: ir.Value, row: list):
        kb.lanes = Lanes(b, width, axis)
        for p in range(SUM_LANES // width):
            for expr, slot in zip(exprs, parts):
                v = kb.expr(expr, prefix + row + [b.add(base, ir.Constant(i64, p * width))])
                b.store(combine(b.load(slot[p]), v), slot[p])
        kb.lanes = None

    def row(ridx):
        def chunk(cidx):
            base = b.mul(cidx[0], ir.Constant(i64, SUM_LANES))
            if in_vectors:
                add_vectors(base, ridx)
            else:
                kb.loops((SUM_LANES,), lambda j: add(j[0], b.add(base, j[0]), ridx), contiguous=contiguous)

        for s, slot in zip(sums, parts):
            for p, v in enumerate(slot):
                b.store(b.load(array_part(s, p), align=align), v)
        kb.loops(tail[-1:], chunk, first=(ir.Constant(i64, 0), whole))
        for s, slot in zip(sums, parts):
            for p, v in enumerate(slot):
                b.store(b.load(v), array_part(s, p), align=align)
        done = b.mul(whole, ir.Constant(i64, SUM_LANES))
        # the last n mod SUM_LANES elements, in a loop: unrolled, the expressions' code
        # would be there SUM_LANES times (a batchnorm gradient's reduction: 8 times the IR)
        rest = (ir.Constant(i64, 0), b.sub(n, done))
        kb.loops((SUM_LANES,), lambda j: add(j[0], b.add(done, j[0]), ridx), first=rest)

    kb.loops(tail[:-1], row)
    return [
        add_lanes(b, [b.load(array_part(s, p), align=align) for p in range(SUM_LANES // width)], combine) for s in sums
    ]


def operand(b, k, x):
    """x as an operand of kernel k's products: rounded to bfloat16 where k's are (k.bf16)."""
    return round_bf16(b, x) if k.bf16 else x


def sum_parts(kb: KernelBuilder, partial: int, parts: int, m: int, n: int, c: tuple):
    """C (m x n at c = (buffer, offset, ld)) = the sum of the parts' m x n slices of
    `partial`, in order."""
    (cb, coff, ldc) = c

    def each(idx):
        total = kb.expr(Load(partial, Affine(0, (n, 1)), "f32"), idx)
        for p in range(1, parts):
            total = kb.b.fadd(total, kb.expr(Load(partial, Affine(p * m * n, (n, 1)), "f32"), idx))
        kb.store(cb, "f32", kb.affine(Affine(coff, (ldc, 1)), idx), total)

    kb.loops((m, n), each)


def zero_examples(kb: KernelBuilder, bid: int, examples, size, first):
    """Zero the examples `first` = (lo, hi) of f32 buffer bid, `size` elements each."""
    kb.loops(
        (examples, size),
        lambda idx: kb.store(bid, "f32", kb.affine(Affine(0, (size, 1)), idx), ir.Constant(f32, 0.0)),
        first=first,
    )
