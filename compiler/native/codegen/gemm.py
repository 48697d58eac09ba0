"""Packed, register-blocked single-precision GEMM generated with llvmlite.

`add_gemm` adds to an `ir.Module` a routine computing, for every batch index b,

    C[b] (+)= op(A[b]) @ op(B[b])        op(X) = X or Xᵀ,  op(A): M×K, op(B): K×N

in float32, with runtime sizes, leading dimensions and batch strides. Its C signature:

    int32_t name(int64_t M, int64_t N, int64_t K,
                 const float *A, int64_t lda, int64_t stride_a,
                 const float *B, int64_t ldb, int64_t stride_b,
                 float *C, int64_t ldc, int64_t stride_c,
                 int64_t batch, int64_t nthreads);

The `_epi` routines take three more arguments, an epilogue (EPILOGUE_TYPE) and two
pointers they pass it: the routine calls it on each part of C once that part holds its
final sums — an MC x NC block after its last K slice, while the block is in cache — so
that a kernel computes what is made of C there (kernels/gemm: a bias, an activation).
The `_windows` routines (`dlc_sgemm_n?_windows[_epi]`) take an image as B and its
geometry (WINDOW_GEOMETRY) after `nthreads`: op(B) is the image's convolution windows,
packed from the image itself, so that a convolution needs no im2col buffer.

All matrices are row-major: element (i, j) of a stored matrix X is X[i*ldx + j]; with
`trans_a`, A is stored K×M (op(A) = Aᵀ), with `trans_b`, B is stored N×K. A batch stride
of 0 broadcasts one matrix over the batch. It returns 0, or 1 if a pack buffer could not
be allocated. `accumulate` (C += …, else C = …) and the transposes are fixed when the
routine is generated; everything else is a runtime argument.

Structure (BLIS): for each NC-wide column block and KC-deep slice of K (slices evened
out), op(B) is packed into NR-wide panels (k-major, zero-padded), then for each MC-tall
row block op(A) is packed into MR-tall panels (panels along K are transposed 8×8 in
registers), and a micro-kernel keeps an MR×NR tile of C in MR·NR/VW vector accumulators
over the K slice: A broadcast, B loaded as vectors, llvm.fma, K innermost (UNROLL steps
an iteration). Edge tiles use masked loads/stores. Blockings: `AVX2` (6×16 on <8 x float>,
12 accumulators), `AVX512` (8×32 on <16 x float>, 16 accumulators; the default where the
host has it) and `NEON` (12×8 on <4 x float>, 24 accumulators; AArch64's). The blocking
decides which thread computes an output, never the order of its sum: K slices are 256
deep in each.

The bf16 routines (`gemm_name(..., bf16=True)`: `dlc_bgemm_*`) take the same float32
arrays and multiply them rounded to bfloat16, summing in float32 (a config's `operands`,
OPERANDS): the packed panels are rounded in place once packed and the float32
micro-kernel runs on them ("bf16-round", the conversion path), or on a host with
AVX512_BF16 (or AArch64's bf16) rows k and k+1 of each panel become interleaved bfloat16
pairs that the micro-kernel multiplies with vdpbf16ps (BFDOT), two products per lane
("bf16-pairs"; K slices start at even k), or on a host with AMX the panels are packed
into the tiles' layouts and a 32 x 32 block of C is summed in four tiles by tdpbf16ps
("bf16-amx"; K slices of whole tiles of 32; Linux grants the tile state on request,
amx.py).
`bf16_config` picks the host's.

An operand B that many products share (a recurrent weight, at every step of a scan; a
built library's weights) can be packed once by `add_pack` into K-long NR-wide panels; the
`packed` routines take that copy as one more argument (or null: not packed) and skip
packing B. With a row or two of A the float32 ones not transposing B read the panels
too, each contiguous over K, where the routines without it read B's rows
(`_Gen.few_rows`). The float32 `packed_a` routines take op(A) so, packed by `add_pack` of
"a" into K-long MR-tall panels (a built library's convolution filters), and read only it.
Otherwise, with at most FEW_COLUMNS columns of C nothing is packed: groups of op(A)'s
rows are multiplied as they lie (`_Gen.few_columns`; the weight of a convolution's im2col
product is A). Every path sums each element in the same order.

Threads: the work is handed to dlc's thread pool (threadpool.py) in CHUNKS_PER_THREAD
chunks per thread — over the batch when there are enough matrices, else over N when
M ≤ N, else over M, in whole tiles — and each thread packs into its own buffers, so no
barriers are needed. Below `serial_below` (M·N·K·batch), for nthreads ≤ 1, or when
called from a pool's task (a fused kernel's chunk), it runs serially on the calling
thread. Pack buffers are allocated once per module and thread slot (the running thread's
slot in the pool, one of MOST_THREADS: a slot is never shared, on any team): the threads of
one job are safe, but two host threads must not call
into one compiled module at the same time, unless its tables of pack buffers are
thread-local (`thread_local_buffers`, as in a library `dlc build` writes).
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, replace

from llvmlite import ir

from dlc.compiler.native import A_PANEL_ROWS, FEW_COLUMNS, MOST_THREADS
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.amx import TILE_ROWS, has_tiles, tile_ops
from dlc.compiler.native.codegen.fpmode import current_mode, in_mode
from dlc.compiler.native.codegen.threadpool import TASK, declare_run
from dlc.compiler.native.codegen.intrinsics import (LLVMType, bf16_bits, declare, dot_bf16_pairs, every, masked, round_bf16,
                                                    splat, strided_load, transpose8, vec_ptr)
from dlc.compiler.native.codegen.types import f32, i1, i8, i32, i64

fptr = f32.as_pointer()
vptr = i8.as_pointer()


@dataclass(frozen=True)
class GemmConfig:
    """Blocking of the generated GEMM (all sizes in elements)."""
    mr: int = 6            # micro-tile rows (broadcast A values)
    nr: int = 16           # micro-tile columns (nr // vw vectors per row)
    vw: int = 8            # float lanes per vector: 8 = AVX2 ymm, 16 = AVX-512 zmm
    kc: int = 256          # depth of a packed K slice
    mc: int = 144          # rows of op(A) packed at once (multiple of mr)
    nc: int = 1024         # columns of op(B) packed at once (multiple of nr)
    serial_below: int = 1 << 18  # M·N·K·batch under which no threads are forked
    operands: str = "f32"  # what the micro-kernel multiplies: one of OPERANDS

    def __post_init__(self):
        # runs of FEW_VECTORS vectors start at whole panels too (_Gen._packed_b)
        if self.vw not in (4, 8, 16) or self.nr % self.vw or self.mc % self.mr or self.nc % self.nr \
                or FEW_VECTORS * self.vw % self.nr:
            raise ValueError(f"inconsistent GEMM blocking {self}")
        if self.operands not in OPERANDS or self.operands == "bf16-pairs" and self.vw not in (4, 16):
            raise ValueError(f"no {self.operands} operands for the GEMM blocking {self}")
        if self.amx and (self.mr, self.nr, self.vw) != (2 * TILE_ROWS, 2 * TILE_ROWS, 16) or self.kc % self.k_step:
            raise ValueError(f"no {self.operands} operands for the GEMM blocking {self}")
        if not self.bf16 and A_PANEL_ROWS % self.mr:     # where the packs of A's matrices start
            raise ValueError(f"inconsistent GEMM blocking {self}: {A_PANEL_ROWS} rows are not whole panels")

    @property
    def bf16(self) -> bool:
        """Its operands are rounded to bfloat16 (its routines are the `bf16` ones)."""
        return self.operands != "f32"

    @property
    def amx(self) -> bool:
        """Its micro-kernel runs on the AMX tiles."""
        return self.operands == "bf16-amx"

    @property
    def k_step(self) -> int:
        """K slices start at multiples of this: a bfloat16 pair, or a tile's depth."""
        return {"bf16-pairs": 2, "bf16-amx": TILE_DEPTH}.get(self.operands, 1)

    @property
    def tag(self) -> str:
        """Names the module-level helpers shared by all routines of this blocking."""
        operands = self.operands if self.bf16 else ""
        return f"{self.mr}x{self.nr}v{self.vw}k{self.kc}m{self.mc}n{self.nc}{operands}"

    @property
    def b_offset(self) -> int:
        """Offset (floats) of the B block in a pack buffer: after the A block, 64-byte aligned."""
        return -(-self.mc * self.kc // 16) * 16

    @property
    def pack_floats(self) -> int:
        """Floats in one thread's pack buffer (A block + B block)."""
        return self.b_offset + self.kc * self.nc


# What the micro-kernel multiplies: "f32" floats (llvm.fma); "bf16-round" floats rounded to
# bfloat16 while they are packed (llvm.fma: the conversion path, any machine);
# "bf16-pairs" bfloat16 packed as pairs along K, two products per lane with vdpbf16ps
# (AVX512_BF16) or BFDOT (AArch64's bf16); "bf16-amx" bfloat16 in the AMX tiles' layouts,
# multiplied by tdpbf16ps.
OPERANDS = ("f32", "bf16-round", "bf16-pairs", "bf16-amx")

# tdpbf16ps multiplies a 16 x 32 bfloat16 tile of A (codegen/amx.py) by a 32 x 16 one of B
# (16 rows of 16 pairs along K) into 16 x 16 floats of C.
TILE_DEPTH = 32

# steps of K a micro-kernel's loop takes an iteration
UNROLL = 4
# rows of op(A) up to which a block multiplies without packing (_Gen.few_rows), and the
# vectors of a C row it keeps in registers
FEW_ROWS = 2
FEW_VECTORS = 8
# the rows of op(A) a block of at most FEW_COLUMNS columns (multiplied without packing,
# _Gen.few_columns) keeps in each vector
COLUMN_ROWS = 8

# The geometry a `windows` routine reads its op(B) by (_Gen.window_pack), an i64 array in
# this order: the output's rows and columns, the filter's, the image's; X's strides
# along n, c, h and w; the convolution's stride, padding and dilation along h and w.
WINDOW_GEOMETRY = ("Ho", "Wo", "kh", "kw", "H", "W", "sn", "sc", "sh", "sw", "stride_h", "stride_w",
                   "pad_h", "pad_w", "dil_h", "dil_w")
# the strides along W whose panels are packed by masked vector loads of X's rows (the rest
# are gathered lane by lane)
WINDOW_RUN_STRIDES = (1, 2)

AVX2 = GemmConfig()
AVX512 = GemmConfig(mr=8, nr=32, vw=16, kc=256, mc=144, nc=1024)
# AArch64's 32 128-bit registers: 24 accumulators (12 rows of two vectors), the two B
# vectors and three of A, whose lanes each FMA takes (fmla by element)
NEON = GemmConfig(mr=12, nr=8, vw=4, kc=256, mc=144, nc=1024)
# 32 x 32 of C in four tiles; a K slice of A's panel and of B's is 32 KB each (bfloat16)
AMX = GemmConfig(mr=32, nr=32, vw=16, kc=512, mc=256, nc=1024, operands="bf16-amx")


def default_config(vector_width: int | None = None) -> GemmConfig:
    """`NEON` on AArch64 (vector_width 4); on x86-64 `AVX2` (8) or `AVX512` (16). When
    None: the target's, AVX512 where the host has AVX-512F, unless the environment variable
    DLC_GEMM_VW=8 asks for AVX2."""
    if jit.target_arch() == "aarch64":
        if vector_width not in (None, 4):
            raise ValueError(f"no GEMM blocking for vector width {vector_width} on AArch64")
        return NEON
    if vector_width is None:
        env = os.environ.get("DLC_GEMM_VW", "")
        vector_width = 8 if env == "8" or not jit.host_has("avx512f") else 16
    if vector_width == 16:
        if not jit.host_has("avx512f"):
            raise ValueError("the AVX-512 GEMM needs a host with AVX-512F")
        return AVX512
    if vector_width == 8:
        return AVX2
    raise ValueError(f"no GEMM blocking for vector width {vector_width}")


def bf16_config() -> GemmConfig:
    """The blocking of the bf16 routines, by the host's features: the AMX tiles where it
    has AMX-BF16 (and Linux grants the tile state), else bfloat16 pairs and vdpbf16ps
    where it has AVX512_BF16 (and the AVX-512 blocking is the default), or BFDOT in the
    NEON blocking where the AArch64 target has bf16, else the default
    blocking with its operands rounded while packing. DLC_TARGET forces each path on a
    host that has more (jit.REMOVED)."""
    cfg = default_config()
    if cfg.vw == 16 and has_tiles("tdpbf16ps"):
        return AMX
    pairs = jit.host_has("bf16") if cfg.vw == 4 else cfg.vw == 16 and jit.host_has("avx512bf16")
    return replace(cfg, operands="bf16-pairs" if pairs else "bf16-round")


def gemm_name(trans_a: bool, trans_b: bool, accumulate: bool, packed: bool = False, bf16: bool = False,
              epilogue: bool = False, windows: bool = False, packed_a: bool = False) -> str:
    return (f"dlc_{'b' if bf16 else 's'}gemm_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"
            f"{'_acc' if accumulate else ''}{'_packed' if packed else ''}{'_packed_a' if packed_a else ''}"
            f"{'_windows' if windows else ''}{'_epi' if epilogue else ''}")


def pack_name(trans: bool, bf16: bool = False, which: str = "b") -> str:
    return f"dlc_{'b' if bf16 else 's'}gemm_pack_{'a_' if which == 'a' else ''}{'t' if trans else 'n'}"


def gemm_type(packed: bool = False, epilogue: bool = False, windows: bool = False) -> ir.FunctionType:
    """The C signature of a GEMM routine (module docstring); a `packed` one takes op(B)
    packed by `add_pack` as one more pointer (a `packed_a` one op(A), the same way); a
    `windows` one the geometry of the image its B is (WINDOW_GEOMETRY); an `epilogue` one
    then its epilogue (EPILOGUE_TYPE) and the two pointers the routine passes it."""
    return ir.FunctionType(i32, [i64] * 3 + [fptr, i64, i64] * 3 + [i64, i64] + [fptr] * packed
                           + [i64.as_pointer()] * windows + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES] * epilogue)


