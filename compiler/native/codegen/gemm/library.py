"""The library of GEMM routines: every variant the kernels call, of each blocking a program
may use (`program_configs`), their names, and the module that holds them (`gemm_module`:
a built library's, or one routine's for the JIT)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.gemm.blocking import bf16_config, default_config
from dlc.compiler.native.codegen.gemm.interface import gemm_name, pack_name
from dlc.compiler.native.codegen.gemm.routine import add_gemm, add_pack


# (trans_a, trans_b, packed, epilogue): the routines the kernels call; and the pack functions
VARIANTS = [
    (ta, tb, pk, ep) for ta in (False, True) for tb in (False, True) for pk in (False, True) for ep in (False, True)
]
# (trans_b, epilogue, windows) of the routines taking op(A) packed: a prediction's weights as
# A (a convolution's filters, times its windows or im2col's columns)
PACKED_A_VARIANTS = [(tb, ep, windows) for tb in (False, True) for ep in (False, True) for windows in (False, True)]


def program_configs() -> tuple:
    """The configs whose routines a kernel program may call: float32's and bf16's, the host's
    paths (the JIT's GEMM module and a built library's hold these)."""
    return default_config(), bf16_config()


def routine_names(configs: tuple) -> list[str]:
    """The functions gemm_module(configs) defines for others to call: every variant's routine
    and the pack functions, of each config."""
    return list(_routines(configs))


def _routines(configs: tuple) -> dict:
    """routine_names' functions: name -> (the function that adds it to a module, its arguments)."""
    found = {}
    for config in configs:
        for ta, tb, pk, ep in VARIANTS:
            found[gemm_name(ta, tb, False, pk, config.bf16, ep)] = (
                add_gemm,
                dict(config=config, trans_a=ta, trans_b=tb, packed=pk, epilogue=ep),
            )
        for tb, ep in [(tb, ep) for tb in (False, True) for ep in (False, True)]:
            found[gemm_name(False, tb, False, bf16=config.bf16, epilogue=ep, windows=True)] = (
                add_gemm,
                dict(config=config, trans_b=tb, epilogue=ep, windows=True),
            )
        for tb in (False, True):
            found[pack_name(tb, config.bf16)] = (add_pack, dict(config=config, trans_b=tb))
        for tb, ep, windows in PACKED_A_VARIANTS:
            found[gemm_name(False, tb, False, bf16=config.bf16, epilogue=ep, windows=windows, packed_a=True)] = (
                add_gemm,
                dict(config=config, trans_b=tb, epilogue=ep, windows=windows, packed_a=True),
            )
        found[pack_name(False, config.bf16, which="a")] = (add_pack, dict(config=config, which="a"))
    return found


def gemm_module(configs: tuple, only: frozenset | None = None, shared_buffers: bool = False) -> ir.Module:
    """The GEMM routines of every variant for each config, or of those `only` names (see
    routine_names): one module. A built library links one with the routines its steps call
    (runtime/deploy/build.py); the JIT compiles each routine alone, with `shared_buffers`, the
    first time a program calls it (runtime/engines/cache.py)."""
    module = ir.Module("dlc_gemm")
    for name, (add, variant) in _routines(configs).items():
        if only is None or name in only:
            add(module, shared_buffers=shared_buffers, **variant)
    return module


def routine_configs(configs: tuple) -> dict:
    """The config of each routine of routine_names, by name."""
    return {name: variant["config"] for name, (_, variant) in _routines(configs).items()}
