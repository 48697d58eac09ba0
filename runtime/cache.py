"""Compiled objects cached on disk, keyed by a hash of the LLVM IR, the host CPU and the
dlc and llvmlite versions: the second compile of the same model loads machine code
instead of running LLVM.

The GEMM routines are one module compiled once per process (and cached like any other);
kernel modules only declare them, and their addresses are given to LLVM as symbols.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

import dlc
from dlc.compiler.codegen.gemm import add_gemm, gemm_name
from . import jit

stats = {"compiles": 0, "hits": 0}
_gemm_module = None


def cache_dir() -> Path:
    return Path(os.environ.get("DLC_CACHE_DIR") or Path.home() / ".cache" / "dlc")


def _key(text: str) -> str:
    cpu, features = jit.host_cpu()
    h = hashlib.sha256()
    for part in (text, cpu, features, dlc.__version__, llvmlite.__version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


class Loaded:
    """Machine code in memory; keep this object alive while its functions are used."""

    def __init__(self, engine, seconds: float, cached: bool):
        self.engine, self.seconds, self.cached = engine, seconds, cached

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(name)
        return addr


def compile_cached(module: ir.Module | str) -> Loaded:
    """Machine code for a module, from the cache or from LLVM (then stored)."""
    text = str(module)
    path = cache_dir() / f"{_key(text)}.o"
    t0 = time.perf_counter()
    data = None
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError:
            data = None
    cached = data is not None
    if data is None:
        ref = jit.optimize(jit.parse(text))
        data = jit.target_machine().emit_object(ref)
        stats["compiles"] += 1
        _store(path, data)
    else:
        stats["hits"] += 1
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), jit.target_machine())
    engine.add_object_file(llvm.ObjectFileRef.from_data(data))
    engine.finalize_object()
    return Loaded(engine, time.perf_counter() - t0, cached)


def _store(path: Path, data: bytes):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass        # a read-only home: compile every time, still correct


VARIANTS = [(ta, tb) for ta in (False, True) for tb in (False, True)]


def gemm_symbols():
    """Compile the GEMM routines once and tell LLVM where they are."""
    global _gemm_module
    if _gemm_module is None:
        jit.load_library("gomp")
        module = ir.Module("dlc_gemm")
        for ta, tb in VARIANTS:
            add_gemm(module, trans_a=ta, trans_b=tb, accumulate=False)
        _gemm_module = compile_cached(module)
        for ta, tb in VARIANTS:
            name = gemm_name(ta, tb, False)
            llvm.add_symbol(name, _gemm_module.address(name))
    return _gemm_module