# The epilogue of an `epilogue` routine: epilogue(slots, sizes, b, r0, r1, c0, c1) is called
# once the block C[b][r0:r1, c0:c1] holds its final sums (each element once, from the thread
# that computed it), to compute what is made of them in place (a step module's kernel:
# kernels/gemm); slots and sizes are the routine's last two arguments, passed on.
SLOTS, SIZES = i8.as_pointer().as_pointer(), i64.as_pointer()
EPILOGUE_TYPE = ir.FunctionType(ir.VoidType(), [SLOTS, SIZES] + [i64] * 5)


PACK_TYPE = ir.FunctionType(ir.VoidType(), [i64, i64, fptr, i64, fptr])



# --------------------------------------------------------------------------- IR helpers

def _c64(v: int) -> ir.Constant:
    return ir.Constant(i64, v)


@contextlib.contextmanager
def _loop(b: ir.IRBuilder, start, stop, step=1, name="i"):
    """for (i = start; i < stop; i += step) — yields i (signed compare)."""
    with _carrying_loop(b, stop, [], name, start, step) as (i, _, _):
        yield i


@contextlib.contextmanager
def _carrying_loop(b: ir.IRBuilder, stop, starts: list, name="k", start=0, step=1):
    """for (k = start; k < stop; k += step) carrying values: yields (k, the values this
    iteration starts with, a list the body fills with the next ones); after the block, the
    carried values hold the final ones."""
    step = _c64(step) if isinstance(step, int) else step
    start = _c64(start) if isinstance(start, int) else start
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(i64, name)
    k.add_incoming(start, pre)
    carried = [b.phi(v.type, f"{name}.carry") for v in starts]
    for phi, value in zip(carried, starts):
        phi.add_incoming(value, pre)
    b.cbranch(b.icmp_signed("<", k, stop), body, done)
    b.position_at_end(body)
    following: list = []
    yield k, carried, following
    for phi, value in zip(carried, following):
        phi.add_incoming(value, b.block)
    k.add_incoming(b.add(k, step, name=f"{name}.next"), b.block)
    b.branch(head)
    b.position_at_end(done)


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _ceil_div(b, x, d):
    d = _c64(d) if isinstance(d, int) else d
    return b.sdiv(b.add(x, b.sub(d, _c64(1))), d)


def _gep(b, ptr, idx):
    return b.gep(ptr, [idx], inbounds=True)



def _given_or_packed(b, fn, which: str, given, from_given, pack_here):
    """The panels of operand `which` and the floats from one panel to the next: from_given()'s,
    in the pack `given` where it is not null, else pack_here()'s (each builds at b's place)."""
    given_bb, own_bb, joined = (fn.append_basic_block(f"{which}_{n}") for n in ("given", "own", "joined"))
    b.cbranch(b.icmp_unsigned("!=", given, ir.Constant(fptr, None)), given_bb, own_bb)
    b.position_at_end(given_bb)
    at_given, given_end = from_given(), b.block
    b.branch(joined)
    b.position_at_end(own_bb)
    at_own, own_end = pack_here(), b.block
    b.branch(joined)
    b.position_at_end(joined)
    phis = b.phi(fptr), b.phi(i64)
    for phi, g, o in zip(phis, at_given, at_own):
        phi.add_incoming(g, given_end)
        phi.add_incoming(o, own_end)
    return phis


def _first_rows(b, most: int, rows, store_row):
    """store_row(r) for r < rows (at most `most`), each after a test; b ends after them."""
    done = b.function.append_basic_block("rows.done")
    for r in range(most):
        store_row(r)
        if r + 1 < most:
            more = b.function.append_basic_block(f"rows.{r + 1}")
            b.cbranch(b.icmp_signed(">", rows, _c64(r + 1)), more, done)
            b.position_at_end(more)
    b.branch(done)
    b.position_at_end(done)


def _internal(module, name, ret, args, arg_names):
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for a, n in zip(fn.args, arg_names):
        a.name = n
    return fn




def _transpose_words(b, rows):
    """The 32-bit words of `rows` transposed: 32 rows of 16 into 16 rows of 32, or back.
    Each 16 x 16 half is transposed by swapping the off-diagonal blocks of 8, 4, 2 and 1."""
    def transpose16(m):
        m = list(m)
        for s in (8, 4, 2, 1):
            for i in range(16):
                if i & s:
                    continue
                j = i + s
                top = [c if not c & s else 16 + c - s for c in range(16)]
                bottom = [c + s if not c & s else 16 + c for c in range(16)]
                mask = lambda idx: ir.Constant(ir.VectorType(i32, 16), idx)
                m[i], m[j] = (b.shuffle_vector(m[i], m[j], mask(top)), b.shuffle_vector(m[i], m[j], mask(bottom)))
        return m

    def part(v, lo):
        return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 16), list(range(lo, lo + 16))))
    if len(rows) == 32:         # rows of 16: two 16 x 16 halves side by side in the result
        top, bottom = transpose16(rows[:16]), transpose16(rows[16:])
        whole = ir.Constant(ir.VectorType(i32, 32), list(range(32)))
        return [b.shuffle_vector(x, y, whole) for x, y in zip(top, bottom)]
    return transpose16([part(v, 0) for v in rows]) + transpose16([part(v, 16) for v in rows])





# --------------------------------------------------------------------------- generator

