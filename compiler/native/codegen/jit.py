"""A small JIT layer over llvmlite: host target, O3 with the new pass manager, MCJIT (ORC's
LLJIT on AArch64).

    from llvmlite import ir
    from dlc.compiler.native.codegen import jit

    mod = ir.Module()                       # ... fill it with an IR builder ...
    lib = jit.compile_module(mod)           # optimize at O3, compile for the host
    fn = lib.function("name", None, ctypes.c_int64, ctypes.c_void_p)
    text = jit.optimized_ir(mod)            # `dlc compile --emit llvm`
    asm = jit.assembly(mod)                 # `dlc compile --emit asm`

Every module is compiled by its own MCJIT engine, which takes ownership of the
TargetMachine it is given: each engine gets a fresh one. The `CompiledModule` keeps
its engine alive; function addresses stay valid as long as that object lives.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
import time

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from dlc.compiler.native.codegen import interrupts

OPT_LEVEL = 3
# the level of quick code (runtime/engines/tiers.py): dlc's short pass list (`optimize`) and
# LLVM's O1 code generator, not LLVM's O1 pipeline
QUICK_LEVEL = 1
# the level of unoptimized code (DLC_QUICK_CODE=unoptimized): the same short pass list and
# LLVM's O0 code generator, which compiles in about 60 % of O1's time code that runs 2.5-3.5
# times slower: for runs that compile more than they compute, such as a test suite's
UNOPTIMIZED_LEVEL = 0
# the DLC_QUICK_CODE modes that never start an O3 compile
NEVER_O3 = ("only", "unoptimized")
LLVMLITE_VERSION = llvmlite.__version__  # machine code cached on disk is keyed by it
# llvmlite releases the GIL inside LLVM, whose global context and our shared
# TargetMachine are not thread-safe: one compilation at a time.
_lock = threading.RLock()


def quick_code() -> str:
    """How code is compiled (runtime/engines/tiers.py): $DLC_QUICK_CODE, "1" (the default: a
    module's quick code first, O3 once hot), "0" (O3 before the first call), "only" (quick
    code, never an O3 compile) or "unoptimized" (unoptimized code, never an O3 compile)."""
    value = os.environ.get("DLC_QUICK_CODE", "1")
    if value not in ("0", "1", "only", "unoptimized"):
        from dlc.compiler.errors import DlcError

        raise DlcError(
            f"DLC_QUICK_CODE must be 1 (quick code first), 0 (O3 before the first call), "
            f"only (quick code, never O3) or unoptimized (unoptimized code, never O3), not '{value}'"
        )
    return value


def first_level() -> int:
    """The level a module's code is first compiled at: quick, or unoptimized under
    DLC_QUICK_CODE=unoptimized."""
    return UNOPTIMIZED_LEVEL if quick_code() == "unoptimized" else QUICK_LEVEL


def settled_level() -> int:
    """The level of code compiled once, never tiered up: dlc's own routines (the GEMM routines,
    the thread pool) and a built library's objects. O3, but `first_level` under
    DLC_QUICK_CODE=only or unoptimized."""
    return first_level() if quick_code() in NEVER_O3 else OPT_LEVEL


# x86's code generator turns a loop's conditional moves into branches where it guesses
# them predictable; a running maximum's (max pooling, argmax) depends on the data and is
# not (ResNet's max-pool gradient: 7.6 ms a step with the branches, 3.4 without). The
# same bits either way; in every compile-cache key (runtime/engines/cache.py)
LLVM_OPTIONS = ("--x86-cmov-converter=false",)


@functools.cache
def _init() -> None:
    # LLVM core initialises itself in llvmlite >= 0.45; the host backend, and the others
    # for a library built for another architecture (compile_for)
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    for option in LLVM_OPTIONS:  # once per process: LLVM takes an option once
        llvm.set_option("dlc", option)
    interrupts.guard()  # Ctrl-C in the Python API, never inside llvmlite's binding code


# DLC_TARGET=avx2 compiles for a generic AVX2 machine (x86-64-v3, without AVX-VNNI) even on
# an AVX-512 host, to test the AVX2 kernels, or to compare them on a host with double-pumped
# AVX-512; DLC_TARGET=avxvnni for the host without AVX-512 and AMX (an AVX2 machine with
# AVX-VNNI), to test the int8 product's 256-bit vpdpbusd path (kernels/int8);
# DLC_TARGET=avx512 for the host without its bfloat16 units (AVX512_BF16, AMX), to test
# the bf16 GEMM's conversion path with the AVX-512 blocking; DLC_TARGET=avx512bf16 for the
# host without AMX, to test the bf16 GEMM's vdpbf16ps path on an AMX host. On a 64-bit ARM
# host, DLC_TARGET=aarch64 compiles for the ARMv8.2-A baseline (NEON) without the host's
# later features, aarch64-dotprod for it with the dot product instructions (int8's sdot),
# aarch64-i8mm with the mixed-sign ones too (int8's usdot), aarch64-bf16 with BFDOT too (the
# bf16 GEMM's pairs): AARCH64_LEVELS. Each target is of one architecture (ARCH).
TARGETS = (
    "host",
    "avx2",
    "avxvnni",
    "avx512",
    "avx512bf16",
    "aarch64",
    "aarch64-dotprod",
    "aarch64-i8mm",
    "aarch64-bf16",
)
ARCH = {
    "avx2": "x86_64",
    "avxvnni": "x86_64",
    "avx512": "x86_64",
    "avx512bf16": "x86_64",
    "aarch64": "aarch64",
    "aarch64-dotprod": "aarch64",
    "aarch64-i8mm": "aarch64",
    "aarch64-bf16": "aarch64",
}
# the features each target takes away from the host's (LLVM's spelling, by prefix)
REMOVED = {
    "host": (),
    "avx2": ("+avx512", "+amx", "+evex512", "+avx10", "+avxvnni"),
    "avxvnni": ("+avx512", "+amx", "+evex512", "+avx10"),
    "avx512": ("+avx512bf16", "+amx", "+avx10"),
    "avx512bf16": ("+amx",),
}
# (cpu, features) of the ARMv8.2-A baseline: NEON, with v8.1's CRC32, atomics (LSE) and
# rounding doubling multiplies (RDM); what DLC_TARGET=aarch64 and `dlc build --target
# aarch64` compile for
AARCH64_BASELINE = ("generic", "+v8.2a,+neon,+fp-armv8,+crc,+lse,+rdm")
# the AArch64 levels: (cpu, features) of each, the baseline's and the optional features of
# ARMv8.2-A on which int8's dot products (kernels/int8/loops.py) and the bf16 GEMM's pairs
# (gemm/) pay; aarch64-bf16 with i8mm too, as ARMv8.6-A requires both
AARCH64_LEVELS = {
    "aarch64": AARCH64_BASELINE,
    "aarch64-dotprod": ("generic", AARCH64_BASELINE[1] + ",+dotprod"),
    "aarch64-i8mm": ("generic", AARCH64_BASELINE[1] + ",+dotprod,+i8mm"),
    "aarch64-bf16": ("generic", AARCH64_BASELINE[1] + ",+dotprod,+i8mm,+bf16"),
}

# the optional AArch64 features the levels add, by where Linux reports them: (getauxval's
# word, AT_HWCAP or AT_HWCAP2; its bit), as a built library reads them (runtime/deploy/library.c
# cpu_features); LLVM's features of an AArch64 host may lack them
HWCAPS = {"dotprod": (16, 20), "i8mm": (26, 13), "bf16": (26, 14)}


def linux_hwcaps() -> list:
    """The features of HWCAPS this AArch64 Linux machine (or qemu's emulated CPU) has."""
    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return [name for name, (word, bit) in HWCAPS.items() if getauxval(word) >> bit & 1]


# (triple, cpu name, feature string) that replaces the host's: a library built for another
# machine (`dlc build --target`, runtime/deploy/build.py), set by `compile_for`
_other_machine: tuple | None = None


def compile_for(triple: str, cpu: str, features: str):
    """Compile everything from now on in this process for `triple` (LLVM's:
    "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu") and `cpu` with `features`
    (LLVM's spelling, "+avx2,+fma,...") instead of the host: code that may not run here."""
    global _other_machine
    _other_machine = (triple, cpu, features)
    host_cpu.cache_clear()
    _shared_tm.cache_clear()


def for_other_machine() -> bool:
    """Whether the code is compiled for the machine `compile_for` names, not to run here."""
    return _other_machine is not None


def target_triple() -> str:
    """The LLVM triple the code is compiled for: this process's, or the one `compile_for` names."""
    return _other_machine[0] if _other_machine else llvm.get_process_triple()


def target_arch() -> str:
    """The architecture the code is compiled for: "x86_64" or "aarch64"."""
    arch = target_triple().split("-")[0]
    return "aarch64" if arch in ("aarch64", "arm64") else arch


def forced_target() -> str:
    """The target DLC_TARGET names (one of TARGETS), or "host"."""
    return os.environ.get("DLC_TARGET") or "host"


@functools.cache
def host_cpu() -> tuple[str, str]:
    """(cpu name, feature string) of the target we compile for: the machine we run on, less
    the features DLC_TARGET removes (REMOVED); or the one `compile_for` names, whole: a
    library built for a named target (`dlc build --target`) is that target's, whatever
    DLC_TARGET says of this process's own code."""
    _init()
    target = "host" if _other_machine else forced_target()
    if target not in TARGETS:
        from dlc.compiler.errors import DlcError

        raise DlcError(f"DLC_TARGET must be one of {', '.join(TARGETS)}, not '{target}'")
    arch, ours = target_arch(), ARCH.get(target, target_arch()) == target_arch()
    if not (ours or _other_machine):
        from dlc.compiler.errors import DlcError

        raise DlcError(
            f"DLC_TARGET={target} is a target of {ARCH[target]} machines, and this one is "
            f"{arch}: `dlc build --target {target}` builds a library for one"
        )
    cpu, features = (
        _other_machine[1:] if _other_machine else (llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())
    )
    if arch == "aarch64" and not _other_machine and platform.system() == "Linux":
        hwcaps = linux_hwcaps()
        features = ",".join([f for f in features.split(",") if f[1:] not in hwcaps] + [f"+{f}" for f in hwcaps])
    if target == "avx2" and ours:
        cpu = "x86-64-v3"
    elif target in AARCH64_LEVELS and not _other_machine:
        # those the level adds to the baseline, which every AArch64 host dlc runs on has
        lacks = [
            f
            for f in AARCH64_LEVELS[target][1].split(",")
            if f not in AARCH64_BASELINE[1].split(",") + features.split(",")
        ]
        if lacks:
            from dlc.compiler.errors import DlcError

            raise DlcError(f"DLC_TARGET={target} needs {', '.join(f[1:] for f in lacks)}, which this CPU lacks")
        cpu, features = AARCH64_LEVELS[target]
    removed = REMOVED.get(target, ()) if ours else ()
    if removed:
        features = ",".join("-" + f[1:] if f.startswith(removed) else f for f in features.split(","))
    if "+avx512f" in features.split(","):
        # LLVM's tuning for Intel server cores vectorizes loops 8 wide; 16 wide halves the
        # instructions of the inline exp and tanh (attention's forward 72 -> 66 ms, its
        # backward 141 -> 130 at T = 1024). The bits are the same: no sum's order and no
        # rounding depends on the width (docs/native.md, the same bits on any machine)
        features += ",-prefer-256-bit"
    return cpu, features


def vector_width() -> int:
    """The float lanes of the vectors the GEMM's blocking (gemm/blocking.py `default_config`)
    and the kernels that read images by rows (image_rows.py) compute in on the target: 4 on
    AArch64 (NEON); on x86-64 16 where it has AVX-512F, unless the environment variable
    DLC_GEMM_VW=8 asks for AVX2's 8."""
    if target_arch() == "aarch64":
        return 4
    return 8 if os.environ.get("DLC_GEMM_VW", "") == "8" or not host_has("avx512f") else 16


def host_has(feature: str) -> bool:
    """True when the host CPU has `feature` (LLVM's spelling: 'avx2', 'fma', 'avx512f')."""
    return f"+{feature}" in host_cpu()[1].split(",")


def target_machine(opt: int = OPT_LEVEL, jit: bool = True, reloc: str = "default") -> llvm.TargetMachine:
    """A fresh TargetMachine for the target CPU (host_cpu) with all its features."""
    _init()
    cpu, features = host_cpu()
    target = llvm.Target.from_triple(target_triple())
    return target.create_target_machine(
        cpu=cpu, features=features, opt=opt, reloc=reloc, codemodel="jitdefault" if jit else "default", jit=jit
    )


@functools.cache
def _shared_tm() -> llvm.TargetMachine:
    # Used only for optimization and assembly printing, never handed to an engine.
    return target_machine(jit=False)


def parse(module: ir.Module | str | llvm.ModuleRef) -> llvm.ModuleRef:
    """A new, verified LLVM module for the host target from an IR-builder module, IR
    text, or (copied) an existing ModuleRef."""
    _init()
    with _lock:
        ref = module.clone() if isinstance(module, llvm.ModuleRef) else llvm.parse_assembly(str(module))
        tm = _shared_tm()
        ref.triple = tm.triple
        ref.data_layout = str(tm.target_data)
        ref.verify()
    return ref


def optimize(ref: llvm.ModuleRef, level: int = OPT_LEVEL) -> llvm.ModuleRef:
    """Optimize `ref` in place: LLVM's default new-pass-manager pipeline O`level`, or at
    QUICK_LEVEL and below a short list of its passes. dlc vectorizes and blocks its kernels itself, so
    what the quick code needs is their loop variables in registers (SROA), their index
    arithmetic folded (instcombine) and their blocks merged (simplifycfg); LLVM's O1 adds
    loop passes and GVN, which take 5-9 times as long and made the examples' train steps at
    most a quarter shorter (docs/native.md, "Quick code first")."""
    with _lock:
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
        pto.loop_vectorization = level >= 2
        pto.slp_vectorization = level >= 2
        pto.loop_unrolling = level >= 1
        pb = llvm.create_pass_builder(_shared_tm(), pto)
        passes = _quick_passes() if level <= QUICK_LEVEL else pb.getModulePassManager()
        passes.run(ref, pb)
    return ref


def _quick_passes():
    passes = llvm.create_new_module_pass_manager()
    passes.add_always_inliner_pass()
    passes.add_sroa_pass()
    passes.add_instruction_combine_pass()
    passes.add_simplify_cfg_pass()
    return passes


def optimized_ir(module, level: int = OPT_LEVEL) -> str:
    """The LLVM IR text of `module` after optimization."""
    return str(optimize(parse(module), level))


def assembly(module, level: int = OPT_LEVEL) -> str:
    """The host assembly text of `module` after optimization."""
    ref = optimize(parse(module), level)
    with _lock:
        return _shared_tm().emit_assembly(ref)


def codegen_level(ref: llvm.ModuleRef, level: int) -> int:
    """The level of `ref`'s code generator for code asked at O`level`: QUICK_LEVEL at least
    for a module that holds AMX tiles, whose sums loops carry from one step to the next in
    tile registers (x86_amx phis), on which LLVM's O0 code generator aborts the process
    (LLVM 22: "Uses remain when a value is destroyed")."""
    if level < QUICK_LEVEL and any(f.name.startswith("llvm.x86.tile") for f in ref.functions):
        return QUICK_LEVEL
    return level


def object_code(ref: llvm.ModuleRef, level: int = OPT_LEVEL) -> bytes:
    """A relocatable, position-independent object of `ref` (parse() it first) after
    optimization: the machine code the JIT would run, for a library to link."""
    optimize(ref, level)
    with _lock:
        return target_machine(codegen_level(ref, level), jit=False, reloc="pic").emit_object(ref)


class CompiledModule:
    """A module compiled to machine code; owns its engine (keep this object alive)."""

    def __init__(self, ref: llvm.ModuleRef, engine: llvm.ExecutionEngine, seconds: float):
        self.module = ref
        self.engine = engine
        self.compile_seconds = seconds
        self._functions: dict = {}

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"no function '{name}' in the compiled module")
        return addr

    def function(self, name: str, restype, *argtypes):
        """The native function `name` as a ctypes function (cached per signature)."""
        key = (name, restype, argtypes)
        fn = self._functions.get(key)
        if fn is None:
            fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
            self._functions[key] = fn
        return fn


