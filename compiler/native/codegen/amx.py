"""The AMX tiles, shared by the products that run on them (the bf16 GEMM's tdpbf16ps, the int8
product's tdpbusd): whether the target has them and Linux grants this process their state,
and LLVM's shape-carrying tile intrinsics, from which LLVM writes the tile configuration
(ldtilecfg) itself.

A tile register holds up to TILE_ROWS rows of TILE_BYTES bytes: 16 x 16 float32 or int32
sums, 16 x 32 bfloat16 or 16 x 64 u8 / s8 operands; B's tile holds rows of 32-bit pairs or
quads along K (the "VNNI" layout)."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import sys

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.intrinsics import LLVMType, declare
from dlc.compiler.native.codegen.types import i8, i64

TILE_ROWS = 16
TILE_BYTES = 64

# the products on the tiles: the feature each needs besides AMX-TILE
PRODUCTS = {"tdpbf16ps": "amx-bf16", "tdpbusd": "amx-int8"}


def has_tiles(product: str) -> bool:
    """Whether the target has the tiles and `product` (PRODUCTS), and the code may run them
    (`tiles_usable`)."""
    return jit.host_has(PRODUCTS[product]) and tiles_usable()


def tiles_usable() -> bool:
    """Whether the code compiled now may hold tile instructions: the target has AMX-TILE and,
    compiled for this process, Linux granted the tile state (`tiles_granted`); a library
    for another machine (`dlc build --target`) asks for it itself when it is created. The
    target's features do not say it, so the compile cache keys its entries by it too: code
    with tiles, loaded where the grant was refused, would be SIGILL."""
    return jit.host_has("amx-tile") and (jit.for_other_machine() or tiles_granted())


@functools.cache
def tiles_granted() -> bool:
    """Whether Linux granted this process the AMX tile state (`request_tiles`); says once
    on stderr when it refused, and the products then take AVX-512 instead."""
    error = request_tiles()
    if error:
        print(
            f"dlc: Linux did not grant the AMX tile state ({os.strerror(error)}); bf16 and int8 products "
            "use AVX-512 instead",
            file=sys.stderr,
        )
    return not error


def request_tiles() -> int:
    """Ask Linux for the AMX tile state: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    (0, else an errno). Without it the first tile instruction is SIGILL. The permission is
    the process's, for all its threads, present and future (the kernel's
    Documentation/arch/x86/xstate.rst), so one request serves every worker of the pool."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return errno.ENOSYS
    arch_prctl, req_xcomp_perm, xtiledata = 158, 0x1023, 18
    status = ctypes.CDLL(None, use_errno=True).syscall(arch_prctl, req_xcomp_perm, xtiledata)
    return ctypes.get_errno() if status else 0


def tile_ops(module: ir.Module, product: str) -> tuple:
    """(tileloadd, the product, tilestored, tilezero) declared in `module`: the product is
    tdpbf16ps (bfloat16 pairs into float32) or tdpbusd (u8 x s8 quads into int32). Shapes
    are rows and bytes per row (i16); strides are in bytes."""
    i16, tile, vptr = ir.IntType(16), LLVMType("x86_amx"), i8.as_pointer()
    return (
        declare(module, "llvm.x86.tileloadd64.internal", tile, [i16, i16, vptr, i64]),
        declare(module, f"llvm.x86.{product}.internal", tile, [i16, i16, i16, tile, tile, tile]),
        declare(module, "llvm.x86.tilestored64.internal", ir.VoidType(), [i16, i16, vptr, i64, tile]),
        declare(module, "llvm.x86.tilezero.internal", tile, [i16, i16]),
    )
