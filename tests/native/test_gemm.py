"""The generated SGEMM (compiler/native/codegen/gemm/) against numpy, in float32.

Covers the 4 transpose combinations, C = AB and C += AB, batched products (with a
broadcast operand), odd sizes and edge tiles, K slices and M/N blocks (a small-blocking
config makes every loop level run several times on small matrices), serial and 2-thread
runs, and the argument checks that keep bad arrays away from native code.
"""

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir

from dlc.compiler.errors import DlcError
from dlc.compiler.ir.evaluate import round_bf16
from dlc.compiler.native import FEW_COLUMNS
from dlc.compiler.native.codegen import jit, threadpool
from dlc.compiler.native.codegen.gemm import blocking, interface, routine
from dlc.compiler.native.codegen.gemm.context import Gen
from dlc.compiler.native.codegen.gemm.window_packs import pack_windows
from dlc.runtime.engines import cache
from dlc.compiler.native.kernels.gemm import packed_floats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gemm_library import GemmLibrary  # noqa: E402   (benchmarks/gemm.py's too)
from helpers.gemm_paths import bf16_gemm_paths  # noqa: E402

# one pytest-xdist worker runs the file: each config's routines (`lib`) are compiled once
pytestmark = pytest.mark.xdist_group("test_gemm")
ALL = [(ta, tb, acc) for ta in (False, True) for tb in (False, True) for acc in (False, True)]

CONFIGS = {
    # tiny blocks: several K slices, M blocks and N blocks even for small matrices; forks
    # threads for any size. Its micro-kernel is AVX2's (6 x 16, 8 lanes)
    # (and reads B where it lies for up to 32 rows, as AVX-512's blocking does)
    "tiny": blocking.GemmConfig(mr=6, nr=16, vw=8, kc=16, mc=12, nc=32, serial_below=0, stored_b_rows=32),
}
# the host's blocking. On an AVX-512 host AVX2's micro-kernel runs in "tiny" and its blocking
# in .ci/run's re-run of this file for a generic AVX2 machine (DLC_TARGET=avx2)
if jit.host_has("avx512f"):
    CONFIGS["avx512"] = blocking.AVX512
else:
    CONFIGS["avx2"] = blocking.AVX2


def _library(config):
    """The routines of `config` as the session compiles them: quick code, whose bits are O3's
    (tests/native/test_tiers.py trains on O3's routines and compares), at a third of O3's
    compile time."""
    return GemmLibrary(ALL, config=config, packed=True)


@pytest.fixture(scope="module", params=list(CONFIGS))
def lib(request):
    return _library(CONFIGS[request.param])


def _operands(rng, M, N, K, ta, tb, batch=None):
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((K, M) if ta else (M, K)), dtype=np.float32)
    b = rng.standard_normal(lead + ((N, K) if tb else (K, N)), dtype=np.float32)
    return a, b


def _reference(a, b, ta, tb):
    a64 = np.swapaxes(a, -1, -2) if ta else a
    b64 = np.swapaxes(b, -1, -2) if tb else b
    return np.matmul(a64.astype(np.float64), b64.astype(np.float64))


def _check(c, ref, a, b, ta, tb):
    # relative 1e-4, measured against the size of the terms being summed
    scale = _reference(np.abs(a), np.abs(b), ta, tb)
    err = np.abs(c.astype(np.float64) - ref)
    assert np.all(err <= 1e-4 * np.maximum(scale, 1e-30)), f"max error {err.max()}"


SIZES = [
    (1, 1, 1),
    (5, 17, 3),
    (129, 7, 13),
    (7, 13, 129),
    (13, 129, 7),
    (1, 7, 13),
    (13, 1, 7),
    (7, 13, 1),
    (16, 16, 16),
    (6, 32, 5),
    (150, 40, 300),
    (37, 1030, 9),
    (128, 512, 784),
    # one or two rows: multiplied without packing, whole vectors of C then single columns
    (1, 784, 512),
    (2, 37, 200),
    (2, 5, 64),
]


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("ta,tb,acc", ALL)
@pytest.mark.parametrize("M,N,K", SIZES + [(32, 1024, 256), (32, 256, 1024), (3, 33, 65)])
def test_matches_numpy_and_packed_b_gives_the_same_bits(lib, M, N, K, ta, tb, acc, nthreads):
    """C = op(A)·op(B) (+ C) against numpy, C not read unless accumulated (NaN in it); and
    with op(B) packed once (a scan's recurrent weight, a library's weight): the same bits as
    packing inside the product, also with one or two rows (which stream the panels where B
    is not transposed) and with N past the last whole panel."""
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    a, b = _operands(rng, M, N, K, ta, tb)
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    c = c0.copy() if acc else np.full((M, N), np.nan, np.float32)
    out = lib(a, b, c, trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads)
    assert out is c
    _check(c, _reference(a, b, ta, tb) + (c0 if acc else 0), a, b, ta, tb)
    packed = c0.copy() if acc else np.full((M, N), np.nan, np.float32)
    lib(a, b, packed, trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads, packed=True)
    np.testing.assert_array_equal(packed, c)  # the same panels, the same summation order


