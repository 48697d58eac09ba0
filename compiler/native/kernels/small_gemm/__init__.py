"""The small GEMM: a small C summed over a long batch of products, nothing packed (the
choice lists choose it, choose/conv.py). The loop is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.native.program import Kernel, operand_renamed, render


@dataclass
class SmallGemmKernel(Kernel):
    """C (m x n) = sum over the batch of A[b] (m x k) @ B[b] (k x n), all row-major. Tiles
    of C stay in vector registers while K and the batch stream through, so nothing is
    packed (a first convolution's weight gradient: 6 x 25, K = 784 per example). The
    batch is cut into `parts` runs (threads take whole parts), each summed into its m x n
    slice of `partial`, and C is the sum of the slices in order: the same numbers
    whatever the number of threads. `bf16`: A and B rounded to bfloat16 as they are loaded."""

    m: int
    n: int
    k: object
    batch: object
    a: tuple  # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple  # (buffer, offset, ld)
    partial: int  # buffer of parts * m * n
    parts: int
    bf16: bool = False

    def flops(self, sizes: dict) -> int:
        return 2 * numel([concrete(d, sizes) for d in (self.m, self.n, self.k, self.batch)])

    def text(self) -> list:
        return [
            f"small_gemm sum over {self.batch} of [{self.m} x {self.k}] @ [{self.k} x {self.n}]: "
            f"b{self.c[0]} = b{self.a[0]} @ b{self.b[0]}{render.bf16(self)}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return {self.a[0], self.b[0]}, {self.c[0], self.partial}

    def renamed(self, names: dict) -> "SmallGemmKernel":
        a, b, c = (operand_renamed(x, names) for x in (self.a, self.b, self.c))
        return replace(self, a=a, b=b, c=c, partial=names[self.partial])

    def emit(self, f):
        """The parts on a thread team, then their sum on the calling thread."""
        from dlc.compiler.native.kernels.small_gemm.loops import small_gemm
        from dlc.compiler.native.codegen.shared_loops import sum_parts

        kb = f.team(lambda kb, first: small_gemm(kb, self, first), self.parts, self.m * self.n * self.k * self.batch)
        sum_parts(kb, self.partial, self.parts, self.m, self.n, self.c)
        return kb
