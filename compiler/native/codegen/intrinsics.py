"""LLVM IR helpers that the GEMM generator (gemm/), the kernels' loops
(kernels/<kind>/loops.py), the scalar rules and the step module share: declaring an
intrinsic or external function once, a scalar splat over a vector, a vector pointer,
masked vector loads and stores (strided ones too: every stride-th float), masked gathers and scatters, vectors
concatenated, interleaved, taken apart again and transposed (8 x 8), and rounding to
bfloat16 (one value, or a pair)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.types import f32, f64, i1, i32, i64


def declare(module, name, ret, args):
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def splat(b, s, vty):
    """The scalar s in every lane of a vector of type vty."""
    lanes = ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count)
    return b.shuffle_vector(
        b.insert_element(ir.Constant(vty, ir.Undefined), s, i32(0)), ir.Constant(vty, ir.Undefined), lanes
    )


def vec_ptr(b, ptr, vty):
    return b.bitcast(ptr, vty.as_pointer())


def bf16_bits(b, x):
    """The float (or float vector) x rounded to bfloat16, to nearest even, as int32 bits
    whose upper half is the bfloat16 (the lower half is garbage); a NaN stays a NaN (quiet)."""
    ity = ir.VectorType(i32, x.type.count) if isinstance(x.type, ir.VectorType) else i32
    const = (lambda v: ir.Constant(ity, [v] * ity.count)) if ity is not i32 else (lambda v: ir.Constant(i32, v))
    bits = b.bitcast(x, ity)
    odd = b.and_(b.lshr(bits, const(16)), const(1))
    rounded = b.add(bits, b.add(odd, const(0x7FFF)))
    return b.select(b.fcmp_unordered("uno", x, x), b.or_(bits, const(0x400000)), rounded)


def round_bf16(b, x):
    """The float (or float vector) x rounded to bfloat16 and back: what a bf16 operand is."""
    bits = bf16_bits(b, x)
    high = 0xFFFF0000 - (1 << 32)  # as a signed int32
    mask = (
        ir.Constant(bits.type, [high] * bits.type.count)
        if isinstance(bits.type, ir.VectorType)
        else ir.Constant(i32, high)
    )
    return b.bitcast(b.and_(bits, mask), x.type)


class LLVMType(ir.Type):
    """An LLVM type that llvmlite's IR builder lacks, by its name: `bfloat` (the operands
    of vdpbf16ps), `x86_amx` (the value of a tile register)."""

    def __init__(self, name: str):
        self.name = name

    def _to_string(self):
        return self.name

    def __eq__(self, other):
        return isinstance(other, LLVMType) and other.name == self.name

    def __hash__(self):
        return hash((LLVMType, self.name))


def dot_bf16_pairs(module, b, acc, a, x):
    """acc (16, 8 or 4 floats) + the products of the bfloat16 pairs of a and x (a pair a
    lane, in any type of acc's width), summed by pairs: vdpbf16ps (AVX512_BF16) on 16 or 8
    lanes, AArch64's BFDOT (bf16) on 4. They round differently: vdpbf16ps adds the two
    products to the lane in turn, to nearest even; BFDOT adds them to each other, then their
    sum to the lane, to odd (docs/native.md, bfloat16 mixed precision). Each product is
    exact and a and x play the same part: swapped, a lane's sum has the same bits."""
    lanes = acc.type.count
    vty, pty = acc.type, ir.VectorType(LLVMType("bfloat"), 2 * lanes)
    name = {16: "llvm.x86.avx512bf16.dpbf16ps.512", 8: "llvm.x86.avx512bf16.dpbf16ps.256"}.get(
        lanes, "llvm.aarch64.neon.bfdot.v4f32.v8bf16"
    )
    dp = declare(module, name, vty, [vty, pty, pty])
    return b.call(dp, [acc, b.bitcast(a, pty), b.bitcast(x, pty)])


def strided_load(module, b, ptr, mask, stride: int) -> tuple:
    """Lane l of a float vector from ptr[stride·l] where mask[l] is set, 0 elsewhere: one
    masked load of stride·lanes floats, its elements between the lanes off (they read
    nothing), every stride-th kept. Returns (the vector, the load instruction)."""
    n = mask.type.count
    wide = ir.VectorType(f32, stride * n)
    load, _ = masked(module, wide)
    access = b.call(
        load, [b.bitcast(ptr, wide.as_pointer()), i32(4), _spread(b, mask, stride), ir.Constant(wide, None)]
    )
    if stride == 1:
        return access, access
    return b.shuffle_vector(access, access, ir.Constant(ir.VectorType(i32, n), [stride * l for l in range(n)])), access


def strided_store(module, b, value, ptr, mask, stride: int):
    """Lane l of the float vector value to ptr[stride·l] where mask[l] is set: one masked
    store of stride·lanes floats, nothing written between the lanes. Returns the store."""
    n = value.type.count
    wide = ir.VectorType(f32, stride * n)
    _, store = masked(module, wide)
    if stride > 1:
        value = b.shuffle_vector(
            value, value, ir.Constant(ir.VectorType(i32, stride * n), [e // stride for e in range(stride * n)])
        )
    return b.call(store, [value, b.bitcast(ptr, wide.as_pointer()), i32(4), _spread(b, mask, stride)])


def _float_pointers(b, base, offsets):
    """The vector of pointers base + offsets[l] (floats; offsets: 32-bit lanes). llvmlite's gep
    takes no vector of indices: the base's integer plus 4·offset, which LLVM folds back into
    a gather's or scatter's base and scaled index."""
    addresses = ir.VectorType(i64, offsets.type.count)
    lanes = b.add(
        splat(b, b.ptrtoint(base, i64), addresses),
        b.shl(b.sext(offsets, addresses), ir.Constant(addresses, [2] * addresses.count)),
    )
    return b.inttoptr(lanes, ir.VectorType(f32.as_pointer(), addresses.count))


def gather(module, b, base, offsets, mask, fill):
    """Lane l of a float vector from base[offsets[l]] where mask[l] is set, `fill` elsewhere
    (those lanes read nothing): llvm.masked.gather, one vgatherdps on x86."""
    ptrs = _float_pointers(b, base, offsets)
    vty = ir.VectorType(f32, offsets.type.count)
    intrinsic = declare(
        module, f"llvm.masked.gather.v{vty.count}f32.v{vty.count}p0", vty, [ptrs.type, i32, mask.type, vty]
    )
    return b.call(intrinsic, [ptrs, i32(4), mask, fill])


def scatter(module, b, value, base, offsets, mask):
    """Lane l of the float vector value to base[offsets[l]] where mask[l] is set (the others
    write nothing): llvm.masked.scatter, one vscatterdps with AVX-512, a store a lane
    elsewhere."""
    ptrs = _float_pointers(b, base, offsets)
    n = value.type.count
    intrinsic = declare(
        module, f"llvm.masked.scatter.v{n}f32.v{n}p0", ir.VoidType(), [value.type, ptrs.type, i32, mask.type]
    )
    return b.call(intrinsic, [value, ptrs, i32(4), mask])


def concatenated(b, vectors: list):
    """The vectors (a power of two of them, of one type) one after another, as one vector."""
    while len(vectors) > 1:
        n = vectors[0].type.count
        vectors = [
            b.shuffle_vector(u, v, ir.Constant(ir.VectorType(i32, 2 * n), list(range(2 * n))))
            for u, v in zip(vectors[::2], vectors[1::2])
        ]
    return vectors[0]


def every(b, parts: list, stride: int, first: int):
    """Lane l: element first + stride·l of the parts (`stride` vectors of n lanes, first <
    stride) one after another: one stream of `stride` interleaved ones."""
    n = parts[0].type.count
    if stride == 1:
        return parts[0]
    half = len(parts) // 2
    return b.shuffle_vector(
        concatenated(b, parts[:half]),
        concatenated(b, parts[half:]),
        ir.Constant(ir.VectorType(i32, n), [first + stride * l for l in range(n)]),
    )


def interleaved(b, vectors: list) -> list:
    """The vectors (a power of two of them, of n lanes) interleaved — lane l of vector s at
    element l·len + s — as len vectors of n lanes: `every`'s inverse."""

    def woven(vs):
        if len(vs) == 1:
            return vs[0]
        even, odd = woven(vs[0::2]), woven(vs[1::2])
        m = even.type.count
        return b.shuffle_vector(
            even, odd, ir.Constant(ir.VectorType(i32, 2 * m), [p // 2 + (p % 2) * m for p in range(2 * m)])
        )

    whole, n = woven(vectors), vectors[0].type.count
    if len(vectors) == 1:
        return [whole]
    return [
        b.shuffle_vector(whole, whole, ir.Constant(ir.VectorType(i32, n), list(range(r * n, (r + 1) * n))))
        for r in range(len(vectors))
    ]


def transpose8(b, rows):
    """Transpose 8 <8 x float> rows into 8 columns (unpack, shuffle, 128-bit permute)."""

    def shuf(x, y, mask):
        return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, 8), mask))

    lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for r in range(0, 8, 2):
        t += [shuf(rows[r], rows[r + 1], lo), shuf(rows[r], rows[r + 1], hi)]
    q_lo, q_hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    s = [
        shuf(t[0], t[2], q_lo),
        shuf(t[0], t[2], q_hi),
        shuf(t[1], t[3], q_lo),
        shuf(t[1], t[3], q_hi),
        shuf(t[4], t[6], q_lo),
        shuf(t[4], t[6], q_hi),
        shuf(t[5], t[7], q_lo),
        shuf(t[5], t[7], q_hi),
    ]
    p_lo, p_hi = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    return [shuf(s[i], s[i + 4], p_lo) for i in range(4)] + [shuf(s[i], s[i + 4], p_hi) for i in range(4)]


def _spread(b, mask, stride: int):
    """mask[l] at lane stride·l, the lanes between off."""
    if stride == 1:
        return mask
    n = mask.type.count
    return b.shuffle_vector(
        mask,
        ir.Constant(mask.type, [0] * n),
        ir.Constant(ir.VectorType(i32, stride * n), [e // stride if e % stride == 0 else n for e in range(stride * n)]),
    )


def masked(module, vty) -> tuple:
    """llvm.masked.load and llvm.masked.store of vectors of type vty (of floats or integers)."""
    mty = ir.VectorType(i1, vty.count)
    lane = {f32: "f32", f64: "f64"}.get(vty.element, str(vty.element))
    name = f"v{vty.count}{lane}"
    return (
        declare(module, f"llvm.masked.load.{name}.p0", vty, [vty.as_pointer(), i32, mty, vty]),
        declare(module, f"llvm.masked.store.{name}.p0", ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
    )