@pytest.mark.parametrize("ta,tb,acc", ALL)
@pytest.mark.parametrize("M,N,K", SIZES + [(512, 16, 300), (25, 4, 40)])
def test_packed_a_gives_the_same_bits_and_reads_only_the_pack(lib, M, N, K, ta, tb, acc):
    """With op(A) packed once (a built library's filters), on one thread or two: the same bits
    as packing inside the product, on the tiled path at every size (one or two rows, few
    columns: their own paths' bits too); and A itself is never read: NaN in it, after its
    pack was made, changes nothing (a Winograd transform kept only packed)."""
    rng = np.random.default_rng(M * 7919 + N * 31 + K)
    a, b = _operands(rng, M, N, K, ta, tb)
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    want = lib(a, b, c0.copy() if acc else None, trans_a=ta, trans_b=tb, accumulate=acc)
    for nthreads in (1, 2):
        c = c0.copy() if acc else np.full((M, N), np.nan, np.float32)
        run = lib.bind(a, b, c, trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads, packed_a=True)
        a[...] = np.nan
        assert run() == 0
        a[...] = _operands(np.random.default_rng(M * 7919 + N * 31 + K), M, N, K, ta, tb)[0]
        assert c.tobytes() == want.tobytes(), (M, N, K, nthreads)


@pytest.mark.parametrize("a_batch", [3, None])
def test_packed_a_of_a_batch_follows_each_matrix(lib, a_batch):
    """A batch of products with op(A) packed: one pack per matrix of A, a_pack_floats(K, M)
    apart (a Winograd convolution's 16 transforms), or one for all (a per-example
    product's filters, A's batch stride 0); the bits of packing inside each product."""
    rng = np.random.default_rng(3)
    M, N, K = 29, 70, 45
    a = rng.standard_normal((M, K) if a_batch is None else (a_batch, M, K), dtype=np.float32)
    b = rng.standard_normal((3, K, N), dtype=np.float32)
    want = lib(a, b, nthreads=2)
    got = lib(a, b, nthreads=2, packed_a=True)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("K,N", [(1, 1), (7, 31), (13, 32), (5, 33), (300, 65)])
def test_packing_stays_in_its_buffer(lib, K, N, tb):
    """The pack writes packed_floats(K, N) floats at most — what lowering allocates — and
    reads only op(B): NaN around B would show in the product."""
    rng = np.random.default_rng(K + N)
    room = np.full((N + 2, K + 2) if tb else (K + 2, N + 2), np.nan, np.float32)
    b = room[1:-1, 1:-1]
    b[...] = rng.standard_normal(b.shape, dtype=np.float32)
    args = lib.args(np.zeros((0, K), np.float32), b, np.zeros((0, N), np.float32), False, tb)
    packed = lib._packed(args, tb)
    used = packed_floats(K, N, lib.config.nr)
    assert used <= packed_floats(K, N)
    assert not np.isnan(packed[:used]).any() and np.isnan(packed[used:]).all()
    a = rng.standard_normal((9, K), dtype=np.float32)
    _check(lib(a, b, trans_b=tb, packed=True), _reference(a, b, False, tb), a, b, False, tb)


