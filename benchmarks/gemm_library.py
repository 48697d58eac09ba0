"""The GEMM routines compiled on their own and callable from Python with numpy arrays:
what the tests and the GEMM benchmark call (the kernels call the routines from the step
module, each loaded by runtime/engines/cache.py `provide`)."""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np
from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.amx import tiles_granted
from dlc.compiler.native.codegen.gemm.blocking import GemmConfig, default_config
from dlc.compiler.native.codegen.gemm.interface import gemm_name, pack_name
from dlc.compiler.native.codegen.gemm.routine import add_gemm, add_pack
from dlc.compiler.native.kernels.gemm import a_pack_floats, packed_floats
from dlc.runtime.engines import cache

_ARGTYPES = (
    (ctypes.c_int64,) * 3 + (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64) * 3 + (ctypes.c_int64, ctypes.c_int64)
)
_PACK_ARGTYPES = (ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)


class GemmLibrary:
    """Compiled GEMM routines callable from Python with numpy arrays (tests, benchmarks)."""

    def __init__(self, variants=None, config: GemmConfig | None = None, packed: bool = False, level: int | None = None):
        """`packed`: also the routines of each variant that take op(B) packed, and the
        pack functions (call with packed=True), and those that take op(A) packed (call
        with packed_a=True; a bf16 one one matrix of A). `level`: LLVM's, by default dlc's routines'
        (`jit.settled_level`: O3, quick or unoptimized code under DLC_QUICK_CODE=only or unoptimized)."""
        self.config = config or default_config()
        if self.config.amx and not tiles_granted():
            raise RuntimeError("the AMX routines need the tile state, which Linux did not grant")
        if variants is None:
            variants = [(ta, tb, acc) for ta in (False, True) for tb in (False, True) for acc in (False, True)]
        kinds = (False, True) if packed else (False,)
        a_kinds = (True,) if packed else ()
        config = self.config

        def build():
            module = ir.Module(name="dlc_gemm")
            for ta, tb, acc in variants:
                for pk in kinds:
                    add_gemm(module, trans_a=ta, trans_b=tb, accumulate=acc, packed=pk, config=config)
                for pa in a_kinds:
                    add_gemm(module, trans_a=ta, trans_b=tb, accumulate=acc, packed_a=pa, config=config)
            for tb in (False, True) if packed else ():
                add_pack(module, trans_b=tb, config=config)
                if a_kinds:
                    add_pack(module, trans_b=tb, config=config, which="a")
            return module, []

        # through the compile cache, found by what the routines are built from: the same routines
        # asked for again (another test's, a benchmark's next run) are loaded without building
        # their IR (megabytes of it: seconds), as dlc's own routines are (cache.compile_routine);
        # the key holds this file too, whose `build` is not dlc's compiler source
        level = jit.settled_level() if level is None else level
        parts = (
            "GemmLibrary",
            hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            tuple(variants),
            config,
            packed,
        )
        self.compiled, _ = cache.compile_built(parts, build, level)
        self._fns = {
            v + (pk,): self._function(
                gemm_name(*v, pk, self.config.bf16), ctypes.c_int32, *_ARGTYPES + (ctypes.c_void_p,) * pk
            )
            for v in variants
            for pk in kinds
        }
        self._fns.update(
            {
                v + ("a",): self._function(
                    gemm_name(*v, bf16=self.config.bf16, packed_a=True), ctypes.c_int32, *_ARGTYPES + (ctypes.c_void_p,)
                )
                for v in variants
                for _ in a_kinds
            }
        )
        self._packs = {
            tb: self._function(pack_name(tb, self.config.bf16), None, *_PACK_ARGTYPES) for tb in (False, True) if packed
        }
        self._a_packs = {
            ta: self._function(pack_name(ta, self.config.bf16, which="a"), None, *_PACK_ARGTYPES)
            for ta in (False, True)
            for _ in a_kinds
        }

    def _function(self, name: str, restype, *argtypes):
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.compiled.address(name))

    def args(self, a, b, c, trans_a=False, trans_b=False, nthreads=1):
        """Validated native arguments for C (+)= op(a) @ op(b); a, b, c: float32 numpy
        arrays of 2 or 3 dims (3 = batched; a 2-D operand is broadcast over the batch),
        unit stride in the last dim. Raises ValueError instead of calling native code
        with anything that does not fit."""
        mats = []
        for nm, x in (("a", a), ("b", b), ("c", c)):
            if not isinstance(x, np.ndarray) or x.dtype != np.float32:
                raise ValueError(f"{nm} must be a float32 numpy array")
            if x.ndim not in (2, 3):
                raise ValueError(f"{nm} must have 2 or 3 dims, not {x.ndim}")
            if x.size == 0:  # nothing is read or written through it
                mats.append((x.shape[-2:], max(x.shape[-1], 1), 0, x.shape[0] if x.ndim == 3 else None))
                continue
            if any(n > 1 and (s < 0 or s % 4) for n, s in zip(x.shape, x.strides)) or (
                x.shape[-1] > 1 and x.strides[-1] != 4
            ):
                raise ValueError(f"{nm} must be row-major with a unit last stride")
            ld = x.strides[-2] // 4 if x.shape[-2] > 1 else x.shape[-1]
            if ld < x.shape[-1]:
                raise ValueError(f"{nm}: rows overlap")
            bs = x.strides[0] // 4 if x.ndim == 3 and x.shape[0] > 1 else 0
            mats.append((x.shape[-2:], max(ld, 1), bs, x.shape[0] if x.ndim == 3 else None))
        (ar, ac), lda, sa, ba = mats[0]
        (br, bc), ldb, sb, bb = mats[1]
        (M, N), ldc, sc, bc_ = mats[2]
        if not c.flags.writeable:
            raise ValueError("c is read-only")
        if np.may_share_memory(c, a) or np.may_share_memory(c, b):
            raise ValueError("c must not overlap a or b")
        M_a, K = (ac, ar) if trans_a else (ar, ac)
        K_b, N_b = (bc, br) if trans_b else (br, bc)
        if (M_a, N_b) != (M, N) or K != K_b:
            raise ValueError(f"shapes do not match: op(a) {M_a}x{K}, op(b) {K_b}x{N_b}, c {M}x{N}")
        batch = bc_ if bc_ is not None else 1
        for nm, bx in (("a", ba), ("b", bb)):
            if bx is not None and bx != batch and bx != 1:
                raise ValueError(f"batch of {nm} ({bx}) does not match c ({batch})")
        if bc_ is None and (ba or 1) * (bb or 1) != 1:
            raise ValueError("batched operands need a 3-D c")
        if batch > 1 and sc == 0:
            raise ValueError("c's batch dim must not be broadcast")
        if sc and (sc < M * ldc if M > 0 else False):
            raise ValueError("c's matrices overlap")
        return (M, N, K, a.ctypes.data, lda, sa, b.ctypes.data, ldb, sb, c.ctypes.data, ldc, sc, batch, int(nthreads))

    def function(self, trans_a=False, trans_b=False, accumulate=False, packed=False, packed_a=False):
        return self._fns[(trans_a, trans_b, accumulate, "a" if packed_a else packed)]

    def _packed(self, args, trans_b) -> np.ndarray:
        """op(B) of the validated arguments `args` (of `args()`) packed for the `packed`
        routines (add_pack), 64-byte aligned as the micro-kernel loads it, with NaN past
        what the packing writes."""
        M, N, K, _, _, _, b, ldb, stride_b, *_ = args
        if stride_b:
            raise ValueError("a packed b must be one matrix")
        room = np.full(packed_floats(K, N, tiles=self.config.amx) + 64, np.nan, np.float32)
        out = room[(-room.ctypes.data % 64) // 4 :]
        self._packs[trans_b](K, N, b, ldb, out.ctypes.data)
        return out

    def _packed_a(self, args, trans_a) -> np.ndarray:
        """op(A) of the validated arguments `args` packed for the `packed_a` routines (add_pack
        of "a"): each matrix of A (one where its batch stride is 0) a_pack_floats apart,
        64-byte aligned, with NaN past what the packing writes."""
        M, N, K, a, lda, stride_a, *_, batch, _ = args
        count, each = (batch if stride_a else 1), a_pack_floats(K, M, self.config.bf16)
        if count > 1 and self.config.bf16:
            raise ValueError("a bf16 routine's packed a must be one matrix")
        room = np.full(count * each + 64, np.nan, np.float32)
        out = room[(-room.ctypes.data % 64) // 4 :]
        for i in range(count):
            self._a_packs[trans_a](K, M, a + 4 * i * stride_a, lda, out[i * each :].ctypes.data)
        return out

    def __call__(
        self, a, b, c=None, *, trans_a=False, trans_b=False, accumulate=False, nthreads=1, packed=False, packed_a=False
    ):
        """c (+)= op(a) @ op(b); allocates c (zeros when accumulating) if it is None.
        `packed`: b (one matrix) is packed first, and the product takes the packed copy;
        `packed_a`: a is, each of its matrices."""
        if c is None:
            M = a.shape[-1] if trans_a else a.shape[-2]
            N = b.shape[-2] if trans_b else b.shape[-1]
            lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            c = np.zeros(lead + (M, N), np.float32)
        status = self.bind(
            a,
            b,
            c,
            trans_a=trans_a,
            trans_b=trans_b,
            accumulate=accumulate,
            nthreads=nthreads,
            packed=packed,
            packed_a=packed_a,
        )()
        if status != 0:
            raise MemoryError("GEMM pack buffers could not be allocated")
        return c

    def bind(
        self, a, b, c, *, trans_a=False, trans_b=False, accumulate=False, nthreads=1, packed=False, packed_a=False
    ):
        """A zero-argument callable running one product with pointers resolved once
        (keeps a, b, c alive; `packed`: b is packed here, once; `packed_a`: a is),
        returning its status."""
        fn = self.function(trans_a, trans_b, accumulate, packed, packed_a)
        args = self.args(a, b, c, trans_a, trans_b, nthreads)
        pack = self._packed(args, trans_b) if packed else self._packed_a(args, trans_a) if packed_a else None
        if pack is not None:
            args += (pack.ctypes.data,)
        keep = (a, b, c, pack)

        def run(fn=fn, args=args, keep=keep):
            return fn(*args)

        return run
