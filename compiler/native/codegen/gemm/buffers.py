"""The pack buffers: one per thread slot of the pool and blocking, allocated on first use
(`get_buffer`); the module that holds them for routines compiled each in a module of its own
(`buffers_module`), and their tables made thread-local (`thread_local_buffers`)."""

from __future__ import annotations

import re

from llvmlite import ir

from dlc.compiler.native import MOST_THREADS
from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import i64
from dlc.compiler.native.codegen.gemm.blocking import GemmConfig
from dlc.compiler.native.codegen.gemm.context import Gen, prefix
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, fptr, internal, vptr


def _buffers(gen):
    """Global per-thread-slot pack buffer pointers (allocated on first use)."""
    name = f"{gen.prefix}.bufs"
    g = gen.m.globals.get(name)
    if g is None:
        ty = ir.ArrayType(fptr, MOST_THREADS)  # one per slot of the pool
        g = ir.GlobalVariable(gen.m, ty, name)
        g.linkage = "internal"
        g.initializer = ir.Constant(ty, None)
        g.align = 64
    return g


def get_buffer(gen):
    """A thread slot's pack buffer: the module's own, or with `shared_buffers` the one
    buffers_module defines for every routine of the config."""
    if gen.shared_buffers:
        return declare(gen.m, buffer_function(gen.cfg), fptr, [i64])
    return gen.shared("get_buffer", lambda name: _build_get_buffer(gen, name))


def _build_get_buffer(gen, name):
    """get_buffer(slot): the slot's buffer, aligned_alloc'ed the first time (null if that failed)."""
    fn = internal(gen.m, name, fptr, [i64], ["tid"])
    alloc = declare(gen.m, "aligned_alloc", vptr, [i64, i64])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    slot = b.gep(_buffers(gen), [c64(0), fn.args[0]], inbounds=True)
    p = b.load(slot)
    have = fn.append_basic_block("have")
    make = fn.append_basic_block("make")
    b.cbranch(b.icmp_unsigned("!=", p, ir.Constant(fptr, None)), have, make)
    b.position_at_end(have)
    b.ret(p)
    b.position_at_end(make)
    nbytes = (gen.cfg.pack_floats * 4 + 4095) // 4096 * 4096
    q = b.bitcast(b.call(alloc, [c64(4096), c64(nbytes)]), fptr)
    b.store(q, slot)
    b.ret(q)
    return fn


def buffers_module(config: GemmConfig) -> ir.Module:
    """The pack buffers of the routines of `config` compiled with `shared_buffers` (each
    routine a module of its own), and the function that hands a thread slot its buffer: one
    buffer per slot for all of them, as in a module that holds every routine."""
    module = ir.Module(f"dlc_gemm_buffers_{config.tag}")
    get_buffer(Gen(module, config)).linkage = ""  # for the routines' modules, which declare it
    return module


def buffer_function(config: GemmConfig) -> str:
    """The name of the function that hands a thread slot its pack buffer (get_buffer),
    which buffers_module(config) defines for the routines' modules."""
    return f"{prefix(config)}.get_buffer"


def thread_local_buffers(ir_text: str) -> str:
    """A GEMM module's IR with its tables of pack buffers (`buffers`) thread-local: every
    thread (a host thread, each worker of the pool) packs into buffers of its own, kept until
    the process ends, so that host threads may call the module at once. llvmlite's IR
    builder has no thread_local: hence the text."""
    return re.sub(r'(@"[^"]*\.bufs" = internal )global', r"\1thread_local global", ir_text)