@pytest.mark.parametrize("ta,tb,acc", ALL)
def test_few_columns_give_the_tiled_bits(lib, ta, tb, acc):
    """A product of at most FEW_COLUMNS columns (multiplied without packing, A's rows
    transposed in registers or, in float32 on x86, a row of C a vector; or, with op(A) given
    packed, read from its panels) sums each element as the packed, tiled product does: its
    columns are, bit for bit, the first ones of a product too wide for that path — over
    partial row groups and panels, K slices with a remainder under 8, more of K than one
    copy of op(B)'s rows holds (AVX-512's 16,384), and on one thread or two."""
    rng = np.random.default_rng(7)
    for M, K in [(3, 7), (13, 300), (150, 1030), (19, 16500)]:
        a, wide = _operands(rng, M, 40, K, ta, tb)
        c0 = rng.standard_normal((M, 40), dtype=np.float32)
        whole = lib(a, wide, c0.copy() if acc else None, trans_a=ta, trans_b=tb, accumulate=acc)
        for n in (1, 3, 4, 7, 8, 13, FEW_COLUMNS):
            b = wide[:n] if tb else wide[:, :n]
            for nthreads, packed_a in [(1, False), (2, False), (1, True), (2, True)]:
                c = c0[:, :n].copy() if acc else np.full((M, n), np.nan, np.float32)
                lib(a, b, c, trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads, packed_a=packed_a)
                assert c.tobytes() == whole[:, :n].tobytes(), (M, K, n, nthreads, packed_a)


def test_a_packed_a_of_few_columns_takes_the_few_columns_path():
    """The `packed_a` routines (a built library's filters as A) multiply a block of at most
    FEW_COLUMNS columns by the few-columns path on A's panels, not by the tiled one, whose
    narrow micro-kernel would fill a few of each vector's lanes; a windows routine's B is
    an image, packed always."""
    for windows in (False, True):
        m = ir.Module()
        routine.add_gemm(m, "packed_a", packed_a=True, windows=windows, config=blocking.AVX512)
        assert ("few_columns_packed_a" in str(m)) != windows


@pytest.mark.parametrize("ta,acc", [(False, False), (True, True)])
def test_few_tiles_read_b_where_it_lies_with_the_tiled_bits(lib, ta, acc):
    """A block of at most `stored_b_rows` rows reads op(B)'s whole panels where they lie and
    packs only a partial last one: its rows are, bit for bit, the first rows of a product
    too tall for that path — over K slices, N blocks with a partial panel, and on one
    thread or two, with op(A) packed here or given packed."""
    rng = np.random.default_rng(11)
    few = lib.config.stored_b_rows or 32  # (AVX2's blocking reads B's packs: the tiled bits, as here)
    tall = few + 9
    for N, K in [(33, 7), (100, 300), (1100, 20)]:
        a, b = _operands(rng, tall, N, K, ta, False)
        c0 = rng.standard_normal((tall, N), dtype=np.float32)
        whole = lib(a, b, c0.copy() if acc else None, trans_a=ta, accumulate=acc)
        for m in (3, 8, few):
            rows = a[:, :m] if ta else a[:m]
            for nthreads, packed_a in [(1, False), (2, False), (2, True)]:
                c = c0[:m].copy() if acc else np.full((m, N), np.nan, np.float32)
                lib(rows, b, c, trans_a=ta, accumulate=acc, nthreads=nthreads, packed_a=packed_a)
                assert c.tobytes() == whole[:m].tobytes(), (m, N, K, nthreads, packed_a)


def test_only_untransposed_float32_b_is_read_where_it_lies():
    """The panels read where they lie are op(B)'s rows, on a blocking that says so
    (AVX-512's): a transposed B, an image's windows, bfloat16 operands, B given packed and
    AVX2's blocking keep their packs."""
    for variant, reads in [
        (dict(), True),
        (dict(trans_a=True, epilogue=True), True),
        (dict(packed_a=True), True),
        (dict(trans_b=True), False),
        (dict(windows=True), False),
        (dict(packed=True), False),
    ]:
        m = ir.Module()
        routine.add_gemm(m, "g", config=blocking.AVX512, **variant)
        assert ("ukernel_stored_b" in str(m)) == reads, variant
    for config in (blocking.bf16_config(), blocking.AVX2):
        m = ir.Module()
        routine.add_gemm(m, "g", config=config)
        assert "ukernel_stored_b" not in str(m), config


@pytest.mark.parametrize(
    "M,N,K", [(128, 784, 512), (784, 512, 128), (256, 256, 256), (1, 784, 512), (2, 512, 784)]
)  # one or two rows: unpacked, split over N
def test_large_two_threads_and_serial_agree(lib, M, N, K):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, M, N, K, False, False)
    c1 = lib(a, b, nthreads=1)
    c2 = lib(a, b, nthreads=2)
    c3 = lib(a, b, nthreads=64)  # the team the pool can start, each thread its slot
    _check(c2, _reference(a, b, False, False), a, b, False, False)
    np.testing.assert_array_equal(c1, c2)  # same blocking, same summation order
    np.testing.assert_array_equal(c1, c3)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 9])
