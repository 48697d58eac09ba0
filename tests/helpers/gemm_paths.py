"""The bf16 GEMM paths this machine runs, each a blocking (codegen/gemm/blocking.py), by a
name: what the GEMM tests of bf16 run every routine on."""

from dataclasses import replace

from dlc.compiler.native.codegen import amx, jit
from dlc.compiler.native.codegen.gemm import blocking


def bf16_gemm_paths() -> dict:
    """The bf16 GEMM paths this machine runs: the conversion path on every blocking it
    has, bfloat16 pairs (vdpbf16ps) where it has AVX512_BF16, and the AMX tiles
    (tdpbf16ps) where it has AMX-BF16; on AArch64 the NEON blocking's conversion path, and
    its pairs (BFDOT) where it has bf16."""
    if jit.target_arch() == "aarch64":
        paths = {"round-neon": replace(blocking.NEON, operands="bf16-round")}
        if jit.host_has("bf16"):
            paths["pairs-neon"] = replace(blocking.NEON, operands="bf16-pairs")
        return paths
    paths = {"round-avx2": replace(blocking.AVX2, operands="bf16-round")}
    if jit.host_has("avx512f"):
        paths["round-avx512"] = replace(blocking.AVX512, operands="bf16-round")
    if jit.host_has("avx512bf16"):
        paths["pairs-avx512"] = replace(blocking.AVX512, operands="bf16-pairs")
    if amx.has_tiles("tdpbf16ps"):
        paths["amx"] = blocking.AMX
    return paths
