"""A GEMM routine's function (`add_gemm`) and a pack function's (`add_pack`): the public
entry point, which hands the work to dlc's thread pool in chunks (over the batch, N or M,
in whole tiles), each chunk running the macro loop (macro_loop.py) on its own pack buffers."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native import A_PANEL_ROWS
from dlc.compiler.native.codegen.fpmode import current_mode, in_mode
from dlc.compiler.native.codegen.threadpool import TASK, declare_run
from dlc.compiler.native.codegen.types import i32, i64
from dlc.compiler.native.codegen.gemm.blocking import GemmConfig, default_config
from dlc.compiler.native.codegen.gemm.buffers import get_buffer
from dlc.compiler.native.codegen.gemm.context import Gen
from dlc.compiler.native.codegen.gemm.interface import (
    EPILOGUE_TYPE,
    PACK_TYPE,
    SIZES,
    SLOTS,
    gemm_name,
    gemm_type,
    pack_name,
)
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, ceil_div, fptr, gep, internal, loop, smax, smin, vptr
from dlc.compiler.native.codegen.gemm.macro_loop import block
from dlc.compiler.native.codegen.gemm.packs import pack


def _nth_pack(b, packs, i, stride):
    """Pack i of `packs`, each `stride` floats; null where `packs` is (not packed)."""
    null = ir.Constant(fptr, None)
    return b.select(b.icmp_unsigned("==", packs, null), null, b.gep(packs, [b.mul(i, stride)]))


def routine(gen, name, trans_a, trans_b, accumulate, packed, epilogue=False, windows=False, packed_a=False):
    """The public function `name` (add_gemm), its pool task (`.worker`) and a chunk's body
    (`.body`): the chunk's share of the batch, of N or of M, each matrix's by the macro loop."""
    cfg = gen.cfg
    assert not (accumulate and epilogue), "an epilogue computes from the final sums"
    assert not (packed_a and packed), "a routine's op(A) packed, or its op(B)"
    assert not windows or not (trans_a or accumulate or packed), "a convolution's windows are op(B)"
    # the 13 arguments, the status, the caller's floating-point mode (fpmode.py), the
    # packed op(B) (null unless `packed`), the epilogue and its two pointers (`epilogue`),
    # the windows' geometry (`windows`)
    args_ty = ir.LiteralStructType(
        [i64, i64, i64, fptr, i64, i64, fptr, i64, i64, fptr, i64, i64, i64, i32, i32, fptr]
        + [EPILOGUE_TYPE.as_pointer(), SLOTS, SIZES] * epilogue
        + [i64.as_pointer()] * windows
    )
    block_fn = block(gen, name, trans_a, trans_b, accumulate, packed, epilogue, windows, packed_a)
    buffer_fn = get_buffer(gen)

    # body(args, chunk, chunks, slot): a chunk's share of the whole batch
    body = internal(
        gen.m, f"{name}.body", ir.VoidType(), [args_ty.as_pointer(), i64, i64, i64], ["args", "chunk", "chunks", "slot"]
    )
    argp, chunk, chunks, slot = body.args
    b = ir.IRBuilder(body.append_basic_block("entry"))
    f = [b.load(b.gep(argp, [i32(0), i32(k)], inbounds=True)) for k in range(13)]
    M, N, K, A, lda, sa, B, ldb, sb, C, ldc, sc, batch = f
    buf = b.call(buffer_fn, [slot])
    fail = body.append_basic_block("nomem")
    ok = body.append_basic_block("ok")
    b.cbranch(b.icmp_unsigned("==", buf, ir.Constant(fptr, None)), fail, ok)
    b.position_at_end(fail)
    b.store(i32(1), b.gep(argp, [i32(0), i32(13)], inbounds=True))
    b.ret_void()
    b.position_at_end(ok)
    Ap = buf
    Bp = gep(b, buf, c64(cfg.b_offset))
    Bk = b.load(b.gep(argp, [i32(0), i32(15)], inbounds=True))
    if packed_a:  # A's packs follow each other as A's matrices do (one, broadcast: stride 0)
        Ak_stride = b.select(
            b.icmp_signed("==", sa, c64(0)),
            c64(0),
            b.mul(b.mul(ceil_div(b, M, c64(A_PANEL_ROWS)), c64(A_PANEL_ROWS)), K),
        )
    finish = [b.load(b.gep(argp, [i32(0), i32(k)], inbounds=True)) for k in range(16, 19)] if epilogue else []
    geometry = [b.load(b.gep(argp, [i32(0), i32(16 + 3 * epilogue)], inbounds=True))] if windows else []

    def share(total):  # [total*chunk/chunks, total*(chunk+1)/chunks)
        return (b.sdiv(b.mul(total, chunk), chunks), b.sdiv(b.mul(total, b.add(chunk, c64(1))), chunks))

    many = b.and_(b.icmp_signed(">", chunks, c64(1)), b.icmp_signed(">=", batch, chunks))
    even = b.or_(b.icmp_signed("==", b.srem(batch, chunks), c64(0)), b.icmp_signed(">=", batch, b.mul(chunks, c64(4))))
    by_batch = b.and_(many, even)
    bb0, bb1 = share(batch)
    split_n = b.icmp_signed("<=", M, N)
    ntiles = ceil_div(b, N, cfg.nr)
    mtiles = ceil_div(b, M, cfg.mr)
    t0, t1 = share(b.select(split_n, ntiles, mtiles))
    tile = b.select(split_n, c64(cfg.nr), c64(cfg.mr))
    lo = b.mul(t0, tile)
    hi0 = b.mul(t1, tile)
    n_lo = b.select(split_n, lo, c64(0))
    n_hi = b.select(split_n, smin(b, hi0, N), N)
    m_lo = b.select(split_n, c64(0), lo)
    m_hi = b.select(split_n, M, smin(b, hi0, M))
    z = c64(0)
    b_lo = b.select(by_batch, bb0, z)
    b_hi = b.select(by_batch, bb1, batch)
    m_lo, m_hi = b.select(by_batch, z, m_lo), b.select(by_batch, M, m_hi)
    n_lo, n_hi = b.select(by_batch, z, n_lo), b.select(by_batch, N, n_hi)
    work = body.append_basic_block("work")
    done = body.append_basic_block("done")
    b.cbranch(b.and_(b.icmp_signed("<", m_lo, m_hi), b.icmp_signed("<", n_lo, n_hi)), work, done)
    b.position_at_end(work)
    with loop(b, b_lo, b_hi, name="bt") as bi:
        b.call(
            block_fn,
            [
                m_lo,
                m_hi,
                n_lo,
                n_hi,
                K,
                gep(b, A, b.mul(bi, sa)),
                lda,
                gep(b, B, b.mul(bi, sb)),
                ldb,
                gep(b, C, b.mul(bi, sc)),
                ldc,
                Ap,
                Bp,
                _nth_pack(b, Bk, bi, Ak_stride) if packed_a else Bk,
            ]
            + (finish + [bi] if epilogue else [])
            + geometry,
        )
    b.branch(done)
    b.position_at_end(done)
    b.ret_void()

    # worker(data, chunk, chunks, slot): the pool's task, a chunk of the work in the caller's mode
    worker = internal(gen.m, f"{name}.worker", ir.VoidType(), list(TASK.args), ["data", "chunk", "chunks", "slot"])
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    argp = b.bitcast(worker.args[0], args_ty.as_pointer())
    with in_mode(gen.m, b, b.load(b.gep(argp, [i32(0), i32(14)], inbounds=True))):
        b.call(body, [argp, worker.args[1], worker.args[2], worker.args[3]])
    b.ret_void()

    # the public entry point
    fn = ir.Function(gen.m, gemm_type(packed or packed_a, epilogue, windows), name)
    fn.attributes.add("nounwind")
    names = (
        ["M", "N", "K", "A", "lda", "stride_a", "B", "ldb", "stride_b", "C", "ldc", "stride_c", "batch", "nthreads"]
        + ["packed"] * (packed or packed_a)
        + ["geometry"] * windows
        + ["epilogue", "slots", "sizes"]
    )
    for a, n in zip(fn.args, names):
        a.name = n
    M, N, K, *_, batch, nthreads = fn.args[:14]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nothing = fn.append_basic_block("nothing")
    go = fn.append_basic_block("go")
    empty = b.or_(
        b.or_(b.icmp_signed("<=", M, c64(0)), b.icmp_signed("<=", N, c64(0))), b.icmp_signed("<=", batch, c64(0))
    )
    b.cbranch(empty, nothing, go)
    b.position_at_end(nothing)
    b.ret(i32(0))
    b.position_at_end(go)
    args = b.alloca(args_ty, name="args")
    for k, v in enumerate(fn.args[:13]):
        b.store(v, b.gep(args, [i32(0), i32(k)], inbounds=True))
    b.store(i32(0), b.gep(args, [i32(0), i32(13)], inbounds=True))
    b.store(current_mode(gen.m, b), b.gep(args, [i32(0), i32(14)], inbounds=True))
    given = packed or packed_a
    b.store(fn.args[14] if given else ir.Constant(fptr, None), b.gep(args, [i32(0), i32(15)], inbounds=True))
    for k, v in enumerate(fn.args[14 + given + windows :] if epilogue else ()):
        b.store(v, b.gep(args, [i32(0), i32(16 + k)], inbounds=True))
    if windows:
        b.store(fn.args[14 + given], b.gep(args, [i32(0), i32(16 + 3 * epilogue)], inbounds=True))
    nt = smax(b, nthreads, c64(1))  # the pool takes at most MOST_THREADS
    work = b.mul(b.mul(b.mul(M, N), smax(b, K, c64(1))), batch)
    # below serial_below on the calling thread; called from a pool's task (a fused
    # kernel's chunk), the pool runs it on that thread, in its own pack buffers' slot
    nt = b.select(b.icmp_signed(">=", work, c64(cfg.serial_below)), nt, c64(1))
    b.call(declare_run(gen.m), [worker, b.bitcast(args, vptr), nt, c64(cfg.chunks_per_thread)])
    b.ret(b.load(b.gep(args, [i32(0), i32(13)], inbounds=True)))
    return fn


def add_gemm(
    module: ir.Module,
    name: str | None = None,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    accumulate: bool = False,
    packed: bool = False,
    config: GemmConfig | None = None,
    epilogue: bool = False,
    windows: bool = False,
    shared_buffers: bool = False,
    packed_a: bool = False,
) -> ir.Function:
    """Add the GEMM routine `name` (see the module docstring for its C signature) and its
    internal helpers to `module`; helpers are shared by all routines of one config.
    `packed`: the routine also takes op(B) packed (`add_pack`), or null, and multiplies with
    that instead of packing B itself (the bf16 ones read B when only a row or two of A is
    given: their packs are rounded, or pairs, or tiles; a null pack: B is packed here).
    `packed_a`: the routine takes op(A) packed (`add_pack` of "a") in that place, or null:
    for a batch stride of A of 0 one pack, else one per matrix, each starting
    ceil(M / A_PANEL_ROWS) · A_PANEL_ROWS · K floats after the one before (float32's
    blockings; a bf16 routine is given one pack, of one matrix or a broadcast one); given,
    it reads only the packs, never A.
    `epilogue`: it also takes an epilogue (EPILOGUE_TYPE) to call on each part of C once final.
    `windows` (float32): B is an image X and the routine also takes its geometry
    (WINDOW_GEOMETRY), op(B) being X's convolution windows — im2col's columns transposed
    with `trans_b` (N = the output pixels of every example, K = C·kh·kw: a forward
    product's), else as they lie (K the pixels, N the taps: a weight gradient's); ldb is
    not read and stride_b steps between groups of channels — packed from X itself
    (window_packs.py), with the bits of the routine given im2col's buffer.
    `shared_buffers`: its pack buffers are buffers_module's, not the module's own.
    The module must be compiled after the thread pool's symbols are known
    (runtime/engines/cache.py `pool_symbols`)."""
    config = config or default_config()
    name = name or gemm_name(trans_a, trans_b, accumulate, packed, config.bf16, epilogue, windows, packed_a)
    return routine(
        Gen(module, config, shared_buffers), name, trans_a, trans_b, accumulate, packed, epilogue, windows, packed_a
    )


def add_pack(
    module: ir.Module,
    *,
    trans_b: bool = False,
    config: GemmConfig | None = None,
    shared_buffers: bool = False,
    which: str = "b",
) -> ir.Function:
    """Add `void pack(int64_t K, int64_t N, const float *B, int64_t ldb, float *dst)`:
    op(B) (K x N; stored N x K with `trans_b`) packed once for many products with the
    `packed` routines — NR-wide panels along N, each K long, k-major, columns past N zero:
    `packed_floats(K, N)` floats. A loop-invariant operand (a recurrent weight inside a
    scan) is packed once before the loop instead of at every step. With `which` "a",
    op(A) (N x K here: its rows are the panels' direction; stored K x N with
    `trans_b`) for the `packed_a` routines: MR-tall panels, each K long, rows past N zero."""
    gen = Gen(module, config or default_config(), shared_buffers)
    fn = ir.Function(module, PACK_TYPE, pack_name(trans_b, gen.cfg.bf16, which))
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    K, N, B, ldb, dst = fn.args
    b.call(pack(gen, which, trans_b), [K, N, B, ldb, dst])
    b.ret_void()
    return fn