@pytest.mark.parametrize(
    "ta,tb,acc", [(False, False, False), (False, True, False), (True, False, True), (True, True, True)]
)
def test_batched(lib, batch, ta, tb, acc, nthreads):
    rng = np.random.default_rng(batch)
    M, N, K = 7, 19, 13
    a, b = _operands(rng, M, N, K, ta, tb, batch)
    c0 = rng.standard_normal((batch, M, N), dtype=np.float32)
    c = c0.copy() if acc else np.empty((batch, M, N), np.float32)
    lib(a, b, c, trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads)
    _check(c, _reference(a, b, ta, tb) + (c0 if acc else 0), a, b, ta, tb)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_batched_broadcast_and_strided_views(lib, nthreads):
    rng = np.random.default_rng(5)
    big_a = rng.standard_normal((6, 40, 50), dtype=np.float32)
    a = big_a[::2, 3:30, 5:38]  # (3, 27, 33): lda = 50, batch stride 4000
    w = rng.standard_normal((33, 21), dtype=np.float32)  # shared over the batch
    big_c = np.zeros((3, 27, 64), np.float32)
    c = big_c[:, :, 10:31]
    lib(a, w, c, nthreads=nthreads)
    _check(c, _reference(a, w, False, False), a, w, False, False)
    assert not big_c[:, :, :10].any() and not big_c[:, :, 31:].any()


def test_attention_shapes(lib):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((64, 64, 32), dtype=np.float32)  # (batch·heads, T, d)
    k = rng.standard_normal((64, 64, 32), dtype=np.float32)
    s = lib(q, k, trans_b=True, nthreads=2)  # Q·Kᵀ
    _check(s, _reference(q, k, False, True), q, k, False, True)
    o = lib(s, k, nthreads=2)  # S·V
    _check(o, _reference(s, k, False, False), s, k, False, False)


@pytest.mark.parametrize("acc", [False, True])
def test_empty_k(lib, acc):
    a = np.zeros((5, 0), np.float32)
    b = np.zeros((0, 7), np.float32)
    c = np.full((5, 7), 3.0, np.float32)
    lib(a, b, c, accumulate=acc, nthreads=2)
    np.testing.assert_array_equal(c, np.full((5, 7), 3.0 if acc else 0.0, np.float32))


def test_empty_m_n(lib):
    c = lib(np.zeros((0, 4), np.float32), np.ones((4, 3), np.float32))
    assert c.shape == (0, 3)
    c = lib(np.zeros((3, 4), np.float32), np.ones((4, 0), np.float32))
    assert c.shape == (3, 0)


def test_bind_reuses_pointers(lib):
    rng = np.random.default_rng(3)
    a, b = _operands(rng, 33, 45, 21, False, False)
    c = np.empty((33, 45), np.float32)
    run = lib.bind(a, b, c, nthreads=2)
    for _ in range(3):
        assert run() == 0
    _check(c, _reference(a, b, False, False), a, b, False, False)


