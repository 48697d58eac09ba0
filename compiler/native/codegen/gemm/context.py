"""What the GEMM's modules share while they add the routines of one blocking to a module:
`Gen`, the module, the blocking, its vector type and FMA, and the helpers made once per module
and blocking (`Gen.shared`: a micro-kernel, a pack, the pack buffers), named by `prefix`."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import f32
from dlc.compiler.native.codegen.gemm.blocking import GemmConfig


class Gen:
    """The state of the generator for one module and blocking: `m` the module, `cfg` the
    blocking, `vty` its vector of floats and `fma` its fused multiply-add (declared first:
    where the module's text starts); `shared_buffers`: the routines' pack buffers are
    buffers_module's (buffers.py), not the module's own."""

    def __init__(self, module: ir.Module, cfg: GemmConfig, shared_buffers: bool = False):
        self.m = module
        self.cfg = cfg
        self.shared_buffers = shared_buffers
        self.vty = ir.VectorType(f32, cfg.vw)
        self.fma = declare(module, f"llvm.fma.v{cfg.vw}f32", self.vty, [self.vty] * 3)
        self.prefix = prefix(cfg)

    def shared(self, name, build):
        """The module's helper `name` of this blocking (one per module and blocking, which
        every routine of the blocking calls): the one there, else build(its full name)'s."""
        full = f"{self.prefix}.{name}"
        fn = self.m.globals.get(full)
        if fn is None:
            fn = build(full)
        return fn


def prefix(config: GemmConfig) -> str:
    """Names the module-level helpers of the routines of one config."""
    return f"dlc.gemm.{config.tag}"
