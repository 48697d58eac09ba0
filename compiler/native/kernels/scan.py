"""The scan loop: a body of kernels run once per step."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import concrete
from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class ScanKernel(Kernel):
    """for t in 0..length (or back): sizes[var] = t, then run the body's kernels."""
    length: object
    reverse: bool
    var: str              # the symbol of the step index, "$t0", "$t1", ... by nesting depth
    body: list

    def nested(self) -> list:
        return self.body

    def runs(self, sizes: dict) -> int:
        return concrete(self.length, sizes)

    def heading(self) -> str:
        return f"scan {self.var} in {self.length}{' reversed' if self.reverse else ''}"

    def text(self) -> list:
        return [f"{self.heading()}:{render.located(self)}"] + ["  " + line for k in self.body for line in k.text()]

    def accesses(self) -> tuple:
        """None of its own: each kernel of its body touches its buffers."""
        return set(), set()

    def emit(self, f):
        """A loop on the calling thread that calls the body's functions."""
        from dlc.compiler.native.loops import scan_loop
        kb = f.serial()
        scan_loop(kb, self, f.prog, f.run_nested)
        return kb