def test_bad_arguments_raise_before_native_code(lib):
    a = np.ones((4, 5), np.float32)
    b = np.ones((5, 6), np.float32)
    c = np.empty((4, 6), np.float32)
    with pytest.raises(ValueError, match="float32"):
        lib(a.astype(np.float64), b, c)
    with pytest.raises(ValueError, match="do not match"):
        lib(a, b, np.empty((4, 7), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        lib(a, b, c, trans_a=True)
    with pytest.raises(ValueError, match="unit last stride"):
        lib(np.ones((4, 10), np.float32)[:, ::2], b, c)
    with pytest.raises(ValueError, match="dims"):
        lib(np.ones(5, np.float32), b, c)
    with pytest.raises(ValueError, match="overlap"):
        sq = np.ones((5, 5), np.float32)
        lib(sq, sq, sq)
    with pytest.raises(ValueError, match="batch"):
        lib(np.ones((2, 4, 5), np.float32), np.ones((3, 5, 6), np.float32), np.empty((3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty((4, 6), np.float32)
        ro.flags.writeable = False
        lib(a, b, ro)
    with pytest.raises(ValueError, match="float32"):
        lib([[1.0]], b, c)


def test_ir_and_asm_text():
    m = ir.Module()
    routine.add_gemm(m, "my_gemm", trans_b=True, config=blocking.AVX2)
    text = jit.optimized_ir(m)
    assert "define i32 @my_gemm(" in text and "@dlc_pool_run(" in text
    asm = jit.assembly(m)
    assert "vfmadd" in asm


@pytest.mark.parametrize("nthreads", [2, 40])
def test_called_from_inside_a_parallel_region(nthreads):
    """A fused kernel's chunks call the GEMM on each thread of the pool: no nested job, and
    every thread packs into its own buffer slot (a shared slot would corrupt the results),
    on more threads than a GEMM's own team takes too."""
    m = ir.Module()
    g = routine.add_gemm(m, "inner_gemm", config=blocking.AVX2)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    f32p, vp = ir.FloatType().as_pointer(), ir.IntType(8).as_pointer()
    args_t = ir.LiteralStructType([f32p, f32p, f32p, i64])
    # task(data, chunk, chunks, slot): chunk t computes C[t] = A[t] @ B[t] (n×n each)
    worker = ir.Function(m, threadpool.TASK, "team_worker")
    b = ir.IRBuilder(worker.append_basic_block())
    p = b.bitcast(worker.args[0], args_t.as_pointer())
    A, B, C, n = [b.load(b.gep(p, [i32(0), i32(k)])) for k in range(4)]
    off = b.mul(worker.args[1], b.mul(n, n))
    b.call(
        g, [n, n, n, b.gep(A, [off]), n, i64(0), b.gep(B, [off]), n, i64(0), b.gep(C, [off]), n, i64(0), i64(1), i64(2)]
    )
    b.ret_void()
    drive = ir.Function(m, ir.FunctionType(ir.VoidType(), [f32p, f32p, f32p, i64]), "drive")
    b = ir.IRBuilder(drive.append_basic_block())
    s = b.alloca(args_t)
    for k, v in enumerate(drive.args):
        b.store(v, b.gep(s, [i32(0), i32(k)]))
    b.call(threadpool.declare_run(m), [worker, b.bitcast(s, vp), i64(nthreads), i64(1)])
    b.ret_void()
    cache.pool_symbols()
    lib = jit.compile_module(m)
    fn = lib.function("drive", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    n = 200
    rng = np.random.default_rng(11)
    a = rng.standard_normal((nthreads, n, n), dtype=np.float32)
    bb = rng.standard_normal((nthreads, n, n), dtype=np.float32)
    c = np.zeros((nthreads, n, n), np.float32)
    for _ in range(3):
        fn(a.ctypes.data, bb.ctypes.data, c.ctypes.data, n)
        _check(c, _reference(a, bb, False, False), a, bb, False, False)


@pytest.mark.sets_target
def test_forced_avx2_target_emits_no_avx512(tmp_path):
    """DLC_TARGET=avx2 compiles every kernel, the GEMM's included, for a generic AVX2 machine:
    no zmm register in the assembly, and the 6x16 AVX2 blocking; an unknown target is refused."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DLC_TARGET="avx2", DLC_CACHE_DIR=str(tmp_path))
    code = (
        "from dlc.compiler.native.codegen import jit; from dlc.compiler.native.codegen.gemm import blocking; "
        "print(jit.host_cpu()[0], blocking.default_config().vw)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["x86-64-v3", "8"]
    asm = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "compile", "examples/lenet5.dl", "--emit", "asm"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert asm.returncode == 0, asm.stderr
    assert "ymm" in asm.stdout and "zmm" not in asm.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "compile", "examples/lenet5.dl", "--emit", "asm"],
        env=dict(env, DLC_TARGET="avx9"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (
        bad.returncode == 1
        and (
            "DLC_TARGET must be one of host, avx2, avxvnni, avx512, avx512bf16, aarch64, "
            "aarch64-dotprod, aarch64-i8mm, aarch64-bf16, not 'avx9'"
        )
        in bad.stderr
    )
    arm = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "compile", "examples/lenet5.dl", "--emit", "asm"],
        env=dict(env, DLC_TARGET="aarch64"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert arm.returncode == 1 and arm.stderr.strip() == (
        "error: DLC_TARGET=aarch64 is a target of aarch64 machines, "
        "and this one is x86_64: `dlc build --target aarch64` builds "
        "a library for one"
    )


@pytest.mark.sets_target
def test_a_named_build_target_is_whole_under_any_dlc_target(monkeypatch, other_machine):
    """`dlc build --target avx512` (compile_for) compiles for that target's features, which
    DLC_TARGET=avx2 (this process's own code without AVX-512) does not take away. (The
    fixtures end in reverse order: other_machine's clears the cache before DLC_TARGET is back.)"""
    monkeypatch.setenv("DLC_TARGET", "avx2")
    jit.host_cpu.cache_clear()
    assert "+avx512f" not in jit.host_cpu()[1].split(",")
    other_machine("x86_64-unknown-linux-gnu", "x86-64-v4", "+avx2,+fma,+avx512f,+avx512bw")
    assert jit.host_cpu() == ("x86-64-v4", "+avx2,+fma,+avx512f,+avx512bw,-prefer-256-bit")


@pytest.mark.sets_target
def test_an_aarch64_level_the_host_lacks_is_refused(monkeypatch):
    """On an ARM Linux host whose HWCAP words say dotprod but not i8mm (LLVM's features of it
    say neither): the host's features have dotprod, DLC_TARGET=aarch64-dotprod compiles for
    that level alone and aarch64-i8mm is refused, naming what the CPU lacks."""
    monkeypatch.delenv("DLC_TARGET", raising=False)  # the faked host's own target first

    class Features:
        flatten = staticmethod(lambda: "+neon,+fp-armv8,+crc,+lse,-dotprod,+sve")

    monkeypatch.setattr(jit.llvm, "get_process_triple", lambda: "aarch64-unknown-linux-gnu")
    monkeypatch.setattr(jit.llvm, "get_host_cpu_features", Features)
    monkeypatch.setattr(jit, "linux_hwcaps", lambda: ["dotprod"])
    jit.host_cpu.cache_clear()
    try:
        assert jit.host_has("dotprod") and not jit.host_has("i8mm") and "-dotprod" not in jit.host_cpu()[1]
        monkeypatch.setenv("DLC_TARGET", "aarch64-dotprod")
        jit.host_cpu.cache_clear()
        assert jit.host_cpu() == jit.AARCH64_LEVELS["aarch64-dotprod"]
        monkeypatch.setenv("DLC_TARGET", "aarch64-i8mm")
        jit.host_cpu.cache_clear()
        with pytest.raises(DlcError, match="^DLC_TARGET=aarch64-i8mm needs i8mm, which this CPU lacks$"):
            jit.host_cpu()
    finally:
        monkeypatch.undo()
        jit.host_cpu.cache_clear()


def test_the_neon_blocking_gives_the_x86_blockings_bits():
    """AArch64's blocking (12x8 on 4-float vectors, run here on SSE registers) sums every output
    over K in the order the x86 ones do, in K slices of 256: the same bits, transposed or not,
    packed or not, one row or many, on one thread or two (docs/native.md, Platforms)."""
    rng = np.random.default_rng(5)
    neon, here = _library(blocking.NEON), _library(blocking.default_config())
    for M, N, K in [(1, 784, 512), (2, 37, 200), (13, 129, 7), (150, 40, 300), (37, 1030, 600), (128, 512, 784)]:
        for ta, tb, acc in ALL:
            a, b = _operands(rng, M, N, K, ta, tb)
            c = rng.standard_normal((M, N), dtype=np.float32)
            for packed, nthreads in ((False, 1), (True, 2)):
                args = dict(trans_a=ta, trans_b=tb, accumulate=acc, nthreads=nthreads, packed=packed)
                got = neon(a, b, c.copy(), **args)
                assert got.tobytes() == here(a, b, c.copy(), **args).tobytes(), (M, N, K, ta, tb, acc, packed)
            _check(got - (c if acc else 0), _reference(a, b, ta, tb), a, b, ta, tb)


# (N, C, H, W, O, kh, kw, stride, padding, dilation, groups) of the convolutions whose windows
# a `windows` routine packs: output rows wider than a panel (two rows a panel, masked loads),
# stride 2 along W (every other float of a row), rows narrower than a panel (gathered),
# dilation, a stride along W only, groups, the stem of ResNet, many K slices
WINDOWS = [
    (3, 8, 56, 56, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (2, 4, 64, 65, 10, 3, 3, (2, 2), (1, 1), (1, 1), 1),
    (2, 3, 45, 45, 64, 7, 7, (2, 2), (3, 3), (1, 1), 1),
    (2, 5, 14, 14, 7, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 6, 7, 7, 9, 3, 3, (1, 1), (0, 0), (1, 1), 1),
    (2, 6, 13, 40, 8, 3, 2, (1, 2), (2, 0), (2, 1), 2),
    (1, 4, 20, 37, 6, 3, 3, (1, 1), (2, 2), (2, 2), 2),
    (3, 40, 9, 11, 12, 3, 3, (2, 2), (1, 1), (1, 1), 1),
]


def _im2col(x, kh, kw, stride, padding, dilation):
    """x's windows [N·Ho·Wo, C·kh·kw], as the im2col map kernel lays them out."""
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.zeros((N, C, H + 2 * ph, W + 2 * pw), np.float32)
    padded[:, :, ph : ph + H, pw : pw + W] = x
    cols = np.empty((N, Ho, Wo, C, kh, kw), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[..., i, j] = padded[:, :, i * dh : i * dh + sh * Ho : sh, j * dw : j * dw + sw * Wo : sw].transpose(
                0, 2, 3, 1
            )
    return cols.reshape(N * Ho * Wo, C * kh * kw), Ho, Wo


WINDOWS_CONFIGS = {**CONFIGS, "neon": blocking.NEON, **{f"bf16 {k}": v for k, v in bf16_gemm_paths().items()}}


@pytest.mark.parametrize("name", list(WINDOWS_CONFIGS))
def test_windows_packed_from_the_image_give_the_bits_of_im2col_columns(name):
    """The `windows` routines (a convolution's GEMMs reading its columns from the image:
    the product's, op(B) the columns transposed, and the weight gradient's, op(B) the
    columns as they lie) give, bit for bit, what the routines give on im2col's buffer — per
    group, on one thread or two, in every blocking and on every bf16 path (the windows
    rounded, paired or put in the tiles' layout as im2col's columns are) — and read nothing
    outside the image: NaN around it would show."""
    config = WINDOWS_CONFIGS[name]
    module = ir.Module("windows")
    for tb, windows in [(tb, w) for tb in (False, True) for w in (False, True)]:
        routine.add_gemm(module, trans_b=tb, windows=windows, config=config)
    compiled = cache.compile_cached(module, jit.settled_level())
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    signature = (i64,) * 3 + (ptr, i64, i64) * 3 + (i64, i64)
    named = lambda tb, windows: compiled.address(
        interface.gemm_name(False, tb, False, bf16=config.bf16, windows=windows)
    )
    columns = {tb: ctypes.CFUNCTYPE(ctypes.c_int32, *signature)(named(tb, False)) for tb in (False, True)}
    windows = {tb: ctypes.CFUNCTYPE(ctypes.c_int32, *signature, ptr)(named(tb, True)) for tb in (False, True)}
    operand = round_bf16 if config.bf16 else (lambda v: v)
    rng = np.random.default_rng(3)
    for N, C, H, W, O, kh, kw, stride, padding, dilation, groups in WINDOWS:
        room = np.full(N * C * H * W + 64, np.nan, np.float32)
        x = room[32:-32].reshape(N, C, H, W)
        x[...] = rng.standard_normal(x.shape, dtype=np.float32)
        cg, og = C // groups, O // groups
        cols, Ho, Wo = _im2col(x, kh, kw, stride, padding, dilation)
        n, taps = N * Ho * Wo, cg * kh * kw
        geometry = np.array([Ho, Wo, kh, kw, H, W, C * H * W, H * W, W, 1, *stride, *padding, *dilation], np.int64)
        assert len(geometry) == len(interface.WINDOW_GEOMETRY)
        by_group = operand(cols).reshape(n, groups, taps).transpose(1, 0, 2).astype(np.float64)  # [groups, n, taps]
        # the product: y_g (og x n) = w_g (og x taps) @ cols_gᵀ; the weight gradient: dw_g
        # (og x taps) = g_g (og x n) @ cols_g
        for tb, k_, n_, a in (
            (True, taps, n, rng.standard_normal((groups, og, taps), dtype=np.float32)),
            (False, n, taps, rng.standard_normal((groups, og, n), dtype=np.float32)),
        ):
            expected = np.zeros((groups, og, n_), np.float32)
            assert (
                columns[tb](
                    og,
                    n_,
                    k_,
                    a.ctypes.data,
                    k_,
                    og * k_,
                    cols.ctypes.data,
                    C * kh * kw,
                    taps,
                    expected.ctypes.data,
                    n_,
                    og * n_,
                    groups,
                    1,
                )
                == 0
            )
            product = lambda f: np.einsum(
                "gok,gnk->gon" if tb else "gon,gnk->gok", f(operand(a).astype(np.float64)), f(by_group)
            )
            assert np.all(np.abs(expected - product(lambda v: v)) <= 1e-4 * product(np.abs) + 1e-30)
            for nthreads in (1, 2):
                got = np.full_like(expected, np.nan)
                assert (
                    windows[tb](
                        og,
                        n_,
                        k_,
                        a.ctypes.data,
                        k_,
                        og * k_,
                        x.ctypes.data,
                        0,
                        cg * H * W,
                        got.ctypes.data,
                        n_,
                        og * n_,
                        groups,
                        nthreads,
                        geometry.ctypes.data,
                    )
                    == 0
                )
                assert got.tobytes() == expected.tobytes(), (tb, N, C, H, W, O, kh, kw, stride, padding, nthreads)


def test_the_tiles_pack_windows_as_they_pack_im2col_columns():
    """On the AMX tiles a K slice of windows is packed a panel at a time as floats, then into
    the tiles' layout (window_packs.py `pack_windows`): its panels equal, bit for bit, the
    tiles' pack of im2col's columns, for a product's windows (op(B) the columns transposed)
    and a weight gradient's (as they lie), from rows and columns inside the matrix, an odd
    slice and a partial last panel; nothing outside the image is read (NaN around it would
    show). The packs use no tile instruction, so they run on any x86-64 host, whose tiles
    the windows routines' bits test (above) needs."""
    config = blocking.AMX
    module = ir.Module("tile windows")
    gen = Gen(module, config)
    i64, fptr = ir.IntType(64), ir.FloatType().as_pointer()
    for trans in (False, True):
        routine.add_pack(module, trans_b=trans, config=config)
        fn = ir.Function(
            module, ir.FunctionType(ir.VoidType(), [i64] * 4 + [fptr, i64.as_pointer(), fptr]), f"windows_{trans:d}"
        )
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        pack_windows(gen, b, trans, *fn.args)
        b.ret_void()
    compiled = cache.compile_cached(module, jit.settled_level())
    c_i64, c_ptr = ctypes.c_int64, ctypes.c_void_p
    columns_pack = {
        t: ctypes.CFUNCTYPE(None, c_i64, c_i64, c_ptr, c_i64, c_ptr)(compiled.address(interface.pack_name(t, True)))
        for t in (False, True)
    }
    windows_pack = {
        t: ctypes.CFUNCTYPE(None, *[c_i64] * 4, c_ptr, c_ptr, c_ptr)(compiled.address(f"windows_{t:d}"))
        for t in (False, True)
    }
    rng = np.random.default_rng(4)
    N, C, H, W, kh, kw, stride, padding = 2, 8, 23, 37, 3, 3, (1, 1), (1, 1)
    room = np.full(N * C * H * W + 64, np.nan, np.float32)
    x = room[32:-32].reshape(N, C, H, W)
    x[...] = rng.standard_normal(x.shape, dtype=np.float32)
    cols, Ho, Wo = _im2col(x, kh, kw, stride, padding, (1, 1))
    pixels, taps = cols.shape
    geometry = np.array([Ho, Wo, kh, kw, H, W, C * H * W, H * W, W, 1, *stride, *padding, 1, 1], np.int64)
    # (trans, pc, kc, jc, nc): op(B) is colsᵀ (taps x pixels) with trans, else cols
    for trans, pc, kc, jc, nc in [(True, 5, 61, 100, 333), (True, 0, 72, 0, 1024), (False, 37, 301, 8, 64)]:
        got, want = (np.full(config.kc * config.nc, np.nan, np.float32) for _ in range(2))
        windows_pack[trans](kc, nc, pc, jc, x.ctypes.data, geometry.ctypes.data, got.ctypes.data)
        start = cols[jc:, pc:] if trans else cols[pc:, jc:]
        columns_pack[trans](kc, nc, start.ctypes.data, taps, want.ctypes.data)
        used = -(-nc // 32) * 32 * (-(-kc // 32) * 16)
        assert got[:used].view(np.uint32).tobytes() == want[:used].view(np.uint32).tobytes(), (trans, pc, kc, jc, nc)
        assert not np.isnan(want[:used]).any()