# How machine code is loaded: MCJIT, or ORC's LLJIT where MCJIT's relocations break
# (AArch64: numba#8567, jumps and GOT entries out of range once code and data are far apart)
LOADER = "orc" if platform.machine() in ("aarch64", "arm64") else "mcjit"


def compile_module(module, level: int = OPT_LEVEL) -> CompiledModule:
    """Optimize `module` at O`level` and compile it for the host with MCJIT (ORC's LLJIT where
    LOADER says)."""
    t0 = time.perf_counter()
    ref = optimize(parse(module), level)
    with _lock:
        if LOADER == "orc":
            engine = OrcEngine([target_machine(codegen_level(ref, level), jit=False, reloc="pic").emit_object(ref)])
        else:
            engine = llvm.create_mcjit_compiler(ref, target_machine(codegen_level(ref, level)))
            engine.finalize_object()
            engine.run_static_constructors()
    return CompiledModule(ref, engine, time.perf_counter() - t0)


def load_objects(objects: list):
    """An engine holding machine code compiled before (object files, in order), MCJIT's or
    ORC's (LOADER); the caller keeps it alive while its functions are used."""
    _init()
    if LOADER == "orc":
        return OrcEngine(objects)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine())
    for obj in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


class OrcEngine:
    """Objects linked by ORC's LLJIT into one library of their own, which sees this process's
    symbols (libc, libm, pthreads) and those add_symbol named; its functions' addresses as MCJIT's
    engine gives them (get_function_address: 0 when there is none). Code stays loaded while
    this object lives."""

    _count = 0

    def __init__(self, objects: list):
        OrcEngine._count += 1
        self.name = f"dlc{OrcEngine._count}"
        self.lljit = llvm.create_lljit_compiler(target_machine(jit=False, reloc="pic"), use_jit_link=True)
        builder = llvm.JITLibraryBuilder().add_current_process()
        for obj in objects:
            builder.add_object_img(obj)
        for name, address in _symbols.items():
            builder.import_symbol(name, address)
        self.trackers = [builder.link(self.lljit, self.name)]

    def get_function_address(self, name: str) -> int:
        try:
            tracker = self.lljit.lookup(self.name, name)
        except RuntimeError:
            return 0
        self.trackers.append(tracker)
        return tracker[name]


def exported_functions(module: ir.Module) -> list:
    """The functions a module defines for the outside: its compiled object must have them all."""
    return [f.name for f in module.functions if not f.is_declaration and f.linkage in ("", "external")]


def declared_functions(module: ir.Module) -> list:
    """The functions a module calls and others define (libc's, the thread pool's, the GEMM
    routines): those of dlc's own must be loaded before it is (runtime/engines/cache.py)."""
    return [f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")]


# the symbols add_symbol named (ORC's libraries import them one by one)
_symbols: dict = {}


def add_symbol(name: str, address: int):
    """Tell LLVM where `name` is, for the modules compiled after (the GEMM routines the
    kernels only declare)."""
    llvm.add_symbol(name, address)
    _symbols[name] = address
