"""The max-pool gradient: each window's gradient to its first maximum."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class MaxPoolGradKernel(Kernel):
    """dx (zeroed) [window argmax] += g for every output position (first maximum wins)."""
    x: int
    g: int
    out: int
    shape: tuple          # N, C, H, W of x
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple

    def text(self) -> list:
        return [f"maxpool_grad: b{self.out} <- b{self.g} at argmax of b{self.x}{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.x, self.g}, {self.out}

    def emit(self, f):
        """The examples on a thread team."""
        from dlc.compiler.native.loops import maxpool_grad
        return f.team(lambda kb, first: maxpool_grad(kb, self, first), self.shape[0], numel(self.shape))
