"""The kernels that call dlc's GEMM library (compiler/native/gemm.py): a batch of matrix
products, and the packing of an operand that stays the same over a scan's steps."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class GemmKernel(Kernel):
    """C[b] = op(A[b]) @ op(B[b]); A, B given by buffer, offset, leading dim, batch stride.
    `packed`: a buffer holding op(B) (one matrix) packed by a PackKernel, which the GEMM
    multiplies with instead of packing B itself. `bf16`: A and B rounded to bfloat16, the
    sums in float32 (the library's bf16 routines)."""
    m: object
    n: object
    k: object
    batch: object
    a: tuple              # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple
    trans_a: bool
    trans_b: bool
    packed: int | None = None
    bf16: bool = False

    calls_gemm = True

    def flops(self, sizes: dict) -> int:
        return 2 * numel([concrete(d, sizes) for d in (self.m, self.n, self.k, self.batch)])

    def text(self) -> list:
        packed = f" (packed in b{self.packed})" if self.packed is not None else ""
        return [f"gemm {self.batch} x [{self.m} x {self.k}] @ [{self.k} x {self.n}]: b{self.c[0]} = "
                f"{'T' if self.trans_a else ''}b{self.a[0]} @ {'T' if self.trans_b else ''}b{self.b[0]}{packed}"
                f"{render.bf16(self)}{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.a[0], self.b[0]} | ({self.packed} if self.packed is not None else set()), {self.c[0]}

    def emit(self, f):
        """A call of the library's GEMM, which runs its own thread team."""
        from dlc.compiler.native.gemm import gemm_name, gemm_type
        kb = f.serial()
        packed = self.packed is not None
        args = [kb.dim(self.m), kb.dim(self.n), kb.dim(self.k)]
        for bid, off, ld, stride in (self.a, self.b, self.c):
            args += [kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld), kb.dim(stride)]
        args += [kb.dim(self.batch), kb.fn.args[2]] + ([kb.buffer(self.packed, "f32")] if packed else [])
        kb.b.call(f.library(gemm_name(self.trans_a, self.trans_b, False, packed, self.bf16), gemm_type(packed)), args)
        return kb


@dataclass
class PackKernel(Kernel):
    """out = op(B) (k x n) packed into the GEMM's panels (gemm.add_pack): a GEMM operand
    that stays the same at every step of a scan, packed once before the loop; `bf16`: as
    the bf16 routines take it."""
    k: object
    n: object
    b: tuple              # (buffer, offset, ld)
    trans_b: bool
    out: int
    bf16: bool = False

    def text(self) -> list:
        return [f"pack [{self.k} x {self.n}]: b{self.out} = panels of {'T' if self.trans_b else ''}b{self.b[0]}"
                f"{render.bf16(self)}{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.b[0]}, {self.out}

    def emit(self, f):
        from dlc.compiler.native.gemm import PACK_TYPE, pack_name
        kb = f.serial()
        bid, off, ld = self.b
        kb.b.call(f.library(pack_name(self.trans_b, self.bf16), PACK_TYPE),
                  [kb.dim(self.k), kb.dim(self.n), kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld),
                   kb.buffer(self.out, "f32")])
        return kb