class _Gen:
    def __init__(self, module: ir.Module, cfg: GemmConfig, shared_buffers: bool = False):
        self.m = module
        self.cfg = cfg
        self.shared_buffers = shared_buffers
        self.vty = ir.VectorType(f32, cfg.vw)
        self.fma = declare(module, f"llvm.fma.v{cfg.vw}f32", self.vty, [self.vty] * 3)
        self.prefix = _prefix(cfg)

    # ---- shared pieces (one per module and config) ----

    def _shared(self, name, build):
        full = f"{self.prefix}.{name}"
        fn = self.m.globals.get(full)
        if fn is None:
            fn = build(full)
        return fn

    def ukernel(self):
        return self._shared("ukernel", self._build_amx_ukernel if self.cfg.amx else self._build_ukernel)

    def narrow_ukernel(self):
        """The micro-kernel of a tile of at most one vector's columns (few columns, or a
        panel's last ones): the first vector of each B panel row only, NR // VW times
        fewer FMAs than `ukernel` there, each sum the same."""
        return self._shared("ukernel_narrow", lambda name: self._build_ukernel(name, vectors=1))

    def _build_ukernel(self, name, vectors=None):
        cfg, vty = self.cfg, self.vty
        MR, NR, VW = cfg.mr, cfg.nr, cfg.vw
        NV = vectors or NR // VW
        fn = _internal(self.m, name, ir.VoidType(),
                       [i64, fptr, fptr, fptr, i64, i64, i64, i1],
                       ["kc", "a", "b", "c", "ldc", "mr", "nr", "load_c"])
        fn.attributes.add("noinline")    # one copy shared by every routine of the module
        for k in (1, 2, 3):
            fn.args[k].add_attribute("noalias")
        kc, a, bp, c, ldc, mr, nr, load_c = fn.args
        entry = fn.append_basic_block("entry")
        unrolled = fn.append_basic_block("k.unrolled")
        tail = fn.append_basic_block("k.done")
        b = ir.IRBuilder(entry)
        zero = ir.Constant(vty, None)
        # Warm the C tile's lines while the K loop runs (rows and columns clamped to the
        # tile, so that every address is inside C).
        prefetch = declare(self.m, "llvm.prefetch.p0", ir.VoidType(), [vptr, i32, i32, i32])
        last_col = b.sub(_min(b, nr, _c64(NV * VW)), _c64(1))
        for r in range(MR):
            row = _gep(b, c, b.mul(_min(b, _c64(r), b.sub(mr, _c64(1))), ldc))
            for col in (_c64(0), last_col):   # the row's end may be on the next line
                b.call(prefetch, [b.bitcast(_gep(b, row, col), vptr), i32(1), i32(3), i32(1)])

        # k: a step of K, or with bfloat16 pairs a pair of them (a 32-bit pair per element)
        pairs = cfg.operands == "bf16-pairs"
        ety = i32 if pairs else f32
        lty = ir.VectorType(ety, VW)

        def step(k, accs):      # the tile's sums after step k
            bk = _gep(b, bp, b.mul(k, _c64(NR)))
            bvec = [b.load(b.bitcast(_gep(b, bk, _c64(v * VW)), lty.as_pointer()), align=4 * VW)
                    for v in range(NV)]
            ak = _gep(b, a, b.mul(k, _c64(MR)))
            ak = b.bitcast(ak, ety.as_pointer()) if pairs else ak
            new = []
            for r in range(MR):
                a_r = splat(b, b.load(_gep(b, ak, _c64(r)), align=4), lty)
                if pairs:
                    new.append([dot_bf16_pairs(self.m, b, accs[r][v], a_r, bvec[v]) for v in range(NV)])
                else:
                    new.append([b.call(self.fma, [a_r, bvec[v], accs[r][v]]) for v in range(NV)])
            return new

        def sums(name, incoming):     # phis of the tile's sums, from (block, sums) pairs
            phis = [[b.phi(vty, f"{name}{r}_{v}") for v in range(NV)] for r in range(MR)]
            for block, values in incoming:
                for r in range(MR):
                    for v in range(NV):
                        phis[r][v].add_incoming(values[r][v] if values is not None else zero, block)
            return phis

        # UNROLL steps an iteration while they last, then one at a time: with one step an
        # iteration, the loop's own instructions took issue slots among the FMAs
        steps = _ceil_div(b, kc, 2) if pairs else kc
        rest_check, rest = fn.append_basic_block("k.rest_check"), fn.append_basic_block("k.rest")
        b.cbranch(b.icmp_signed(">=", steps, _c64(UNROLL)), unrolled, rest_check)

        b.position_at_end(unrolled)
        k = b.phi(i64, "k")
        k.add_incoming(_c64(0), entry)
        accs = sums("c", [(entry, None)])
        new = accs
        for u in range(UNROLL):
            new = step(b.add(k, _c64(u)), new)
        k_next = b.add(k, _c64(UNROLL))
        k.add_incoming(k_next, unrolled)
        for r in range(MR):
            for v in range(NV):
                accs[r][v].add_incoming(new[r][v], unrolled)
        b.cbranch(b.icmp_signed("<=", b.add(k_next, _c64(UNROLL)), steps), unrolled, rest_check)

        b.position_at_end(rest_check)
        k_rest = b.phi(i64, "k_rest")
        k_rest.add_incoming(_c64(0), entry)
        k_rest.add_incoming(k_next, unrolled)
        after_unrolled = sums("u", [(entry, None), (unrolled, new)])
        b.cbranch(b.icmp_signed("<", k_rest, steps), rest, tail)

        b.position_at_end(rest)
        k = b.phi(i64, "kr")
        k.add_incoming(k_rest, rest_check)
        accs = sums("r", [(rest_check, after_unrolled)])
        new = step(k, accs)
        k1 = b.add(k, _c64(1))
        k.add_incoming(k1, rest)
        for r in range(MR):
            for v in range(NV):
                accs[r][v].add_incoming(new[r][v], rest)
        b.cbranch(b.icmp_signed("<", k1, steps), rest, tail)

        b.position_at_end(tail)
        new = sums("s", [(rest_check, after_unrolled), (rest, new)])
        # ---- store the tile
        full = b.and_(b.icmp_signed("==", mr, _c64(MR)), b.icmp_signed("==", nr, _c64(NV * VW)))
        full_bb = fn.append_basic_block("full")
        edge_bb = fn.append_basic_block("edge")
        b.cbranch(full, full_bb, edge_bb)

        b.position_at_end(full_bb)
        add_bb = fn.append_basic_block("full.add")
        set_bb = fn.append_basic_block("full.set")
        b.cbranch(load_c, add_bb, set_bb)
        for bb, add in ((add_bb, True), (set_bb, False)):
            b.position_at_end(bb)
            for r in range(MR):
                row = _gep(b, c, b.mul(_c64(r), ldc))
                for v in range(NV):
                    p = vec_ptr(b, _gep(b, row, _c64(v * VW)), vty)
                    val = new[r][v]
                    if add:
                        val = b.fadd(b.load(p, align=4), val)
                    b.store(val, p, align=4)
            b.ret_void()

        # edge tile: rows r < mr, columns masked to j < nr (masked loads/stores)
        b.position_at_end(edge_bb)
        mload, mstore = masked(self.m, vty)
        nr_splat = splat(b, nr, ir.VectorType(i64, VW))
        masks = [b.icmp_signed("<", ir.Constant(ir.VectorType(i64, VW), list(range(v * VW, v * VW + VW))),
                               nr_splat) for v in range(NV)]
        def store_row(r):
            row = _gep(b, c, b.mul(_c64(r), ldc))
            for v in range(NV):
                # not `inbounds`: masked-off lanes may lie past the end of C
                p = vec_ptr(b, b.gep(row, [_c64(v * VW)]), vty)
                old = b.call(mload, [p, i32(4), masks[v], zero])
                val = b.select(load_c, b.fadd(old, new[r][v]), new[r][v])
                b.call(mstore, [val, p, i32(4), masks[v]])
        _first_rows(b, MR, mr, store_row)
        b.ret_void()
        return fn

    def pack(self, which: str, trans: bool):
        """Pack function for 'a' (MR-tall panels) or 'b' (NR-wide panels)."""
        def build(name):
            fn = _internal(self.m, name, ir.VoidType(), [i64, i64, fptr, i64, fptr],
                           ["kc", "len", "src", "ld", "dst"])
            fn.attributes.add("noinline")
            fn.args[4].add_attribute("noalias")
            # op(A) non-transposed is stored M×K (k contiguous); op(B) non-transposed is K×N.
            contig_k = (which == "a") != trans
            (self._build_amx_pack if self.cfg.amx else self._build_pack)(fn, which, contig_k)
            return fn
        return self._shared(f"pack_{which}_{'t' if trans else 'n'}", build)

    def panel_length(self, b, k):
        """Floats a panel holds per row of A or column of B for a K slice k deep: k, or on
        the AMX tiles k rounded up to whole tiles, in bfloat16 pairs."""
        if not self.cfg.amx:
            return k
        return b.mul(_ceil_div(b, k, TILE_DEPTH), _c64(TILE_DEPTH // 2))

    def _build_pack(self, fn, which, contig_k):
        """pack(kc, len, src, ld, dst): panels of P (= MR or NR) along `len`, k-major.

        Element (p, k) of the block — p along the panel direction (rows of op(A) or
        columns of op(B)), k along K — is src[p*ld + k] when `contig_k`, else src[k*ld + p].
        Panel q is stored at dst + q*P*kc, element (p, k) at [k*P + p % P]; rows past `len`
        are zero.
        """
        cfg, vty = self.cfg, self.vty
        P = cfg.mr if which == "a" else cfg.nr
        kc, length, src, ld, dst = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        npanels = _ceil_div(b, length, P)
        zero = ir.Constant(f32, 0.0)

        with _loop(b, 0, npanels, name="q") as q:
            p0 = b.mul(q, _c64(P))
            width = _min(b, _c64(P), b.sub(length, p0))
            out = _gep(b, dst, b.mul(p0, kc))
            full_bb = b.append_basic_block("full")
            part_bb = b.append_basic_block("part")
            next_bb = b.append_basic_block("next")
            b.cbranch(b.icmp_signed("==", width, _c64(P)), full_bb, part_bb)

            # full panel
            b.position_at_end(full_bb)
            if contig_k:
                # lines along k: transpose 8×8 blocks in registers, 8 k at a time
                lines = [_gep(b, src, b.mul(b.add(p0, _c64(p)), ld)) for p in range(P)]
                k8 = b.mul(b.sdiv(kc, _c64(8)), _c64(8))
                v8 = ir.VectorType(f32, 8)
                with _loop(b, 0, k8, 8, name="k8") as k:
                    o = _gep(b, out, b.mul(k, _c64(P)))
                    for g in range(0, P, 8):
                        rows = [b.load(vec_ptr(b, _gep(b, lines[p], k), v8), align=4)
                                if p < P else ir.Constant(v8, ir.Undefined)
                                for p in range(g, g + 8)]
                        cols = transpose8(b, rows)
                        w = min(8, P - g)
                        for kk in range(8):
                            col = cols[kk]
                            if w < 8:
                                head = ir.Constant(ir.VectorType(i32, w), list(range(w)))
                                col = b.shuffle_vector(col, col, head)
                            dst_p = _gep(b, o, _c64(kk * P + g))
                            b.store(col, b.bitcast(dst_p, ir.VectorType(f32, w).as_pointer()), align=4)
                with _loop(b, k8, kc, name="k") as k:
                    o = _gep(b, out, b.mul(k, _c64(P)))
                    for p in range(P):
                        b.store(b.load(_gep(b, lines[p], k), align=4), _gep(b, o, _c64(p)), align=4)
            else:
                base = _gep(b, src, p0)
                with _loop(b, 0, kc, name="k") as k:
                    line = _gep(b, base, b.mul(k, ld))
                    o = _gep(b, out, b.mul(k, _c64(P)))
                    if P % cfg.vw == 0:
                        for v in range(P // cfg.vw):
                            x = b.load(vec_ptr(b, _gep(b, line, _c64(v * cfg.vw)), vty), align=4)
                            b.store(x, vec_ptr(b, _gep(b, o, _c64(v * cfg.vw)), vty), align=4)
                    else:
                        for p in range(P):
                            b.store(b.load(_gep(b, line, _c64(p)), align=4), _gep(b, o, _c64(p)), align=4)
            b.branch(next_bb)

            # partial panel: clamp the index, zero what is past the end
            b.position_at_end(part_bb)
            last = b.sub(width, _c64(1))
            idx = [_min(b, _c64(p), last) for p in range(P)]
            ok = [b.icmp_signed("<", _c64(p), width) for p in range(P)]
            if contig_k:
                lines = [_gep(b, src, b.mul(b.add(p0, idx[p]), ld)) for p in range(P)]
            with _loop(b, 0, kc, name="kp") as k:
                o = _gep(b, out, b.mul(k, _c64(P)))
                if not contig_k:
                    line = _gep(b, _gep(b, src, p0), b.mul(k, ld))
                for p in range(P):
                    x = b.load(_gep(b, lines[p], k) if contig_k else _gep(b, line, idx[p]), align=4)
                    b.store(b.select(ok[p], x, zero), _gep(b, o, _c64(p)), align=4)
            b.branch(next_bb)
            b.position_at_end(next_bb)
            if cfg.bf16:
                self.to_bf16(b, out, kc, P)
        b.ret_void()

    def window_pack(self, trans: bool):
        """pack_windows(kc, len, k0, j0, X, geometry, dst): the panels `_build_pack` makes
        of columns j0 .. j0+len and rows k0 .. k0+kc of op(B) = a convolution's columns,
        read from the image X itself. Of tap t = (c, i, jj) and output pixel p = (n, ho, wo)
        the column holds X[n, c, ho·sh - ph + i·dh, wo·sw - pw + jj·dw], 0 outside the image
        (geometry: WINDOW_GEOMETRY); op(B) is im2col's buffer transposed with `trans`
        (element (k, j): tap k of pixel j, a forward product's), else as it lies (pixel k's
        tap j, a weight gradient's). Padding columns past `len` are zero too, so the panels
        are those of the buffer, bit for bit."""
        def build(name):
            fn = _internal(self.m, name, ir.VoidType(), [i64, i64, i64, i64, fptr, i64.as_pointer(), fptr],
                           ["kc", "len", "k0", "j0", "X", "geometry", "dst"])
            fn.attributes.add("noinline")
            fn.args[6].add_attribute("noalias")
            (self._build_window_pack if trans else self._build_pixel_rows_pack)(fn)
            return fn
        return self._shared(f"pack_windows_{'t' if trans else 'n'}", build)

    def _window_parts(self, fn):
        """The builder at fn's entry and what both window packs use: the geometry `g`,
        splat(x) over VW lanes of i64, the panel's lane indices (P // VW vectors), X as an
        integer, digits(v, rows, columns) (v as (a, row, column)) and following(a, row,
        column, rows, columns) (the next v's, scalars: no division), position(j) (pixel j
        as (n, ho, wo)), origin(n, ho, wo) (the row, column and offset in X of the window's
        tap (0, 0)), taps(t) (tap t's offset from it, row and column) — scalars or vectors
        alike — and gathered(offsets, mask)."""
        cfg, VW = self.cfg, self.cfg.vw
        geometry, X = fn.args[5], fn.args[4]
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        g = {name: b.load(_gep(b, geometry, _c64(i)), name=name) for i, name in enumerate(WINDOW_GEOMETRY)}
        iv = ir.VectorType(i64, VW)
        gather = declare(self.m, f"llvm.masked.gather.v{VW}f32.v{VW}p0", self.vty,
                         [ir.VectorType(fptr, VW), i32, ir.VectorType(i1, VW), self.vty])
        X_int = b.ptrtoint(X, i64)

        def like(v):            # a scalar as v is: itself, or splat over VW lanes
            return (lambda x: splat(b, x, iv)) if isinstance(v.type, ir.VectorType) else (lambda x: x)

        def digits(v, rows, columns):      # v as (a, row, column) of [., rows, columns]
            d = like(v)
            plane = d(b.mul(rows, columns))
            a = b.sdiv(v, plane)
            r = b.sub(v, b.mul(a, plane))
            row = b.sdiv(r, d(columns))
            return a, row, b.sub(r, b.mul(row, d(columns)))

        def position(j):
            return digits(j, g["Ho"], g["Wo"])

        def following(a, row, column, rows, columns):      # the digits of the next v
            column1 = b.add(column, _c64(1))
            row_end = b.icmp_signed("==", column1, columns)
            row1 = b.select(row_end, b.add(row, _c64(1)), row)
            plane_end = b.icmp_signed("==", row1, rows)
            return [b.select(plane_end, b.add(a, _c64(1)), a), b.select(plane_end, _c64(0), row1),
                    b.select(row_end, _c64(0), column1)]

        def origin(n, ho, wo):
            d = like(n)
            hi0 = b.sub(b.mul(ho, d(g["stride_h"])), d(g["pad_h"]))
            wi0 = b.sub(b.mul(wo, d(g["stride_w"])), d(g["pad_w"]))
            return hi0, wi0, b.add(b.mul(n, d(g["sn"])), b.add(b.mul(hi0, d(g["sh"])), b.mul(wi0, d(g["sw"]))))

        def taps(t):
            return tap_parts(*digits(t, g["kh"], g["kw"]))

        def tap_parts(c, i, jj):
            d = like(c)
            di, dj = b.mul(i, d(g["dil_h"])), b.mul(jj, d(g["dil_w"]))
            return b.add(b.mul(c, d(g["sc"])), b.add(b.mul(di, d(g["sh"])), b.mul(dj, d(g["sw"])))), di, dj

        def gathered(offsets, mask):
            at = b.add(splat(b, X_int, iv), b.mul(offsets, splat(b, _c64(4), iv)))
            return b.call(gather, [b.inttoptr(at, ir.VectorType(fptr, VW)), i32(4), mask, ir.Constant(self.vty, None)])

        lanes = [ir.Constant(iv, list(range(v * VW, (v + 1) * VW))) for v in range(cfg.nr // VW)]
        parts = dict(g=g, splat=lambda x: splat(b, x, iv), lanes=lanes, X_int=X_int, digits=digits, position=position,
                     following=following, origin=origin, taps=taps, tap_parts=tap_parts, gathered=gathered)
        return b, type("WindowParts", (), parts)

    def _build_pixel_rows_pack(self, fn):
        """op(B) as im2col's buffer lies (a weight gradient's): each panel row one pixel's
        taps, every lane's tap (decomposed once a panel) gathered from X; the pixel (n, ho,
        wo) carried along the rows, no division a row."""
        P, VW = self.cfg.nr, self.cfg.vw
        kc, length, k0, j0, X, geometry, dst = fn.args
        b, w = self._window_parts(fn)
        g, vsplat = w.g, w.splat
        inside = lambda x, n: b.icmp_unsigned("<", x, vsplat(n))       # 0 <= x < n
        with _loop(b, 0, _ceil_div(b, length, P), name="q") as q:
            p0 = b.mul(q, _c64(P))
            out = _gep(b, dst, b.mul(p0, kc))
            live = b.sub(length, p0)                # lanes past it are padding: zero
            lanes = [(w.taps(b.add(vsplat(b.add(j0, p0)), x)), b.icmp_signed("<", x, vsplat(live))) for x in w.lanes]
            with _carrying_loop(b, kc, list(w.position(k0)), name="pixel") as (k, (n, ho, wo), following):
                hi0, wi0, base = w.origin(n, ho, wo)
                o = _gep(b, out, b.mul(k, _c64(P)))
                for v, ((offset, di, dj), lane_ok) in enumerate(lanes):
                    mask = b.and_(lane_ok, b.and_(inside(b.add(vsplat(hi0), di), g["H"]),
                                                  inside(b.add(vsplat(wi0), dj), g["W"])))
                    x = w.gathered(b.add(vsplat(base), offset), mask)
                    b.store(x, vec_ptr(b, _gep(b, o, _c64(v * VW)), self.vty), align=4)
                following += w.following(n, ho, wo, g["Ho"], g["Wo"])
        b.ret_void()

    def _build_window_pack(self, fn):
        """A panel whose columns lie in at most two output rows, a stride of WINDOW_RUN_STRIDES
        along W and a unit stride in X (a row of taps is then a run of X's row, or every
        other float of one): masked vector loads (_window_runs); any other panel gathers its
        lanes one by one."""
        cfg = self.cfg
        P, VW = cfg.nr, cfg.vw
        kc, length, k0, j0, X, geometry, dst = fn.args
        b, w = self._window_parts(fn)
        g, vsplat, lanes, X_int, position = w.g, w.splat, w.lanes, w.X_int, w.position
        inside = lambda x, n: b.icmp_unsigned("<", x, vsplat(n))       # 0 <= x < n

        # each tap's offset in X and its row and column steps, for the K slice: (c, i, jj)
        # carried along k, no division per tap
        taps = b.bitcast(b.alloca(ir.ArrayType(i64, 3 * cfg.kc), name="taps"), i64.as_pointer())
        with _carrying_loop(b, kc, list(w.digits(k0, g["kh"], g["kw"])), name="tap") as (k, (c, i, jj), following):
            for q, v in enumerate(w.tap_parts(c, i, jj)):
                b.store(v, _gep(b, taps, b.add(b.mul(k, _c64(3)), _c64(q))))
            following += w.following(c, i, jj, g["kh"], g["kw"])

        def tap(k):
            return [b.load(_gep(b, taps, b.add(b.mul(k, _c64(3)), _c64(q)))) for q in range(3)]

        with _loop(b, 0, _ceil_div(b, length, P), name="q") as q:
            p0 = b.mul(q, _c64(P))
            out = _gep(b, dst, b.mul(p0, kc))
            first = b.add(j0, p0)
            n_a, ho_a, wo_a = position(first)
            split = b.sub(g["Wo"], wo_a)            # the panel's lanes in the first output row
            live = b.sub(length, p0)                # lanes past it are padding: zero
            in_runs = b.and_(b.icmp_signed("==", g["sw"], _c64(1)), b.icmp_signed("<=", b.sub(_c64(P), split), g["Wo"]))
            scattered, next_panel = fn.append_basic_block("scattered"), fn.append_basic_block("panel.next")
            by_stride = b.switch(b.select(in_runs, g["stride_w"], _c64(0)), scattered)
            for stride in WINDOW_RUN_STRIDES:
                block = fn.append_basic_block(f"runs.{stride}")
                by_stride.add_case(_c64(stride), block)
                b.position_at_end(block)
                self._window_runs(b, stride, g, X_int, tap, kc, out, first, split, live, position)
                b.branch(next_panel)

            # any other panel: each lane's own pixel, gathered
            b.position_at_end(scattered)
            pos = [(*w.origin(*position(b.add(vsplat(first), x))), b.icmp_signed("<", x, vsplat(live))) for x in lanes]
            with _loop(b, 0, kc, name="gather") as k:
                offset, di, dj = tap(k)
                o = _gep(b, out, b.mul(k, _c64(P)))
                for v, (hi0, wi0, base, lane_ok) in enumerate(pos):
                    mask = b.and_(lane_ok, b.and_(inside(b.add(hi0, vsplat(di)), g["H"]),
                                                  inside(b.add(wi0, vsplat(dj)), g["W"])))
                    x = w.gathered(b.add(base, vsplat(offset)), mask)
                    b.store(x, vec_ptr(b, _gep(b, o, _c64(v * VW)), self.vty), align=4)
            b.branch(next_panel)
            b.position_at_end(next_panel)
        b.ret_void()

    def _window_runs(self, b, stride, g, X_int, tap, kc, out, first, split, live, position):
        """A panel's rows of taps, its columns in two output rows at most and `stride` apart
        along W in X: the lanes before `split` from row (n, ho) of pixel `first`, from its
        column on, the rest from the next row (or example), from its column 0 on. A vector
        whose lanes lie in one row, inside X's row, is `stride` plain loads, every
        stride-th float kept; any other vector's lanes are one masked load of stride·VW
        floats from each row (intrinsics.strided_load), an address outside X only where its
        lane is off, which reads nothing. (The masks' arithmetic, on i64 lanes, took about
        a third of a stem convolution's time when every vector was loaded masked.)"""
        P, VW = self.cfg.nr, self.cfg.vw
        iv = ir.VectorType(i64, VW)
        vsplat = lambda x: splat(b, x, iv)
        lanes = [ir.Constant(iv, list(range(v * VW, (v + 1) * VW))) for v in range(P // VW)]
        n_a, ho_a, wo_a = position(first)
        n_b, ho_b, _ = position(b.add(first, split))
        rows = []
        for n, ho, wo, lo, hi in ((n_a, ho_a, wo_a, _c64(0), _min(b, split, live)),
                                  (n_b, ho_b, b.sub(_c64(0), split), split, live)):
            hi0 = b.sub(b.mul(ho, g["stride_h"]), g["pad_h"])
            wi0 = b.sub(b.mul(wo, _c64(stride)), g["pad_w"])    # the column of lane 0, as if the row began there
            base = b.add(b.mul(n, g["sn"]), b.add(b.mul(hi0, g["sh"]), wi0))
            lane_ok = [b.and_(b.icmp_signed(">=", x, vsplat(lo)), b.icmp_signed("<", x, vsplat(hi))) for x in lanes]
            rows.append((hi0, wi0, base, lo, hi, lane_ok))
        # the row each vector's lanes all lie in (the first's, else the second's): a row's
        # lanes are [lo, hi), and each vector's choice is the same for every tap
        in_first = [b.icmp_signed("<=", _c64((v + 1) * VW), rows[0][4]) for v in range(len(lanes))]
        in_one = [b.or_(in_first[v], b.and_(b.icmp_signed(">=", _c64(v * VW), rows[1][3]),
                                            b.icmp_signed("<=", _c64((v + 1) * VW), rows[1][4])))
                  for v in range(len(lanes))]

        def address(start):
            return b.inttoptr(b.add(X_int, b.mul(start, _c64(4))), fptr)

        with _loop(b, 0, kc, name=f"runs{stride}") as k:
            offset, di, dj = tap(k)
            o = _gep(b, out, b.mul(k, _c64(P)))
            for v, x in enumerate(lanes):
                dst = vec_ptr(b, _gep(b, o, _c64(v * VW)), self.vty)
                pick = lambda q: b.select(in_first[v], rows[0][q], rows[1][q])
                hi0, wi0, base = pick(0), pick(1), pick(2)
                column = b.add(b.add(wi0, dj), _c64(stride * v * VW))     # of the vector's first lane
                whole = b.and_(in_one[v], b.and_(b.icmp_unsigned("<", b.add(hi0, di), g["H"]), b.and_(
                    b.icmp_unsigned("<", column, g["W"]),
                    b.icmp_unsigned("<", b.add(column, _c64(stride * VW - 1)), g["W"]))))
                with b.if_else(whole) as (plain, edge):
                    with plain:
                        at = b.add(b.add(base, offset), _c64(stride * v * VW))
                        parts = [b.load(vec_ptr(b, address(b.add(at, _c64(s * VW))), self.vty), align=4)
                                 for s in range(stride)]
                        b.store(every(b, parts, stride, 0), dst, align=4)
                    with edge:
                        value = None
                        for hi0, wi0, base, _, _, lane_ok in rows:
                            row_ok = splat(b, b.icmp_unsigned("<", b.add(hi0, di), g["H"]), ir.VectorType(i1, VW))
                            column = b.add(b.mul(x, vsplat(_c64(stride))), vsplat(b.add(wi0, dj)))
                            mask = b.and_(b.and_(lane_ok[v], b.icmp_unsigned("<", column, vsplat(g["W"]))), row_ok)
                            loaded, _ = strided_load(self.m, b, address(b.add(b.add(base, offset), _c64(stride * v * VW))),
                                                     mask, stride)
                            value = loaded if value is None else b.select(mask, loaded, value)
                        b.store(value, dst, align=4)

    def to_bf16(self, b, panel, kc, P):
        """A packed panel (kc rows of P floats) made into the micro-kernel's bfloat16
        operands, in place: each float rounded ("bf16-round"), or rows k and k+1 rounded
        and interleaved into P 32-bit pairs ("bf16-pairs": a zero row after an odd last
        row). Pair row q is written over the bytes of float row q, which rows 2q and 2q+1
        (read first) are at or after."""
        fty = ir.VectorType(f32, P)
        row = lambda k: b.bitcast(_gep(b, panel, b.mul(k, _c64(P))), fty.as_pointer())
        if self.cfg.operands == "bf16-round":
            with _loop(b, 0, kc, name="bf") as k:
                b.store(round_bf16(b, b.load(row(k), align=4)), row(k), align=4)
            return
        # rows k and k+1 side by side, rounded together (one conversion of 2P lanes), then
        # their halves interleaved into pairs
        pty = ir.VectorType(ir.IntType(16), 2 * P)
        side_by_side = ir.Constant(ir.VectorType(i32, 2 * P), list(range(2 * P)))
        interleave = ir.Constant(ir.VectorType(i32, 2 * P), [p // 2 + (p % 2) * P for p in range(2 * P)])
        with _loop(b, 0, _ceil_div(b, kc, 2), name="bp") as q:
            k0 = b.mul(q, _c64(2))
            k1 = b.add(k0, _c64(1))
            second = b.select(b.icmp_signed("<", k1, kc), b.load(row(_min(b, k1, b.sub(kc, _c64(1)))), align=4),
                              ir.Constant(fty, None))
            halves = self.bf16_halves(b, b.shuffle_vector(b.load(row(k0), align=4), second, side_by_side))
            dst = b.bitcast(_gep(b, panel, b.mul(q, _c64(P))), pty.as_pointer())
            b.store(b.shuffle_vector(halves, halves, interleave), dst, align=4)

    def bf16_halves(self, b, x):
        """The float vector x rounded to bfloat16 as bf16_bits does (to nearest even, a NaN
        quiet), the 16-bit halves only: where the target has AVX512_BF16 (the pairs' and the
        tiles' hosts) a vcvtneps2bf16 for 16 lanes, one vcvtne2ps2bf16 per 32 of 32 or 64,
        else nine integer operations a lane. Subnormals need not agree: the products that read these
        operands (vdpbf16ps, tdpbf16ps, BFDOT) take subnormal inputs as zero."""
        n = x.type.count
        f16, bf = ir.VectorType(f32, 16), lambda lanes: ir.VectorType(LLVMType("bfloat"), lanes)
        halves = lambda lanes: ir.VectorType(ir.IntType(16), lanes)
        part = lambda lo: b.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, 16), list(range(lo, lo + 16))))
        if not jit.host_has("avx512bf16") or n not in (16, 32, 64):
            return b.trunc(b.lshr(bf16_bits(b, x), ir.Constant(ir.VectorType(i32, n), [16] * n)), halves(n))
        if n == 16:
            cvt = declare(self.m, "llvm.x86.avx512bf16.cvtneps2bf16.512", bf(16), [f16])
            return b.bitcast(b.call(cvt, [x]), halves(16))
        cvt = declare(self.m, "llvm.x86.avx512bf16.cvtne2ps2bf16.512", bf(32), [f16, f16])
        # the second operand gives the lower 16 lanes
        pieces = [b.bitcast(b.call(cvt, [part(lo + 16), part(lo)]), halves(32)) for lo in range(0, n, 32)]
        if n == 32:
            return pieces[0]
        return b.shuffle_vector(*pieces, ir.Constant(ir.VectorType(i32, 64), list(range(64))))

    # ---- the AMX tiles ("bf16-amx")

    def _build_amx_ukernel(self, name):
        """The micro-kernel on the AMX tiles: a 32 x 32 block of C in four 16 x 16 float
        tiles, summed over the K slice a tile (32) at a time by tdpbf16ps from two tiles of
        the A panel (rows 0-15 and 16-31, 32 bfloat16 each) and two of the B panel
        (columns 0-15 and 16-31, 16 pairs of rows). A whole block of C is loaded into the
        tiles first (or they start at zero) and stored back from them; an edge block's
        tiles start at zero, go to a block on the stack and are added (or written) to C's
        rows r < mr, columns masked to j < nr."""
        load, dot, store, zero_tile = tile_ops(self.m, "tdpbf16ps")
        i16 = ir.IntType(16)
        T = TILE_ROWS
        row_bytes = i16(4 * T)          # 64: 16 floats, or 32 bfloat16 / 16 pairs
        fn = _internal(self.m, name, ir.VoidType(), [i64, fptr, fptr, fptr, i64, i64, i64, i1],
                       ["kc", "a", "b", "c", "ldc", "mr", "nr", "load_c"])
        fn.attributes.add("noinline")
        kc, a, bp, c, ldc, mr, nr, load_c = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        block = b.alloca(ir.ArrayType(f32, 4 * T * T), name="block")
        block.align = 64
        block = b.bitcast(block, fptr)
        a8, b8 = b.bitcast(a, vptr), b.bitcast(bp, vptr)
        ktiles = _ceil_div(b, kc, TILE_DEPTH)
        tile_bytes = 4 * T * T           # a 32 x 32 bfloat16 block of a panel: two tiles

        def products(start):
            """The four tiles of C from `start` on, plus the products of the K slice."""
            with _carrying_loop(b, ktiles, start, name="kt") as (k, acc, new):
                at = b.gep(a8, [b.mul(k, _c64(2 * tile_bytes))], inbounds=True)
                bt = b.gep(b8, [b.mul(k, _c64(2 * tile_bytes))], inbounds=True)
                a_tiles = [b.call(load, [i16(T), row_bytes, b.gep(at, [_c64(h * tile_bytes)], inbounds=True),
                                         _c64(4 * T)]) for h in (0, 1)]
                b_tiles = [b.call(load, [i16(T), row_bytes, b.gep(bt, [_c64(h * 4 * T)], inbounds=True),
                                         _c64(8 * T)]) for h in (0, 1)]
                new += [b.call(dot, [i16(T), row_bytes, row_bytes, acc[2 * i + j], a_tiles[i], b_tiles[j]])
                        for i in (0, 1) for j in (0, 1)]
            return acc

        def corners(base, ld):      # the four 16 x 16 corners of a 32 x 32 block, row stride ld
            return [b.bitcast(_gep(b, base, b.add(b.mul(_c64(i * T), ld), _c64(j * T))), vptr)
                    for i in (0, 1) for j in (0, 1)]

        def zeros():
            return [b.call(zero_tile, [i16(T), row_bytes]) for _ in range(4)]

        full_bb, edge_bb = fn.append_basic_block("full"), fn.append_basic_block("edge")
        b.cbranch(b.and_(b.icmp_signed("==", mr, _c64(2 * T)), b.icmp_signed("==", nr, _c64(2 * T))), full_bb, edge_bb)
        b.position_at_end(full_bb)
        add_bb, set_bb = fn.append_basic_block("full.add"), fn.append_basic_block("full.set")
        stride = b.mul(ldc, _c64(4))
        b.cbranch(load_c, add_bb, set_bb)
        for bb, add in ((add_bb, True), (set_bb, False)):
            b.position_at_end(bb)
            to = corners(c, ldc)
            start = [b.call(load, [i16(T), row_bytes, p, stride]) for p in to] if add else zeros()
            for p, tile in zip(to, products(start)):
                b.call(store, [i16(T), row_bytes, p, stride, tile])
            b.ret_void()

        b.position_at_end(edge_bb)
        for p, tile in zip(corners(block, _c64(2 * T)), products(zeros())):
            b.call(store, [i16(T), row_bytes, p, _c64(8 * T), tile])
        vty = self.vty
        mload, mstore = masked(self.m, vty)
        lanes = ir.VectorType(i64, T)
        masks = [b.icmp_signed("<", ir.Constant(lanes, list(range(h * T, h * T + T))), splat(b, nr, lanes))
                 for h in (0, 1)]
        with _loop(b, 0, mr, name="r") as r:
            row = _gep(b, c, b.mul(r, ldc))
            for h in (0, 1):
                sums = b.load(vec_ptr(b, _gep(b, block, b.add(b.mul(r, _c64(2 * T)), _c64(h * T))), vty), align=64)
                # not `inbounds`: masked-off lanes may lie past the end of C
                p = vec_ptr(b, b.gep(row, [_c64(h * T)]), vty)
                old = b.call(mload, [p, i32(4), masks[h], ir.Constant(vty, None)])
                b.call(mstore, [b.select(load_c, b.fadd(old, sums), sums), p, i32(4), masks[h]])
        b.ret_void()
        return fn

    def _build_amx_pack(self, fn, which, contig_k):
        """pack(kc, len, src, ld, dst) into the tiles' layouts, rounded to bfloat16: panels
        of 32 along `len` (rows of op(A), columns of op(B)), each a 32 x 32 block per tile
        of K (2 KB, the K slice rounded up to whole tiles), zero past `len` and kc. In a
        block of A, row p holds its 32 bfloat16 along K (16 pairs); in a block of B, pair
        row q holds rows 2q and 2q+1 of the 32 columns interleaved (the "VNNI" layout).
        Element (p, k) is src[p*ld + k] when `contig_k`, else src[k*ld + p]; lines along
        the source's contiguous direction are read with masked loads, made bfloat16 pairs
        and, where the layout runs the other way, transposed 16 x 16 in registers."""
        P, W = self.cfg.mr, TILE_DEPTH // 2       # 32 rows or columns; 16 pairs per row
        kc, length, src, ld, dst = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        wty = ir.IntType(32).as_pointer()
        words = b.bitcast(dst, wty)
        ktiles = _ceil_div(b, kc, TILE_DEPTH)
        fty = ir.VectorType(f32, P)
        mload, _ = masked(self.m, fty)
        lanes = ir.VectorType(i64, P)
        lane = ir.Constant(lanes, list(range(P)))

        def line(start, count, valid):
            """bfloat16 of src[start:start + 32], zero from `count` on or when not `valid`."""
            mask = b.and_(b.icmp_signed("<", lane, splat(b, count, lanes)),
                          splat(b, valid, ir.VectorType(i1, P)))
            return self.bf16_halves(b, b.call(mload, [vec_ptr(b, start, fty), i32(4), mask, ir.Constant(fty, None)]))

        def words_of(halves, n):
            return b.bitcast(halves, ir.VectorType(i32, n))

        def block(q, kt):
            """The 32 x 32 block of panel q at K tile kt."""
            p0 = b.mul(q, _c64(P))
            panel = _gep(b, words, b.mul(q, b.mul(ktiles, _c64(P * W))))
            k0 = b.mul(kt, _c64(TILE_DEPTH))
            out = _gep(b, panel, b.mul(kt, _c64(P * W)))
            if contig_k:     # rows along K: 16 pairs of row p, p = 0..31
                left = b.sub(kc, k0)
                rows = [words_of(line(b.gep(src, [b.add(b.mul(b.add(p0, _c64(p)), ld), k0)]), left,
                                      b.icmp_signed("<", b.add(p0, _c64(p)), length)), W)
                        for p in range(P)]
            else:            # rows along len: pair row j, rows k0 + 2j and k0 + 2j + 1 interleaved
                left = b.sub(length, p0)
                interleave = ir.Constant(ir.VectorType(i32, 2 * P), [i // 2 + (i % 2) * P for i in range(2 * P)])
                rows = []
                for j in range(W):
                    k = [b.add(k0, _c64(2 * j + e)) for e in (0, 1)]
                    pair = [line(b.gep(src, [b.add(b.mul(ke, ld), p0)]), left, b.icmp_signed("<", ke, kc))
                            for ke in k]
                    rows.append(words_of(b.shuffle_vector(pair[0], pair[1], interleave), P))
            if (which == "a") != contig_k:
                rows = _transpose_words(b, rows)
            for r, v in enumerate(rows):
                b.store(v, b.bitcast(_gep(b, out, _c64(r * v.type.count)), v.type.as_pointer()), align=4)

        # a source stored along the panels (B, Aᵀ) is packed a K tile at a time across all
        # of them, so that its rows are read in order; panel by panel, each row was read in
        # 128-byte pieces 32 rows apart, which the prefetchers did not follow
        panels = _ceil_div(b, length, P)
        if contig_k:
            with _loop(b, 0, panels, name="q") as q:
                with _loop(b, 0, ktiles, name="kt") as kt:
                    block(q, kt)
        else:
            with _loop(b, 0, ktiles, name="kt") as kt:
                with _loop(b, 0, panels, name="q") as q:
                    block(q, kt)
        b.ret_void()

    def buffers(self):
        """Global per-thread-slot pack buffer pointers (allocated on first use)."""
        name = f"{self.prefix}.bufs"
        g = self.m.globals.get(name)
        if g is None:
            ty = ir.ArrayType(fptr, MOST_THREADS)      # one per slot of the pool
            g = ir.GlobalVariable(self.m, ty, name)
            g.linkage = "internal"
            g.initializer = ir.Constant(ty, None)
            g.align = 64
        return g

    def get_buffer(self):
        """A thread slot's pack buffer: the module's own, or with `shared_buffers` the one
        buffers_module defines for every routine of the config."""
        if self.shared_buffers:
            return declare(self.m, buffer_function(self.cfg), fptr, [i64])
        return self._shared("get_buffer", self._build_get_buffer)

    def _build_get_buffer(self, name):
        fn = _internal(self.m, name, fptr, [i64], ["tid"])
        alloc = declare(self.m, "aligned_alloc", vptr, [i64, i64])
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        slot = b.gep(self.buffers(), [_c64(0), fn.args[0]], inbounds=True)
        p = b.load(slot)
        have = fn.append_basic_block("have")
        make = fn.append_basic_block("make")
        b.cbranch(b.icmp_unsigned("!=", p, ir.Constant(fptr, None)), have, make)
        b.position_at_end(have)
        b.ret(p)
        b.position_at_end(make)
        nbytes = (self.cfg.pack_floats * 4 + 4095) // 4096 * 4096
        q = b.bitcast(b.call(alloc, [_c64(4096), _c64(nbytes)]), fptr)
        b.store(q, slot)
        b.ret(q)
        return fn

    # ---- one variant ----

    def block(self, name, trans_a, trans_b, accumulate, packed, epilogue=False, windows=False, packed_a=False):
        """C[m0:m1, n0:n1] (+)= op(A)[m0:m1, :] @ op(B)[:, n0:n1] for one matrix. `packed`:
        op(B) is also given packed (`Bk`, laid out by `add_pack`), so it is not packed here.
        `packed_a`: op(A) is, in the same argument (`add_pack` of "a": MR-tall panels, each
        K long); given (not null), only the pack is read, by the tiled path at any size (a
        weight of few columns, as a convolution's last stages at batch 1, was otherwise
        copied at every call to be read once or twice).
        `epilogue`: it is called on each part of the block as soon as the part is final —
        an MC x NC block after its last K slice, while the block is in cache (by rows: a
        part of NR columns, its rows a page apart at many pixels, missed the L1 cache on
        every row and made MobileNetV2's batch-8 prediction slower, not faster)."""
        cfg = self.cfg
        fn = _internal(self.m, f"{name}.block", ir.VoidType(),
                       [i64] * 5 + [fptr, i64, fptr, i64, fptr, i64, fptr, fptr, fptr]
                       + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES, i64] * epilogue + [i64.as_pointer()] * windows,
                       ["m0", "m1", "n0", "n1", "K", "A", "lda", "B", "ldb", "C", "ldc",
                        "Ap", "Bp", "Bk"] + ["epilogue", "slots", "sizes", "bi"] * epilogue + ["geometry"] * windows)
        m0, m1, n0, n1, K, A, lda, B, ldb, C, ldc, Ap, Bp, Bk = fn.args[:14]
        Ak = Bk if packed_a else None       # a null one: A is packed here

        def finished(b, r0, r1, c0, c1):
            if epilogue:
                epi, slots, sizes, bi = fn.args[14:18]
                b.call(epi, [slots, sizes, bi, r0, r1, c0, c1])
        uk = self.ukernel()
        narrow = None if cfg.amx or cfg.nr == cfg.vw else self.narrow_ukernel()
        pack_b = self.pack("b", trans_b)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        empty_k = fn.append_basic_block("empty_k")
        main = fn.append_basic_block("main")
        b.cbranch(b.icmp_signed("<=", K, _c64(0)), empty_k, main)

        b.position_at_end(empty_k)          # K = 0: C = 0 (or unchanged)
        if not accumulate:
            with _loop(b, m0, m1, name="zi") as i:
                row = _gep(b, C, b.mul(i, ldc))
                with _loop(b, n0, n1, name="zj") as j:
                    b.store(ir.Constant(f32, 0.0), _gep(b, row, j))
        finished(b, m0, m1, n0, n1)
        b.ret_void()

        b.position_at_end(main)
        # Even K slices: ceil(K / ceil(K / KC)), so that no slice is tiny.
        kslices = _ceil_div(b, K, cfg.kc)
        kstep = _ceil_div(b, K, kslices)
        few_rows = b.icmp_signed("<=", b.sub(m1, m0), _c64(FEW_ROWS))
        # a block given op(A) packed reads the pack only (a caller may keep no other A): tiled
        unpacked_a = b.icmp_unsigned("==", Ak, ir.Constant(fptr, None)) if packed_a else ir.Constant(i1, 1)
        if packed and not trans_b and not cfg.bf16:
            # op(B) packed (given, not null) and the columns from a panel's start: the
            # one-row product streams its panels (a null Bk: the caller's pack is not made).
            # Not for Bᵀ: its one-row products are tiled, whose sums over K slices and C
            # are added otherwise (a pack must change no bit)
            from_panels = b.and_(b.icmp_unsigned("!=", Bk, ir.Constant(fptr, None)),
                                 b.icmp_signed("==", b.srem(n0, _c64(cfg.nr)), _c64(0)))
            few_packed = fn.append_basic_block("few_rows_packed")
            other = fn.append_basic_block("not_few_packed")
            b.cbranch(b.and_(few_rows, from_panels), few_packed, other)
            b.position_at_end(few_packed)
            self.few_rows(b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, self._packed_b(Bk, K))
            finished(b, m0, m1, n0, n1)
            b.ret_void()
            b.position_at_end(other)
        if not (trans_b or windows):
            tiled = fn.append_basic_block("tiled")
            few = fn.append_basic_block("few_rows")
            b.cbranch(b.and_(few_rows, unpacked_a), few, tiled)
            b.position_at_end(few)
            self.few_rows(b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, self._stored_b(B, ldb))
            finished(b, m0, m1, n0, n1)
            b.ret_void()
            b.position_at_end(tiled)
        if not (cfg.bf16 or windows):      # (a windows routine's B is an image: packed, always)
            few, packing = fn.append_basic_block("few_columns"), fn.append_basic_block("packing")
            b.cbranch(b.and_(b.icmp_signed("<=", b.sub(n1, n0), _c64(FEW_COLUMNS)), unpacked_a), few, packing)
            b.position_at_end(few)
            self.few_columns(b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate)
            finished(b, m0, m1, n0, n1)
            b.ret_void()
            b.position_at_end(packing)
        pairs = cfg.k_step > 1
        if pairs:       # slices start at even k (or whole tiles): a pair never straddles two
            kstep = b.mul(_ceil_div(b, kstep, cfg.k_step), _c64(cfg.k_step))
        with _loop(b, n0, n1, cfg.nc, name="jc") as jc:
            nc = _min(b, _c64(cfg.nc), b.sub(n1, jc))
            with _loop(b, 0, K, kstep, name="pc") as pc:
                kc = _min(b, kstep, b.sub(K, pc))
                # op(B)[pc, jc]: B[pc*ldb + jc], or B[jc*ldb + pc] when transposed
                def pack_here():
                    if windows:
                        b.call(self.window_pack(trans_b), [kc, nc, pc, jc, B, fn.args[-1], Bp])
                        return Bp, kc
                    bsrc = _gep(b, B, b.add(b.mul(jc, ldb), pc) if trans_b else b.add(b.mul(pc, ldb), jc))
                    b.call(pack_b, [kc, nc, bsrc, ldb, Bp])
                    return Bp, self.panel_length(b, kc)

                if packed:     # the K-long panels from column jc on, from row pc on; a null Bk: packed here
                    def given_panels():
                        rows = b.sdiv(pc, _c64(2)) if pairs else pc      # packed rows before row pc
                        stride = self.panel_length(b, K)
                        return _gep(b, Bk, b.add(b.mul(jc, stride), b.mul(rows, _c64(cfg.nr)))), stride
                    bblock, bstride = _given_or_packed(b, fn, "b", Bk, given_panels, pack_here)
                else:
                    bblock, bstride = pack_here()
                load_c = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, _c64(0))
                with _loop(b, m0, m1, cfg.mc, name="ic") as ic:
                    mc = _min(b, _c64(cfg.mc), b.sub(m1, ic))
                    ablock, astride = self._a_block(b, fn, A, lda, Ap, Ak, trans_a, ic, mc, pc, kc, K)
                    with _loop(b, 0, nc, cfg.nr, name="jr") as jr:
                        nr = _min(b, _c64(cfg.nr), b.sub(nc, jr))
                        bpanel = _gep(b, bblock, b.mul(jr, bstride))
                        crow = _gep(b, C, b.add(jc, jr))
                        kernel = uk if narrow is None else b.select(b.icmp_signed("<=", nr, _c64(cfg.vw)), narrow, uk)
                        with _loop(b, 0, mc, cfg.mr, name="ir") as ir_:
                            mr = _min(b, _c64(cfg.mr), b.sub(mc, ir_))
                            apanel = _gep(b, ablock, b.mul(ir_, astride))
                            ctile = _gep(b, crow, b.mul(b.add(ic, ir_), ldc))
                            b.call(kernel, [kc, apanel, bpanel, ctile, ldc, mr, nr, load_c])
                    if epilogue:    # after the last K slice, the block is final
                        last = fn.append_basic_block("last_slice")
                        after = fn.append_basic_block("not_last")
                        b.cbranch(b.icmp_signed(">=", b.add(pc, kc), K), last, after)
                        b.position_at_end(last)
                        finished(b, ic, b.add(ic, mc), jc, b.add(jc, nc))
                        b.branch(after)
                        b.position_at_end(after)
        b.ret_void()
        return fn

    def _a_block(self, b, fn, A, lda, Ap, Ak, trans_a, ic, mc, pc, kc, K):
        """The panels of op(A)[ic : ic+mc, pc : pc+kc] and the floats from one panel to the
        next: packed here into Ap, or the given Ak's (not null), each panel K long."""
        def pack_here():
            asrc = _gep(b, A, b.add(b.mul(pc, lda), ic) if trans_a else b.add(b.mul(ic, lda), pc))
            b.call(self.pack("a", trans_a), [kc, mc, asrc, lda, Ap])
            return Ap, self.panel_length(b, kc)
        if Ak is None:
            return pack_here()
        def given_panels():     # panel ic / MR from row pc on
            return _gep(b, Ak, b.add(b.mul(ic, K), b.mul(pc, _c64(self.cfg.mr)))), K
        return _given_or_packed(b, fn, "a", Ak, given_panels, pack_here)

    @staticmethod
    def _nth_pack(b, packs, i, stride):
        """Pack i of `packs`, each `stride` floats; null where `packs` is (not packed)."""
        null = ir.Constant(fptr, None)
        return b.select(b.icmp_unsigned("==", packs, null), null, b.gep(packs, [b.mul(i, stride)]))

    def few_rows(self, b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, column_at):
        """C rows (+)= a sum over k of op(A)[i, k] · row k of op(B), without packing: with a
        row or two of C (a batch of one at inference, a vector times a matrix), packing B
        would copy all of it to use each element once or twice. Runs of FEW_VECTORS vectors
        of a C row stay in registers while K streams B's rows (that many independent FMA
        chains keep both FMA units busy); then runs of `column_at.unit` vectors, and the last
        columns under a mask. `column_at` says where B's vectors are: `_stored_b` (B as
        given: each run's part of a row is contiguous, which the hardware prefetcher
        follows; dropping a software prefetch of each line 8 rows ahead took 6 % off a built
        library's batch-1 prediction of the MLP and 30 % off the LSTM's on a Zen 4,
        docs/deploy.md) or `_packed_b` (B packed into panels, each one contiguous over all
        of K). Every element is summed as the tiled routine sums it, whichever run holds it
        and wherever B is read from: K slices `kstep` deep, each a chain of FMAs along k
        from zero, added in slice order — the same bits (a chunk of a product split over
        M may have a row or two)."""
        vty, vw = self.vty, self.cfg.vw
        mload, mstore = masked(self.m, vty)
        operand = (lambda x: round_bf16(b, x)) if self.cfg.bf16 else (lambda x: x)

        def a_at(i, k):
            return operand(b.load(_gep(b, A, b.add(b.mul(k, lda), i) if trans_a else b.add(b.mul(i, lda), k))))

        def run(i, crow, j, vectors, left=None):
            """C[i, j : j + vectors·vw] over all of K; `left`: only its first `left` columns."""
            lanes = ir.Constant(ir.VectorType(i64, vw), list(range(vw)))
            masks = [None] * vectors if left is None else \
                [b.icmp_signed("<", lanes, splat(b, b.sub(left, _c64(v * vw)), ir.VectorType(i64, vw)))
                 for v in range(vectors)]

            def load(ptr, mask):
                return b.call(mload, [ptr, i32(4), mask, ir.Constant(vty, None)]) if mask is not None \
                    else b.load(ptr, align=4)
            # not `inbounds`: a masked vector's lanes past the end of a row may lie past the buffer
            places = [b.bitcast(b.gep(crow, [b.add(j, _c64(v * vw))]), vty.as_pointer()) for v in range(vectors)]
            zero = ir.Constant(vty, None)
            total0 = [load(p, m) for p, m in zip(places, masks)] if accumulate else [zero] * vectors
            with _carrying_loop(b, K, total0, name="fs", step=kstep) as (pc, total, after):
                with _carrying_loop(b, b.add(pc, _min(b, kstep, b.sub(K, pc))), [zero] * vectors, name="fk",
                                    start=pc) as (k, acc, new):
                    av = splat(b, a_at(i, k), vty)
                    new += [b.call(self.fma, [av, operand(load(column_at(b, k, j, v), masks[v])), acc[v]])
                            for v in range(vectors)]
                added = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, _c64(0))
                after += [b.select(added, b.fadd(t, a), a) for t, a in zip(total, acc)]
            for p, m, value in zip(places, masks, total):
                if m is not None:
                    b.call(mstore, [value, p, i32(4), m])
                else:
                    b.store(value, p, align=4)

        unit = column_at.unit
        with _loop(b, m0, m1, name="fi") as i:
            crow = _gep(b, C, b.mul(i, ldc))
            width = FEW_VECTORS * vw
            wide_end = b.sub(n1, b.srem(b.sub(n1, n0), _c64(width)))
            with _loop(b, n0, wide_end, width, name="fj") as j:
                run(i, crow, j, FEW_VECTORS)
            unit_end = b.sub(n1, b.srem(b.sub(n1, wide_end), _c64(unit * vw)))
            with _loop(b, wide_end, unit_end, unit * vw, name="fv") as j:
                run(i, crow, j, unit)
            tail, after = b.append_basic_block("few.tail"), b.append_basic_block("few.after")
            b.cbranch(b.icmp_signed("<", unit_end, n1), tail, after)
            b.position_at_end(tail)
            run(i, crow, unit_end, unit, b.sub(n1, unit_end))
            b.branch(after)
            b.position_at_end(after)

    def few_columns(self, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate):
        """C[m0:m1, n0:n1] (+)= op(A) @ op(B) with at most FEW_COLUMNS columns (a
        convolution's last stages at batch 1: [512 x 4608] @ [4608 x 4]), without packing:
        packing A would copy all of it to use each element a few times, and the tiled
        micro-kernel's NR columns would be mostly padding. Groups of COLUMN_ROWS rows of
        op(A) are read as they lie (A's rows transposed 8 x 8 in registers; Aᵀ's rows are
        the group's vectors), one vector per k, and multiply op(B)[k, j] broadcast, for 8,
        4, 2 or 1 columns at a time. Each element is summed as the tiled routine sums it: K
        slices `kstep` deep, each one chain of FMAs along k from zero, added to C in slice
        order — the same bits whichever path or thread takes it."""
        G = COLUMN_ROWS
        vty = ir.VectorType(f32, G)
        fma = declare(self.m, f"llvm.fma.v{G}f32", vty, [vty] * 3)
        mload, _ = masked(self.m, vty)
        zero = ir.Constant(vty, None)

        def b_at(k, j):         # op(B)[k, j], broadcast
            return splat(b, b.load(_gep(b, B, b.add(b.mul(j, ldb), k) if trans_b else b.add(b.mul(k, ldb), j))), vty)

        with _loop(b, m0, m1, G, name="ci") as i:
            rows = _min(b, _c64(G), b.sub(m1, i))
            # rows past the group's last are read as the last (inside A) and never stored
            row = [b.add(i, _min(b, _c64(p), b.sub(rows, _c64(1)))) for p in range(G)]
            lanes = b.icmp_signed("<", ir.Constant(ir.VectorType(i64, G), list(range(G))), splat(b, rows, ir.VectorType(i64, G)))

            def vectors_at(k, t):
                """op(A)[group, k + s] for s < t: t vectors of the group's rows."""
                if trans_a:     # row k of A holds the group's rows side by side (masked: past m1)
                    return [b.call(mload, [vec_ptr(b, b.gep(A, [b.add(b.mul(b.add(k, _c64(s)), lda), i)]), vty),
                                           i32(4), lanes, zero]) for s in range(t)]
                if t == G:
                    return transpose8(b, [b.load(vec_ptr(b, _gep(b, A, b.add(b.mul(r, lda), k)), vty), align=4)
                                           for r in row])
                v = ir.Constant(vty, ir.Undefined)
                for p, r in enumerate(row):
                    v = b.insert_element(v, b.load(_gep(b, A, b.add(b.mul(r, lda), k))), i32(p))
                return [v]

            with _loop(b, 0, K, kstep, name="cs") as pc:
                kc = _min(b, kstep, b.sub(K, pc))
                load_c = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, _c64(0))
                k8 = b.add(pc, b.mul(b.sdiv(kc, _c64(G)), _c64(G)))
                start = n0
                for width in (8, 4, 2, 1):
                    end = b.sub(n1, b.srem(b.sub(n1, start), _c64(width)))
                    with _loop(b, start, end, width, name=f"cj{width}") as j:
                        def step(k, t, acc):
                            cols = vectors_at(k, t)
                            for s in range(t):
                                acc = [b.call(fma, [cols[s], b_at(b.add(k, _c64(s)), b.add(j, _c64(c))), acc[c]])
                                       for c in range(width)]
                            return acc
                        with _carrying_loop(b, k8, [zero] * width, name="ck", start=pc, step=G) as (k, acc, new):
                            new += step(k, G, acc)
                        with _carrying_loop(b, b.add(pc, kc), acc, name="ct", start=k8) as (k, acc2, new2):
                            new2 += step(k, 1, acc2)
                        self._store_columns(b, C, ldc, i, rows, j, acc2, load_c)
                    start = end

    def _store_columns(self, b, C, ldc, i, rows, j, acc, load_c):
        """C[i + p, j + c] = acc[c][p] (added to C's value where load_c) for p < rows."""
        def store_row(p):
            crow = _gep(b, C, b.add(b.mul(b.add(i, _c64(p)), ldc), j))
            for c, v in enumerate(acc):
                at = _gep(b, crow, _c64(c))
                x = b.extract_element(v, i32(p))
                b.store(b.select(load_c, b.fadd(b.load(at), x), x), at)
        _first_rows(b, COLUMN_ROWS, rows, store_row)

    def _stored_b(self, B, ldb):
        """Where few_rows reads vector v of a run from column j on, at row k: B itself
        (not transposed), row k from column j + v·vw; runs of single vectors."""
        def column_at(b, k, j, v):
            return b.bitcast(b.gep(B, [b.add(b.mul(k, ldb), b.add(j, _c64(v * self.cfg.vw)))]), self.vty.as_pointer())
        column_at.unit = 1
        return column_at

    def _packed_b(self, Bk, K):
        """Where few_rows reads vector v of a run from column j on, at row k, in op(B) packed
        by add_pack: column c is in the panel at Bk + (c - c % NR)·K, at k·NR + c % NR. Runs
        start at whole panels (j a multiple of NR) and are whole panels long, so each run
        streams its panels, each contiguous over K, and the last one's columns past N, read
        under the mask, are the pack's zeros."""
        nr, vw = self.cfg.nr, self.cfg.vw

        def column_at(b, k, j, v):
            panel, lane = divmod(v * vw, nr)
            start = b.add(b.mul(b.add(j, _c64(panel * nr)), K), b.add(b.mul(k, _c64(nr)), _c64(lane)))
            return b.bitcast(_gep(b, Bk, start), self.vty.as_pointer())
        column_at.unit = nr // vw
        return column_at

    def variant(self, name, trans_a, trans_b, accumulate, packed, epilogue=False, windows=False, packed_a=False):
        cfg = self.cfg
        assert not (accumulate and epilogue), "an epilogue computes from the final sums"
        assert not packed_a or not (packed or cfg.bf16), "a float32 routine's op(A) packed, or its op(B)"
        assert not windows or not (trans_a or accumulate or packed or cfg.bf16), \
            "a convolution's windows are op(B), in float32"
        # the 13 arguments, the status, the caller's floating-point mode (fpmode.py), the
        # packed op(B) (null unless `packed`), the epilogue and its two pointers (`epilogue`),
        # the windows' geometry (`windows`)
        args_ty = ir.LiteralStructType([i64, i64, i64, fptr, i64, i64, fptr, i64, i64,
                                        fptr, i64, i64, i64, i32, i32, fptr]
                                       + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES] * epilogue
                                       + [i64.as_pointer()] * windows)
        block = self.block(name, trans_a, trans_b, accumulate, packed, epilogue, windows, packed_a)
        get_buffer = self.get_buffer()

        # body(args, chunk, chunks, slot): a chunk's share of the whole batch
        body = _internal(self.m, f"{name}.body", ir.VoidType(),
                         [args_ty.as_pointer(), i64, i64, i64], ["args", "chunk", "chunks", "slot"])
        argp, chunk, chunks, slot = body.args
        b = ir.IRBuilder(body.append_basic_block("entry"))
        f = [b.load(b.gep(argp, [i32(0), i32(k)], inbounds=True)) for k in range(13)]
        M, N, K, A, lda, sa, B, ldb, sb, C, ldc, sc, batch = f
        buf = b.call(get_buffer, [slot])
        fail = body.append_basic_block("nomem")
        ok = body.append_basic_block("ok")
        b.cbranch(b.icmp_unsigned("==", buf, ir.Constant(fptr, None)), fail, ok)
        b.position_at_end(fail)
        b.store(i32(1), b.gep(argp, [i32(0), i32(13)], inbounds=True))
        b.ret_void()
        b.position_at_end(ok)
        Ap = buf
        Bp = _gep(b, buf, _c64(cfg.b_offset))
        Bk = b.load(b.gep(argp, [i32(0), i32(15)], inbounds=True))
        if packed_a:        # A's packs follow each other as A's matrices do (one, broadcast: stride 0)
            Ak_stride = b.select(b.icmp_signed("==", sa, _c64(0)), _c64(0),
                                 b.mul(b.mul(_ceil_div(b, M, _c64(A_PANEL_ROWS)), _c64(A_PANEL_ROWS)), K))
        finish = [b.load(b.gep(argp, [i32(0), i32(k)], inbounds=True)) for k in range(16, 19)] if epilogue else []
        geometry = [b.load(b.gep(argp, [i32(0), i32(16 + 3 * epilogue)], inbounds=True))] if windows else []

        def share(total):   # [total*chunk/chunks, total*(chunk+1)/chunks)
            return (b.sdiv(b.mul(total, chunk), chunks),
                    b.sdiv(b.mul(total, b.add(chunk, _c64(1))), chunks))

        many = b.and_(b.icmp_signed(">", chunks, _c64(1)), b.icmp_signed(">=", batch, chunks))
        even = b.or_(b.icmp_signed("==", b.srem(batch, chunks), _c64(0)),
                     b.icmp_signed(">=", batch, b.mul(chunks, _c64(4))))
        by_batch = b.and_(many, even)
        bb0, bb1 = share(batch)
        split_n = b.icmp_signed("<=", M, N)
        ntiles = _ceil_div(b, N, cfg.nr)
        mtiles = _ceil_div(b, M, cfg.mr)
        t0, t1 = share(b.select(split_n, ntiles, mtiles))
        tile = b.select(split_n, _c64(cfg.nr), _c64(cfg.mr))
        lo = b.mul(t0, tile)
        hi0 = b.mul(t1, tile)
        n_lo = b.select(split_n, lo, _c64(0))
        n_hi = b.select(split_n, _min(b, hi0, N), N)
        m_lo = b.select(split_n, _c64(0), lo)
        m_hi = b.select(split_n, M, _min(b, hi0, M))
        z = _c64(0)
        b_lo = b.select(by_batch, bb0, z)
        b_hi = b.select(by_batch, bb1, batch)
        m_lo, m_hi = b.select(by_batch, z, m_lo), b.select(by_batch, M, m_hi)
        n_lo, n_hi = b.select(by_batch, z, n_lo), b.select(by_batch, N, n_hi)
        work = body.append_basic_block("work")
        done = body.append_basic_block("done")
        b.cbranch(b.and_(b.icmp_signed("<", m_lo, m_hi), b.icmp_signed("<", n_lo, n_hi)), work, done)
        b.position_at_end(work)
        with _loop(b, b_lo, b_hi, name="bt") as bi:
            b.call(block, [m_lo, m_hi, n_lo, n_hi, K,
                           _gep(b, A, b.mul(bi, sa)), lda,
                           _gep(b, B, b.mul(bi, sb)), ldb,
                           _gep(b, C, b.mul(bi, sc)), ldc, Ap, Bp,
                           self._nth_pack(b, Bk, bi, Ak_stride) if packed_a else Bk]
                   + (finish + [bi] if epilogue else []) + geometry)
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()

        # worker(data, chunk, chunks, slot): the pool's task, a chunk of the work in the caller's mode
        worker = _internal(self.m, f"{name}.worker", ir.VoidType(), list(TASK.args), ["data", "chunk", "chunks", "slot"])
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        argp = b.bitcast(worker.args[0], args_ty.as_pointer())
        with in_mode(self.m, b, b.load(b.gep(argp, [i32(0), i32(14)], inbounds=True))):
            b.call(body, [argp, worker.args[1], worker.args[2], worker.args[3]])
        b.ret_void()

        # the public entry point
        fn = ir.Function(self.m, gemm_type(packed or packed_a, epilogue, windows), name)
        fn.attributes.add("nounwind")
        names = ["M", "N", "K", "A", "lda", "stride_a", "B", "ldb", "stride_b", "C", "ldc", "stride_c", "batch",
                 "nthreads"] + ["packed"] * (packed or packed_a) + ["geometry"] * windows \
            + ["epilogue", "slots", "sizes"]
        for a, n in zip(fn.args, names):
            a.name = n
        M, N, K, *_, batch, nthreads = fn.args[:14]
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        nothing = fn.append_basic_block("nothing")
        go = fn.append_basic_block("go")
        empty = b.or_(b.or_(b.icmp_signed("<=", M, _c64(0)), b.icmp_signed("<=", N, _c64(0))),
                      b.icmp_signed("<=", batch, _c64(0)))
        b.cbranch(empty, nothing, go)
        b.position_at_end(nothing)
        b.ret(i32(0))
        b.position_at_end(go)
        args = b.alloca(args_ty, name="args")
        for k, v in enumerate(fn.args[:13]):
            b.store(v, b.gep(args, [i32(0), i32(k)], inbounds=True))
        b.store(i32(0), b.gep(args, [i32(0), i32(13)], inbounds=True))
        b.store(current_mode(self.m, b), b.gep(args, [i32(0), i32(14)], inbounds=True))
        given = packed or packed_a
        b.store(fn.args[14] if given else ir.Constant(fptr, None), b.gep(args, [i32(0), i32(15)], inbounds=True))
        for k, v in enumerate(fn.args[14 + given + windows:] if epilogue else ()):
            b.store(v, b.gep(args, [i32(0), i32(16 + k)], inbounds=True))
        if windows:
            b.store(fn.args[14 + given], b.gep(args, [i32(0), i32(16 + 3 * epilogue)], inbounds=True))
        nt = _max(b, nthreads, _c64(1))       # the pool takes at most MOST_THREADS
        work = b.mul(b.mul(b.mul(M, N), _max(b, K, _c64(1))), batch)
        # below serial_below on the calling thread; called from a pool's task (a fused
        # kernel's chunk), the pool runs it on that thread, in its own pack buffers' slot
        nt = b.select(b.icmp_signed(">=", work, _c64(cfg.serial_below)), nt, _c64(1))
        b.call(declare_run(self.m), [worker, b.bitcast(args, vptr), nt, _c64(CHUNKS_PER_THREAD)])
        b.ret(b.load(b.gep(args, [i32(0), i32(13)], inbounds=True)))
        return fn


def add_gemm(module: ir.Module, name: str | None = None, *, trans_a: bool = False,
             trans_b: bool = False, accumulate: bool = False, packed: bool = False,
             config: GemmConfig | None = None, epilogue: bool = False, windows: bool = False,
             shared_buffers: bool = False, packed_a: bool = False) -> ir.Function:
    """Add the GEMM routine `name` (see the module docstring for its C signature) and its
    internal helpers to `module`; helpers are shared by all routines of one config.
    `packed`: the routine also takes op(B) packed (`add_pack`), or null, and multiplies with
    that instead of packing B itself (the bf16 ones read B when only a row or two of A is
    given: their packs are rounded, or pairs, or tiles; a null pack: B is packed here).
    `packed_a` (float32): the routine takes op(A) packed (`add_pack` of "a") in that place,
    or null: for a batch stride of A of 0 one pack, else one per matrix, each starting
    ceil(M / A_PANEL_ROWS) · A_PANEL_ROWS · K floats after the one before; given, it reads
    only the packs, never A.
    `epilogue`: it also takes an epilogue (EPILOGUE_TYPE) to call on each part of C once final.
    `windows` (float32): B is an image X and the routine also takes its geometry
    (WINDOW_GEOMETRY), op(B) being X's convolution windows — im2col's columns transposed
    with `trans_b` (N = the output pixels of every example, K = C·kh·kw: a forward
    product's), else as they lie (K the pixels, N the taps: a weight gradient's); ldb is
    not read and stride_b steps between groups of channels — packed from X itself
    (_Gen.window_pack), with the bits of the routine given im2col's buffer.
    `shared_buffers`: its pack buffers are buffers_module's, not the module's own.
    The module must be compiled after the thread pool's symbols are known
    (runtime/engines/cache.py `pool_symbols`)."""
    config = config or default_config()
    name = name or gemm_name(trans_a, trans_b, accumulate, packed, config.bf16, epilogue, windows, packed_a)
    return _Gen(module, config, shared_buffers).variant(name, trans_a, trans_b, accumulate, packed, epilogue, windows,
                                                        packed_a)


def add_pack(module: ir.Module, *, trans_b: bool = False, config: GemmConfig | None = None,
             shared_buffers: bool = False, which: str = "b") -> ir.Function:
    """Add `void pack(int64_t K, int64_t N, const float *B, int64_t ldb, float *dst)`:
    op(B) (K x N; stored N x K with `trans_b`) packed once for many products with the
    `packed` routines — NR-wide panels along N, each K long, k-major, columns past N zero:
    `packed_floats(K, N)` floats. A loop-invariant operand (a recurrent weight inside a
    scan) is packed once before the loop instead of at every step. With `which` "a"
    (float32), op(A) (N x K here: its rows are the panels' direction; stored K x N with
    `trans_b`) for the `packed_a` routines: MR-tall panels, each K long, rows past N zero."""
    gen = _Gen(module, config or default_config(), shared_buffers)
    fn = ir.Function(module, PACK_TYPE, pack_name(trans_b, gen.cfg.bf16, which))
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    K, N, B, ldb, dst = fn.args
    b.call(gen.pack(which, trans_b), [K, N, B, ldb, dst])
    b.ret_void()
    return fn


def thread_local_buffers(ir_text: str) -> str:
    """A GEMM module's IR with its tables of pack buffers (`buffers`) thread-local: every
    thread (a host thread, each worker of the pool) packs into buffers of its own, kept until
    the process ends, so that host threads may call the module at once. llvmlite's IR
    builder has no thread_local: hence the text."""
    return re.sub(r'(@"[^"]*\.bufs" = internal )global', r"\1thread_local global", ir_text)


# chunks of a product per thread of the pool: an idle thread takes a stalled one's, each
# chunk packing the part of A (or of B) it reads
CHUNKS_PER_THREAD = 2

# (trans_a, trans_b, packed, epilogue): the routines the kernels call; and the pack functions
VARIANTS = [(ta, tb, pk, ep) for ta in (False, True) for tb in (False, True) for pk in (False, True)
            for ep in (False, True)]
# (trans_b, epilogue, windows) of the float32 routines taking op(A) packed: a prediction's
# weights as A (a convolution's filters, times its windows or im2col's columns)
PACKED_A_VARIANTS = [(tb, ep, windows) for tb in (False, True) for ep in (False, True)
                     for windows in (False, True)]


def program_configs() -> tuple:
    """The configs whose routines a kernel program may call: float32's and bf16's, the host's
    paths (the JIT's GEMM module and a built library's hold these)."""
    return default_config(), bf16_config()


def routine_names(configs: tuple) -> list[str]:
    """The functions gemm_module(configs) defines for others to call: every variant's routine
    and the pack functions, of each config."""
    return list(_routines(configs))


def _routines(configs: tuple) -> dict:
    """routine_names' functions: name -> (the function that adds it to a module, its arguments)."""
    found = {}
    for config in configs:
        for ta, tb, pk, ep in VARIANTS:
            found[gemm_name(ta, tb, False, pk, config.bf16, ep)] = (
                add_gemm, dict(config=config, trans_a=ta, trans_b=tb, packed=pk, epilogue=ep))
        for tb, ep in [(tb, ep) for tb in (False, True) for ep in (False, True)] if not config.bf16 else ():
            found[gemm_name(False, tb, False, bf16=False, epilogue=ep, windows=True)] = (
                add_gemm, dict(config=config, trans_b=tb, epilogue=ep, windows=True))
        for tb in (False, True):
            found[pack_name(tb, config.bf16)] = (add_pack, dict(config=config, trans_b=tb))
        for tb, ep, windows in PACKED_A_VARIANTS if not config.bf16 else ():
            found[gemm_name(False, tb, False, epilogue=ep, windows=windows, packed_a=True)] = (
                add_gemm, dict(config=config, trans_b=tb, epilogue=ep, windows=windows, packed_a=True))
        if not config.bf16:
            found[pack_name(False, which="a")] = (add_pack, dict(config=config, which="a"))
    return found


def gemm_module(configs: tuple, only: frozenset | None = None, shared_buffers: bool = False) -> ir.Module:
    """The GEMM routines of every variant for each config, or of those `only` names (see
    routine_names): one module. A built library links one with the routines its steps call
    (runtime/deploy/build.py); the JIT compiles each routine alone, with `shared_buffers`, the
    first time a program calls it (runtime/engines/cache.py)."""
    module = ir.Module("dlc_gemm")
    for name, (add, variant) in _routines(configs).items():
        if only is None or name in only:
            add(module, shared_buffers=shared_buffers, **variant)
    return module


def routine_configs(configs: tuple) -> dict:
    """The config of each routine of routine_names, by name."""
    return {name: variant["config"] for name, (_, variant) in _routines(configs).items()}


def buffers_module(config: GemmConfig) -> ir.Module:
    """The pack buffers of the routines of `config` compiled with `shared_buffers` (each
    routine a module of its own), and the function that hands a thread slot its buffer: one
    buffer per slot for all of them, as in a module that holds every routine."""
    module = ir.Module(f"dlc_gemm_buffers_{config.tag}")
    _Gen(module, config).get_buffer().linkage = ""      # for the routines' modules, which declare it
    return module


def buffer_function(config: GemmConfig) -> str:
    """The name of the function that hands a thread slot its pack buffer (_Gen.get_buffer),
    which buffers_module(config) defines for the routines' modules."""
    return f"{_prefix(config)}.get_buffer"


def _prefix(config: GemmConfig) -> str:
    """Names the module-level helpers of the routines of one config."""
    return f"dlc.gemm.{config.tag}"
